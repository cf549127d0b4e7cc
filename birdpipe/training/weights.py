"""Class weights from training counts, and per-channel feature statistics from the training split.

Methods (n_c = training recordings of species c, N = their sum, K = species):
- ``inverse_frequency``: N / n_c
- ``balanced``: N / (K n_c), scikit-learn's ``class_weight="balanced"`` (the study's 0.037-45 range)
- ``sqrt``: 1 / sqrt(n_c), the milder "square-root reweighting"
- ``effective_number``: (1 - beta) / (1 - beta^n_c), Cui et al. 2019, "Class-Balanced Loss Based on
  Effective Number of Samples"

With ``weights.normalize`` each method is scaled to mean 1 over species (so the loss scale stays
comparable between methods); ``weights.clip`` then bounds them. The raw range of each method is recorded
too, since the study's lesson was that the range (45x for "balanced") decides whether training survives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from birdpipe.common.params import WEIGHT_METHODS, WeightParams


def raw_weights(counts: np.ndarray, method: str, beta: float) -> np.ndarray:
    counts = counts.astype(np.float64)
    if np.any(counts <= 0):
        raise ValueError("every species needs at least one training recording")
    total, classes = counts.sum(), counts.size
    if method == "inverse_frequency":
        return total / counts
    if method == "balanced":
        return total / (classes * counts)
    if method == "sqrt":
        return 1.0 / np.sqrt(counts)
    if method == "effective_number":
        return (1.0 - beta) / (1.0 - np.power(beta, counts))
    raise ValueError(f"unknown weight method {method!r}; allowed: {', '.join(WEIGHT_METHODS)}")


def class_weights(species: list[str], counts: list[int], params: WeightParams) -> dict[str, Any]:
    """Every method's weights per species, with their ranges; the content of data/class_weights.json."""
    counts_array = np.asarray(counts)
    result: dict[str, Any] = {
        "species": species,
        "counts": dict(zip(species, map(int, counts), strict=True)),
        "imbalance_ratio": float(counts_array.max() / counts_array.min()),
        "normalize": params.normalize,
        "clip": list(params.clip) if params.clip else None,
        "effective_beta": params.effective_beta,
        "methods": {},
    }
    for method in WEIGHT_METHODS:
        raw = raw_weights(counts_array, method, params.effective_beta)
        weights = raw / raw.mean() if params.normalize else raw.copy()
        if params.clip:
            weights = np.clip(weights, *params.clip)
        result["methods"][method] = {
            "weights": {s: round(float(w), 6) for s, w in zip(species, weights, strict=True)},
            "min": round(float(weights.min()), 6),
            "max": round(float(weights.max()), 6),
            "mean": round(float(weights.mean()), 6),
            "ratio": round(float(weights.max() / weights.min()), 6),
            "raw_min": round(float(raw.min()), 6),
            "raw_max": round(float(raw.max()), 6),
        }
    return result


def weight_vector(weights_json: dict[str, Any], method: str, species: list[str]) -> np.ndarray:
    """The weights of ``method`` in the order of ``species`` (a model's output order)."""
    table = weights_json["methods"][method]["weights"]
    missing = [s for s in species if s not in table]
    if missing:
        raise KeyError(f"class weights lack species {missing[:5]}: rerun `dvc repro weights`")
    return np.array([table[s] for s in species], dtype=np.float32)


BIN_STD_FLOOR = 0.1  # per-dimension std floor, as a share of the channel's median std


def feature_stats(
    train: np.ndarray,
    chunk_frames: int = 65536,
    per_bin: bool = False,
    parts: list[tuple[int, int]] | None = None,
    spans: list[tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Per-channel mean and std over every training frame and bin (float64 accumulation, in chunks).

    With ``per_bin`` also ``bin_mean`` / ``bin_std`` (channels x bins): embeddings are standardised per
    dimension, since each dimension has a scale of its own. ``parts`` are bin ranges (start, stop) of
    inputs with scales of their own (a BirdNET embedding beside BirdNET's scores): each gets its own std floor.
    ``spans``: the frame ranges (start, stop) of the training recordings in ``train`` (default: all of it).
    """
    channels, bins = train.shape[1], train.shape[2]
    total = np.zeros((channels, bins))
    total_sq = np.zeros((channels, bins))
    frames = 0
    for first, last in spans if spans is not None else [(0, train.shape[0])]:
        for start in range(first, last, chunk_frames):
            block = np.asarray(train[start : min(start + chunk_frames, last)], dtype=np.float64)
            total += block.sum(axis=0)
            total_sq += np.square(block).sum(axis=0)
            frames += block.shape[0]
    if frames == 0:
        raise ValueError("the training split has no frames")
    count = frames * bins
    mean = total.sum(axis=1) / count
    std = np.sqrt(np.maximum(total_sq.sum(axis=1) / count - mean**2, 0.0))
    stats: dict[str, Any] = {
        "mean": [round(float(m), 6) for m in mean],
        "std": [round(float(max(s, 1e-6)), 6) for s in std],
        "frames": int(frames),
        "values_per_channel": int(count),
    }
    if per_bin:
        bin_mean = total / frames
        bin_std = np.sqrt(np.maximum(total_sq / frames - bin_mean**2, 0.0))
        # A dimension (nearly) constant over the training windows would turn any deviation at inference, e.g.
        # on pure noise, into a huge standardised value and a near-certain score: floor each std at a tenth of
        # the median std of the channel (of each part of it).
        floor = np.empty_like(bin_std)
        for start, stop in parts or [(0, bins)]:
            floor[:, start:stop] = BIN_STD_FLOOR * np.median(bin_std[:, start:stop], axis=1, keepdims=True)
        floor = np.maximum(floor, 1e-6)
        stats["bin_mean"] = np.round(bin_mean, 6).tolist()
        stats["bin_std"] = np.round(np.maximum(bin_std, floor), 6).tolist()
    return stats
