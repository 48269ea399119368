"""Quality metrics with Kenning's names, from class scores and labels; and which runs are on the
Pareto front of (inference time, quality, size)."""

from __future__ import annotations

from typing import Any

import numpy as np

QUALITY = ("accuracy", "mean_precision", "mean_sensitivity", "g_mean", "top_5_accuracy")


def pareto_flags(metrics: list[dict[str, Any]]) -> list[bool]:
    """For each run's metrics: no other run is at least as good on inference time, quality (the
    first quality metric every run has) and size, and better on one."""
    timed = [m for m in metrics if "inferencetime_mean" in m]  # (disable_performance_measurements: not timed)
    quality = next((q for q in QUALITY if all(q in m for m in timed)), None)

    def key(m):
        return m["inferencetime_mean"], -m[quality] if quality else 0.0, m["compiled_model_size"]
    keys = [key(m) for m in timed]
    return [m in timed and not any(all(a <= b for a, b in zip(o, key(m))) and o != key(m) for o in keys)
            for m in metrics]


def classification_metrics(scores: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[dict[str, float], list]:
    """accuracy, mean_precision, mean_sensitivity, g_mean, top_5_accuracy; and the confusion matrix
    (rows: true class, columns: predicted)."""
    predicted = np.argmax(scores, axis=1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positive = np.diag(confusion).astype(np.float64)
    predicted_count = confusion.sum(axis=0)
    actual_count = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted_count, out=np.zeros(num_classes), where=predicted_count > 0)
    sensitivity = np.divide(true_positive, actual_count, out=np.zeros(num_classes), where=actual_count > 0)
    present = actual_count > 0
    top5 = np.argsort(-scores, axis=1)[:, :5]
    metrics = {
        "accuracy": float(np.mean(predicted == labels)),
        "mean_precision": float(np.mean(precision[present])),
        "mean_sensitivity": float(np.mean(sensitivity[present])),
        "g_mean": float(np.prod(sensitivity[present]) ** (1.0 / max(1, int(present.sum())))),
        "top_5_accuracy": float(np.mean([labels[i] in top5[i] for i in range(len(labels))])),
    }
    return metrics, confusion.tolist()
