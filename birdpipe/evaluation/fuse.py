"""The ``fuse`` stage's work: fusion with BirdNET and per-species thresholds, fitted on validation data only.

What it fits depends on the bundle:

- with ``model.fusion.method: birdnet``, for whole recordings: the recording-level late fusion of
  :mod:`birdpipe.evaluation.fusion` (pooling and weight chosen on the val recordings by F1-macro; a multi-label
  model's aggregated scores are normalised to one distribution first, since a summary names one species);
- and for a multi-label model, for windows: the window-level fusion in logit space, its weight chosen by cmAP
  on the val soundscapes (by F1-macro on the val recordings when there are no soundscapes), which gives the
  window and segment scores (soundscapes, predict's detections);
- with soundscapes: per-species detection thresholds on the val soundscapes' final scores (fused, or gated
  for a softmax model) for ``soundscapes.target_precision`` (:mod:`birdpipe.evaluation.thresholds`).

The result is ``models/fusion/``: ``fusion.json`` (what evaluate and predict apply) and ``thresholds.csv``.
Train never reads validation scores of the fused model, and nothing here reads test data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdpipe.bundle import Bundle
from birdpipe.common.params import Params
from birdpipe.data.windows import EvalWindows
from birdpipe.evaluation.evaluate import recording_windows_logits, window_probabilities
from birdpipe.evaluation.fusion import absent_logit, cross_fit_fusion, fit_fusion, fuse_as_fitted, fuse_window_scores
from birdpipe.evaluation.metrics import classification_metrics, recording_probabilities
from birdpipe.evaluation.soundscape_metrics import soundscape_metrics
from birdpipe.evaluation.thresholds import fit_thresholds
from birdpipe.features.cache import FeatureCache


@dataclass
class SoundscapeData:
    """What the soundscapes stage leaves for scoring: the feature cache, segments and their truth."""

    cache: Any  # birdpipe.soundscapes.features.SoundscapeCache
    segments: pd.DataFrame
    truth: np.ndarray

    def split(self, name: str) -> tuple[pd.DataFrame, np.ndarray]:
        rows = (self.segments["split"] == name).to_numpy()
        return self.segments[rows].reset_index(drop=True), self.truth[rows]


def open_soundscapes(root: str | Path = "data/soundscapes") -> SoundscapeData | None:
    """The soundscapes stage's output, or None when ``soundscapes.source`` is none."""
    from birdpipe.soundscapes.features import SoundscapeCache

    root = Path(root)
    if not (root / "segments.csv").is_file():
        return None
    segments = pd.read_csv(root / "segments.csv", dtype={"file": str}, keep_default_na=False)
    return SoundscapeData(SoundscapeCache.open(root / "features"), segments, np.load(root / "truth.npy"))


@dataclass
class ValWindows:
    """The model's scores for every window of the val recordings (one inference pass, shared by both fusions)."""

    recordings: pd.DataFrame
    dataset: EvalWindows
    scores: np.ndarray


def _val_windows(bundle: Bundle, cache: FeatureCache, params: Params, device: str) -> ValWindows:
    val = cache.recordings("val")
    dataset = EvalWindows(cache.arrays["val"], val, bundle.window_frames, bundle.hop_frames)
    scores = window_probabilities(bundle.model, dataset, params.evaluate.batch_size, device, "fuse: val",
                                  bundle.multilabel)  # fmt: skip
    return ValWindows(val, dataset, scores)


def _recording_fusion(
    bundle: Bundle, cache: FeatureCache, params: Params, val_windows: Callable[[], ValWindows]
) -> dict[str, Any]:
    known = cache.birdnet_known
    if known is None or not known.any():
        return {"applicable": False, "reason": "BirdNET knows none of the species; predictions are the model's own"}
    windows = val_windows()
    val, dataset = windows.recordings, windows.dataset
    probs = recording_probabilities(windows.scores, dataset.window_recording, len(val), bundle.info["aggregate"],
                                    bundle.info.get("topk", 3), bundle.multilabel)  # fmt: skip
    options = params.model.fusion
    logits, bounds = cache.birdnet_logits["val"], val[["start", "stop"]].to_numpy()
    labels = val["label_index"].to_numpy()
    fusion, scores = fit_fusion(probs, logits, bounds, known, labels, options.poolings, options.weights)
    honest = cross_fit_fusion(probs, logits, bounds, known, labels, options.poolings, options.weights, seed=params.seed)
    return {"applicable": True, **fusion.to_dict(), "val_candidates": scores, "cross_fit": honest}


