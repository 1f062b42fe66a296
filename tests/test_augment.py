"""Digit augmentation (training only, seeded) and the robustness suite's shifts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.encoding.image import SIDE
from training.robustness import (
    SHIFTS,
    blurred,
    canvas_set,
    evaluate,
    inverted_upload,
    off_centre,
    rotated,
    scaled,
    thick,
    thin,
)

pytestmark = pytest.mark.slow


def digits(n: int = 6) -> np.ndarray:
    """MNIST-like white-on-black strokes, centred in 28x28, no dataset needed."""
    out = []
    for k in range(n):
        image = Image.new("L", (SIDE, SIDE), 0)
        draw = ImageDraw.Draw(image)
        draw.line([(8, 6), (20, 6), (12 + k % 3, 22)], fill=255, width=2 + k % 2)
        out.append(np.asarray(image, dtype=np.float32))
    return np.stack(out)


def ink_extent(image: np.ndarray) -> int:
    rows, cols = np.nonzero(image > 64)
    return int(max(rows.max() - rows.min(), cols.max() - cols.min()) + 1)


# ------------------------------------------------------------------ augmentation
@pytest.fixture(scope="module")
def tf():  # type: ignore[no-untyped-def]
    import tensorflow

    return tensorflow


def test_no_augmentation_is_the_identity(tf) -> None:  # type: ignore[no-untyped-def]
    from training.augment import NONE, augment_batch

    x = digits()[..., None] / 255.0
    out = augment_batch(tf.constant(x, tf.float32), tf.constant([0, 1], tf.int64), NONE)
    np.testing.assert_allclose(out.numpy(), x, atol=1e-6)


def test_augmentation_is_seeded_bounded_and_varied(tf) -> None:  # type: ignore[no-untyped-def]
    from training.augment import augment_batch
    from training.search_digits import STRONG

    x = tf.constant(digits()[..., None] / 255.0, tf.float32)
    a = augment_batch(x, tf.constant([7, 3], tf.int64), STRONG).numpy()
    b = augment_batch(x, tf.constant([7, 3], tf.int64), STRONG).numpy()
    c = augment_batch(x, tf.constant([7, 4], tf.int64), STRONG).numpy()
    np.testing.assert_array_equal(a, b)  # same seed and batch number: same images
    assert np.abs(a - c).mean() > 1e-3  # the next batch gets fresh draws
    assert a.min() >= 0.0 and a.max() <= 1.0
    assert np.abs(a - x.numpy()).mean() > 1e-3


def test_training_dataset_keeps_the_network_input_shape(tf) -> None:  # type: ignore[no-untyped-def]
    from training.augment import training_dataset
    from training.search_digits import MILD

    flat = (digits(8) / 255.0).reshape(8, -1).astype(np.float32)
    labels = np.arange(8)
    batches = training_dataset(flat, labels, 4, seed=0, aug=MILD).take(3)
    shapes = [tuple(x.shape) for x, _ in batches]
    assert shapes == [(4, 784)] * 3
    first = [x.numpy() for x, _ in training_dataset(flat, labels, 4, 0, MILD).take(2)]
    again = [x.numpy() for x, _ in training_dataset(flat, labels, 4, 0, MILD).take(2)]
    for one, two in zip(first, again, strict=True):
        np.testing.assert_array_equal(one, two)


# -------------------------------------------------------------------- the suite
def test_geometric_shifts_do_what_they_say() -> None:
    x = digits(2)
    assert ink_extent(scaled(x, 0.7)[0]) < ink_extent(x[0]) < ink_extent(scaled(x, 1.3)[0])
    turned = rotated(x, 20)
    assert np.abs(turned - x).mean() > 5 and turned.sum() == pytest.approx(x.sum(), rel=0.1)
    np.testing.assert_allclose(rotated(x, 0), x, atol=1e-3)


def test_stroke_shifts_change_the_ink() -> None:
    x = digits(2)
    assert thick(x).sum() > 1.3 * x.sum()
    assert thin(x).sum() < 0.8 * x.sum()
    soft = blurred(x)
    assert soft.max() < x.max() and soft.sum() == pytest.approx(x.sum(), rel=0.05)


def test_prepared_shifts_undo_placement_and_polarity() -> None:
    from app.encoding.image import prepare_pixels

    x = digits(3)
    reference = np.stack([prepare_pixels(i) for i in x])
    np.testing.assert_array_equal(off_centre(x, seed=1), reference)
    np.testing.assert_array_equal(inverted_upload(x), reference)


def test_canvas_digits_are_seeded_labelled_and_prepared() -> None:
    a, labels = canvas_set(seed=3, per_class=2)
    b, _ = canvas_set(seed=3, per_class=2)
    assert a.shape == (20, SIDE, SIDE) and labels.tolist() == sorted(list(range(10)) * 2)
    np.testing.assert_array_equal(a, b)
    assert all(image.max() == 255 for image in a)


def test_evaluate_scores_every_shift_separately() -> None:
    x = digits(4)
    y = np.array([0, 0, 0, 1])
    scores = evaluate(lambda images: np.zeros(len(images), dtype=int), x, y, seed=0)
    assert list(scores) == ["clean", *SHIFTS, "canvas strokes, uploaded"]
    assert scores["clean"] == scores["rotate +20"] == 0.75
    assert scores["canvas strokes, uploaded"] == pytest.approx(0.1)
