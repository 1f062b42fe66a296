"""KServe's Python gRPC client, ``kserve.InferenceGRPCClient``, unmodified, against the
running service: health, readiness, infer for every model version with binary and typed
inputs (answers equal to the native API's), and the status codes of refused calls.

kserve cannot be installed beside the project (it pins ``pandas<3`` and ``psutil<6``), so
the client runs in its own virtual environment: ``KSERVE_VENV``, by default the one
``bench/run.py`` keeps for its KServe peer, created here with pip when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tritonclient.utils import triton_to_np_dtype

from bench.run import ensure_peer_venv  # one environment serves the bench and this
from tests.live_server import grpc_address, native_answers
from tests.model_rows import card
from tests.test_protocol_v2 import MODELS, TOLERANCE, instances

pytestmark = pytest.mark.slow  # starts the service and a second interpreter

CLIENT = Path(__file__).with_name("kserve_grpc_client.py")
DEFAULT_VENV = Path.home() / ".cache" / "keras-serve-bench" / "kserve-venv"


def kserve_python() -> Path:
    """The interpreter of an environment that imports kserve, made when missing."""
    return ensure_peer_venv(Path(os.environ.get("KSERVE_VENV", DEFAULT_VENV)))


def tensors(metadata: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The inputs the REST metadata lists, as (name, datatype, numpy dtype, shape,
    values); a missing category travels as "?"."""
    specs = []
    for tensor in metadata["inputs"]:
        name, datatype = tensor["name"], tensor["datatype"]
        values = ["?" if row[name] is None else row[name] for row in rows]
        array = np.array(values, dtype=triton_to_np_dtype(datatype))
        text = datatype == "BYTES"
        specs.append(
            {
                "name": name,
                "datatype": datatype,
                "numpy": "O" if text else array.dtype.str,
                "shape": list(array.shape),
                "data": [str(v) for v in values] if text else array.tolist(),
            }
        )
    return specs


@pytest.fixture(scope="module")
def seen(live_url: str) -> dict[str, Any]:
    """One run of the KServe client over the whole plan."""
    with httpx.Client(base_url=live_url, timeout=30) as http:
        metadata = {
            (name, version): http.get(f"/v2/models/{name}/versions/{version}").json()
            for name, version in MODELS
        }
    infer = [
        {
            "model": name,
            "version": str(version),
            "id": f"kserve-{name}-{version}-{binary}",
            "binary": binary,
            "inputs": tensors(metadata[name, version], instances(name, version)),
        }
        for name, version in MODELS
        for binary in (True, False)
    ]
    iris = tensors(metadata["iris", 1], instances("iris", 1))
    text = ["a"] * len(iris[0]["data"])
    wrong_type = [dict(iris[0], datatype="BYTES", numpy="O", data=text)]
    plan = {
        "url": grpc_address(live_url),
        "ready_questions": ["income", "no-such-model"],
        "infer": infer,
        "refused": [
            {"model": "no-such-model", "version": "", "inputs": iris},
            {"model": "iris", "version": "99", "inputs": iris},
            {"model": "iris", "version": "1", "inputs": wrong_type + iris[1:]},
        ],
    }
    done = subprocess.run(
        [str(kserve_python()), str(CLIENT)],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    result["mistyped_input"] = iris[0]["name"]
    return result


def test_health_and_readiness(seen: dict[str, Any]) -> None:
    assert seen["live"] is True and seen["ready"] is True
    assert seen["model_ready"] == [True, False]


@pytest.mark.parametrize("binary", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize(("name", "version"), MODELS)
def test_infer_gives_the_native_answers(
    seen: dict[str, Any], live_url: str, name: str, version: int, binary: bool
) -> None:
    answer = next(a for a in seen["answers"] if a["id"] == f"kserve-{name}-{version}-{binary}")
    assert (answer["model"], answer["version"]) == (name, str(version))
    rows = instances(name, version)
    with httpx.Client(base_url=live_url, timeout=30) as http:
        labels, probabilities = native_answers(http, name, version, rows)
    got = answer["outputs"]["probabilities"]
    assert got["datatype"] == "FP32"
    assert got["shape"] == [len(rows), len(card(name, version).classes)]
    np.testing.assert_allclose(
        np.array(got["data"]).reshape(got["shape"]), probabilities, rtol=0, atol=TOLERANCE
    )
    assert answer["outputs"]["label"]["data"] == labels


def test_refused_calls_carry_their_status_and_name_the_problem(seen: dict[str, Any]) -> None:
    unknown, version, wrong_type = seen["errors"]
    assert unknown["code"] == "NOT_FOUND" and "no-such-model" in unknown["details"]
    assert version["code"] == "NOT_FOUND" and "99" in version["details"]
    assert wrong_type["code"] == "INVALID_ARGUMENT"
    assert repr(seen["mistyped_input"]) in wrong_type["details"], wrong_type["details"]
    assert "BYTES" in wrong_type["details"]
