"""Seeded augmentation for digit images, applied in the training input pipeline only.

It lives in ``tf.data``, not in the model, so the exported SavedModel and ONNX graph
hold no augmentation ops and serve exactly the function validated on clean input.
Every batch draws its randomness from stateless ops keyed by ``(seed, batch number)``,
so a run with the same seed sees the same augmented images.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class Augmentation:
    """Ranges of each change; every image gets a fresh draw inside them."""

    rotation_degrees: float = 0.0  # uniform in +-this
    scale_low: float = 1.0  # log-uniform zoom between low and high
    scale_high: float = 1.0
    shear: float = 0.0  # horizontal shear factor, uniform in +-this
    shift_pixels: float = 0.0  # uniform in +-this, each axis
    thickness_probability: float = 0.0  # half thicker (dilation), half thinner (erosion)
    blur_probability: float = 0.0  # a 3x3 Gaussian (sigma 1) blended in by a random amount
    contrast_low: float = 1.0  # intensities multiplied by a factor in [low, 1]
    noise_std: float = 0.0  # Gaussian noise of std up to this (on 0-1 intensities)

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self != Augmentation()


NONE = Augmentation()


def _uniform(seed: tf.Tensor, n: tf.Tensor, low: float, high: float, salt: int) -> tf.Tensor:
    import tensorflow as tf

    return tf.random.stateless_uniform([n], seed=seed + salt, minval=low, maxval=high)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, aug: Augmentation) -> tf.Tensor:
    """``images``: float [B, 28, 28, 1] in [0, 1]; ``seed``: int64 [2]."""
    import tensorflow as tf

    n = tf.shape(images)[0]
    x = images
    # one affine transform per image: rotation, zoom, shear and shift about the centre
    angle = _uniform(seed, n, -1.0, 1.0, 1) * math.radians(aug.rotation_degrees)
    log_scale = _uniform(seed, n, math.log(aug.scale_low), math.log(aug.scale_high) + 1e-9, 2)
    scale = tf.exp(log_scale)
    shear = _uniform(seed, n, -1.0, 1.0, 3) * aug.shear
    tx = _uniform(seed, n, -1.0, 1.0, 4) * aug.shift_pixels
    ty = _uniform(seed, n, -1.0, 1.0, 5) * aug.shift_pixels
    cos, sin = tf.cos(angle), tf.sin(angle)
    # forward map A = R(angle) @ Shear @ S(scale); the op wants output -> input, A^-1
    a00, a01 = cos * scale, (cos * shear - sin) * scale
    a10, a11 = sin * scale, (sin * shear + cos) * scale
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    c = 13.5
    # input = A^-1 (output - c - t) + c
    ox, oy = c + tx, c + ty
    b0 = c - (i00 * ox + i01 * oy)
    b1 = c - (i10 * ox + i11 * oy)
    zeros = tf.zeros_like(angle)
    transforms = tf.stack([i00, i01, b0, i10, i11, b1, zeros, zeros], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.shape(x)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    # stroke thickness: blend towards a 3x3 grey dilation or erosion
    if aug.thickness_probability > 0:
        pick = _uniform(seed, n, 0.0, 1.0, 6)
        amount = tf.reshape(_uniform(seed, n, 0.3, 1.0, 7), [-1, 1, 1, 1])
        dilated = tf.nn.max_pool2d(x, 3, 1, "SAME")
        eroded = -tf.nn.max_pool2d(-x, 2, 1, "SAME")
        half = aug.thickness_probability / 2
        thicker = tf.reshape(tf.cast(pick < half, x.dtype), [-1, 1, 1, 1])
        thinner = tf.reshape(tf.cast((pick >= half) & (pick < 2 * half), x.dtype), [-1, 1, 1, 1])
        x = x + amount * (thicker * (dilated - x) + thinner * (eroded - x))
    if aug.blur_probability > 0:
        g = np.exp(-(np.array([-1.0, 0.0, 1.0]) ** 2) / 2)
        kernel = np.outer(g, g) / np.outer(g, g).sum()
        k = tf.constant(kernel.reshape(3, 3, 1, 1), dtype=x.dtype)
        blurred = tf.nn.conv2d(x, k, 1, "SAME")
        on = tf.cast(_uniform(seed, n, 0.0, 1.0, 8) < aug.blur_probability, x.dtype)
        amount = tf.reshape(on * _uniform(seed, n, 0.0, 1.0, 9), [-1, 1, 1, 1])
        x = x + amount * (blurred - x)
    if aug.contrast_low < 1:
        x = x * tf.reshape(_uniform(seed, n, aug.contrast_low, 1.0, 10), [-1, 1, 1, 1])
    if aug.noise_std > 0:
        std = tf.reshape(_uniform(seed, n, 0.0, aug.noise_std, 11), [-1, 1, 1, 1])
        x = x + std * tf.random.stateless_normal(tf.shape(x), seed=seed + 12, dtype=x.dtype)
    return tf.clip_by_value(x, 0.0, 1.0)


def training_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    seed: int,
    aug: Augmentation,
) -> tf.data.Dataset:
    """Shuffled, augmented, endlessly repeated batches shaped like ``x``'s rows.

    ``x`` is the encoded network input (``[N, 784]`` or ``[N, 28, 28, 1]``, 0-1); the
    augmentation works on 28x28 images and hands back the same shape.
    """
    import tensorflow as tf

    shape = x.shape[1:]
    data = tf.data.Dataset.from_tensor_slices((x, y))
    data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(batch_size).repeat().enumerate()

    def step(i: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        images, labels = batch
        square = tf.reshape(images, [-1, 28, 28, 1])
        key = tf.stack([tf.constant(seed, tf.int64), i])
        out = augment_batch(square, key, aug)
        return tf.reshape(out, [-1, *shape]), labels

    if aug.active:
        data = data.map(step, num_parallel_calls=1, deterministic=True)
    else:
        data = data.map(lambda i, b: b)
    return data.prefetch(2)
