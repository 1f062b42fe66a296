"""The playground page at ``/`` in a real browser: Debian's headless chromium driven
by Playwright, against the service running in a subprocess (ONNX Runtime, the
committed models).

Every test also checks that the page logged no console error, raised no script
error, had no failed request, got no error status, and called nothing but the
public API. Screenshots land in test-artifacts/playground/.
"""

from __future__ import annotations

import ast
import io
import itertools
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ARTIFACTS = ROOT / "test-artifacts" / "playground"
WAIT_MS = 15_000

# Two invented census rows in Adult's vocabulary (no dataset rows are committed), the
# second with missing values.
INCOME_ROWS: list[dict[str, Any]] = [
    {
        "age": 41,
        "workclass": "Local-gov",
        "fnlwgt": 250000,
        "education": "Assoc-acdm",
        "education_num": 12,
        "marital_status": "Married-civ-spouse",
        "occupation": "Protective-serv",
        "relationship": "Husband",
        "race": "White",
        "sex": "Male",
        "capital_gain": 0,
        "capital_loss": 0,
        "hours_per_week": 40,
        "native_country": "United-States",
    },
    {
        "age": 23,
        "workclass": None,
        "fnlwgt": 150000,
        "education": "Some-college",
        "education_num": 10,
        "marital_status": "Never-married",
        "occupation": None,
        "relationship": "Own-child",
        "race": "White",
        "sex": "Female",
        "capital_gain": 0,
        "capital_loss": 0,
        "hours_per_week": 30,
        "native_country": "United-States",
    },
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One chromium with a fresh profile; each test opens its own page."""
    require_browser()
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport=DESKTOP,
            service_workers="block",
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class Watch:
    """What went wrong in a page, and which paths it asked the service for."""

    origin: str
    problems: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on(
            "console",
            lambda m: m.type == "error" and self.problems.append(f"console error: {m.text}"),
        )
        page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))
        page.on(
            "requestfailed",
            lambda r: self.problems.append(f"request failed: {r.method} {r.url}: {r.failure}"),
        )
        page.on("request", self._request)
        page.on(
            "response",
            lambda r: (
                r.status >= 400
                and self.problems.append(f"HTTP {r.status}: {r.request.method} {r.url}")
            ),
        )

    def _request(self, request: Any) -> None:
        url = request.url
        if url.startswith(("data:", "blob:")):
            return
        if not url.startswith(self.origin + "/"):
            self.problems.append(f"request outside the service: {url}")
        self.paths.append(urlsplit(url).path)

    def assert_clean(self) -> None:
        assert self.problems == []
        # the page's own files, then nothing but the public API
        private = [
            p for p in self.paths if not (p == "/" or p.startswith(("/playground/", "/models")))
        ]
        assert private == [], f"the page called paths outside the public API: {private}"


@pytest.fixture
def page(browser: Any, live_url: str) -> Iterator[tuple[Any, Watch]]:
    """The playground loaded at desktop size, with every model's section rendered."""
    tab = browser.new_page()
    watch = Watch(live_url)
    watch.attach(tab)
    tab.set_viewport_size(DESKTOP)
    tab.goto(live_url + "/")
    tab.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
    try:
        yield tab, watch
    finally:
        tab.close()


def _stroke(tab: Any, points: list[tuple[float, float]], steps: int = 4) -> None:
    """Press, move through ``points`` (fractions of the pad), release: a mouse stroke."""
    box = tab.locator("#model-digits canvas.draw").bounding_box()
    xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    tab.mouse.move(*xy[0])
    tab.mouse.down()
    for (x0, y0), (x1, y1) in itertools.pairwise(xy):
        for s in range(1, steps + 1):
            tab.mouse.move(x0 + (x1 - x0) * s / steps, y0 + (y1 - y0) * s / steps)
    tab.mouse.up()


def _digit_png(digit: str) -> bytes:
    """A digit as a pen drawing: dark ink on a light, wider-than-tall page."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (240, 200), 250)
    draw = ImageDraw.Draw(image)
    if digit == "7":
        draw.line([(60, 40), (170, 40), (100, 170)], fill=20, width=16, joint="curve")
    elif digit == "0":
        draw.ellipse([(80, 30), (160, 175)], outline=20, width=15)
    else:
        raise ValueError(digit)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _settled(tab: Any, model: str) -> None:
    """Wait until the model's latest request has its answer on the page."""
    tab.wait_for_selector(
        f"#model-{model} .answer[data-state=answered]:not(.busy)", timeout=WAIT_MS
    )


def _shows_probability(tab: Any, model: str, name: str, p: float) -> None:
    """Wait until the bar of class ``name`` holds exactly ``p`` (as JSON numbers compare)."""
    tab.wait_for_function(
        """([model, name, p]) => [...document.querySelectorAll(`#model-${model} .bar`)]
            .some(b => b.dataset.class === name && Number(b.dataset.probability) === p)""",
        arg=[model, name, p],
        timeout=WAIT_MS,
    )


def _expect() -> Any:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    return expect


def test_drawing_a_one_with_the_mouse_predicts_one(page: tuple[Any, Watch], live_url: str) -> None:
    tab, watch = page
    expect = _expect()
    section = tab.locator("#model-digits")
    prediction = section.locator(".prediction")
    expect(prediction).to_have_text("–")

    # the answer updates while the button is still down (debounced), not only at the end
    box = tab.locator("#model-digits canvas.draw").bounding_box()
    x = box["x"] + 0.5 * box["width"]
    tab.mouse.move(x, box["y"] + 0.15 * box["height"])
    tab.mouse.down()
    for i in range(1, 25):
        tab.mouse.move(x + 0.1 * i, box["y"] + (0.15 + 0.7 * i / 24) * box["height"])
    expect(prediction).not_to_have_text("–")
    tab.mouse.up()

    expect(prediction).to_have_text("1")
    expect(prediction).to_have_attribute("data-version", "2")
    bars = section.locator(".bars .bar")
    expect(bars).to_have_count(10)
    expect(section.locator(".bar.top")).to_have_attribute("data-class", "1")
    total = sum(float(bars.nth(i).get_attribute("data-probability")) for i in range(10))
    assert total == pytest.approx(1.0, abs=1e-4)

    # the other version, the MLP, sees the same drawing
    tab.select_option("#digits-version", "1")
    expect(prediction).to_have_attribute("data-version", "1")
    expect(prediction).to_have_text("1")
    expect(section.locator(".serving-version")).to_have_text("Serving v1")
    expect(section.locator(".version-select option:checked")).to_have_text("1 (MLP)")

    section.locator("button.clear").click()
    expect(prediction).to_have_text("–")
    watch.assert_clean()


def test_drawing_is_prepared_by_the_service_as_an_upload_would_be(
    page: tuple[Any, Watch], live_url: str
) -> None:
    """The page sends the drawing's raw pixels with "prepare"; the service's one
    MNIST-style preparation makes the 28x28 input, the same as for the drawing uploaded
    as a PNG (the page keeps no copy of the preparation)."""
    from PIL import Image

    from app.encoding.image import prepare_pixels

    tab, watch = page
    expect = _expect()
    sent: list[dict[str, Any]] = []
    tab.on(
        "request",
        lambda r: (
            r.method == "POST" and r.url.endswith("/predict") and sent.append(r.post_data_json)
        ),
    )
    _stroke(tab, [(0.3, 0.2), (0.7, 0.2), (0.45, 0.8)])  # a 7, off-centre
    prediction = tab.locator("#model-digits .prediction")
    expect(prediction).to_have_text("7")
    _settled(tab, "digits")
    request = sent[-1]
    assert request["prepare"] is True
    raw = np.asarray(request["instances"][0]["image"])
    assert raw.ndim == 2 and raw.shape != (28, 28)  # raw pixels, not a prepared digit

    answer = httpx.post(f"{live_url}/models/digits/versions/2/predict", json=request).json()
    prepared = np.asarray(answer["predictions"][0]["prepared"])
    np.testing.assert_array_equal(prepared, prepare_pixels(raw))

    buffer = io.BytesIO()
    Image.fromarray(raw.astype(np.uint8)).save(buffer, format="PNG")
    upload = httpx.post(
        f"{live_url}/models/digits/versions/2/predict/image",
        files={"file": ("pad.png", buffer.getvalue(), "image/png")},
    ).json()
    assert upload["predictions"][0]["label"] == "7"
    assert upload["predictions"][0]["probabilities"] == answer["predictions"][0]["probabilities"]
    watch.assert_clean()


def test_uploading_an_image_shows_its_digit(page: tuple[Any, Watch], live_url: str) -> None:
    tab, watch = page
    expect = _expect()
    section = tab.locator("#model-digits")
    prediction = section.locator(".prediction")
    for digit, version in (("7", "2"), ("0", "1")):
        tab.select_option("#digits-version", version)
        data = _digit_png(digit)
        tab.set_input_files(
            "#digits-file",
            files=[{"name": f"{digit}.png", "mimeType": "image/png", "buffer": data}],
        )
        expect(prediction).to_have_text(digit)
        expect(prediction).to_have_attribute("data-version", version)
        expect(section.locator(".upload-preview")).to_be_visible()
        _settled(tab, "digits")

        api = httpx.post(
            f"{live_url}/models/digits/versions/{version}/predict/image",
            files={"file": (f"{digit}.png", data, "image/png")},
        ).json()["predictions"][0]
        assert api["label"] == digit
        _shows_probability(tab, "digits", digit, api["probabilities"][digit])
    watch.assert_clean()


def _fill(tab: Any, model: str, row: dict[str, Any]) -> None:
    for name, value in row.items():
        control = tab.locator(f"#model-{model} [name='{name}']")
        if control.evaluate("e => e.tagName") == "SELECT":
            if value is None:
                control.select_option(label="missing")
            else:
                control.select_option(label=str(value))
        else:
            control.fill(str(value))


def test_the_income_form_shows_the_apis_probability(page: tuple[Any, Watch], live_url: str) -> None:
    tab, watch = page
    expect = _expect()
    section = tab.locator("#model-income")
    version = section.get_attribute("data-version")
    classes = httpx.get(f"{live_url}/models/income/versions/{version}").json()["classes"]
    for row in INCOME_ROWS:
        _fill(tab, "income", row)
        section.locator("button[type=submit]").click()

        body = httpx.post(f"{live_url}/models/income/versions/{version}/predict", json=row).json()
        answer = body["predictions"][0]
        for name in classes:
            p = answer["probabilities"][name]
            _shows_probability(tab, "income", name, p)  # the very number the API answered
            bar = section.locator(f".bar[data-class='{name}']")
            expect(bar.locator(".bar-value")).to_have_text(f"{p * 100:.2f} %")
        _settled(tab, "income")
        expect(section.locator(".prediction")).to_have_text(answer["label"])
    watch.assert_clean()


def test_every_model_shows_its_card_plot_and_served_version(
    page: tuple[Any, Watch], live_url: str
) -> None:
    tab, watch = page
    expect = _expect()
    for summary in httpx.get(f"{live_url}/models").json():
        name = summary["name"]
        meta = httpx.get(f"{live_url}/models/{name}").json()
        section = tab.locator(f"#model-{name}")
        expect(section.locator(".serving-version")).to_have_text(f"Serving v{meta['version']}")
        expect(section.locator("[data-fact=parameters] dd")).to_have_text(
            f"{meta['card']['parameters']:,}"
        )
        test, baseline = meta["metrics"]["test"], meta["metrics"]["baseline"]
        accuracy = section.locator("tr[data-metric=accuracy]")
        expect(accuracy.locator(".model-value")).to_have_text(f"{test['accuracy']:.4f}")
        expect(accuracy.locator(".baseline-value")).to_have_text(f"{baseline['accuracy']:.4f}")
        cells = section.locator(".matrix tbody td")
        n = len(meta["classes"])
        expect(cells).to_have_count(n * n)
        assert [int(c) for c in cells.all_text_contents()] == [
            v for row in test["confusion_matrix"] for v in row
        ]
        plot = section.locator("img.history")
        expect(plot).to_have_attribute(
            "src", f"models/{name}/versions/{meta['version']}/history.png"
        )
        assert plot.evaluate("img => img.complete && img.naturalWidth") > 0

        if meta["inputs"][0]["type"] == "image":
            continue
        for spec in meta["inputs"]:  # the form follows the metadata
            control = section.locator(f"[name='{spec['name']}']")
            if spec["type"] in ("category", "ordinal"):
                options = control.locator("option").all_text_contents()
                assert options == spec["allowed"] + (["missing"] if spec["nullable"] else [])
            else:
                assert control.get_attribute("type") == "number"
                assert float(control.get_attribute("min")) == spec["minimum"]
                assert float(control.get_attribute("max")) == spec["maximum"]
        expect(section.locator(".prediction")).to_have_text(
            httpx.post(f"{live_url}/models/{name}/predict", json=meta["card"]["example"]).json()[
                "predictions"
            ][0]["label"]
        )
    watch.assert_clean()


def _touch_stroke(tab: Any, points: list[tuple[float, float]]) -> None:
    """A finger stroke through the DevTools protocol (touch emulation on)."""
    cdp = tab.context.new_cdp_session(tab)
    cdp.send("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 1})
    canvas = tab.locator("#model-digits canvas.draw")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    xy = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    first = {"x": xy[0][0], "y": xy[0][1]}
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [first]})
    for x, y in xy[1:]:
        cdp.send(
            "Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]}
        )
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


