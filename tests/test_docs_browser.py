"""/docs in a real headless Chromium with no internet: Swagger UI loads from the
service itself, and "Try it out" with the shown example gets a 200 with predictions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.conftest import MODELS_DIR
from tests.live_server import running_service

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    require_browser()
    with running_service(MODELS_DIR) as url:
        yield url


@pytest.fixture
def page(base_url: str, tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile whose requests may reach only the service."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        outside: list[str] = []

        def only_the_service(route: Any) -> None:
            url = route.request.url
            if url.startswith(base_url) or url.startswith("data:"):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        context.route("**/*", only_the_service)
        try:
            yield context.new_page()
        finally:
            context.close()
        assert outside == [], f"/docs tried to load from outside the service: {outside}"


def test_try_it_out_on_iris_predict(page: Any, base_url: str) -> None:
    page.set_default_timeout(30_000)
    page.goto(f"{base_url}/docs")
    operation = page.locator("#operations-models-predict_iris")
    operation.locator(".opblock-summary").click()
    assert "POST" in operation.locator(".opblock-summary-method").inner_text()
    assert "/models/iris/predict" in operation.locator(".opblock-summary-path").inner_text()

    operation.get_by_role("button", name="Try it out").click()
    editor = operation.locator("textarea.body-param__text")
    assert "sepal_length" in editor.input_value()  # the card's example is prefilled
    operation.get_by_role("button", name="Execute").click()

    response = operation.locator(".live-responses-table .response")
    status = response.locator(".response-col_status")
    status.wait_for()
    assert status.inner_text().strip() == "200"
    body = response.locator(".response-col_description pre").first.inner_text()
    assert '"predictions"' in body
    assert '"model": "iris"' in body
    assert any(species in body for species in ("setosa", "versicolor", "virginica"))


def test_the_shown_answers_are_real_and_v2_examples_run_per_model(page: Any, base_url: str) -> None:
    """The 200 answer Swagger UI shows is the model's own (no "string" placeholders), and
    the v2 infer operation offers one example per model that "Try it out" runs."""
    page.set_default_timeout(30_000)
    page.goto(f"{base_url}/docs")
    predict = page.locator("#operations-models-predict_iris")
    predict.locator(".opblock-summary").click()
    sample = predict.locator(".responses-wrapper .response[data-code='200'] .microlight").first
    text = sample.inner_text()
    assert '"model": "iris"' in text and '"predictions"' in text
    assert '"string"' not in text and "additionalProp" not in text
    # the card's example, answered by the model: the same label the service gives now
    assert any(f'"label": "{s}"' in text for s in ("setosa", "versicolor", "virginica"))

    infer = page.locator("[id^='operations-Open_Inference_Protocol_v2-infer_default']")
    infer.locator(".opblock-summary").click()
    infer.get_by_role("button", name="Try it out").click()
    choice = infer.locator(".opblock-section-request-body .examples-select select")
    options = [o.split(" ")[0] for o in choice.locator("option").all_inner_texts()]
    assert {"digits", "income", "iris", "salary"} <= set(options)
    choice.select_option(index=options.index("income"))
    infer.locator("input[placeholder='name']").fill("income")
    assert '"workclass"' in infer.locator("textarea.body-param__text").input_value()
    infer.get_by_role("button", name="Execute").click()
    response = infer.locator(".live-responses-table .response")
    status = response.locator(".response-col_status")
    status.wait_for()
    assert status.inner_text().strip() == "200"
    body = response.locator(".response-col_description pre").first.inner_text()
    assert '"model_name": "income"' in body and '"probabilities"' in body
