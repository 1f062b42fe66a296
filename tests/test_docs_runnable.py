"""The documentation runs: every code block marked runnable in README.md and docs/*.md
(a fenced block whose info string is ``bash runnable`` or ``python runnable``) is run
against the live service and must exit 0; and the reference tables cannot drift from
the code (docs/settings.md is generated from :class:`app.settings.Settings`).

Blocks are written for a service on ``http://localhost:8000`` (gRPC on
``localhost:8001``) with ``ADMIN_TOKEN`` set, as a reader would start it; the test
rewrites those addresses to the live service's own. Bash blocks run with
``set -euo pipefail``, curl failing on an HTTP error status (unless the block is marked
``expect-error``), and the venv first on PATH; Python blocks with the venv's python,
both in a scratch folder holding ``digit.png`` (a handwritten 7).

Regenerate the settings table with ``python -m tests.test_docs_runnable``.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.conftest import MODELS_DIR, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+) runnable([^\n]*)\n(.*?)^```", re.M | re.S)
# curl fails on an HTTP error status too, except in blocks marked ``expect-error``
STRICT_CURL = 'curl() { command curl --fail-with-body "$@"; }\n'
BASE = "http://localhost:8000"
GRPC = "localhost:8001"
ADMIN_TOKEN = "docs-admin-token"
SETTINGS_PAGE = ROOT / "docs" / "settings.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    code: str
    expect_error: bool = False

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks() -> list[Block]:
    found = []
    for path in DOCS:
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            language, options, code = match.groups()
            found.append(Block(path, line, language, code, "expect-error" in options))
    return found


BLOCKS = blocks()


@pytest.fixture(scope="module")
def service() -> Iterator[Any]:
    from tests.live_server import service_process

    with service_process(MODELS_DIR, {"ADMIN_TOKEN": ADMIN_TOKEN}) as running:
        yield running


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch folder with digit.png: a dark 7 drawn on light paper."""
    from PIL import Image, ImageDraw

    folder = tmp_path_factory.mktemp("docs-run")
    image = Image.new("L", (240, 200), 250)
    ImageDraw.Draw(image).line([(60, 40), (170, 40), (100, 170)], fill=20, width=16)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    (folder / "digit.png").write_bytes(buffer.getvalue())
    return folder


def test_the_docs_have_runnable_blocks() -> None:
    """The marker is in use where it matters: each protocol's page has runnable blocks."""
    pages = {b.path.name for b in BLOCKS}
    assert {"api.md", "operations.md"} <= pages
    assert {b.language for b in BLOCKS} == {"bash", "python"}


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_runnable_block_succeeds(block: Block, service: Any, workdir: Path) -> None:
    host = service.url.removeprefix("http://")  # clients that take host:port
    code = block.code.replace(BASE, service.url).replace(GRPC, service.grpc)
    code = code.replace(BASE.removeprefix("http://"), host)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ADMIN_TOKEN": ADMIN_TOKEN,
    }
    if block.language == "bash":
        prelude = "set -euo pipefail\n" + ("" if block.expect_error else STRICT_CURL)
        command = ["bash", "-c", prelude + code]
    elif block.language == "python":
        command = [sys.executable, "-c", code]
    else:
        pytest.fail(f"{block.id}: runnable blocks are bash or python, not {block.language}")
    done = subprocess.run(
        command, cwd=workdir, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{block.id} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr


# ------------------------------------------------------------------ settings table
EXTRA_MEANING = {
    "host": "bind address; `0.0.0.0` in a container",
    "port": "HTTP port",
    "log_level": "`critical`, `error`, `warning`, `info` or `debug`",
}


def _default(name: str, field: Any) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default
    if name == "models_dir":
        return "`models/` of the checkout"
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}`" if value else "`[]`"
    return f"`{value}`"


def settings_table() -> str:
    """The table of every setting: environment variable, default, meaning."""
    from app.settings import Settings

    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = field.description or EXTRA_MEANING.get(name, "")
        meaning = meaning.replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{name.upper()}` | {_default(name, field)} | {meaning} |")
    return "\n".join(rows)


def test_the_settings_page_lists_every_setting() -> None:
    from app.settings import Settings

    text = SETTINGS_PAGE.read_text()
    assert BEGIN in text and END in text
    shown = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert shown == settings_table(), "run: python -m tests.test_docs_runnable"
    for name, field in Settings.model_fields.items():
        assert field.description or name in EXTRA_MEANING, f"{name} has no meaning to show"


def test_the_model_card_page_names_every_field() -> None:
    from app.artifacts import InputField, ModelCard

    text = (ROOT / "docs" / "model-cards.md").read_text()
    for model in (ModelCard, InputField):
        for name in model.model_fields:
            assert f"`{name}`" in text, f"docs/model-cards.md does not describe {name}"


def write_settings_page() -> None:
    text = SETTINGS_PAGE.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    SETTINGS_PAGE.write_text(f"{head}{BEGIN}\n{settings_table()}\n{END}{tail}")


if __name__ == "__main__":
    write_settings_page()