@pytest.mark.parametrize(("size", "viewport"), [("desktop", DESKTOP), ("phone", PHONE)])
def test_screenshots_at_desktop_and_phone_width(
    page: tuple[Any, Watch], size: str, viewport: dict[str, int]
) -> None:
    tab, watch = page
    expect = _expect()
    tab.set_viewport_size(viewport)
    prediction = tab.locator("#model-digits .prediction")
    points = [(0.5, 0.12 + 0.76 * i / 12) for i in range(13)]
    if size == "phone":
        _touch_stroke(tab, points)  # a finger draws on a phone
    else:
        _stroke(tab, points)
    expect(prediction).to_have_text("1")
    _settled(tab, "digits")
    tab.wait_for_function("[...document.images].every(i => i.complete)")

    # readable: nothing wider than the screen, text not shrunk below legibility
    overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a {size} screen"
    smallest = tab.evaluate(
        "Math.min(...[...document.querySelectorAll('.prediction, .field-name, .bar-name, p')]"
        ".map(e => parseFloat(getComputedStyle(e).fontSize)))"
    )
    assert smallest >= 12

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{size}.png"), full_page=True)
    tab.screenshot(path=str(ARTIFACTS / f"{size}-top.png"))
    watch.assert_clean()


# ------------------------------------------------------------ "Use via API"
def _snippet(tab: Any, model: str, protocol: str, language: str) -> str:
    """The request the page made, as the "Use via API" panel shows it."""
    panel = tab.locator(f"#model-{model} details.api")
    _expect()(panel).to_be_visible()
    if panel.get_attribute("open") is None:
        panel.locator("summary").click()
    panel.locator(f".protocols button[data-key={protocol}]").click()
    panel.locator(f".languages button[data-key={language}]").click()
    _expect()(panel).to_have_attribute("data-language", language)
    return str(panel.locator("pre.snippet").inner_text())


