"""Versions you control: policy, labels, staging, promotion, canary split and the
reload of an overwritten version, each under concurrent load with no failed request."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.artifacts import CARD_FILE, CONFIG_FILE, ONNX_FILE, ModelConfig, read_config
from app.serving.errors import ModelNotFound
from app.serving.repository import OUTSIDE_POLICY, ModelRepository
from tests.conftest import MODELS_DIR
from tests.live_server import service_process

IRIS_ROW = {"sepal_length": 6.1, "sepal_width": 2.8, "petal_length": 4.7, "petal_width": 1.2}
TOKEN = "versions-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def copy_version(models: Path, version: int, new_version: int) -> Path:
    """Committed iris ``version`` as ``models/iris/<new_version>``, renamed into place."""
    staging = models / f".staging-{new_version}"
    shutil.copytree(MODELS_DIR / "iris" / str(version), staging)
    card = json.loads((staging / CARD_FILE).read_text())
    card["version"] = new_version
    (staging / CARD_FILE).write_text(json.dumps(card))
    target = models / "iris" / str(new_version)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


class Load:
    """Client threads predicting with the default version until stopped."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url = url
        self.failures: list[str] = []
        self.versions: Counter[int] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.loop) for _ in range(threads)]

    def loop(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self.stop.is_set():
                try:
                    response = http.post("/models/iris/predict", json=IRIS_ROW)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text}")
                else:
                    with self.lock:
                        self.versions[response.json()["version"]] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def seen(self) -> set[int]:
        with self.lock:
            seen = set(self.versions)
            self.versions.clear()
        return seen


def settle(load: Load) -> None:
    """Forget what answered before now, once requests routed before a change are done."""
    time.sleep(0.3)
    load.seen()
    time.sleep(0.5)


def wait_for(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.1)


@pytest.fixture
def three_versions(tmp_path: Path) -> Path:
    for version in (1, 2, 3):
        copy_version(tmp_path, min(version, 2), version)
    (tmp_path / "iris" / CONFIG_FILE).write_text(json.dumps({"labels": {"stable": 1}}))
    return tmp_path


@pytest.fixture
def service(three_versions: Path) -> Iterator[str]:
    env = {"ADMIN_TOKEN": TOKEN, "WATCH_INTERVAL_S": "0.2"}
    with service_process(three_versions, env) as running:
        yield running.url


