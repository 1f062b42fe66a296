"""Uploaded pictures: digits drawn here with Pillow (dark ink on light paper, off-centre,
in a large canvas) must come back with the right label, and the MNIST-style
preparation must do each of its steps: invert, crop, fit 20x20, centre by mass."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from app.encoding import EncodingError
from app.encoding.image import DIGIT_BOX, SIDE, prepare_pixels, prepare_upload
from tests.model_rows import committed, latest

DIGIT_VERSIONS = [v for n, v in committed() if n == "digits"]
LIMIT = 16_000_000
PAPER, INK, WIDTH = 235, 25, 11

Drawing = Callable[[ImageDraw.ImageDraw, int, int], None]


def one(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    draw.line([(x + 45, y + 5), (x + 45, y + 105)], fill=INK, width=WIDTH)


def zero(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    draw.ellipse([x + 10, y + 5, x + 80, y + 110], outline=INK, width=WIDTH)


def seven(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    draw.line(
        [(x, y + 5), (x + 80, y + 5), (x + 30, y + 110)], fill=INK, width=WIDTH, joint="curve"
    )


def four(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    points = [(x + 60, y + 110), (x + 60, y), (x, y + 75), (x + 90, y + 75)]
    draw.line(points, fill=INK, width=WIDTH, joint="curve")


def three(draw: ImageDraw.ImageDraw, x: int, y: int) -> None:
    draw.arc([x, y, x + 70, y + 60], 180, 90, fill=INK, width=WIDTH)
    draw.arc([x, y + 50, x + 70, y + 120], 270, 160, fill=INK, width=WIDTH)


DIGITS: dict[str, Drawing] = {"0": zero, "1": one, "3": three, "4": four, "7": seven}
PLACES = [(5, 5), (95, 35), (40, 20)]  # top-left, bottom-right, middle of 200x160


def drawn(digit: Drawing, x: int, y: int, size: tuple[int, int] = (200, 160)) -> Image.Image:
    image = Image.new("L", size, PAPER)
    digit(ImageDraw.Draw(image), x, y)
    return image


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB" if fmt == "JPEG" else image.mode).save(buffer, format=fmt)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` pixels but that holds no pixels:
    a decompression bomb's first bytes, cheap to make."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def centre_of_mass(frame: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(frame.shape)
    total = float(frame.sum())
    return float((ys * frame).sum() / total), float((xs * frame).sum() / total)


def ink_box(frame: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(frame)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


# ------------------------------------------------------------------- over HTTP
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("label", sorted(DIGITS))
def test_drawn_digit_is_recognised(
    client: TestClient, label: str, place: tuple[int, int], fmt: str
) -> None:
    data = encoded(drawn(DIGITS[label], *place), fmt)
    files = {"file": (f"{label}.{fmt.lower()}", data, f"image/{fmt.lower()}")}
    response = client.post("/models/digits/predict/image", files=files)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == latest()["digits"]
    assert body["predictions"][0]["label"] == label, body["predictions"][0]["probabilities"]


@pytest.mark.parametrize("version", DIGIT_VERSIONS)
@pytest.mark.parametrize("label", sorted(DIGITS))
def test_drawn_digit_with_a_pinned_version(client: TestClient, version: int, label: str) -> None:
    files = {"file": ("d.png", encoded(drawn(DIGITS[label], 60, 25), "PNG"), "image/png")}
    response = client.post(f"/models/digits/versions/{version}/predict/image", files=files)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == version
    assert response.json()["predictions"][0]["label"] == label


def test_upload_and_raw_pixels_agree(client: TestClient) -> None:
    """The upload path feeds the network exactly what posting the prepared pixels does."""
    data = encoded(drawn(seven, 70, 30), "PNG")
    pixels = prepare_upload(data, LIMIT)
    upload = client.post("/models/digits/predict/image", files={"file": ("7.png", data)})
    raw = client.post("/models/digits/predict", json={"image": pixels.tolist()})
    assert upload.status_code == raw.status_code == 200
    assert upload.json() == raw.json()


# ---------------------------------------------------------- the preparation
def test_output_is_mnist_shaped_white_on_black() -> None:
    frame = prepare_upload(encoded(drawn(zero, 30, 10), "PNG"), LIMIT)
    assert frame.shape == (SIDE, SIDE) and frame.dtype == np.uint8
    assert frame.max() == 255
    assert frame[0].max() == frame[-1].max() == frame[:, 0].max() == frame[:, -1].max() == 0


def test_dark_on_light_is_inverted_to_match_light_on_dark() -> None:
    dark_on_light = drawn(four, 50, 20)
    light_on_dark = Image.eval(dark_on_light, lambda v: 255 - v)
    a = prepare_upload(encoded(dark_on_light, "PNG"), LIMIT)
    b = prepare_upload(encoded(light_on_dark, "PNG"), LIMIT)
    np.testing.assert_array_equal(a, b)
    assert a.mean() < 60  # mostly black background, as in MNIST


@pytest.mark.parametrize("place", [(0, 0), (125, 35), (40, 20)])
def test_position_in_the_canvas_does_not_matter(place: tuple[int, int]) -> None:
    reference = prepare_upload(encoded(drawn(three, 40, 20), "PNG"), LIMIT)
    moved = prepare_upload(encoded(drawn(three, *place), "PNG"), LIMIT)
    np.testing.assert_array_equal(moved, reference)


@pytest.mark.parametrize("label", sorted(DIGITS))
def test_centred_by_centre_of_mass(label: str) -> None:
    frame = prepare_upload(encoded(drawn(DIGITS[label], 100, 40), "PNG"), LIMIT)
    cy, cx = centre_of_mass(frame.astype(np.float64))
    # MNIST puts the centre of mass at pixel (14, 14); whole-pixel shifts leave < 1 px
    assert abs(cy - SIDE / 2) <= 1.0 and abs(cx - SIDE / 2) <= 1.0


@pytest.mark.parametrize(
    ("size", "expected"),
    [((120, 30), (5, 20)), ((30, 120), (20, 5)), ((60, 60), (20, 20)), ((8, 8), (20, 20))],
)
def test_digit_fits_a_20x20_box_keeping_its_aspect(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    """A w x h ink block, anywhere in the picture, is scaled so its long side is 20."""
    w, h = size
    image = Image.new("L", (300, 200), PAPER)
    ImageDraw.Draw(image).rectangle([170, 20, 170 + w - 1, 20 + h - 1], fill=INK)
    frame = prepare_upload(encoded(image, "PNG"), LIMIT)
    height, width = ink_box(frame > 64)
    assert max(height, width) <= DIGIT_BOX
    assert abs(height - expected[0]) <= 1 and abs(width - expected[1]) <= 1


def test_thin_strokes_survive_the_downscaling() -> None:
    frame = prepare_upload(encoded(drawn(one, 20, 20), "PNG"), LIMIT)
    height, _ = ink_box(frame > 64)
    assert height == DIGIT_BOX


def test_rgb_and_jpeg_inputs_are_read_as_grayscale() -> None:
    image = drawn(zero, 60, 20)
    gray = prepare_upload(encoded(image, "PNG"), LIMIT)
    rgb = prepare_upload(encoded(image.convert("RGB"), "PNG"), LIMIT)
    np.testing.assert_array_equal(gray, rgb)
    jpeg = prepare_upload(encoded(image, "JPEG"), LIMIT).astype(int)
    assert np.abs(jpeg - gray).mean() < 8  # JPEG noise only


def test_transparent_background_counts_as_paper(client: TestClient) -> None:
    """A browser canvas export: dark ink on fully transparent (black, alpha 0) pixels."""
    ink = drawn(seven, 60, 25)
    canvas = Image.new("RGBA", ink.size, (0, 0, 0, 0))
    canvas.putalpha(Image.eval(ink, lambda v: 255 - v))  # opaque only where the ink is
    transparent = encoded(canvas, "PNG")
    np.testing.assert_array_equal(
        prepare_upload(transparent, LIMIT), prepare_upload(encoded(ink, "PNG"), LIMIT)
    )
    response = client.post("/models/digits/predict/image", files={"file": ("7.png", transparent)})
    assert response.json()["predictions"][0]["label"] == "7"


def test_exif_orientation_is_applied() -> None:
    """A phone stores pixels sideways plus an Orientation tag; the digit is upright."""
    upright = drawn(four, 50, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, format="JPEG", exif=exif)
    rotated = prepare_upload(buffer.getvalue(), LIMIT).astype(int)
    reference = prepare_upload(encoded(upright, "JPEG"), LIMIT).astype(int)
    assert np.abs(rotated - reference).mean() < 8


def test_too_many_pixels_are_refused_before_decoding() -> None:
    with pytest.raises(EncodingError, match="limit") as caught:
        prepare_upload(png_header_only(5000, 4000), LIMIT)
    assert caught.value.field == "file"
    small = encoded(drawn(one, 0, 0), "PNG")
    with pytest.raises(EncodingError, match="limit"):
        prepare_upload(small, 200 * 160 - 1)
    assert prepare_upload(small, 200 * 160).shape == (SIDE, SIDE)


def test_decompression_bomb_is_refused() -> None:
    """Past Pillow's own bomb limit, whatever limit the service was given."""
    with pytest.raises(EncodingError) as caught:
        prepare_upload(png_header_only(60_000, 60_000), 10**12)
    assert caught.value.field == "file"


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"definitely not an image", "decodable"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "decodable"),
        (encoded(drawn(zero, 0, 0), "PNG")[:-60], "decodable"),
        (encoded(drawn(one, 0, 0), "GIF"), "PNG or JPEG"),
        (encoded(Image.new("L", (50, 50), PAPER), "PNG"), "no visible digit"),
    ],
)
def test_bytes_that_hold_no_digit_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(EncodingError, match=words) as caught:
        prepare_upload(data, LIMIT)
    assert caught.value.field == "file"


