"""Soundscape scoring as the BirdSet benchmark defines it (Rauch et al. 2024).

A soundscape is a long field recording cut into 5 s segments; each segment may hold several species or
none. ``truth`` is a bool array (segments, species), ``scores`` a float array of the same shape in [0, 1]
(sigmoid scores, higher = more confident).

- ``cmap``: class-wise mean average precision, the mean of the per-species AP over species with at least
  one positive segment (AP is undefined without positives; BirdSet drops those species).
- ``auroc``: macro AUROC over species with at least one positive and one negative segment.
- ``t1``: top-1 accuracy over segments with at least one bird: the share whose highest-scored species is
  present (ties go to the first species index, as ``argmax``).

AP and AUROC come from torchmetrics, which casts scores to float32: scores that differ only below float32
resolution count as ties there (model outputs are float32 already, so this matters only for synthetic
float64 inputs). For a species without positives torchmetrics returns AP -0.0 and AUROC 0.0 with a
UserWarning (AUROC likewise for a species without negatives); these values are masked out here and the
warnings are suppressed, so the results do not depend on torchmetrics' fill values.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_curve
from torchmetrics.classification import MultilabelAUROC, MultilabelAveragePrecision

# torchmetrics' warnings for a species without positives / negatives, whose output is masked out anyway.
_UNDEFINED_WARNINGS = r"No (positive|negative) samples"


def check_inputs(
    truth: np.ndarray, scores: np.ndarray, species: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``truth`` as bool and ``scores`` as float64, both (segments, species); raises on malformed input.

    Scores outside [0, 1] are refused because torchmetrics would silently take them for logits.
    """
    truth = np.asarray(truth)
    scores = np.asarray(scores, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != scores.shape:
        raise ValueError(f"truth {truth.shape} and scores {scores.shape} must be equal 2-D shapes")
    if truth.dtype != bool:
        if not np.isin(truth, (0, 1)).all():
            raise ValueError("truth must be bool or 0/1")
        truth = truth.astype(bool)
    if not ((scores >= 0.0) & (scores <= 1.0)).all():
        raise ValueError("scores must be in [0, 1] (no NaN)")
    if species is not None and len(species) != truth.shape[1]:
        raise ValueError(f"{len(species)} species names for {truth.shape[1]} score columns")
    return truth, scores


def _per_species_ap_auroc(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP (NaN without positives) and AUROC (NaN without positives or negatives) per species."""
    positives = truth.sum(axis=0)
    n_segments, n_species = truth.shape
    if n_species == 1:  # torchmetrics' multilabel metrics need two labels; a copy leaves column 0 unchanged
        truth, scores = np.repeat(truth, 2, axis=1), np.repeat(scores, 2, axis=1)
    preds = torch.from_numpy(scores)
    target = torch.from_numpy(truth.astype(np.int64))
    n_labels = truth.shape[1]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_UNDEFINED_WARNINGS, category=UserWarning)
        ap = MultilabelAveragePrecision(num_labels=n_labels, average=None)(preds, target)
        auroc = MultilabelAUROC(num_labels=n_labels, average=None)(preds, target)
    ap = ap.double().numpy()[:n_species]
    auroc = auroc.double().numpy()[:n_species]
    ap = np.where(positives > 0, ap, np.nan)
    auroc = np.where((positives > 0) & (positives < n_segments), auroc, np.nan)
    return ap, auroc


def _mean_defined(values: np.ndarray) -> float:
    """The mean over the defined (finite) values; NaN when none is."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def soundscape_metrics(
    truth: np.ndarray, scores: np.ndarray, known: np.ndarray | None = None
) -> dict[str, float | int]:
    """cmAP, macro AUROC and T1 over segments, plus the counts they average over.

    Keys: ``cmap``, ``auroc``, ``t1``, ``segments``, ``bird_segments`` (>= 1 positive), ``species``
    (scored for cmAP: >= 1 positive), ``auroc_species`` (>= 1 positive and >= 1 negative). With ``known``
    (which species BirdNET knows, a bool per species) also ``cmap_birdnet_known`` and ``cmap_birdnet_unknown``,
    the cmAP over either group: where a fused model's gain over BirdNET comes from, since BirdNET zero-shot can
    only rank the species it knows. A metric with nothing to average over (no positive at all, no species with
    both classes, an empty group) is NaN; NaN is not valid JSON, so a caller writing metrics files must map it
    (e.g. to null) itself.
    """
    truth, scores = check_inputs(truth, scores)
    if known is not None:
        known = np.asarray(known, dtype=bool)
        if known.shape != (truth.shape[1],):
            raise ValueError(f"known has shape {known.shape}, expected ({truth.shape[1]},)")
    ap, auroc = _per_species_ap_auroc(truth, scores)
    birds = truth.any(axis=1)
    top1_present = truth[birds, scores[birds].argmax(axis=1)]
    metrics: dict[str, float | int] = {
        "cmap": _mean_defined(ap),
        "auroc": _mean_defined(auroc),
        "t1": float(top1_present.mean()) if top1_present.size else float("nan"),
        "segments": int(truth.shape[0]),
        "bird_segments": int(birds.sum()),
        "species": int(np.isfinite(ap).sum()),
        "auroc_species": int(np.isfinite(auroc).sum()),
    }
    if known is not None:
        metrics["cmap_birdnet_known"] = _mean_defined(ap[known])
        metrics["cmap_birdnet_unknown"] = _mean_defined(ap[~known])
    return metrics


def detect(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Detections (segments, species): score >= the species' threshold.

    The single definition of a detection, shared by threshold fitting and detection metrics so that the
    precision reported at fitting time is the one evaluation computes on the same data.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (scores.shape[1],) or np.isnan(thresholds).any():
        raise ValueError(f"thresholds must be an array ({scores.shape[1]},) without NaN, got {thresholds.shape}")
    return scores >= thresholds


def detection_counts(truth: np.ndarray, detected: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives, false positives, false negatives per species."""
    tp = (detected & truth).sum(axis=0)
    fp = (detected & ~truth).sum(axis=0)
    fn = (~detected & truth).sum(axis=0)
    return tp, fp, fn


def precision_recall_f1(
    tp: np.ndarray | int, fp: np.ndarray | int, fn: np.ndarray | int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision (NaN without detections), recall (NaN without positives), F1 (NaN without either)."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return tp / (tp + fp), tp / (tp + fn), 2 * tp / (2 * tp + fp + fn)


def per_species_table(
    truth: np.ndarray, scores: np.ndarray, species: Sequence[str], thresholds: np.ndarray | None = None
) -> pd.DataFrame:
    """One row per species: ``species, positives, ap, auroc``; with ``thresholds`` (array (species,)) also
    ``threshold, precision, recall, f1, detections`` at score >= threshold. Undefined values are NaN."""
    truth, scores = check_inputs(truth, scores, species)
    ap, auroc = _per_species_ap_auroc(truth, scores)
    table = pd.DataFrame({"species": list(species), "positives": truth.sum(axis=0), "ap": ap, "auroc": auroc})
    if thresholds is not None:
        tp, fp, fn = detection_counts(truth, detect(scores, thresholds))
        precision, recall, f1 = precision_recall_f1(tp, fp, fn)
        table["threshold"] = np.asarray(thresholds, dtype=np.float64)
        table["precision"], table["recall"], table["f1"] = precision, recall, f1
        table["detections"] = tp + fp
    return table


def _thinned_curve(name: str, truth: np.ndarray, scores: np.ndarray, points: int) -> pd.DataFrame:
    precision, recall, _ = precision_recall_curve(truth, scores)
    precision, recall = precision[::-1], recall[::-1]  # recall ascending, from (0, 1) to full recall
    keep = np.unique(np.linspace(0, recall.size - 1, min(points, recall.size)).round().astype(int))
    return pd.DataFrame({"curve": name, "recall": recall[keep], "precision": precision[keep]})


def pr_curves(truth: np.ndarray, scores: np.ndarray, species: Sequence[str], points: int = 200) -> pd.DataFrame:
    """Precision-recall curves for plots: columns ``curve, recall, precision``, recall ascending.

    One curve per species with >= 1 positive (named by the species) and one micro-averaged curve over all
    (segment, species) pairs (named ``micro``), each thinned to at most ``points`` evenly spaced rows
    that keep both ends. Empty when there is no positive at all.
    """
    truth, scores = check_inputs(truth, scores, species)
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    curves = [
        _thinned_curve(name, truth[:, c], scores[:, c], points) for c, name in enumerate(species) if truth[:, c].any()
    ]
    if curves:
        curves.append(_thinned_curve("micro", truth.ravel(), scores.ravel(), points))
        return pd.concat(curves, ignore_index=True)
    return pd.DataFrame({"curve": pd.Series(dtype=object), "recall": [], "precision": []})