def version_of(http: httpx.Client, path: str) -> int:
    if path.startswith("/v2"):
        body = {
            "inputs": [
                {"name": k, "shape": [1], "datatype": "FP32", "data": [v]}
                for k, v in IRIS_ROW.items()
            ]
        }
        response = http.post(path, json=body)
        assert response.status_code == 200, response.text
        return int(response.json()["model_version"])
    if path.startswith("/v1"):
        response = http.post(path, json={"instances": [IRIS_ROW]})
        assert response.status_code == 200, response.text
        status = http.get(path.removesuffix(":predict"))
        return int(status.json()["model_version_status"][0]["version"])
    response = http.post(path, json=IRIS_ROW)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_labels_staging_promotion_and_canary_under_load(service: str, three_versions: Path) -> None:
    http = httpx.Client(base_url=service, timeout=30)
    admin = httpx.Client(base_url=service, headers=AUTH, timeout=30)
    with Load(service) as load:
        # stable=1 from config.json: 2 and 3 are staged, served only when pinned
        assert load.seen() == {1}
        summary = http.get("/models/iris").json()
        assert summary["default_version"] == 1 and summary["labels"] == {"stable": 1}
        assert version_of(http, "/models/iris/versions/2/predict") == 2
        assert version_of(http, "/models/iris/versions/stable/predict") == 1
        assert version_of(http, "/v2/models/iris/versions/stable/infer") == 1
        assert version_of(http, "/v1/models/iris/labels/stable:predict") == 1
        assert (
            http.get("/v1/models/iris/labels/stable/metadata").json()["model_spec"]["version"]
            == "1"
        )
        assert http.get("/v2/models/iris/versions/stable").json()["parameters"]["version"] == "1"
        # a well-formed label the model lacks is a 404 naming it; a malformed one a 4xx
        missing = http.post("/v1/models/iris/labels/canary:predict", json={"instances": [IRIS_ROW]})
        assert missing.status_code == 404 and "canary" in missing.json()["error"]
        assert http.get("/v1/models/iris/labels/Canary").status_code == 400

        # promotion: the staged version 2 becomes the default, without a failed request
        promoted = admin.post("/admin/models/iris/promote", json={"version": 2})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["default_version"] == 2
        settle(load)
        assert load.seen() == {2}
        assert read_config(three_versions / "iris").labels == {"stable": 2}

        # a label must name a serving version
        refused = admin.put("/admin/models/iris/labels/canary", json={"version": 7})
        assert refused.status_code == 409 and "version 7" in refused.json()["error"]

        # canary: 25 % of default traffic to version 3, exactly, and counted by version
        split = admin.put("/admin/models/iris/canary", json={"version": 3, "percent": 25})
        assert split.status_code == 200, split.text
        time.sleep(0.5)
        assert load.seen() == {2, 3}
    assert load.failures == []
    answered = Counter(version_of(http, "/models/iris/predict") for _ in range(40))
    assert answered == {2: 30, 3: 10}
    answered = Counter(version_of(http, "/v2/models/iris/infer") for _ in range(8))
    assert answered == {2: 6, 3: 2}
    # pinned and labelled requests are never split
    assert {version_of(http, "/models/iris/versions/stable/predict") for _ in range(8)} == {2}
    metrics = http.get("/metrics").text
    counted = {
        version: sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("keras_serve_requests_total{")
            and 'model="iris"' in line
            and f'version="{version}"' in line
            and 'status="200"' in line
        )
        for version in (2, 3)
    }
    assert counted[3] >= 12 and counted[2] > counted[3]  # the metrics split by version

    # promoting the canary ends its trial: stable=3, no canary label, no split
    with Load(service) as load:
        promoted = admin.post("/admin/models/iris/promote", json={"label": "canary"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["config"]["labels"] == {"stable": 3}
        settle(load)
        assert load.seen() == {3}

        # the config file is watched: a policy keeping only 1 and 2 unloads 3, and the
        # default falls back to the highest serving version
        (three_versions / "iris" / CONFIG_FILE).write_text(
            json.dumps({"version_policy": {"specific": [1, 2]}})
        )
        wait_for(lambda: http.get("/models/iris").json()["default_version"] == 2)
        settle(load)
        assert load.seen() == {2}
        states = {v["version"]: v for v in http.get("/models/iris").json()["versions"]}
        assert states[3]["status"] == "UNLOADED" and states[3]["reason"] == OUTSIDE_POLICY
        gone = http.post("/models/iris/versions/3/predict", json=IRIS_ROW)
        assert gone.status_code == 404 and OUTSIDE_POLICY in gone.json()["error"]
    assert load.failures == []


def test_overwritten_version_is_reloaded_and_a_broken_one_keeps_the_old(tmp_path: Path) -> None:
    copy_version(tmp_path, 2, 1)
    env = {"WATCH_INTERVAL_S": "0.2"}
    with service_process(tmp_path, env) as running, Load(running.url) as load:
        http = httpx.Client(base_url=running.url, timeout=30)

        def probabilities() -> list[float]:
            body = http.post("/models/iris/predict", json=IRIS_ROW).json()
            return list(body["predictions"][0]["probabilities"].values())

        before = probabilities()
        # retrained with --overwrite: a new directory renamed over the old one
        copy_version(tmp_path, 1, 1)
        wait_for(lambda: probabilities() != before)
        after = probabilities()
        # rewritten in place: a changed card is read again
        card_path = tmp_path / "iris" / "1" / CARD_FILE
        card = json.loads(card_path.read_text())
        card["description"] = "rewritten in place"
        card_path.write_text(json.dumps(card))
        wait_for(lambda: http.get("/models/iris").json()["description"] == "rewritten in place")
        # a broken replacement: reported, and the previous model keeps answering
        (tmp_path / "iris" / "1" / ONNX_FILE).write_bytes(b"not a model")
        wait_for(lambda: http.get("/models/iris").json()["versions"][0]["status"] == "FAILED")
        assert probabilities() == after
    assert load.failures == []
    assert set(load.versions) <= {1}


def test_version_policy_latest_and_labels_always_load(tmp_path: Path) -> None:
    for version in (1, 2, 3):
        copy_version(tmp_path, min(version, 2), version)
    config = ModelConfig.model_validate({"version_policy": {"latest": 1}, "labels": {"old": 1}})
    (tmp_path / "iris" / CONFIG_FILE).write_text(config.model_dump_json())
    repository = ModelRepository(tmp_path, "onnx")
    repository.load_all()
    serving = repository.serving("iris")
    assert serving == [1, 3]  # the latest one, and the labelled one
    assert repository.versions("iris")[2].reason == OUTSIDE_POLICY
    assert repository.get("iris", "old").version == 1
    assert repository.default_version("iris") == 3


def test_every_change_is_seen_by_the_next_lookup(tmp_path: Path) -> None:
    """``get`` keeps its answers (two lookups a request); each kind of change must
    replace them before the next request, in the same thread and with no wait."""
    for version in (1, 2):
        copy_version(tmp_path, version, version)
    repository = ModelRepository(tmp_path, "onnx")
    repository.load_all()
    assert repository.get("iris").version == 2 and repository.get("iris", 2).version == 2
    repository.set_config("iris", ModelConfig.model_validate({"labels": {"stable": 1}}), False)
    assert repository.get("iris").version == 1  # the stable label now names the default
    assert repository.get("iris", "stable").version == 1
    repository.set_config("iris", ModelConfig(), False)
    assert repository.get("iris").version == 2
    repository.unload_version("iris", 2)
    with pytest.raises(ModelNotFound, match="not serving"):
        repository.get("iris", 2)
    assert repository.get("iris").version == 1
    copy_version(tmp_path, 2, 3)
    repository.load_version("iris", 3, tmp_path / "iris" / "3")
    assert repository.get("iris").version == 3
    repository.remove_version("iris", 3)
    assert repository.get("iris").version == 1
    first = repository.get("iris", 1)
    repository.load_version("iris", 1, tmp_path / "iris" / "1")  # reloaded: a new model
    assert repository.get("iris", 1) is not first
    repository.forget_model("iris")
    with pytest.raises(ModelNotFound):
        repository.get("iris", 1)


@pytest.mark.parametrize(
    "config",
    [
        {"labels": {"Stable": 1}},
        {"labels": {"stable": 0}},
        {"version_policy": {"latest": 1, "specific": [1]}},
        {"canary_percent": 101},
        {"colour": "blue"},
    ],
)
def test_bad_configs_are_refused_with_the_field(tmp_path: Path, config: dict[str, object]) -> None:
    key = next(iter(config))
    with pytest.raises(ValueError, match=key):
        ModelConfig.model_validate(config)


def test_admin_config_changes_apply_at_once_and_are_written(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    for version in (1, 2):
        copy_version(tmp_path, version, version)
    settings = Settings(models_dir=tmp_path, runtime="onnx", watch_interval_s=0, admin_token=TOKEN)
    with TestClient(create_app(settings)) as client:
        assert client.get("/admin/models/iris/config").status_code == 401
        answer = client.put(
            "/admin/models/iris/config",
            headers=AUTH,
            json={"version_policy": {"specific": [1]}},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["default_version"] == 1 and answer.json()["written"] is True
        states = {v["version"]: v["status"] for v in client.get("/models/iris").json()["versions"]}
        assert states == {1: "AVAILABLE", 2: "UNLOADED"}  # unloaded at once, not next pass
        assert read_config(tmp_path / "iris").version_policy.specific == [1]
        bad = client.put("/admin/models/iris/config", headers=AUTH, json={"labels": {"Up": 1}})
        assert bad.status_code == 422 and "Up" in bad.text
        missing = client.delete("/admin/models/iris/labels/stable", headers=AUTH)
        assert missing.status_code == 404 and "stable" in missing.json()["error"]
        unknown = client.put("/admin/models/nope/labels/stable", headers=AUTH, json={"version": 1})
        assert unknown.status_code == 404
        back = client.put("/admin/models/iris/config", headers=AUTH, json={})
        assert back.json()["default_version"] == 2  # every version again, the highest
        assert client.post("/models/iris/predict", json=IRIS_ROW).json()["version"] == 2