# ------------------------------------------------- one preparation for pixels
def small_seven_in_a_corner() -> np.ndarray:
    """A 7 about 9 px tall in the top-left of a 28x28 white-on-black array."""
    image = Image.new("L", (28, 28), 0)
    ImageDraw.Draw(image).line([(1, 1), (8, 1), (4, 9)], fill=255, width=2)
    return np.asarray(image, dtype=np.float32)


def test_prepare_pixels_centres_a_small_digit_from_a_corner() -> None:
    frame = prepare_pixels(small_seven_in_a_corner())
    assert frame.shape == (SIDE, SIDE) and frame.dtype == np.float32
    assert frame.min() == 0 and frame.max() == 255
    assert np.array_equal(frame, np.rint(frame))  # whole intensities, as a PNG would give
    cy, cx = centre_of_mass(frame.astype(np.float64))
    assert abs(cy - SIDE / 2) <= 1.0 and abs(cx - SIDE / 2) <= 1.0
    assert max(ink_box(frame > 64)) == DIGIT_BOX


@pytest.mark.parametrize(
    "image",
    [
        small_seven_in_a_corner(),
        np.asarray(drawn(seven, 70, 30), dtype=np.float32),  # dark on light, large canvas
        np.asarray(drawn(three, 5, 5), dtype=np.float32),
    ],
)
def test_pixels_and_the_same_drawing_as_png_give_the_same_input(image: np.ndarray) -> None:
    as_png = prepare_upload(encoded(Image.fromarray(image.astype(np.uint8)), "PNG"), LIMIT)
    np.testing.assert_array_equal(prepare_pixels(image), as_png.astype(np.float32))


