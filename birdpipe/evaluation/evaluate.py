"""Evaluation of a trained bundle on the cached val and test splits.

Per recording (the study's unit): window probabilities aggregated as the bundle says (``evaluate.aggregate``
when it was trained; the same code ``predict`` uses); per window: every window labelled with its recording's
species. Metric names are stable (``test.f1_macro``, ``test.window.f1_macro``, ...) so ``dvc metrics diff``
compares experiments.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import precision_recall_curve
from torch.utils.data import DataLoader
from tqdm import tqdm

from birdpipe.bundle import Bundle
from birdpipe.common.params import EvaluateParams
from birdpipe.data.windows import EvalWindows
from birdpipe.evaluation.metrics import (
    classification_metrics,
    confusion_counts,
    per_class_table,
    recording_probabilities,
)
from birdpipe.features.cache import FeatureCache

PR_POINTS = 400


@torch.no_grad()
def batch_probabilities(
    model: torch.nn.Module, x: torch.Tensor, device: torch.device | str, multilabel: bool = False
) -> np.ndarray:
    """Class probabilities of a batch of windows (batch, channels, bins, frames): a softmax over species, or with
    ``multilabel`` an independent sigmoid score per species."""
    logits = model(x.to(device, non_blocking=True)).float()
    return (torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)).cpu().numpy()


def window_probabilities(
    model: torch.nn.Module,
    dataset: EvalWindows,
    batch_size: int,
    device: str,
    desc: str = "evaluate",
    multilabel: bool = False,
) -> np.ndarray:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    parts = [
        batch_probabilities(model, x, device, multilabel)
        for x, _, _ in tqdm(loader, desc=desc, unit="batch", leave=False, disable=None)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, len(dataset.labels)), dtype=np.float32)


def evaluate_split(
    bundle: Bundle, cache: FeatureCache, split: str, params: EvaluateParams, device: str
) -> dict[str, Any]:
    """Recording- and window-level metrics and predictions for one split of the cache."""
    if cache.config != bundle.feature_config:
        raise ValueError("the feature cache was built with another feature config than the model was trained on")
    recordings = cache.recordings(split)
    dataset = EvalWindows(cache.arrays[split], recordings, bundle.window_frames, bundle.hop_frames)
    multilabel = bundle.multilabel
    window_probs = window_probabilities(bundle.model, dataset, params.batch_size, device, f"evaluate {split}",
                                        multilabel)  # fmt: skip
    window_recording = dataset.window_recording
    how, topk = bundle.info["aggregate"], bundle.info.get("topk", 3)  # the inference contract, as predict reads it
    probs = recording_probabilities(window_probs, window_recording, len(recordings), how, topk,
                                    multilabel)  # fmt: skip
    species = bundle.species
    train_counts = np.array([bundle.info["train_counts"][s] for s in species])
    y_true = recordings["label_index"].to_numpy()
    metrics = classification_metrics(y_true, probs, train_counts, params.rare_threshold)
    window_metrics = classification_metrics(y_true[window_recording], window_probs, train_counts, params.rare_threshold)
    metrics["window"] = {k: window_metrics[k] for k in ("accuracy", "top5_accuracy", "f1_macro", "f1_weighted", "map")}
    metrics["window"]["windows"] = len(window_probs)
    fused = None
    if (bundle.recording_fusion or {}).get("applicable"):  # the fused prediction is the result
        fused, zero_shot = fuse(probs, cache, split, recordings, bundle.recording_fusion)
    if fused is not None:  # each part alone beside the fused result; windows are scored by the model alone
        zero_shot_metrics = classification_metrics(y_true, zero_shot, train_counts, params.rare_threshold)
        parts = {"model": _headline(metrics), "birdnet_zero_shot": _headline(zero_shot_metrics)}
        window = metrics["window"]
        probs = fused
        metrics = classification_metrics(y_true, probs, train_counts, params.rare_threshold)
        metrics.update(window=window, parts=parts)
    return {
        "metrics": metrics,
        "probs": probs,
        "y_true": y_true,
        "recordings": recordings,
        "per_class": per_class_table(y_true, probs, species, train_counts),
        "confusion": confusion_counts(y_true, probs.argmax(axis=1), species),
    }


def recording_windows_logits(cache: FeatureCache, split: str, dataset: EvalWindows, window: int) -> np.ndarray:
    """BirdNET's logits for every evaluation window of a BirdNET cache: the highest over the window's frames."""
    logits = cache.birdnet_logits[split]
    rows = []
    for _, start, stop, offset in dataset.items:
        first, last = start + offset, min(start + offset + window, stop)
        rows.append(np.asarray(logits[first:last] if last > first else logits[start:stop]).max(axis=0))
    return np.stack(rows) if rows else np.zeros((0, logits.shape[1]), dtype=np.float32)


HEADLINE = ("accuracy", "f1_macro", "f1_weighted", "map", "f1_rare", "f1_common")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in HEADLINE if k in metrics}


def fuse(
    probs: np.ndarray, cache: FeatureCache, split: str, recordings: pd.DataFrame, fusion: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """Fused recording probabilities of a split, and BirdNET's zero-shot ones under the fitted pooling."""
    from birdpipe.birdnet.zero_shot import zero_shot_probs
    from birdpipe.evaluation.fusion import Fusion

    known = cache.birdnet_known
    fitted = Fusion.from_dict(fusion)
    pooled = fitted.pooled(cache.birdnet_logits[split], recordings[["start", "stop"]].to_numpy(), known)
    return fitted.probs(probs, pooled, known), zero_shot_probs(pooled, known)


def predictions_table(result: dict[str, Any], species: list[str], split: str, top: int = 3) -> pd.DataFrame:
    """One row per recording: true label, predicted label, confidence and the runners-up."""
    probs = result["probs"]
    order = np.argsort(-probs, axis=1, kind="stable")
    table = pd.DataFrame(
        {
            "id": result["recordings"]["id"].to_numpy(),
            "split": split,
            "label": result["recordings"]["label"].to_numpy(),
            "predicted": [species[i] for i in order[:, 0]],
            "confidence": np.round(probs[np.arange(len(probs)), order[:, 0]], 6),
        }
    )
    for rank in range(1, min(top, probs.shape[1])):
        table[f"top{rank + 1}"] = [species[i] for i in order[:, rank]]
        table[f"top{rank + 1}_confidence"] = np.round(probs[np.arange(len(probs)), order[:, rank]], 6)
    return table


def micro_pr_curve(y_true: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Micro-averaged precision-recall curve (every recording x species decision), thinned for plotting."""
    onehot = np.eye(probs.shape[1], dtype=bool)[y_true].ravel()
    precision, recall, _ = precision_recall_curve(onehot, probs.ravel())
    keep = np.unique(np.linspace(0, len(precision) - 1, min(PR_POINTS, len(precision))).astype(int))
    return pd.DataFrame({"recall": np.round(recall[keep], 5), "precision": np.round(precision[keep], 5)})
