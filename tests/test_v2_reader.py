"""The OIP v2 REST reader's typed fast path reads exactly what the generic reader does.

`read_body` first tries a typed decoder and falls back to generic JSON plus checks in
Python when the decoder refuses the body; the fallback names the problem. These tests
hold both paths to the same answer, request by request, on valid and invalid bodies.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest

from app.api import v2
from app.api.body import parse_json
from app.api.errors import ClientError
from app.serving.inference import Tensors

TABULAR = [
    {"name": "age", "shape": [2], "datatype": "INT64", "data": [39, 50]},
    {"name": "workclass", "shape": [2], "datatype": "BYTES", "data": ["Private", "State-gov"]},
    {"name": "hours", "shape": [2], "datatype": "FP32", "data": [40.5, 12]},
]
PIXELS = [[[0, 255], [17, 3]]]


def body(**fields: Any) -> dict[str, Any]:
    return {"inputs": TABULAR, **fields}


def with_input(change: dict[str, Any], at: int = 0) -> dict[str, Any]:
    inputs = [dict(item) for item in TABULAR]
    inputs[at] = {**inputs[at], **change}
    return {"inputs": inputs}


# bodies as raw JSON text, so that what JSON cannot say in Python (NaN, lone
# surrogates, huge integers, deep nesting) reaches both readers as a client sends it
CASES: dict[str, bytes] = {
    "tabular": json.dumps(body()).encode(),
    "id, parameters and outputs": json.dumps(
        body(
            id="r-1",
            parameters={"binary_data_output": True},
            outputs=[{"name": "label", "parameters": {"binary_data": False}}],
        )
    ).encode(),
    "image": json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 2, 2], "datatype": "UINT8", "data": PIXELS}]}
    ).encode(),
    "column n by 1": json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP64", "data": [[1.5], [2]]}]}
    ).encode(),
    "input parameters": json.dumps(with_input({"parameters": {}})).encode(),
    "null id and parameters": json.dumps(body(id=None, parameters=None)).encode(),
    "unknown top-level field": json.dumps(body(extra=1)).encode(),
    "unknown input field": json.dumps(with_input({"units": "years"})).encode(),
    "id not a string": json.dumps(body(id=7)).encode(),
    "parameters not an object": json.dumps(body(parameters=[1])).encode(),
    "no inputs": b'{"inputs": []}',
    "inputs missing": b'{"id": "x"}',
    "inputs not a list": b'{"inputs": {"name": "age"}}',
    "input not an object": b'{"inputs": [3]}',
    "name not a string": json.dumps(with_input({"name": 5})).encode(),
    "unknown datatype": json.dumps(with_input({"datatype": "INT3"})).encode(),
    "datatype not a string": json.dumps(with_input({"datatype": 64})).encode(),
    "shape not a list": json.dumps(with_input({"shape": 2})).encode(),
    "negative shape": json.dumps(with_input({"shape": [-2]})).encode(),
    "shape of floats": json.dumps(with_input({"shape": [2.0]})).encode(),
    "shape of booleans": json.dumps(with_input({"shape": [True]})).encode(),
    "shape not matching data": json.dumps(with_input({"shape": [3]})).encode(),
    "data missing": json.dumps(with_input({"data": None})).encode(),
    "data not a list": json.dumps(with_input({"data": 39})).encode(),
    "strings in INT64": json.dumps(with_input({"data": ["39", "50"]})).encode(),
    "booleans in INT64": json.dumps(with_input({"data": [True, False]})).encode(),
    "numbers in BYTES": json.dumps(with_input({"data": [1, 2]}, at=1)).encode(),
    "shared memory": json.dumps(with_input({"parameters": {"shared_memory_region": "r"}})).encode(),
    "binary size without binary data": json.dumps(
        with_input({"data": None, "parameters": {"binary_data_size": 16}})
    ).encode(),
    "outputs not a list": json.dumps(body(outputs="label")).encode(),
    "output without a name": json.dumps(body(outputs=[{}])).encode(),
    "binary_data_output not a boolean": json.dumps(
        body(parameters={"binary_data_output": 1})
    ).encode(),
    "huge integer": json.dumps(body()).encode().replace(b"39", b"1" + b"0" * 400),
    "huge integer in FP32": json.dumps(body()).encode().replace(b"40.5", b"1" + b"0" * 400),
    "NaN in FP32": json.dumps(body()).encode().replace(b"40.5", b"NaN"),
    "1e400 in FP32": json.dumps(body()).encode().replace(b"40.5", b"1e400"),
    "lone surrogate in data": json.dumps(body()).encode().replace(b"Private", b"\\ud800"),
    "lone surrogate as id": json.dumps(body(id="X")).encode().replace(b'"X"', b'"\\udfff"'),
    "lone surrogate as key": json.dumps(body(Y=1)).encode().replace(b'"Y"', b'"\\ud800"'),
    "invalid UTF-8": json.dumps(body()).encode().replace(b"Private", b"Priv\xffate"),
    "deep nesting": b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}]}",
    "not JSON": b'{"inputs": [',
    "not an object": b"[1, 2]",
    "empty": b"",
}


def outcome(read: Any, header: bytes, binary: bytes = b"") -> Any:
    """What a reader makes of a body: the request's parts, or the error it raises."""
    try:
        request, binary_outputs = read(header, binary)
    except ClientError as exc:
        return ("error", exc.status, exc.message)
    tensors = [
        (
            t.name,
            t.datatype,
            t.shape,
            repr(np.asarray(t.values).tolist()),  # NaN equals itself as text
            str(np.asarray(t.values).dtype),
        )
        for t in request.inputs.tensors
    ]
    return (tensors, request.outputs, dict(request.parameters), request.id, binary_outputs)


def generic(header: bytes, binary: bytes) -> Any:
    return v2.decode(parse_json(header), binary)


@pytest.mark.parametrize("case", CASES)
def test_the_typed_reader_answers_as_the_generic_reader(case: str) -> None:
    assert outcome(v2.read_body, CASES[case]) == outcome(generic, CASES[case])


def test_the_typed_reader_takes_the_common_request_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is really taken: a well-typed body never reaches the generic reader."""

    def refuse(*_: Any) -> None:
        raise AssertionError("the generic reader ran")

    monkeypatch.setattr(v2, "decode", refuse)
    request, _ = v2.read_body(CASES["tabular"], b"")
    assert isinstance(request.inputs, Tensors)
    assert [t.name for t in request.inputs.tensors] == ["age", "workclass", "hours"]
    assert request.inputs.tensors[2].values == [40.5, 12]


def test_binary_data_reads_the_same_both_ways() -> None:
    values = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": values.nbytes},
                },
                {
                    "name": "w",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": 8},
                },
            ]
        }
    ).encode()
    binary = values.tobytes() + struct.pack("<I", 4) + b"word"
    typed = outcome(v2.read_body, header, binary)
    assert typed == outcome(generic, header, binary)
    assert typed[0][0][3] == "[1.5, -2.0, 3.25]" and typed[0][1][3] == "['word']"
    # bytes that no input claims are refused the same way by both
    extra = outcome(v2.read_body, header, binary + b"\0")
    assert extra == outcome(generic, header, binary + b"\0") and extra[1] == 400