def _run(command: list[str], stdin: str = "") -> str:
    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _shown(tab: Any, model: str) -> tuple[str, dict[str, float]]:
    """The label and the probabilities (from the bars' exact values) the page shows."""
    section = tab.locator(f"#model-{model}")
    label = section.locator(".prediction").inner_text()
    bars = section.locator(".bars .bar")
    probabilities = {
        bars.nth(i).get_attribute("data-class"): float(
            bars.nth(i).get_attribute("data-probability")
        )
        for i in range(bars.count())
    }
    return label, probabilities


def _v2_answer(body: dict[str, Any]) -> tuple[str, dict[str, float]]:
    outputs = {o["name"]: o for o in body["outputs"]}
    classes = json.loads(outputs["probabilities"]["parameters"]["classes"])
    return outputs["label"]["data"][0], dict(zip(classes, outputs["probabilities"]["data"]))


def test_the_copied_requests_give_the_same_answer(page: tuple[Any, Watch], live_url: str) -> None:
    """curl, Python and JavaScript, native and OIP v2: each snippet run outside the page
    answers what the page shows."""
    tab, watch = page
    _fill(tab, "income", INCOME_ROWS[1])
    tab.locator("#model-income button[type=submit]").click()
    _settled(tab, "income")
    label, probabilities = _shown(tab, "income")

    curl = _snippet(tab, "income", "native", "curl")
    assert curl.startswith(f"curl -s -X POST '{live_url}/models/income/versions/")
    native = json.loads(_run(["bash", "-c", curl]))["predictions"][0]
    assert native["label"] == label
    assert native["probabilities"] == probabilities  # the very numbers, not rounded ones

    python = _snippet(tab, "income", "native", "python")
    printed = ast.literal_eval(_run([sys.executable, "-c", python]))
    assert printed["predictions"][0]["probabilities"] == probabilities

    node = shutil.which("node")
    if node:  # fetch is global from Node 18 on; top-level await needs a module
        javascript = _snippet(tab, "income", "native", "javascript")
        script = javascript.replace(
            "console.log(await response.json());",
            "console.log(JSON.stringify(await response.json()));",
        )
        out = json.loads(_run([node, "--input-type=module", "-"], stdin=script))
        assert out["predictions"][0]["probabilities"] == probabilities

    v2_curl = _snippet(tab, "income", "v2", "curl")
    assert "/v2/models/income/versions/" in v2_curl
    v2_label, v2_probabilities = _v2_answer(json.loads(_run(["bash", "-c", v2_curl])))
    assert v2_label == label
    assert v2_probabilities == pytest.approx(probabilities, abs=1e-6)  # FP32 on the wire
    watch.assert_clean()


