"""BirdNET's own classifier as a zero-shot model, and late fusion of a trained model with it.

Zero-shot: BirdNET's window logits for our species are pooled per recording (mean, max or the mean of the
top 3 windows) and turned into probabilities by a softmax over the species BirdNET knows; a species it
lacks is never predicted.

Fusion (``model.fusion.method: birdnet``, the study's phase-4 late-fusion design applied to two audio
models): per recording i and species c,

    s_ic = a * log p_ic  +  b * z_ic * known_c  +  d * (1 - known_c)  +  bias_c

where p is the trained model's recording probability and z BirdNET's pooled logit. ``a`` and ``b`` weigh
the two models, ``d`` calibrates the species BirdNET lacks against those it knows, and ``bias_c`` (L2
penalised, ``model.fusion.class_bias_l2``) calibrates each species. Everything, the pooling included, is
fitted on the validation split only, by penalised log-likelihood (a conditional-logit model): a handful
of values, so a validation split of a few dozen recordings suffices. The fitted values live in the model
bundle, so evaluate and predict apply the same fusion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

POOLINGS = ("mean", "max", "top3_mean")
EPS = 1e-6


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


@dataclass(frozen=True)
class Fusion:
    pooling: str
    a: float
    b: float
    d: float
    bias: list[float]

    def scores(self, model_probs: np.ndarray, pooled: np.ndarray, known: np.ndarray) -> np.ndarray:
        known_f = known.astype(np.float64)
        return (
            self.a * np.log(model_probs + EPS)
            + self.b * pooled * known_f
            + self.d * (1.0 - known_f)
            + np.asarray(self.bias)
        )

    def probs(self, model_probs: np.ndarray, pooled: np.ndarray, known: np.ndarray) -> np.ndarray:
        return softmax(self.scores(model_probs, pooled, known), axis=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fusion:
        return cls(data["pooling"], data["a"], data["b"], data["d"], list(data["bias"]))


def _fit_one(log_p: np.ndarray, z: np.ndarray, unknown: np.ndarray, y: np.ndarray, l2: float | None):
    n, k = log_p.shape
    onehot = np.eye(k)[y]
    use_bias = l2 is not None

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b, d = theta[:3]
        bias = theta[3:] if use_bias else np.zeros(k)
        scores = a * log_p + b * z + d * unknown + bias
        log_probs = log_softmax(scores, axis=1)
        residual = np.exp(log_probs) - onehot  # d(-loglik)/d(scores)
        loss = -float((log_probs * onehot).sum())
        grad = [float((residual * log_p).sum()), float((residual * z).sum()), float((residual * unknown).sum())]
        if use_bias:
            loss += l2 * float(np.square(bias).sum())
            return loss, np.concatenate([grad, residual.sum(axis=0) + 2.0 * l2 * bias])
        return loss, np.array(grad)

    start = np.concatenate([[1.0, 1.0, 0.0], np.zeros(k if use_bias else 0)])
    result = minimize(objective, start, jac=True, method="L-BFGS-B")
    return result.x, float(result.fun) / n


def fit_fusion(
    model_probs: np.ndarray,
    frame_logits: np.ndarray,
    bounds: np.ndarray,
    known: np.ndarray,
    y_true: np.ndarray,
    poolings: list[str] | tuple[str, ...] = POOLINGS,
    class_bias_l2: float | None = 1.0,
) -> tuple[Fusion, dict[str, float]]:
    """Fit the fusion on validation recordings; returns it and the penalised log-loss of each pooling."""
    if not known.any():
        raise ValueError("BirdNET knows none of the species: there is nothing to fuse")
    log_p = np.log(model_probs + EPS)
    unknown = np.tile((~known).astype(np.float64), (len(y_true), 1))
    best: tuple[float, str, np.ndarray] | None = None
    losses = {}
    for pooling in poolings:
        z = pool_logits(frame_logits, bounds, pooling) * known
        theta, loss = _fit_one(log_p, z, unknown, y_true, class_bias_l2)
        losses[pooling] = round(loss, 6)
        if best is None or loss < best[0]:
            best = (loss, pooling, theta)
    assert best is not None
    _, pooling, theta = best
    k = model_probs.shape[1]
    bias = theta[3:] if class_bias_l2 is not None else np.zeros(k)
    fusion = Fusion(
        pooling, round(float(theta[0]), 6), round(float(theta[1]), 6), round(float(theta[2]), 6),
        [round(float(v), 6) for v in bias],
    )  # fmt: skip
    return fusion, losses
