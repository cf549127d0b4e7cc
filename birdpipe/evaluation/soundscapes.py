"""Evaluation on soundscapes: BirdSet's segment metrics and detections at the per-species thresholds.

For val and test soundscapes, per 5 s segment: the bundle's final scores (fused with BirdNET when it was
fitted, gated for a softmax model), the trained model alone beside a fused one, and BirdNET zero-shot on
the same segments. cmAP, AUROC and T1 need no threshold; precision, recall, F1 and the share of bird-free
segments (no label-set species) with any detection are measured at per-species thresholds chosen on val
(the bundle's for the model; the same rule fitted on val for BirdNET, so both get the same chance).
Metric names are stable for ``dvc metrics diff``: ``soundscape.test.cmap``, ``soundscape.test.birdnet_zero_shot.cmap``.
When BirdNET knows some of the species and lacks others, each score also gets the cmAP of either group
(``cmap_birdnet_known``, ``cmap_birdnet_unknown``): BirdNET zero-shot can rank only the first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from birdpipe.bundle import Bundle
from birdpipe.common.params import Params
from birdpipe.evaluation.fuse import SoundscapeData
from birdpipe.evaluation.soundscape_metrics import per_species_table, pr_curves, soundscape_metrics
from birdpipe.evaluation.thresholds import detection_metrics, fit_thresholds

SPLITS = ("val", "test")
DETECTION_KEYS = ("precision", "recall", "f1", "f1_macro", "empty_detection_rate", "empty_segments", "detections")


def _scored(truth: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None, known: np.ndarray) -> dict[str, Any]:
    both_groups = known.any() and not known.all()  # the cmAP of each says where a gain over BirdNET comes from
    metrics: dict[str, Any] = dict(soundscape_metrics(truth, scores, known if both_groups else None))
    if thresholds is not None:
        detection = detection_metrics(truth, scores, thresholds)
        metrics.update({k: detection[k] for k in DETECTION_KEYS})
    return metrics


def evaluate_soundscapes(bundle: Bundle, data: SoundscapeData, params: Params, device: str) -> dict[str, Any]:
    """Metrics per split, and the test tables (per species, PR curves) for the final scores and BirdNET."""
    from birdpipe.soundscapes.scoring import birdnet_windows, fused_windows, model_windows

    species = bundle.species
    if list(data.cache.species) != species:
        raise ValueError(
            "the soundscape features were built for another label set than the model's species: rerun "
            "`dvc repro soundscapes`"
        )
    known = data.cache.birdnet_known
    window_fusion = bundle.window_fusion
    final, alone, zero_shot, truths = {}, {}, {}, {}
    for split in SPLITS:
        segments, truth = data.split(split)
        windows = model_windows(bundle, data.cache, split, params.evaluate.batch_size, device)
        alone[split] = windows.segment_scores(segments)
        if window_fusion:
            final[split] = windows.segment_scores(segments, fused_windows(windows, known, window_fusion))
        else:
            final[split] = alone[split]
        zero_shot[split] = birdnet_windows(data.cache, split).segment_scores(segments)
        truths[split] = truth
    sp = params.soundscapes
    birdnet_thresholds = None
    if known.any() and truths["val"].any():
        fitted = fit_thresholds(
            truths["val"], zero_shot["val"], species, sp.target_precision, sp.min_positives, sp.threshold_rule
        )
        birdnet_thresholds = fitted["threshold"].to_numpy()
    metrics: dict[str, Any] = {}
    for split in SPLITS:
        metrics[split] = _scored(truths[split], final[split], bundle.thresholds, known)
        if window_fusion:
            metrics[split]["model_alone"] = _scored(truths[split], alone[split], None, known)
        if known.any():
            metrics[split]["birdnet_zero_shot"] = _scored(truths[split], zero_shot[split], birdnet_thresholds, known)
    test_truth = truths["test"]
    table = per_species_table(test_truth, final["test"], species, bundle.thresholds)
    if known.any():
        birdnet_table = per_species_table(test_truth, zero_shot["test"], species, birdnet_thresholds)
        table["birdnet_ap"] = birdnet_table["ap"].to_numpy()
        table["birdnet_known"] = known
    curves = pr_curves(test_truth, final["test"], species).assign(model="model")
    if known.any():
        micro = pr_curves(test_truth, zero_shot["test"], species)
        curves = pd.concat([curves, micro[micro["curve"] == "micro"].assign(model="birdnet_zero_shot")])
    return {"metrics": {"soundscape": metrics}, "per_species": table, "curves": curves}
