"""Metrics with stable names (``dvc metrics diff`` compares experiments by them).

Macro averages run over the species present in the evaluated split (those with support), as the study
reported them; a prediction of another species still counts as an error. ``f1_rare`` / ``f1_common`` are
the macro F1 over species with fewer / at least ``evaluate.rare_threshold`` training recordings. ``map``
is the macro average precision (one species against the rest) over species with support.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_fscore_support

AGGREGATES = ("mean", "max", "topk_mean")


def aggregate(window_probs: np.ndarray, window_recording: np.ndarray, n_recordings: int, how: str = "mean",
              topk: int = 3, normalize: bool = True) -> np.ndarray:  # fmt: skip
    """Recording-level probabilities from window probabilities.

    ``mean``: average over the recording's windows; ``max``: per-species maximum, renormalised to sum 1;
    ``topk_mean``: per species, the mean of its ``topk`` highest window probabilities, renormalised.
    ``normalize`` False keeps independent per-species (sigmoid) scores as they are.
    """
    if how not in AGGREGATES:
        raise ValueError(f"unknown aggregate {how!r}; allowed: {', '.join(AGGREGATES)}")
    n_classes = window_probs.shape[1]
    out = np.zeros((n_recordings, n_classes), dtype=np.float64)
    order = np.argsort(window_recording, kind="stable")
    sorted_rec = window_recording[order]
    bounds = np.searchsorted(sorted_rec, np.arange(n_recordings + 1))
    for r in range(n_recordings):
        rows = window_probs[order[bounds[r] : bounds[r + 1]]].astype(np.float64)
        if rows.shape[0] == 0:
            raise ValueError(f"recording {r} has no windows")
        if how == "mean":
            out[r] = rows.mean(axis=0)
        elif how == "max":
            out[r] = rows.max(axis=0)
        else:
            k = min(topk, rows.shape[0])
            out[r] = -np.sort(-rows, axis=0)[:k].mean(axis=0)
    if how != "mean" and normalize:
        out /= out.sum(axis=1, keepdims=True)
    return out


def recording_probabilities(window_probs: np.ndarray, window_recording: np.ndarray, n_recordings: int, how: str,
                            topk: int = 3, multilabel: bool = False) -> np.ndarray:  # fmt: skip
    """One distribution over species per recording, the summary that names its species.

    A softmax model's window probabilities are aggregated (``how``) and renormalised; a multi-label model's
    window logits (logit of its sigmoid scores) are aggregated and turned into a distribution by a softmax, so
    the species whose windows score highest overall wins, as for a softmax model.
    """
    if not multilabel:
        return aggregate(window_probs, window_recording, n_recordings, how, topk)
    p = np.clip(np.asarray(window_probs, dtype=np.float64), 1e-6, 1.0 - 1e-6)
    logits = aggregate(np.log(p) - np.log1p(-p), window_recording, n_recordings, how, topk, normalize=False)
    logits -= logits.max(axis=1, keepdims=True)
    odds = np.exp(logits)
    return odds / odds.sum(axis=1, keepdims=True)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> float:
    if labels.size == 0:
        return float("nan")
    return float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, train_counts: np.ndarray, rare_threshold: int
) -> dict[str, Any]:
    """Accuracy, top-5 accuracy, F1-macro/weighted, mAP, rare/common F1 for labels and class probabilities."""
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    present = np.unique(y_true)
    n_classes = probs.shape[1]
    rare = present[train_counts[present] < rare_threshold]
    common = present[train_counts[present] >= rare_threshold]
    k = min(5, n_classes)
    top5 = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    onehot = np.eye(n_classes, dtype=bool)[y_true]
    ap = [average_precision_score(onehot[:, c], probs[:, c]) for c in present]
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "top5_accuracy": float(np.mean((top5 == y_true[:, None]).any(axis=1))),
        "f1_macro": _macro_f1(y_true, y_pred, present),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=present, average="weighted", zero_division=0)),
        "map": float(np.mean(ap)) if ap else float("nan"),
        "f1_rare": _macro_f1(y_true, y_pred, rare),
        "f1_common": _macro_f1(y_true, y_pred, common),
        "species": int(present.size),
        "rare_species": int(rare.size),
        "recordings": int(y_true.size),
    }


def per_class_table(
    y_true: np.ndarray, probs: np.ndarray, species: list[str], train_counts: np.ndarray
) -> list[dict[str, Any]]:
    """species, training count, precision, recall, F1, AP, support for every species of the model."""
    n_classes = len(species)
    y_pred = probs.argmax(axis=1)
    labels = np.arange(n_classes)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    onehot = np.eye(n_classes, dtype=bool)[y_true]
    rows = []
    for c in labels:
        ap = average_precision_score(onehot[:, c], probs[:, c]) if support[c] > 0 else float("nan")
        rows.append(
            {
                "species": species[c],
                "train_count": int(train_counts[c]),
                "precision": round(float(precision[c]), 6),
                "recall": round(float(recall[c]), 6),
                "f1": round(float(f1[c]), 6),
                "ap": round(float(ap), 6) if support[c] > 0 else None,
                "support": int(support[c]),
            }
        )
    return rows


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, species: list[str]) -> list[dict[str, Any]]:
    """Aggregated ``actual, predicted, count`` rows (not one row per sample), for DVC's confusion plot."""
    n = len(species)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return [
        {"actual": species[a], "predicted": species[p], "count": int(matrix[a, p])}
        for a, p in zip(*np.nonzero(matrix), strict=True)
    ]