def _window_weight_on_recordings(bundle: Bundle, cache: FeatureCache, params: Params, windows: ValWindows
                                 ) -> dict[str, Any]:  # fmt: skip
    """The window fusion weight by F1-macro of the aggregated fused windows on val recordings (no soundscapes)."""
    val, dataset, scores = windows.recordings, windows.dataset, windows.scores
    logits = recording_windows_logits(cache, "val", dataset, bundle.window_frames)
    counts, labels = np.ones(len(bundle.species)), val["label_index"].to_numpy()
    absent = _absent_logit(logits, cache.birdnet_known, params)
    candidates = {}
    for weight in params.model.fusion.weights:
        fused = fuse_window_scores(scores, logits, cache.birdnet_known, weight, absent)
        probs = recording_probabilities(fused, dataset.window_recording, len(val), bundle.info["aggregate"],
                                        bundle.info.get("topk", 3), multilabel=True)  # fmt: skip
        candidates[f"w={weight:g}"] = classification_metrics(labels, probs, counts, 1)["f1_macro"]
    return {"fitted_on": "val recordings (F1-macro)", "absent_logit": absent, "candidates": candidates}


def _window_weight_on_soundscapes(windows: Any, segments: pd.DataFrame, truth: np.ndarray, known: np.ndarray,
                                  params: Params) -> dict[str, Any]:  # fmt: skip
    absent = _absent_logit(windows.birdnet_logits, known, params)
    candidates = {}
    for weight in params.model.fusion.weights:
        fused = fuse_window_scores(windows.scores, windows.birdnet_logits, known, weight, absent)
        candidates[f"w={weight:g}"] = soundscape_metrics(truth, windows.segment_scores(segments, fused))["cmap"]
    return {"fitted_on": "val soundscapes (cmAP)", "absent_logit": absent, "candidates": candidates}


def _absent_logit(logits: np.ndarray, known: np.ndarray, params: Params) -> float | None:
    """BirdNET's vote for the species it lacks (model.fusion.unknown_species: absent), from the val windows."""
    return absent_logit(logits, known) if params.model.fusion.unknown_species == "absent" else None


def _best(candidates: dict[str, float]) -> float:
    """The weight with the best validation score; ties go to the higher weight (more of the trained model)."""
    ranked = sorted(candidates.items(), key=lambda item: (np.nan_to_num(item[1], nan=-1.0), float(item[0][2:])))
    return float(ranked[-1][0][2:])


def fit_fuse(
    bundle: Bundle, cache: FeatureCache, soundscapes: SoundscapeData | None, params: Params, device: str
) -> tuple[dict[str, Any], pd.DataFrame | None]:
    """``fusion.json`` content and the per-species thresholds table (None without soundscapes)."""
    from birdpipe.soundscapes.scoring import model_windows

    fusion: dict[str, Any] = {"recording": None, "window": None, "thresholds": None}
    val_windows = functools.cache(lambda: _val_windows(bundle, cache, params, device))  # computed at most once
    birdnet_fusion = params.model.fusion.method == "birdnet"
    known = cache.birdnet_known
    if birdnet_fusion:  # whole recordings: one species named, a multi-label model's scores normalised first
        fusion["recording"] = _recording_fusion(bundle, cache, params, val_windows)
    windows = segments = truth = None
    if soundscapes is not None:
        segments, truth = soundscapes.split("val")
        windows = model_windows(bundle, soundscapes.cache, "val", params.evaluate.batch_size, device)
    if birdnet_fusion and bundle.multilabel:
        if known is None or not known.any():
            fusion["window"] = {"applicable": False, "reason": "BirdNET knows none of the species"}
        else:
            if windows is not None:
                fitted = _window_weight_on_soundscapes(windows, segments, truth, known, params)
            else:
                fitted = _window_weight_on_recordings(bundle, cache, params, val_windows())
            fusion["window"] = {"applicable": True, "weight": _best(fitted["candidates"]), **fitted}
    if windows is None:
        return fusion, None
    scores = windows.scores
    window_fusion = fusion["window"] or {}
    if window_fusion.get("applicable"):
        scores = fuse_as_fitted(scores, windows.birdnet_logits, known, window_fusion)
    sp = params.soundscapes
    table = fit_thresholds(truth, windows.segment_scores(segments, scores), bundle.species, sp.target_precision,
                           sp.min_positives, sp.threshold_rule)  # fmt: skip
    fusion["thresholds"] = {
        "target_precision": sp.target_precision,
        "min_positives": sp.min_positives,
        "rule": sp.threshold_rule,
        "values": dict(zip(table["species"], table["threshold"].astype(float), strict=True)),
    }
    return fusion, table
