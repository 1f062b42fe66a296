"""The soak's load: keep-alive HTTP/1.1 (native and v2) and gRPC clients on one event loop.

wrk cannot speak gRPC, and it stops with requests in flight that the server may still
count; this client awaits every answer, so what it counts is exactly what the server's
request counter must show. Every request is pinned to a version the soak's watcher
events never touch, so any answer other than 200 (gRPC: OK) is an error.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

CONTENTS = {"FP32": "fp32_contents", "INT64": "int64_contents", "BYTES": "bytes_contents"}
CONTENTS["UINT8"] = "uint_contents"


@dataclass
class Plan:
    native: list[tuple[str, bytes]] = field(default_factory=list)  # path, JSON body
    v2: list[tuple[str, bytes]] = field(default_factory=list)
    grpc: list[service_pb2.ModelInferRequest] = field(default_factory=list)


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)  # by protocol
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # protocol, status


def v2_inputs(card: dict[str, Any]) -> list[dict[str, Any]]:
    example = card["example"]
    if "image" in example:
        return [
            {"name": "image", "shape": [1, 28, 28], "datatype": "UINT8", "data": example["image"]}
        ]
    types = {"category": "BYTES", "ordinal": "BYTES", "integer": "INT64"}
    return [
        {
            "name": f["name"],
            "shape": [1],
            "datatype": types.get(f["type"], "FP32"),
            "data": [example[f["name"]]],
        }
        for f in card["inputs"]
    ]


def grpc_request(name: str, version: int, inputs: list[dict[str, Any]]) -> Any:
    request = service_pb2.ModelInferRequest(model_name=name, model_version=str(version))
    for tensor in inputs:
        item = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"])
        item.shape.extend(tensor["shape"])
        values = tensor["data"]
        if isinstance(values[0], list):  # an image: rows of pixels
            values = [v for row in values for v in row]
        if tensor["datatype"] == "BYTES":
            values = [str(v).encode() for v in values]
        getattr(item.contents, CONTENTS[tensor["datatype"]]).extend(values)
    return request


def plan(models: Path, versions: list[tuple[str, int]]) -> Plan:
    """One request per protocol for each (name, version), from its model card."""
    out = Plan()
    for name, version in versions:
        card = json.loads((models / name / str(version) / "model_card.json").read_text())
        inputs = v2_inputs(card)
        native = f"/models/{name}/versions/{version}/predict"
        out.native.append((native, json.dumps(card["example"]).encode()))
        infer = f"/v2/models/{name}/versions/{version}/infer"
        out.v2.append((infer, json.dumps({"inputs": inputs}).encode()))
        out.grpc.append(grpc_request(name, version, inputs))
    return out


def http_request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: soak\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status, and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection") != "close"


async def http_client(
    host: str,
    port: int,
    protocol: str,
    requests: list[bytes],
    start: int,
    until: float,
    tally: Tally,
) -> None:
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    i = start
    while time.monotonic() < until:
        i += 1
        try:
            if connection is None:
                connection = await asyncio.open_connection(host, port)
            reader, writer = connection
            writer.write(requests[i % len(requests)])
            tally.sent[protocol] += 1
            status, keep = await read_answer(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            tally.errors[(protocol, type(exc).__name__)] += 1
            connection = None
            continue
        if status != 200:
            tally.errors[(protocol, str(status))] += 1
        if not keep:
            connection[1].close()
            connection = None
    if connection is not None:
        connection[1].close()


async def grpc_client(
    address: str, requests: list[Any], start: int, until: float, tally: Tally
) -> None:
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        i = start
        while time.monotonic() < until:
            i += 1
            tally.sent["grpc"] += 1
            try:
                await stub.ModelInfer(requests[i % len(requests)], timeout=30)
            except grpc.aio.AioRpcError as exc:
                tally.errors[("grpc", exc.code().name)] += 1


async def run(
    host: str, port: int, grpc_address: str, work: Plan, seconds: float, concurrency: int
) -> Tally:
    """``concurrency`` clients for ``seconds``, a third per protocol (native, v2, gRPC)."""
    tally = Tally()
    until = time.monotonic() + seconds
    native = [http_request(path, body) for path, body in work.native]
    v2 = [http_request(path, body) for path, body in work.v2]
    clients = []
    for i in range(concurrency):
        if i % 3 == 0:
            clients.append(http_client(host, port, "native", native, i, until, tally))
        elif i % 3 == 1:
            clients.append(http_client(host, port, "v2", v2, i, until, tally))
        else:
            clients.append(grpc_client(grpc_address, work.grpc, i, until, tally))
    await asyncio.gather(*clients)
    return tally
