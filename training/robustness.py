"""The digits robustness suite: accuracy under fixed, seeded shifts users bring.

Each shift turns the 10,000 MNIST test images (or any images) into what a person
might send instead: rotated, rescaled, thicker or thinner strokes, blurred,
off-centre in a larger picture, inverted and uploaded as a PNG, or drawn as strokes
on a 280x280 canvas the way the playground draws. Shifts that describe raw input
("off-centre", "inverted", "canvas") go through the service's own preparation
(:func:`prepare_pixels`, :func:`prepare_upload`); the others are fed as MNIST-style
input, as a JSON client would send them. Only numpy, SciPy and Pillow are used, so
tests re-run the suite against the committed ONNX files without TensorFlow.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from app.encoding.image import prepare_pixels, prepare_upload

Predict = Callable[[np.ndarray], np.ndarray]  # [N, 28, 28] 0-255 -> [N] labels

CANVAS = 280  # the playground's drawing pad, in canvas pixels
PEN_WIDTH = 20  # the playground's round pen
SUPERSAMPLE = 4  # strokes drawn 4x larger and area-averaged down: anti-aliased edges
CANVAS_PER_CLASS = 60
UPLOAD_LIMIT = 16_000_000
CENTRE = 13.5  # the middle of a 28x28 frame in pixel-index coordinates


def _affine(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply ``matrix`` (output -> input coordinates) about the frame's centre."""
    centre = np.array([CENTRE, CENTRE])
    offset = centre - matrix @ centre
    return ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="constant")


def rotated(images: np.ndarray, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.stack([_affine(i, m) for i in images.astype(np.float32)])


def scaled(images: np.ndarray, factor: float) -> np.ndarray:
    m = np.eye(2) / factor
    return np.stack([_affine(i, m) for i in images.astype(np.float32)])


def thick(images: np.ndarray) -> np.ndarray:
    """Grey dilation with a 3x3 cross: about one pixel more stroke all round."""
    cross = ndimage.generate_binary_structure(2, 1)
    return np.stack([ndimage.grey_dilation(i, footprint=cross) for i in images])


def thin(images: np.ndarray) -> np.ndarray:
    """Grey erosion with a 2x2 square: about one pixel less stroke."""
    return np.stack([ndimage.grey_erosion(i, size=(2, 2)) for i in images])


def blurred(images: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(i.astype(np.float32), sigma) for i in images])


def off_centre(images: np.ndarray, seed: int, side: int = 64) -> np.ndarray:
    """Each digit pasted at a random place in a larger black picture, then prepared."""
    rng = np.random.default_rng(seed)
    out = []
    for image in images:
        frame = np.zeros((side, side), dtype=np.float32)
        y, x = rng.integers(0, side - 28 + 1, size=2)
        frame[y : y + 28, x : x + 28] = image
        out.append(prepare_pixels(frame))
    return np.stack(out)


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def inverted_upload(images: np.ndarray) -> np.ndarray:
    """Dark ink on white paper, uploaded as a PNG through the service's image path."""
    return np.stack([prepare_upload(_png(255 - i), UPLOAD_LIMIT) for i in images])


# Pen paths of each digit in a unit box (x right, y down), as people draw them.
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    0: [[(0.5 + 0.32 * np.sin(a), 0.5 - 0.45 * np.cos(a)) for a in np.linspace(0, 2 * np.pi, 25)]],
    1: [[(0.45, 0.12), (0.55, 0.03), (0.55, 0.97)]],
    2: [
        [
            (0.2, 0.25),
            (0.35, 0.07),
            (0.6, 0.04),
            (0.78, 0.2),
            (0.72, 0.42),
            (0.2, 0.95),
            (0.85, 0.95),
        ]
    ],
    3: [
        [
            (0.2, 0.12),
            (0.5, 0.03),
            (0.78, 0.15),
            (0.72, 0.38),
            (0.45, 0.48),
            (0.75, 0.58),
            (0.8, 0.8),
            (0.5, 0.97),
            (0.2, 0.88),
        ]
    ],
    4: [[(0.6, 0.05), (0.15, 0.65), (0.85, 0.65)], [(0.65, 0.3), (0.65, 0.97)]],
    5: [
        [
            (0.8, 0.05),
            (0.3, 0.05),
            (0.25, 0.45),
            (0.55, 0.4),
            (0.78, 0.55),
            (0.78, 0.8),
            (0.5, 0.97),
            (0.2, 0.88),
        ]
    ],
    6: [
        [
            (0.7, 0.04),
            (0.4, 0.3),
            (0.25, 0.65),
            (0.35, 0.92),
            (0.6, 0.95),
            (0.75, 0.75),
            (0.6, 0.55),
            (0.35, 0.58),
            (0.27, 0.7),
        ]
    ],
    7: [[(0.15, 0.07), (0.85, 0.07), (0.4, 0.97)]],
    8: [
        [
            (0.5, 0.48),
            (0.25, 0.3),
            (0.3, 0.08),
            (0.5, 0.03),
            (0.72, 0.1),
            (0.75, 0.28),
            (0.5, 0.48),
            (0.22, 0.7),
            (0.3, 0.92),
            (0.5, 0.97),
            (0.75, 0.9),
            (0.8, 0.7),
            (0.5, 0.48),
        ]
    ],
    9: [
        [
            (0.75, 0.28),
            (0.5, 0.45),
            (0.27, 0.35),
            (0.33, 0.08),
            (0.6, 0.03),
            (0.75, 0.28),
            (0.7, 0.97),
        ]
    ],
}


