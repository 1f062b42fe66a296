"""The layering the code promises, checked on the import graph.

Protocol adapters (``app/api``) translate wire formats and call the data plane; they
never encode inputs or run a model themselves. The serving layer never knows HTTP.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parent.parent / "app"


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(folder: str) -> list[Path]:
    return sorted((APP / folder).rglob("*.py"))


@pytest.mark.parametrize("path", modules("api") + modules("grpc"), ids=lambda p: p.name)
def test_protocol_code_never_encodes_or_runs_a_model(path: Path) -> None:
    forbidden = {m for m in imports_of(path) if m.startswith(("app.encoding", "app.runtimes"))}
    assert not forbidden, f"{path.name} imports {sorted(forbidden)}"


@pytest.mark.parametrize(
    "path", modules("serving") + modules("encoding") + modules("runtimes"), ids=lambda p: p.name
)
def test_model_code_never_knows_http_or_grpc(path: Path) -> None:
    web = {m for m in imports_of(path) if m.split(".")[0] in {"fastapi", "starlette", "grpc"}} | {
        m for m in imports_of(path) if m.startswith("app.api")
    }
    assert not web, f"{path.name} imports {sorted(web)}"


def test_app_never_imports_training() -> None:
    for path in APP.rglob("*.py"):
        assert not {m for m in imports_of(path) if m.split(".")[0] == "training"}, path
