"""Scores written into model cards: accuracy, ROC AUC, confusion matrix, baseline."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, log_loss, roc_auc_score

from app.artifacts import Metrics

BASELINE = "logistic regression on the same encoded features"
CEILING = (
    "scikit-learn HistGradientBoostingClassifier (defaults, early stopping on 10% of "
    "the training split) on the same encoded features and split"
)
BASELINE_MAX_ROWS = 20_000  # enough for a fair linear baseline, quick on MNIST


def class_probabilities(raw: np.ndarray) -> np.ndarray:
    """A sigmoid's single column becomes ``[P(negative), P(positive)]``."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 2 and raw.shape[1] == 1:
        return np.hstack([1.0 - raw, raw])
    return raw


def score(probabilities: np.ndarray, labels: np.ndarray) -> Metrics:
    n_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    auc: float | None = None
    if n_classes == 2 and len(np.unique(labels)) == 2:
        auc = float(roc_auc_score(labels, probabilities[:, 1]))
    clipped = np.clip(probabilities, 1e-7, 1.0)
    return Metrics(
        accuracy=float((predicted == labels).mean()),
        roc_auc=auc,
        loss=float(
            log_loss(labels, clipped / clipped.sum(1, keepdims=True), labels=range(n_classes))
        ),
        rows=len(labels),
        confusion_matrix=confusion_matrix(labels, predicted, labels=range(n_classes)).tolist(),
    )


def majority_accuracy(train_labels: np.ndarray, test_labels: np.ndarray) -> float:
    """Accuracy of always answering the most common training class."""
    majority = np.bincount(train_labels).argmax()
    return float((test_labels == majority).mean())


def baseline(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> Metrics:
    """A simple model on the same features, so the card shows what the network adds."""
    rows = np.random.default_rng(seed).permutation(len(y_train))[:BASELINE_MAX_ROWS]
    flat_train = x_train[rows].reshape(len(rows), -1)
    model = LogisticRegression(max_iter=300)
    model.fit(flat_train, y_train[rows])
    proba = np.zeros((len(y_test), int(max(y_train.max(), y_test.max())) + 1))
    proba[:, model.classes_] = model.predict_proba(x_test.reshape(len(x_test), -1))
    return score(proba, y_test)


def gradient_boosted(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, seed: int
) -> Metrics:
    """What trees make of the same inputs: a reference for how much the features allow."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(early_stopping=True, random_state=seed)
    model.fit(x_train.reshape(len(x_train), -1), y_train)
    proba = np.zeros((len(y_test), int(max(y_train.max(), y_test.max())) + 1))
    proba[:, model.classes_] = model.predict_proba(x_test.reshape(len(x_test), -1))
    return score(proba, y_test)
