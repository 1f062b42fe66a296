"""Digit images: raw MNIST intensities to network input, and photos to MNIST style.

MNIST digits are white on black, cropped to their bounding box, fitted into 20x20
with the aspect ratio kept, and centred by centre of mass in a 28x28 frame
(LeCun et al.). An uploaded picture only resembles the training data after the
same steps, so :func:`prepare_upload` repeats them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from app.encoding.errors import EncodingError

SIDE = 28
DIGIT_BOX = 20


class ImagePipeline:
    """Scale 0-255 intensities to [0, 1] and reshape to what the network takes."""

    def __init__(self, height: int, width: int, scale: float, input_shape: list[int]) -> None:
        self.height = height
        self.width = width
        self.scale = scale
        self.input_shape = input_shape

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "image",
            "height": self.height,
            "width": self.width,
            "scale": self.scale,
            "input_shape": self.input_shape,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImagePipeline:
        if data.get("kind") != "image":
            raise ValueError("not an image pipeline")
        return cls(
            int(data["height"]), int(data["width"]), float(data["scale"]), list(data["input_shape"])
        )

    def encode(self, pixels: np.ndarray, field: str = "image") -> np.ndarray:
        """Accept ``[N, H, W]`` or ``[N, H*W]`` intensities in 0-255."""
        n = pixels.shape[0] if pixels.ndim else 0
        # the exact shape, not just the count: 4x196 rows are no 28x28 digit
        allowed = ((self.height, self.width), (self.height * self.width,))
        if n == 0 or pixels.shape[1:] not in allowed:
            raise EncodingError(
                field,
                f"must hold {self.height}x{self.width} (or {self.height * self.width}) "
                f"intensities per image, got shape {list(pixels.shape)}",
            )
        # checked before the float32 cast, which would turn 1e300 into Infinity
        if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
            raise EncodingError(field, "must not contain NaN or Infinity")
        in_range = pixels.dtype == np.uint8  # bytes cannot leave 0-255
        if not in_range and (pixels.min(initial=0) < 0 or pixels.max(initial=0) > 255):
            raise EncodingError(field, "intensities must be between 0 and 255")
        values = pixels.astype(np.float32, copy=False)
        return (values / self.scale).reshape([n, *self.input_shape])


UPLOAD_FORMATS = ("PNG", "JPEG", "MPO")  # MPO: phone cameras' multi-picture JPEG
MIN_CONTRAST = 30.0  # ink must stand this far above the paper (0-255) to be a digit
MIN_INK_SIDE = 3  # a speck smaller than this on its long side is dust, not a digit


def prepare_upload(data: bytes, max_pixels: int, field: str = "file") -> np.ndarray:
    """Turn PNG/JPEG bytes into a 28x28 MNIST-style uint8 array (white on black).

    Decoding is all this adds: the preparation itself is :func:`prepare_pixels`, the
    one implementation every path (upload, JSON with ``prepare``, the playground) uses.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise EncodingError(field, "is empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in UPLOAD_FORMATS:
                raise EncodingError(field, f"must be a PNG or JPEG image, got {img.format}")
            if img.width * img.height > max_pixels:
                raise EncodingError(
                    field,
                    f"has {img.width}x{img.height} pixels, more than the limit of {max_pixels}",
                )
            img.seek(0)  # an MPO's first frame is the photo itself; later ones are previews
            gray = _as_on_paper(img)
    except EncodingError:
        raise
    except UnidentifiedImageError:
        raise EncodingError(field, "is not a decodable PNG or JPEG image") from None
    except Exception as exc:  # decoders fail in many ways on hostile bytes; all are the client's
        raise EncodingError(field, f"is not a decodable PNG or JPEG image ({exc})") from None
    return prepare_pixels(gray, field).astype(np.uint8)


def _as_on_paper(img: Any) -> np.ndarray:
    """Grayscale as a person sees the picture: upright per its EXIF orientation, and
    transparent areas (a drawing from a browser canvas) shown as white paper, not black."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.has_transparency_data:
        paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, img.convert("RGBA"))
    return np.asarray(img.convert("L"), dtype=np.float32)


def prepare_pixels(
    array: np.ndarray, field: str = "image", max_pixels: int | None = None
) -> np.ndarray:
    """MNIST's preparation for raw intensities of any size: a 28x28 float32 array, 0-255.

    ``array`` is 2-D grey levels 0-255, either polarity, the digit anywhere in it. The
    steps are LeCun et al.'s: make it white on black, subtract the paper's level, crop
    to the ink, scale so the long side is 20 px keeping the aspect ratio (area-averaged
    when shrinking, so strokes keep MNIST's anti-aliased grey edges), and shift whole
    pixels so the centre of mass sits at (14, 14), where MNIST's training digits have
    theirs (measured: 14.00, 14.01). The result is rounded to whole intensities, so a
    picture and its pixels give identical network input.
    """
    gray = np.asarray(array)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise EncodingError(
            field, f"must be a 2-D array of intensities, got shape {list(gray.shape)}"
        )
    if gray.dtype.kind not in "uif" or gray.dtype == np.bool_:
        raise EncodingError(field, "must hold numbers")
    if max_pixels is not None and gray.size > max_pixels:
        raise EncodingError(field, f"has {gray.size} pixels, more than the limit of {max_pixels}")
    if gray.dtype.kind == "f" and not np.isfinite(gray).all():
        raise EncodingError(field, "must not contain NaN or Infinity")
    if gray.min() < 0 or gray.max() > 255:
        raise EncodingError(field, "intensities must be between 0 and 255")
    return _mnist_style(gray.astype(np.float32), field)


def mnist_style(gray: np.ndarray, field: str = "file") -> np.ndarray:
    """:func:`prepare_pixels` as uint8, the name older callers use."""
    return prepare_pixels(gray, field).astype(np.uint8)


def _mnist_style(gray: np.ndarray, field: str) -> np.ndarray:
    from PIL import Image

    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if border.mean() > 127:  # light background: a pen drawing, invert to MNIST's look
        gray, border = 255.0 - gray, 255.0 - border
    gray = np.clip(gray - np.median(border), 0, 255)
    peak = float(gray.max())
    if peak < MIN_CONTRAST:
        raise EncodingError(field, "contains no visible digit")
    ink = gray > 0.2 * peak
    rows, cols = np.nonzero(ink)
    crop = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = crop.shape
    if max(h, w) < MIN_INK_SIDE:
        raise EncodingError(field, "contains no visible digit (only a speck)")
    factor = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    # float mode keeps the grey levels; BOX averages areas when shrinking (anti-aliasing),
    # BILINEAR gives soft edges when a small digit is enlarged
    method = Image.Resampling.BOX if factor < 1 else Image.Resampling.BILINEAR
    small = np.asarray(Image.fromarray(crop).resize(size, method), dtype=np.float32)
    small = np.clip(small, 0, None)
    frame = np.zeros((SIDE, SIDE), dtype=np.float32)
    top, left = (SIDE - small.shape[0]) // 2, (SIDE - small.shape[1]) // 2
    frame[top : top + small.shape[0], left : left + small.shape[1]] = small
    total = frame.sum()
    ys, xs = np.indices(frame.shape)
    dy = round(SIDE / 2 - (ys * frame).sum() / total)
    dx = round(SIDE / 2 - (xs * frame).sum() / total)
    frame = _shift(frame, dy, dx)
    # rounded, not truncated: 254.99998 must become MNIST's full-intensity 255
    return np.clip(np.rint(frame * (255.0 / frame.max())), 0, 255).astype(np.float32)


def _shift(frame: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move the content by (dy, dx) without wrapping around the edges."""
    out = np.zeros_like(frame)
    h, w = frame.shape
    src = frame[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    out[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return out
