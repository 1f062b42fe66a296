"""Schemathesis against the running service's own /openapi.json: every operation,
over a thousand generated cases in all, no 5xx, and answers that match the schema.

It runs schemathesis' own command line (its pytest plugin does not load under
pytest 9). Two of its checks are left out on purpose:

* ``positive_data_acceptance`` expects every schema-valid body to succeed, but the
  generic protocol endpoints (v2 infer, TF Serving predict) and image uploads can
  only be validated against the model named in the path, so random "valid" bodies
  rightly get a 4xx;
* ``allow_header_conformance``: OPTIONS on TF Serving's ``/v1/models/{name}:predict``
  matches the ``/v1/models/{name}`` GET route (the model name may not hold a colon
  in any other way), whose 405 lists GET.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR
from tests.live_server import service_process

pytestmark = pytest.mark.slow
EXCLUDED = "positive_data_acceptance,allow_header_conformance"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    with service_process(MODELS_DIR, {"ACCESS_LOG": "false", "LOG_LEVEL": "error"}) as service:
        run = subprocess.run(
            [
                str(cli),
                "run",
                f"{service.url}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                EXCLUDED,
                "--max-examples",
                "30",
                "--seed",
                "20261122",
                "--generation-deterministic",
                "--report-dir",
                str(tmp_path),
            ],
            cwd=tmp_path,  # its caches stay out of the checkout
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        server_log = service.output()
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    generated = re.search(r"(\d+) generated", output)
    assert generated, output[-2000:]
    assert int(generated.group(1)) >= 1000
    tested = re.search(r"Tested: (\d+)", output)
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    assert tested and selected
    assert tested.group(1) == selected.group(2)  # every operation in the schema
    assert "Traceback" not in server_log
