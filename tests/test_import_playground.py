"""An imported regression model in the playground: its form, its value, its card."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.live_server import service_process
from tests.test_playground import DESKTOP, WAIT_MS, Watch, _expect, _fill, _settled, browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]
keras = pytest.importorskip("keras")

__all__ = ["browser"]  # the module-scoped chromium fixture, shared


@pytest.fixture(scope="module")
def regression_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.test_import import preprocessing_model
    from training.importer import import_model

    folder = tmp_path_factory.mktemp("imported")
    model = preprocessing_model(classes=0)
    model.save(folder / "price.keras")
    history = folder / "history.json"
    history.write_text(json.dumps({"loss": [3.0, 2.0], "val_loss": [3.2, 2.4]}))
    import_model(folder / "price.keras", "price", folder / "models", history_path=history)
    with service_process(folder / "models") as service:
        yield service.url


def test_a_regression_model_shows_its_value_and_card(browser: Any, regression_url: str) -> None:
    expect = _expect()
    tab = browser.new_page()
    watch = Watch(regression_url)
    watch.attach(tab)
    tab.set_viewport_size(DESKTOP)
    tab.goto(regression_url + "/")
    tab.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    row = {"age": 33, "plan": "team"}
    _fill(tab, "price", row)
    section = tab.locator("#model-price")
    section.locator("button[type=submit]").click()
    _settled(tab, "price")
    answer = httpx.post(f"{regression_url}/models/price/predict", json=row).json()
    value = answer["predictions"][0]["prediction"]
    shown = section.locator(".prediction").text_content() or ""
    assert float(shown) == pytest.approx(value, rel=1e-5)  # the API's value, 6 digits
    expect(section.locator("[data-fact=task] dd")).to_have_text("regression")
    assert section.locator(".bar").count() == 0
    # an imported version has no reference.json (insight's training-side figures): its
    # drift, calibration and performance answer 404, which the page hides; nothing else
    insight = ("/drift", "/calibration", "/calibration.png", "/performance")
    missing = [p for p in watch.problems if p.startswith("HTTP 404") and p.endswith(insight)]
    assert len(missing) <= len(insight)
    # the browser also logs each failed load as a console error, without its address
    loads = "console error: Failed to load resource: the server responded with a status of 404"
    logged = [p for p in watch.problems if p.startswith(loads)]
    assert len(logged) <= len(missing)
    watch.problems = [p for p in watch.problems if p not in missing and p not in logged]
    watch.assert_clean()
    tab.close()


@pytest.fixture(scope="module")
def two_output_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from tests.test_import import two_output_model
    from training.importer import import_model

    folder = tmp_path_factory.mktemp("two")
    two_output_model().save(folder / "two.keras")
    import_model(folder / "two.keras", "two", folder / "models")
    with service_process(folder / "models") as service:
        yield service.url


def test_a_two_output_model_shows_each_named_output(browser: Any, two_output_url: str) -> None:
    tab = browser.new_page()
    watch = Watch(two_output_url)
    watch.attach(tab)
    tab.set_viewport_size(DESKTOP)
    tab.goto(two_output_url + "/")
    tab.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    row = {"age": 33, "plan": "team"}
    _fill(tab, "two", row)
    section = tab.locator("#model-two")
    section.locator("button[type=submit]").click()
    _settled(tab, "two")
    answer = httpx.post(f"{two_output_url}/models/two/predict", json=row).json()["predictions"][0]
    shown = section.locator(".prediction").text_content() or ""
    assert shown.startswith(f"churn: {answer['churn']['label']} · spend: ")
    assert float(shown.rsplit(" ", 1)[1]) == pytest.approx(answer["spend"]["prediction"], rel=1e-5)
    watch.problems = [p for p in watch.problems if "404" not in p]  # no reference.json
    watch.assert_clean()
    tab.close()