def test_prepare_pixels_accepts_integer_and_float_arrays_alike() -> None:
    image = small_seven_in_a_corner()
    np.testing.assert_array_equal(prepare_pixels(image.astype(np.uint8)), prepare_pixels(image))


def test_an_mnist_style_digit_comes_back_nearly_unchanged() -> None:
    """Already prepared input (20x20 box, centred) passes through prepare_pixels intact."""
    once = prepare_upload(encoded(drawn(four, 50, 20), "PNG"), LIMIT).astype(np.float32)
    twice = prepare_pixels(once)
    assert np.abs(twice - once).mean() < 2.0


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((2, 28, 28)), "2-D"),
        (np.zeros((0, 28)), "2-D"),
        (np.full((28, 28), np.nan), "NaN"),
        (np.full((28, 28), 300.0), "between 0 and 255"),
        (np.full((28, 28), -1.0), "between 0 and 255"),
        (np.array([["a"] * 28] * 28), "numbers"),
        (np.zeros((28, 28)), "no visible digit"),
        (np.full((28, 28), 20.0), "no visible digit"),
    ],
)
def test_prepare_pixels_refuses_what_holds_no_digit(array: np.ndarray, words: str) -> None:
    with pytest.raises(EncodingError, match=words) as caught:
        prepare_pixels(array)
    assert caught.value.field == "image"


def test_a_lone_speck_is_not_blown_up_into_a_digit() -> None:
    speck = np.zeros((28, 28))
    speck[5, 5] = speck[5, 6] = 255
    with pytest.raises(EncodingError, match="speck"):
        prepare_pixels(speck)
    with pytest.raises(EncodingError, match="limit"):
        prepare_pixels(np.zeros((100, 100)), max_pixels=9_999)


def test_mpo_from_a_phone_camera_is_read_by_its_first_frame() -> None:
    """Pillow reports phone JPEGs with a depth or preview frame as MPO; the photo is frame 0."""
    photo = drawn(four, 50, 20).convert("RGB")
    preview = Image.new("RGB", photo.size, (255, 255, 255))  # a blank second frame
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[preview])
    data = buffer.getvalue()
    with Image.open(io.BytesIO(data)) as check:
        assert check.format == "MPO" and check.n_frames == 2
    frame = prepare_upload(data, LIMIT).astype(int)
    reference = prepare_upload(encoded(photo, "JPEG"), LIMIT).astype(int)
    assert np.abs(frame - reference).mean() < 4


def test_mpo_upload_is_answered_over_http(client: TestClient) -> None:
    photo = drawn(seven, 60, 25).convert("RGB")
    buffer = io.BytesIO()
    photo.save(buffer, format="MPO", save_all=True, append_images=[photo])
    response = client.post(
        "/models/digits/predict/image", files={"file": ("7.jpg", buffer.getvalue())}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == "7"


@pytest.mark.parametrize(
    ("bad", "words"),
    [(300.0, "between 0 and 255"), (-1.0, "between 0 and 255")],
)
def test_a_bad_image_in_a_tensor_batch_is_named_by_its_index(
    client: Any, bad: float, words: str
) -> None:
    """A tensor of images is checked as one array; a bad one is still named by index."""
    images = np.zeros((3, 784)).tolist()
    images[2][100] = bad
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": [3, 784], "data": images}]}
    response = client.post("/v2/models/digits/versions/1/infer", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error and "image" in error and "2" in error, error
    good = client.post(
        "/v2/models/digits/versions/1/infer",
        json={
            "inputs": [
                {"name": "image", "datatype": "UINT8", "shape": [3, 28, 28], "data": [0] * 2352}
            ]
        },
    )
    assert good.status_code == 200, good.text
    assert sorted(len(o["data"]) for o in good.json()["outputs"]) == [3, 30]
