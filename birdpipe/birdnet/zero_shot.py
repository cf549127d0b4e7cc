"""BirdNET's own classifier as a model that needs no training: zero-shot scores and the gate.

Per recording (a summary names one species): BirdNET's window logits for the label set are pooled (mean, max or
the mean of the top 3 windows) and turned into probabilities by a softmax over the species BirdNET knows; a
species it lacks is never predicted. Per window (soundscapes, several species at once): BirdNET's own sigmoid
for each species it knows. The gate: a softmax head's detection needs BirdNET to hear one of the label set's
species in the window, so noise and silence give no confident detection.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax

POOLINGS = ("mean", "max", "top3_mean")


def pool_logits(frame_logits: np.ndarray, bounds: np.ndarray, pooling: str) -> np.ndarray:
    """Recording-level logits (recordings, species) from frame logits; ``bounds`` holds (start, stop) rows."""
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; allowed: {', '.join(POOLINGS)}")
    out = np.zeros((len(bounds), frame_logits.shape[1]), dtype=np.float64)
    for r, (start, stop) in enumerate(bounds):
        rows = np.asarray(frame_logits[start:stop], dtype=np.float64)
        if pooling == "mean":
            out[r] = rows.mean(axis=0)
        elif pooling == "max":
            out[r] = rows.max(axis=0)
        else:
            out[r] = -np.sort(-rows, axis=0)[:3].mean(axis=0)
    return out


def zero_shot_probs(pooled: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Softmax over the species BirdNET knows; the others get probability 0."""
    if not known.any():
        raise ValueError("BirdNET knows none of the species: zero-shot does not apply")
    probs = np.zeros_like(pooled, dtype=np.float64)
    probs[:, known] = softmax(pooled[:, known], axis=1)
    return probs


def zero_shot_scores(birdnet_logits: np.ndarray, known: np.ndarray) -> np.ndarray:
    """BirdNET's own sigmoid scores for the species it knows; 0 for the others (it can never name them)."""
    scores = np.zeros(np.shape(birdnet_logits), dtype=np.float64)
    scores[:, known] = expit(np.asarray(birdnet_logits, dtype=np.float64)[:, known])
    return scores


def gate_scores(window_probs: np.ndarray, birdnet_logits: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Detection confidences of a softmax (multiclass) head on BirdNET inputs: a species BirdNET knows needs BirdNET
    to hear one of the label set's species in the window (the sigmoid of its highest logit among them), so pure
    noise or silence gives no confident detection. Species BirdNET lacks keep the head's probability."""
    if not known.any():
        return window_probs
    heard = expit(np.asarray(birdnet_logits, np.float64)[:, known].max(axis=1))
    gated = np.array(window_probs, copy=True)
    gated[:, known] *= heard[:, None].astype(gated.dtype)
    return gated
