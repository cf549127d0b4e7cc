import numpy as np
import pytest
import torch
import torch.nn.functional as F

from birdpipe.common.params import LossParams, WeightParams
from birdpipe.training.losses import ClassificationLoss, as_soft_targets, build_loss
from birdpipe.training.weights import class_weights

SPECIES = ["a", "b", "c", "d"]
COUNTS = [40, 20, 5, 1]


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 4, generator=generator) * 3
    labels = torch.randint(0, 4, (16,), generator=generator)
    return logits, labels


def weights_json():
    return class_weights(SPECIES, COUNTS, WeightParams())


def test_ce_equals_torch(batch):
    logits, labels = batch
    loss = build_loss(LossParams(name="ce"), SPECIES, COUNTS)
    assert loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)
    smoothed = build_loss(LossParams(name="ce", label_smoothing=0.1), SPECIES, COUNTS)
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1)
    assert smoothed(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_with_gamma_zero_and_no_alpha_is_ce(batch):
    logits, labels = batch
    focal = build_loss(LossParams(name="focal", gamma=0.0, alpha=None), SPECIES, COUNTS)
    assert focal(logits, labels).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_focal_formula_and_alpha(batch):
    logits, labels = batch
    p_t = torch.softmax(logits, 1)[torch.arange(16), labels]
    expected = (-((1 - p_t) ** 2) * torch.log(p_t)).mean()
    focal = build_loss(LossParams(name="focal", gamma=2.0), SPECIES, COUNTS)
    assert focal(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    scalar = build_loss(LossParams(name="focal", gamma=2.0, alpha=0.25), SPECIES, COUNTS)
    assert scalar(logits, labels).item() == pytest.approx(0.25 * expected.item(), rel=1e-5)
    per_class = build_loss(LossParams(name="focal", gamma=2.0, alpha="sqrt"), SPECIES, COUNTS, weights_json())
    alpha = torch.tensor([weights_json()["methods"]["sqrt"]["weights"][s] for s in SPECIES])
    expected = (-alpha[labels] * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert per_class(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_down_weights_easy_examples():
    easy = torch.tensor([[8.0, 0.0, 0.0, 0.0]])
    hard = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    focal = ClassificationLoss("focal", 4, gamma=2.0)
    ce = ClassificationLoss("ce", 4)
    label = torch.tensor([0])
    assert focal(easy, label) / ce(easy, label) < 0.01
    assert focal(hard, label) / ce(hard, label) > 0.5


def test_weighted_ce_equals_torch(batch):
    logits, labels = batch
    loss = build_loss(LossParams(name="weighted_ce", weights="balanced"), SPECIES, COUNTS, weights_json())
    weight = torch.tensor([weights_json()["methods"]["balanced"]["weights"][s] for s in SPECIES])
    expected = F.cross_entropy(logits, labels, weight=weight)
    assert loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_logit_adjustment_and_balanced_softmax_formulas(batch):
    logits, labels = batch
    counts = torch.tensor(COUNTS, dtype=torch.float32)
    prior = counts / counts.sum()
    adjusted = build_loss(LossParams(name="logit_adjusted", tau=1.5), SPECIES, COUNTS)
    expected = F.cross_entropy(logits + 1.5 * torch.log(prior), labels)
    assert adjusted(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    balanced = build_loss(LossParams(name="balanced_softmax"), SPECIES, COUNTS)
    # Ren et al.: p_j = n_j exp(z_j) / sum_k n_k exp(z_k)
    numerator = counts[labels] * torch.exp(logits[torch.arange(16), labels])
    denominator = (counts * torch.exp(logits)).sum(dim=1)
    assert balanced(logits, labels).item() == pytest.approx((-torch.log(numerator / denominator)).mean().item(),
                                                           rel=1e-5)  # fmt: skip


@pytest.mark.parametrize("name", ["ce", "weighted_ce", "focal", "logit_adjusted", "balanced_softmax"])
def test_soft_targets_match_hard_labels_when_one_hot(batch, name):
    logits, labels = batch
    loss = build_loss(LossParams(name=name, alpha="sqrt" if name == "focal" else None), SPECIES, COUNTS, weights_json())
    onehot = F.one_hot(labels, 4).float()
    assert loss(logits, onehot).item() == pytest.approx(loss(logits, labels).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["ce", "focal", "logit_adjusted"])
def test_mixed_targets_are_the_mixture_of_losses(batch, name):
    logits, labels = batch
    other = labels.roll(1)
    lam = 0.3
    loss = build_loss(LossParams(name=name), SPECIES, COUNTS)
    soft = lam * F.one_hot(labels, 4).float() + (1 - lam) * F.one_hot(other, 4).float()
    expected = lam * loss(logits, labels) + (1 - lam) * loss(logits, other)
    assert loss(logits, soft).item() == pytest.approx(expected.item(), rel=1e-5)


def test_soft_targets_sum_to_one():
    soft = as_soft_targets(torch.tensor([0, 3]), 4, smoothing=0.2)
    np.testing.assert_allclose(soft.sum(dim=1).numpy(), [1.0, 1.0], rtol=1e-6)
    assert soft[0, 0].item() == pytest.approx(0.85)