def test_the_drawn_digit_as_curl_gives_the_same_answer(page: tuple[Any, Watch]) -> None:
    tab, watch = page
    tab.locator("#model-digits button.clear").click()
    _stroke(tab, [(0.5, 0.12 + 0.76 * i / 12) for i in range(13)])
    _settled(tab, "digits")
    label, probabilities = _shown(tab, "digits")
    for protocol in ("native", "v2"):
        answer = json.loads(_run(["bash", "-c", _snippet(tab, "digits", protocol, "curl")]))
        got = (
            (answer["predictions"][0]["label"], answer["predictions"][0]["probabilities"])
            if protocol == "native"
            else _v2_answer(answer)
        )
        assert got[0] == label
        assert got[1] == pytest.approx(probabilities, abs=1e-6)
    python = _snippet(tab, "digits", "native", "python")
    assert len(python.splitlines()) < 100  # 70 pixel rows, one a line, not a number a line
    printed = ast.literal_eval(_run([sys.executable, "-c", python]))
    assert printed["predictions"][0]["probabilities"] == probabilities
    node = shutil.which("node")
    if node:
        javascript = _snippet(tab, "digits", "native", "javascript")
        script = javascript.replace(
            "console.log(await response.json());",
            "console.log(JSON.stringify(await response.json()));",
        )
        out = json.loads(_run([node, "--input-type=module", "-"], stdin=script))
        assert out["predictions"][0]["probabilities"] == probabilities
    watch.assert_clean()


