"""Admin changes with ``WORKERS=2``: every worker applies them within the stated bound
(docs/operations.md: 0.5 s plus the change's own time), a worker started later
included, so no request is answered by a worker that missed one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.live_server import Service, service_process
from tests.test_operations import copy_version
from tests.test_workers import IRIS, children, wait_for_workers

pytestmark = pytest.mark.slow

TOKEN = "admin-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BOUND_S = 1.0  # FOLLOW_INTERVAL_S (0.5 s) plus margin; an iris load takes milliseconds
ENV = {"WORKERS": "2", "WATCH_INTERVAL_S": "0", "ADMIN_TOKEN": TOKEN}


def fresh(url: str, method: str, path: str, **kwargs: object) -> httpx.Response:
    """One call on a new connection, so that either worker may take it."""
    with httpx.Client(base_url=url, timeout=10) as http:
        return http.request(method, path, **kwargs)  # type: ignore[arg-type]


def pinned_statuses(url: str, count: int = 30) -> list[int]:
    return [
        fresh(url, "POST", "/models/iris/versions/1/predict", json=IRIS).status_code
        for _ in range(count)
    ]


def index_states(url: str, count: int = 30) -> set[tuple[str, str]]:
    """(state, reason) of iris v1 in the OIP repository index, over ``count`` calls."""
    found = set()
    for _ in range(count):
        entries = fresh(url, "POST", "/v2/repository/index", json={}).json()
        entry = next(e for e in entries if e["name"] == "iris" and e["version"] == "1")
        found.add((entry["state"], entry["reason"]))
    return found


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[Service]:
    copy_version(tmp_path, "iris", 1)
    copy_version(tmp_path, "iris", 2)
    with service_process(tmp_path, ENV) as service:
        wait_for_workers(service)
        yield service


def test_admin_changes_reach_every_worker(two_workers: Service) -> None:
    url = two_workers.url
    assert set(pinned_statuses(url)) == {200}
    gone = fresh(url, "DELETE", "/admin/models/iris/versions/1", headers=AUTH)
    assert gone.json()["status"] == "UNLOADED"
    time.sleep(BOUND_S)
    assert set(pinned_statuses(url)) == {404}
    assert index_states(url) == {("UNAVAILABLE", "unloaded")}
    listed = {fresh(url, "GET", "/models/iris").json()["versions"][0]["status"] for _ in range(30)}
    assert listed == {"UNLOADED"}

    # a worker that replaces a dead one replays the changes made before it started
    workers = children(two_workers.process.pid)
    os.kill(min(workers), signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = children(two_workers.process.pid)
        if len(now) == 2 and not now <= workers:
            break
        time.sleep(0.1)
    else:
        pytest.fail("no worker replaced the killed one")
    time.sleep(2)  # the new worker loads, replays, then accepts
    assert set(pinned_statuses(url, 60)) == {404}

    back = fresh(url, "POST", "/admin/models/iris/versions/1/load", headers=AUTH)
    assert back.json()["status"] == "AVAILABLE"
    time.sleep(BOUND_S)
    assert set(pinned_statuses(url)) == {200}
    assert index_states(url) == {("READY", "")}

    # labels: the default version follows ``stable`` on every worker
    label = fresh(url, "PUT", "/admin/models/iris/labels/stable", json={"version": 1}, headers=AUTH)
    assert label.status_code == 200, label.text
    time.sleep(BOUND_S)
    defaults = {
        fresh(url, "POST", "/models/iris/predict", json=IRIS).json()["version"] for _ in range(30)
    }
    assert defaults == {1}


def test_oip_unload_reaches_every_worker(two_workers: Service) -> None:
    url = two_workers.url
    answer = fresh(url, "POST", "/v2/repository/models/iris/unload", json={}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    time.sleep(BOUND_S)
    assert set(pinned_statuses(url)) == {404}
    assert fresh(url, "POST", "/v2/repository/models/iris/load", headers=AUTH).status_code == 200
    time.sleep(BOUND_S)
    assert set(pinned_statuses(url)) == {200}