def canvas_digit(label: int, rng: np.random.Generator) -> np.ndarray:
    """One digit drawn like the playground: white round pen on a black 280x280 pad,
    anti-aliased, at a random size, slant and place, each point jittered."""
    from PIL import Image, ImageDraw

    big = CANVAS * SUPERSAMPLE
    image = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(image)
    height = rng.uniform(0.45, 0.8) * CANVAS
    width = height * rng.uniform(0.55, 0.8)
    slant = rng.uniform(-0.35, 0.35)
    angle = np.deg2rad(rng.uniform(-15, 15))
    cos, sin = np.cos(angle), np.sin(angle)
    left = rng.uniform(0.05 * CANVAS, CANVAS - width - 0.05 * CANVAS)
    top = rng.uniform(0.05 * CANVAS, CANVAS - height - 0.05 * CANVAS)
    pen = PEN_WIDTH * rng.uniform(0.8, 1.3) * SUPERSAMPLE
    for stroke in STROKES[label]:
        points = []
        for x, y in stroke:
            x, y = x + rng.normal(0, 0.03), y + rng.normal(0, 0.03)
            x = x + slant * (0.5 - y)
            dx, dy = (x - 0.5) * width, (y - 0.5) * height
            px = left + width / 2 + cos * dx - sin * dy
            py = top + height / 2 + sin * dx + cos * dy
            points.append((px * SUPERSAMPLE, py * SUPERSAMPLE))
        draw.line(points, fill=255, width=round(pen), joint="curve")
        r = pen / 2
        for px, py in (points[0], points[-1]):  # round caps
            draw.ellipse([px - r, py - r, px + r, py + r], fill=255)
    small = image.resize((CANVAS, CANVAS), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32)


def canvas_set(seed: int, per_class: int = CANVAS_PER_CLASS) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic canvas digits sent through the upload preparation, with their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), per_class)
    prepared = [prepare_upload(_png(canvas_digit(int(d), rng)), UPLOAD_LIMIT) for d in labels]
    return np.stack(prepared), labels


SHIFTS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "rotate -20": lambda x, s: rotated(x, -20),
    "rotate +20": lambda x, s: rotated(x, 20),
    "scale 0.7": lambda x, s: scaled(x, 0.7),
    "scale 1.3": lambda x, s: scaled(x, 1.3),
    "thick strokes": lambda x, s: thick(x),
    "thin strokes": lambda x, s: thin(x),
    "blur sigma 1": lambda x, s: blurred(x, 1.0),
    "off-centre, prepared": off_centre,
    "inverted, uploaded": lambda x, s: inverted_upload(x),
}


def shifted_sets(
    images: np.ndarray, labels: np.ndarray, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every shift of ``images`` plus the canvas set: name -> (28x28 images, labels)."""
    sets = {"clean": (images.astype(np.float32), labels)}
    for name, shift in SHIFTS.items():
        sets[name] = (np.clip(shift(images, seed), 0, 255).astype(np.float32), labels)
    sets["canvas strokes, uploaded"] = canvas_set(seed)
    return sets


def evaluate(
    predict: Predict, images: np.ndarray, labels: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Accuracy per shift, rounded to 4 places, in a fixed order."""
    return {
        name: round(float((predict(x) == y).mean()), 4)
        for name, (x, y) in shifted_sets(images, labels, seed).items()
    }
