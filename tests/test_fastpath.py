"""The fast path is explicit and changes nothing: every route marked hot answers byte
for byte what FastAPI's own routing answers, errors included; routes it would alter
are refused at startup; and it matches paths after ``root_path`` as Starlette does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.testclient import TestClient
from starlette.responses import PlainTextResponse, Response

from app.api.fastpath import FastPathMiddleware, UnsafeHotRoute, hot_post, hot_routes
from app.main import create_app
from app.settings import Settings
from tests.conftest import MODELS_DIR
from tests.model_rows import card

HOT_PATHS = {
    "/models/{name}/predict",
    "/models/{name}/versions/{version}/predict",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}/infer",
    "/v1/models/{name}:predict",
    "/v1/models/{name}/versions/{version}:predict",
}
IRIS = dict(card("iris", 1).example)
DIGIT = dict(card("digits", 1).example)
V2_IRIS = {
    "id": "parity",
    "inputs": [{"name": k, "shape": [1], "datatype": "FP32", "data": [v]} for k, v in IRIS.items()],
}
# (path, body): answers and every kind of error each hot route gives
CASES: list[tuple[str, Any]] = [
    ("/models/iris/predict", IRIS),
    ("/models/iris/predict", {"instances": [IRIS, IRIS]}),
    ("/models/digits/versions/2/predict", DIGIT),
    ("/models/iris/versions/1/predict", {**IRIS, "colour": "red"}),
    ("/models/iris/versions/1/predict", {**IRIS, "sepal_length": -1}),
    ("/models/iris/versions/01/predict", IRIS),
    ("/models/iris/versions/9/predict", IRIS),
    ("/models/nosuch/predict", IRIS),
    ("/models/iris/predict", b"{not json"),
    ("/models/iris/predict", b""),
    ("/v2/models/iris/infer", V2_IRIS),
    ("/v2/models/iris/versions/1/infer", {**V2_IRIS, "outputs": [{"name": "label"}]}),
    ("/v2/models/iris/infer", {**V2_IRIS, "outputs": [{"name": "nope"}]}),
    ("/v2/models/iris/infer", {"inputs": "nope"}),
    ("/v2/models/iris/versions/x/infer", V2_IRIS),
    ("/v2/models/nosuch/infer", V2_IRIS),
    ("/v1/models/iris:predict", {"instances": [IRIS]}),
    ("/v1/models/iris/versions/2:predict", {"inputs": {k: [v] for k, v in IRIS.items()}}),
    ("/v1/models/iris:predict", {"instances": [{**IRIS, "sepal_length": "long"}]}),
    ("/v1/models/iris:predict", {}),
    ("/v1/models/nosuch:predict", {"instances": [IRIS]}),
]


@pytest.fixture(scope="module")
def both() -> Iterator[tuple[TestClient, TestClient]]:
    fast = create_app(Settings(models_dir=MODELS_DIR, runtime="onnx", fast_path=True))
    slow = create_app(Settings(models_dir=MODELS_DIR, runtime="onnx", fast_path=False))
    with TestClient(fast) as a, TestClient(slow) as b:
        yield a, b


def test_the_hot_routes_are_exactly_the_prediction_routes() -> None:
    app = create_app(Settings(models_dir=MODELS_DIR, runtime="onnx"))
    found = {pattern.pattern for pattern, _ in hot_routes(app.routes)}
    assert len(found) == len(HOT_PATHS)
    for path in HOT_PATHS:
        concrete = path.replace("{name}", "iris").replace("{version}", "1")
        assert any(__import__("re").match(p, concrete) for p in found), path


@pytest.mark.parametrize(("path", "body"), CASES)
def test_fast_path_answers_byte_for_byte_as_fastapi(
    both: tuple[TestClient, TestClient], path: str, body: Any
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"content-type": "application/json", "x-request-id": "parity"}
    fast, slow = (c.post(path, content=content, headers=headers) for c in both)
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    assert fast.content == slow.content
    drop = {"date", "traceparent"}  # a fresh trace (random ids) for every request
    assert {k: v for k, v in fast.headers.items() if k not in drop} == {
        k: v for k, v in slow.headers.items() if k not in drop
    }


def _endpoint_app(router: APIRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    return app


def test_a_hot_route_with_a_dependency_is_refused() -> None:
    def guard() -> None:  # a token check, say
        return None

    guarded = APIRouter(dependencies=[Depends(guard)])

    @hot_post(guarded, "/x")
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("x")

    with pytest.raises(UnsafeHotRoute, match="dependencies"):
        hot_routes(_endpoint_app(guarded).routes)

    included = APIRouter()
    hot_post(included, "/y")(endpoint)
    app = FastAPI()
    app.include_router(included, dependencies=[Depends(guard)])
    with pytest.raises(UnsafeHotRoute, match="dependencies"):
        hot_routes(app.routes)


def test_a_hot_route_that_reads_parameters_is_refused() -> None:
    router = APIRouter()

    @hot_post(router, "/items/{item}")
    async def endpoint(request: Request, item: int) -> Response:
        return PlainTextResponse(str(item))

    with pytest.raises(UnsafeHotRoute, match="only the Request"):
        hot_routes(_endpoint_app(router).routes)


@pytest.mark.anyio
async def test_paths_are_matched_after_the_root_path() -> None:
    router = APIRouter()

    @hot_post(router, "/models/{name}/predict")
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"fast {request.path_params['name']}")

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("not fast", status_code=418)(scope, receive, send)

    async def error(request: Request, exc: Exception) -> Response:
        raise exc

    middleware = FastPathMiddleware(inner, hot_routes(_endpoint_app(router).routes), error)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    for path, root, expected in [
        ("/api/models/iris/predict", "/api", b"fast iris"),
        ("/models/iris/predict", "", b"fast iris"),
        ("/apiX/models/iris/predict", "/api", b"not fast"),
    ]:
        sent.clear()
        scope = {
            "type": "http",
            "method": "POST",
            "path": path,
            "root_path": root,
            "headers": [],
            "query_string": b"",
        }
        await middleware(scope, receive, send)
        assert sent[-1]["body"] == expected, path
