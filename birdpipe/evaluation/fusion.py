"""Late fusion of a trained model with BirdNET's own classifier (zero-shot: :mod:`birdpipe.birdnet.zero_shot`).

Fusion (``model.fusion.method: birdnet``, the study's phase-4 late-fusion design applied to two audio
models), per recording: BirdNET speaks for the species it knows, the trained model for those it lacks,
and a weighted geometric mean blends the two,

    q_c = zero_shot_c * P_model(known species)   if BirdNET knows c,   q_c = p_c   otherwise
    fused_c  proportional to  p_c ** w * q_c ** (1 - w)

so ``w = 1`` is the trained model alone and ``w = 0`` BirdNET alone (with the model's say for the species
it lacks). The weight and the pooling of BirdNET's window logits are chosen on the validation split only
(F1-macro, ties broken by log-loss), from the grids ``model.fusion.weights`` and ``model.fusion.poolings``:
one or two numbers, because a validation split of a few dozen recordings cannot fit more without
overfitting (a conditional-logit stacker with per-species biases gained on val and lost on test here).
The chosen values live in the model bundle, so evaluate and predict apply the same fusion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import expit, softmax

from birdpipe.birdnet.zero_shot import pool_logits, zero_shot_probs

EPS = 1e-6


@dataclass(frozen=True)
class Fusion:
    pooling: str
    weight: float  # of the trained model; 1 - weight goes to BirdNET

    def pooled(self, frame_logits: np.ndarray, bounds: np.ndarray, known: np.ndarray) -> np.ndarray:
        """BirdNET's recording logits under this fusion's pooling, 0 for the species it lacks."""
        return pool_logits(frame_logits, bounds, self.pooling) * known

    def probs(self, model_probs: np.ndarray, pooled: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Fused recording probabilities from the model's and BirdNET's pooled logits (recordings, species)."""
        q = model_probs.astype(np.float64).copy()
        q[:, known] = zero_shot_probs(pooled, known)[:, known] * model_probs[:, known].sum(axis=1, keepdims=True)
        log = self.weight * np.log(model_probs + EPS) + (1.0 - self.weight) * np.log(q + EPS)
        return softmax(log, axis=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fusion:
        return cls(data["pooling"], float(data["weight"]))


def fit_fusion(
    model_probs: np.ndarray,
    frame_logits: np.ndarray,
    bounds: np.ndarray,
    known: np.ndarray,
    y_true: np.ndarray,
    poolings: Sequence[str] = ("mean",),
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> tuple[Fusion, dict[str, dict[str, float]]]:
    """Choose pooling and weight on validation recordings; returns the fusion and every candidate's scores."""
    if not known.any():
        raise ValueError("BirdNET knows none of the species: there is nothing to fuse")
    from birdpipe.evaluation.metrics import classification_metrics

    counts = np.ones(model_probs.shape[1])
    best: tuple[float, float, Fusion] | None = None
    scores: dict[str, dict[str, float]] = {}
    for pooling in poolings:
        pooled = Fusion(pooling, 1.0).pooled(frame_logits, bounds, known)
        for weight in weights:
            candidate = Fusion(pooling, float(weight))
            probs = candidate.probs(model_probs, pooled, known)
            f1 = classification_metrics(y_true, probs, counts, 1)["f1_macro"]
            log_loss = float(-np.log(probs[np.arange(len(y_true)), y_true] + EPS).mean())
            scores[f"{pooling} w={weight:g}"] = {"val_f1_macro": round(f1, 6), "val_log_loss": round(log_loss, 6)}
            if best is None or (f1, -log_loss) > (best[0], -best[1]):
                best = (f1, log_loss, candidate)
    assert best is not None
    return best[2], scores


def cross_fit_fusion(
    model_probs: np.ndarray,
    frame_logits: np.ndarray,
    bounds: np.ndarray,
    known: np.ndarray,
    y_true: np.ndarray,
    poolings: Sequence[str] = ("mean",),
    weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Val F1-macro of the fusion with its pooling and weight chosen on the other folds (out-of-fold).

    The fusion kept in the bundle is fitted on all of val; its val score is optimistic, since the same recordings
    chose it. This score is not: each fold is fused with the candidate chosen on the remaining folds, so it is the
    number to compare recipes by. Returns the out-of-fold F1-macro, the model alone and each fold's choice."""
    from sklearn.model_selection import KFold

    from birdpipe.evaluation.metrics import classification_metrics

    n = len(y_true)
    folds = max(2, min(folds, n))
    fused = np.zeros_like(model_probs, dtype=np.float64)
    chosen = []
    for fit_rows, held in KFold(folds, shuffle=True, random_state=seed).split(np.arange(n)):
        fit_bounds, held_bounds = bounds[fit_rows], bounds[held]
        fusion, _ = fit_fusion(model_probs[fit_rows], frame_logits, fit_bounds, known, y_true[fit_rows], poolings,
                               weights)  # fmt: skip
        fused[held] = fusion.probs(model_probs[held], fusion.pooled(frame_logits, held_bounds, known), known)
        chosen.append(fusion.to_dict())
    counts = np.ones(model_probs.shape[1])
    return {
        "folds": folds,
        "val_f1_macro": round(classification_metrics(y_true, fused, counts, 1)["f1_macro"], 6),
        "val_f1_macro_model": round(classification_metrics(y_true, model_probs, counts, 1)["f1_macro"], 6),
        "fold_choices": chosen,
    }


# ------------------------------------------------------------------------------- multi-label (windows)
# A multi-label model gives every window an independent sigmoid score per species, as BirdNET does. Fusion is
# then per window and per species, in logit space: for a species BirdNET knows,
#     z = w * logit(model score) + (1 - w) * BirdNET's logit,
# and for a species BirdNET lacks (model.fusion.unknown_species: absent)
#     z = w * logit(model score) + (1 - w) * a,
# a being BirdNET's median logit over the validation windows and the species it knows: a species BirdNET
# cannot name is one it hears nothing of. That puts every species on one scale: with the model's own logit
# (unknown_species: head), a species BirdNET lacks escapes the pull of BirdNET's strongly negative logits on
# windows without it, and with no bird-free audio in training it tops the ranking of bird-free and other
# species' windows (on xc_puerto_rico soundscapes it took the top of most segments T1 got wrong). The change is
# monotone per species, so cmAP, AUROC and per-species thresholds do not move; T1 and cross-species
# comparisons do. The fused score is sigmoid(z). One weight w (model.fusion.weights, 1 = the model alone) is
# chosen on validation soundscapes by cmAP, and the same fused window scores make every output: soundscape
# segments, recording summaries (the bundle's aggregation over fused windows) and predict.
SCORE_CLIP = 1e-6


def score_logits(scores: np.ndarray) -> np.ndarray:
    """Logits of scores in [0, 1], clipped so 0 and 1 stay finite."""
    p = np.clip(np.asarray(scores, dtype=np.float64), SCORE_CLIP, 1.0 - SCORE_CLIP)
    return np.log(p) - np.log1p(-p)


def fuse_window_scores(
    model_scores: np.ndarray,
    birdnet_logits: np.ndarray,
    known: np.ndarray,
    weight: float,
    absent_logit: float | None = None,
) -> np.ndarray:
    """Fused sigmoid scores (windows, species) of a multi-label model and BirdNET (see above); ``absent_logit``
    None leaves the species BirdNET lacks to the model alone."""
    z = score_logits(model_scores)
    z[:, known] = weight * z[:, known] + (1.0 - weight) * np.asarray(birdnet_logits, np.float64)[:, known]
    if absent_logit is not None:
        z[:, ~known] = weight * z[:, ~known] + (1.0 - weight) * absent_logit
    return expit(z)


def fuse_as_fitted(
    model_scores: np.ndarray, birdnet_logits: np.ndarray, known: np.ndarray, window_fusion: dict[str, Any]
) -> np.ndarray:
    """:func:`fuse_window_scores` as the bundle's fitted window fusion says: its ``weight`` and ``absent_logit``
    (missing from bundles fitted before it: the model alone for the species BirdNET lacks)."""
    return fuse_window_scores(model_scores, birdnet_logits, known, window_fusion["weight"],
                              window_fusion.get("absent_logit"))  # fmt: skip


def absent_logit(birdnet_logits: np.ndarray, known: np.ndarray) -> float | None:
    """BirdNET's median logit over windows and the species it knows: its vote for a species it cannot name
    (None without windows or known species: such a species is then left to the model alone)."""
    values = np.asarray(birdnet_logits, np.float64)[:, known]
    return float(np.median(values)) if values.size else None