def test_a_value_outside_training_warns_and_still_predicts(page: tuple[Any, Watch]) -> None:
    tab, watch = page
    expect = _expect()
    section = tab.locator("#model-iris")
    field = section.locator(".field[data-field=petal_length]")
    warning = field.locator(".warning")
    expect(warning).to_be_hidden()
    field.locator("input").fill("25")  # a 25 cm petal: allowed, but far beyond training
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("Outside the range seen in training (1 – 6.7)")
    _settled(tab, "iris")
    expect(section.locator(".prediction")).not_to_have_text("–")
    field.locator("input").fill("4.7")
    expect(warning).to_be_hidden()
    watch.assert_clean()


def test_an_invalid_field_clears_the_stale_answer(page: tuple[Any, Watch]) -> None:
    tab, watch = page
    expect = _expect()
    section = tab.locator("#model-iris")
    section.locator("button.reset").click()
    _settled(tab, "iris")
    expect(section.locator(".prediction")).not_to_have_text("–")
    section.locator("[name=sepal_width]").fill("")
    section.locator("button[type=submit]").click()
    expect(section.locator(".answer")).to_have_attribute("data-state", "error")
    expect(section.locator(".prediction")).to_have_text("–")
    expect(section.locator(".error")).to_contain_text("Fix the highlighted fields")
    assert section.locator(".bar.top").count() == 0
    assert [
        b
        for b in section.locator(".bar").evaluate_all(
            "bars => bars.map(b => b.dataset.probability)"
        )
        if b
    ] == []
    expect(section.locator("details.api")).to_be_hidden()
    section.locator("button.reset").click()
    _settled(tab, "iris")
    watch.assert_clean()


def test_on_a_phone_the_prediction_is_in_view_after_drawing(browser: Any, live_url: str) -> None:
    tab = browser.new_page()
    watch = Watch(live_url)
    watch.attach(tab)
    try:
        tab.set_viewport_size(PHONE)
        tab.goto(live_url + "/")
        tab.wait_for_selector("body[data-ready=true]", timeout=WAIT_MS)
        canvas = tab.locator("#model-digits canvas.draw")
        canvas.scroll_into_view_if_needed()
        _touch_stroke(tab, [(0.5, 0.12 + 0.76 * i / 12) for i in range(13)])
        _expect()(tab.locator("#model-digits .prediction")).to_have_text("1")
        pad = canvas.bounding_box()
        verdict = tab.locator("#model-digits .verdict").bounding_box()
        # in the same screen as the pad the finger is on: no scrolling to see the answer
        assert pad["y"] >= 0 and pad["y"] + pad["height"] <= PHONE["height"]
        assert verdict["y"] >= 0 and verdict["y"] + verdict["height"] <= PHONE["height"]
        # next to the pad, or just under it
        beside = (
            verdict["x"] >= pad["x"] + pad["width"] - 1 and verdict["y"] < pad["y"] + pad["height"]
        )
        under = 0 <= verdict["y"] - (pad["y"] + pad["height"]) <= 120
        assert beside or under, (pad, verdict)
        watch.assert_clean()
    finally:
        tab.close()
