"""Classification losses; every one takes hard labels (batch,) or soft targets (batch, classes) from MixUp.

With soft targets q and log-probabilities log p, each loss is the target-weighted sum over classes of its
per-class term, so a one-hot q gives the usual hard-label loss:

- ``ce``: -sum_k q_k log p_k
- ``weighted_ce``: -sum_k w_k q_k log p_k, averaged with weights sum_k w_k q_k (PyTorch's
  ``CrossEntropyLoss(weight=w)`` convention); w from data/class_weights.json (``loss.weights``)
- ``focal`` (Lin et al. 2017; the study's phases 2A-3): -sum_k a_k q_k (1 - p_k)^gamma log p_k, where a is
  1, a scalar ``loss.alpha`` (the study's constant factor) or per-class weights of a method; gamma 0 and
  no alpha is exactly ``ce``
- ``logit_adjusted`` (Menon et al. 2021, "Long-tail learning via logit adjustment"): ``ce`` on
  z + tau log(prior), with prior the training class frequencies; predictions use the raw logits z
- ``balanced_softmax`` (Ren et al. 2020): ``ce`` on z + log(n_c); the same as logit adjustment with
  tau = 1 (the constant log N cancels in the softmax), kept as a name because the literature uses both

Label smoothing (``loss.label_smoothing``) mixes the targets with the uniform distribution first.

Sigmoid losses (``train.objective: multilabel``; :class:`MultilabelLoss`) take (batch, classes) targets in
[0, 1] (multi-hot, soft for background species and MixUp, all 0 for a no-bird negative), one independent
binary decision per species, summed over species and averaged over the batch:

- ``bce``: -[q log s + (1 - q) log(1 - s)], s = sigmoid(z)
- ``weighted_bce``: ``bce`` times w_c (``loss.weights``), so a rare species' errors weigh more
- ``focal_bce`` (Lin et al. 2017 in its original binary form): ``bce`` times (1 - s_t)^gamma, s_t the
  probability given to the target's side; ``loss.alpha`` a scalar weighs positives alpha and negatives
  1 - alpha, a weight method weighs species

With ``loss.softmax_weight`` > 0 a cross-entropy over the same logits is added for the examples that name a
species (targets normalised to a distribution; negatives add nothing): the sigmoid scores still say "none" or
"several", and the logits also rank the species against each other, which a whole recording's summary (one
species named) needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from birdpipe.common.params import LossParams


def as_soft_targets(target: torch.Tensor, n_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """(batch,) labels or (batch, classes) distributions -> smoothed (batch, classes) distributions."""
    soft = F.one_hot(target, n_classes).float() if target.dim() == 1 else target.float()
    if smoothing > 0:
        soft = soft * (1.0 - smoothing) + smoothing / n_classes
    return soft


class ClassificationLoss(nn.Module):
    def __init__(
        self,
        name: str,
        n_classes: int,
        class_weights: torch.Tensor | None = None,
        alpha: float | torch.Tensor | None = None,
        gamma: float = 0.0,
        logit_offset: torch.Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.n_classes = n_classes
        self.gamma = gamma
        self.label_smoothing = label_smoothing
        self.scalar_alpha = float(alpha) if isinstance(alpha, (int, float)) else None
        self.register_buffer("class_weights", class_weights)
        self.register_buffer("alpha", alpha if isinstance(alpha, torch.Tensor) else None)
        self.register_buffer("logit_offset", logit_offset)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.logit_offset is not None:
            logits = logits + self.logit_offset
        q = as_soft_targets(target, self.n_classes, self.label_smoothing)
        log_p = F.log_softmax(logits, dim=1)
        if self.name == "focal":
            term = (1.0 - log_p.exp()).clamp(min=0.0).pow(self.gamma) * log_p
            if self.alpha is not None:
                term = term * self.alpha
            elif self.scalar_alpha is not None:
                term = term * self.scalar_alpha
            return -(q * term).sum(dim=1).mean()
        if self.class_weights is not None:
            weighted = q * self.class_weights
            return -(weighted * log_p).sum() / weighted.sum().clamp(min=1e-12)
        return -(q * log_p).sum(dim=1).mean()


class MultilabelLoss(nn.Module):
    """Sigmoid losses on (batch, classes) logits and targets in [0, 1]."""

    def __init__(
        self,
        name: str,
        n_classes: int,
        class_weights: torch.Tensor | None = None,
        alpha: float | torch.Tensor | None = None,
        gamma: float = 0.0,
        softmax_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.n_classes = n_classes
        self.gamma = gamma
        self.softmax_weight = softmax_weight
        self.scalar_alpha = float(alpha) if isinstance(alpha, (int, float)) else None
        self.register_buffer("class_weights", class_weights)
        self.register_buffer("alpha", alpha if isinstance(alpha, torch.Tensor) else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if target.dim() == 1:  # hard labels (a caller without multi-label targets)
            target = F.one_hot(target, self.n_classes)
        q = target.float()
        term = F.binary_cross_entropy_with_logits(logits, q, reduction="none")
        if self.name == "focal_bce":
            s = torch.sigmoid(logits)
            s_target = s * q + (1.0 - s) * (1.0 - q)
            term = term * (1.0 - s_target).clamp(min=0.0).pow(self.gamma)
            if self.alpha is not None:
                term = term * self.alpha
            elif self.scalar_alpha is not None:
                term = term * (self.scalar_alpha * q + (1.0 - self.scalar_alpha) * (1.0 - q))
        if self.class_weights is not None:
            term = term * self.class_weights
        loss = term.sum(dim=1).mean()
        if self.softmax_weight > 0:  # the same logits ranked against each other where a species is named
            mass = q.sum(dim=1, keepdim=True)
            named = mass.squeeze(1) > 0
            if named.any():
                ce = -(q[named] / mass[named] * F.log_softmax(logits[named], dim=1)).sum(dim=1)
                loss = loss + self.softmax_weight * ce.sum() / q.shape[0]
        return loss


def build_loss(
    params: LossParams,
    species: list[str],
    class_counts: list[int],
    weights_json: dict | None = None,
) -> ClassificationLoss | MultilabelLoss:
    """The loss ``loss.name`` for the model's species order; weight methods come from class_weights.json."""
    from birdpipe.training.weights import weight_vector

    n_classes = len(species)

    def method_weights(method: str) -> torch.Tensor:
        if weights_json is None:
            raise ValueError("this loss needs data/class_weights.json")
        return torch.from_numpy(weight_vector(weights_json, method, species))

    counts = torch.tensor(class_counts, dtype=torch.float32)
    if params.name in ("bce", "weighted_bce", "focal_bce"):
        weights = method_weights(params.weights) if params.name == "weighted_bce" else None
        alpha = method_weights(params.alpha) if isinstance(params.alpha, str) else params.alpha
        focal = params.name == "focal_bce"
        return MultilabelLoss(params.name, n_classes, class_weights=weights, alpha=alpha if focal else None,
                              gamma=params.gamma if focal else 0.0, softmax_weight=params.softmax_weight)  # fmt: skip
    if params.name == "weighted_ce":
        return ClassificationLoss("weighted_ce", n_classes, class_weights=method_weights(params.weights),
                                  label_smoothing=params.label_smoothing)  # fmt: skip
    if params.name == "focal":
        alpha = method_weights(params.alpha) if isinstance(params.alpha, str) else params.alpha
        return ClassificationLoss("focal", n_classes, alpha=alpha, gamma=params.gamma,
                                  label_smoothing=params.label_smoothing)  # fmt: skip
    if params.name in ("logit_adjusted", "balanced_softmax"):
        tau = params.tau if params.name == "logit_adjusted" else 1.0
        offset = tau * torch.log(counts / counts.sum())
        return ClassificationLoss(params.name, n_classes, logit_offset=offset, label_smoothing=params.label_smoothing)
    return ClassificationLoss("ce", n_classes, label_smoothing=params.label_smoothing)
