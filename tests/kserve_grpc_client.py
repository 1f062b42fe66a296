"""Drive the service with KServe's own gRPC client, ``kserve.InferenceGRPCClient``.

Run by ``tests/test_kserve_client.py`` with the interpreter of a separate virtual
environment holding ``kserve``: kserve pins ``pandas<3`` and ``psutil<6``, which the
project's own environment does not hold, so the client cannot share it. Reads a plan
(JSON) on stdin, writes what the client saw (JSON) on stdout; it asserts nothing itself.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


def infer_input(spec: dict[str, Any], binary: bool) -> InferInput:
    dtype = object if spec["datatype"] == "BYTES" else np.dtype(spec["numpy"])
    array = np.array(spec["data"], dtype=dtype).reshape(spec["shape"])
    item = InferInput(spec["name"], list(array.shape), spec["datatype"])
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def plain(value: Any) -> Any:
    """An output's values as JSON: BYTES elements as text."""
    array = np.asarray(value)
    if array.dtype == object or array.dtype.kind == "S":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return array.ravel().tolist()


async def run(plan: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {"answers": [], "errors": []}
    async with InferenceGRPCClient(plan["url"]) as client:
        seen["live"] = await client.is_server_live()
        seen["ready"] = await client.is_server_ready()
        seen["model_ready"] = [
            await client.is_model_ready(name) for name in plan["ready_questions"]
        ]
        for case in plan["infer"]:
            request = InferRequest(
                model_name=case["model"],
                model_version=case["version"],
                infer_inputs=[infer_input(spec, case["binary"]) for spec in case["inputs"]],
                request_id=case["id"],
            )
            response = await client.infer(request)
            seen["answers"].append(
                {
                    "id": response.id,
                    "model": response.model_name,
                    "version": response.model_version,
                    "outputs": {
                        o.name: {
                            "datatype": o.datatype,
                            "shape": list(o.shape),
                            "data": plain(o.as_numpy()),
                        }
                        for o in response.outputs
                    },
                }
            )
        for case in plan["refused"]:
            request = InferRequest(
                model_name=case["model"],
                model_version=case["version"],
                infer_inputs=[infer_input(spec, True) for spec in case["inputs"]],
            )
            try:
                await client.infer(request)
                seen["errors"].append({"code": "OK", "details": ""})
            except grpc.aio.AioRpcError as exc:
                seen["errors"].append({"code": exc.code().name, "details": exc.details()})
    return seen


if __name__ == "__main__":
    json.dump(asyncio.run(run(json.load(sys.stdin))), sys.stdout)
