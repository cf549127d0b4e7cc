"""Per-species detection thresholds chosen on validation soundscapes, and detection metrics at them.

A detection is ``score >= threshold``. Thresholds lie in (0, 1]; 1.0 means the species is never detected
(strictly: only a score of exactly 1.0, which a float32 sigmoid reaches for logits above about 17, would
still count). ``fit_thresholds`` picks one threshold per species, aiming at a precision of
``target_precision`` (the share of detections that are correct), by one of two rules (``rule``,
``soundscapes.threshold_rule``):

- ``calibration`` (the default): rule 2 for every species (its own curve with at least ``min_positives``
  positives, the pooled curve otherwise). It reads the target as the precision expected of new
  detections, so it holds up on new recordings: on xc_puerto_rico (mixed soundscapes, split seeds 0-2)
  cross-fitting over val soundscape files, rule 1's thresholds reached a held-out precision below the
  target while calibration's reached it (README, "Soundscapes").
- ``precision``: rule 1, with rule 2 where it cannot apply.

1. ``precision``: for a species with at least ``min_positives`` positive segments, the lowest threshold at
   which the precision of its detections on the given data reaches ``target_precision``. Lowest means most
   recall among the thresholds meeting the target. Precision is not monotone in the threshold, so a
   higher threshold can have a lower precision, and the precision reached on the data the threshold was
   chosen on is optimistic: expect less on new recordings. When no threshold reaches the target, rule 2
   applies to the species.
2. ``calibration``: Wood & Kahl (2024, J. Ornithol., "Guidelines for appropriate use of BirdNET scores
   and other detector outputs"): a logistic regression of presence on logit(score) (scores clipped to
   [1e-6, 1 - 1e-6]) models the probability that a detection at a given score is correct; the threshold
   is the score at which that probability equals ``target_precision``. Fitted on the species' own
   segments when it has at least ``min_positives`` positives, otherwise on the (segment, species) pairs of
   all species pooled, one curve for all such species (``calibration_pooled``).
   The fit uses scikit-learn's default mild L2 penalty on the slope, which keeps it finite when the
   scores separate presence from absence perfectly (an unpenalised fit has no finite solution there).
3. ``none``: when the fitted slope is <= 0 (higher scores are not more often correct) or the data hold no
   positive at all, the threshold is 1.0: the species is never detected.

Thresholds are clamped into [1e-6, 1]. ``val_precision`` / ``val_recall`` are measured at the final
threshold on the given data with the same counting as ``detection_metrics`` (NaN precision without
detections). The fit is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import precision_recall_curve

from birdpipe.evaluation.soundscape_metrics import check_inputs, detect, detection_counts, precision_recall_f1

EPS = 1e-6
RULES = ("calibration", "precision")


def _precision_threshold(truth: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """Lowest score t whose detections (score >= t) have precision >= target; None if none does."""
    precision, _, thresholds = precision_recall_curve(truth, scores)
    reached = np.flatnonzero(precision[:-1] >= target)  # the last point (recall 0) has no threshold
    return float(thresholds[reached[0]]) if reached.size else None


def _calibrated_threshold(truth: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """Score at which the logistic fit of presence on logit(score) equals target; None if unusable."""
    if not truth.any():
        return None
    if truth.all():
        raise ValueError("calibration needs absent segments, but every segment holds the species")
    x = logit(np.clip(scores, EPS, 1 - EPS)).reshape(-1, 1)
    model = LogisticRegression().fit(x, truth)
    slope, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
    if slope <= 0:
        return None
    return float(expit((logit(target) - intercept) / slope))


def fit_thresholds(
    truth: np.ndarray,
    scores: np.ndarray,
    species: Sequence[str],
    target_precision: float = 0.9,
    min_positives: int = 5,
    rule: str = "calibration",
) -> pd.DataFrame:
    """One row per species: ``species, threshold, method, val_positives, val_precision, val_recall``.

    Rules in the module docstring (``rule``: ``calibration`` or ``precision``); ``method`` is ``precision``,
    ``calibration``, ``calibration_pooled`` or ``none``.
    """
    truth, scores = check_inputs(truth, scores, species)
    if not 0 < target_precision < 1:
        raise ValueError(f"target_precision must be in (0, 1), got {target_precision}")
    if min_positives < 1:
        raise ValueError(f"min_positives must be >= 1, got {min_positives}")
    if rule not in RULES:
        raise ValueError(f"threshold rule must be one of {RULES}, got {rule!r}")
    positives = truth.sum(axis=0)
    pooled = None
    if (positives < min_positives).any():
        pooled = _calibrated_threshold(truth.ravel(), scores.ravel(), target_precision)
    thresholds, methods = [], []
    for c in range(truth.shape[1]):
        if positives[c] >= min_positives:
            threshold, method = None, "precision"
            if rule == "precision":
                threshold = _precision_threshold(truth[:, c], scores[:, c], target_precision)
            if threshold is None:
                threshold = _calibrated_threshold(truth[:, c], scores[:, c], target_precision)
                method = "calibration"
        else:
            threshold, method = pooled, "calibration_pooled"
        if threshold is None:
            threshold, method = 1.0, "none"
        thresholds.append(threshold)
        methods.append(method)
    thresholds = np.clip(np.array(thresholds), EPS, 1.0)
    precision, recall, _ = precision_recall_f1(*detection_counts(truth, detect(scores, thresholds)))
    return pd.DataFrame(
        {
            "species": list(species),
            "threshold": thresholds,
            "method": methods,
            "val_positives": positives,
            "val_precision": precision,
            "val_recall": recall,
        }
    )


def detection_metrics(truth: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """Detection quality at per-species thresholds (array (species,)), a detection being score >= threshold.

    ``precision``, ``recall``, ``f1``: micro over all (segment, species) pairs; ``f1_macro``: mean F1 over
    species with >= 1 positive; ``empty_detection_rate``: share of segments without any positive that hold
    at least one detection (false alarms on birdless segments), over ``empty_segments`` such segments;
    ``detections``: the number of detections; ``species_precision`` / ``species_recall`` / ``species_f1`` /
    ``species_support`` (positive segments): per-species lists in column order. Undefined values (no
    detections, no positives) are NaN, which a JSON writer must map itself.
    """
    truth, scores = check_inputs(truth, scores)
    detected = detect(scores, thresholds)
    tp, fp, fn = detection_counts(truth, detected)
    precision, recall, f1 = precision_recall_f1(tp.sum(), fp.sum(), fn.sum())
    species_precision, species_recall, species_f1 = precision_recall_f1(tp, fp, fn)
    support = tp + fn
    empty = ~truth.any(axis=1)
    empty_hit = detected[empty].any(axis=1)
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "f1_macro": float(species_f1[support > 0].mean()) if (support > 0).any() else float("nan"),
        "empty_detection_rate": float(empty_hit.mean()) if empty_hit.size else float("nan"),
        "empty_segments": int(empty.sum()),
        "detections": int((tp + fp).sum()),
        "species_precision": species_precision.tolist(),
        "species_recall": species_recall.tolist(),
        "species_f1": species_f1.tolist(),
        "species_support": support.tolist(),
    }
