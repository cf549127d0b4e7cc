"""baselines: the majority prior and MFCC-stats logistic regression (BirdNET's baselines: tests/test_transfer.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from birdpipe.common.params import validate_params
from birdpipe.evaluation.baselines import run_baselines

METRICS = {"accuracy", "top5_accuracy", "f1_macro", "f1_weighted", "map", "f1_rare", "f1_common", "species",
           "rare_species", "recordings"}  # fmt: skip


class FakeCache:
    """What run_baselines reads of a FeatureCache: species, the recording index and per-recording stats."""

    def __init__(self, splits: list[str], labels: list[int], features: np.ndarray, n_species: int) -> None:
        self.species = [f"species_{i}" for i in range(n_species)]
        self.index = pd.DataFrame({"split": splits, "label_index": labels})
        self.features = features
        self.config = SimpleNamespace(kind="mfcc")

    def stats(self) -> np.ndarray:
        return self.features


def params(c_grid: list[float]):
    return validate_params({"baselines": {"c_grid": c_grid}, "evaluate": {"rare_threshold": 3}})


def test_majority_predicts_the_training_prior():
    # the prior ranks species 1, 3, 4, 5, 0 first (not index order, so uniform scores would differ); species 6
    # never occurs in train
    train = [c for c, count in enumerate([5, 9, 3, 8, 7, 6]) for _ in range(count)]
    test = [1, 1, 3, 2, 0, 6, 6, 6]
    splits = ["train"] * len(train) + ["val"] * len(test) + ["test"] * len(test)
    labels = train + test + test
    features = np.random.default_rng(0).normal(size=(len(labels), 4))
    result = run_baselines(FakeCache(splits, labels, features, 7), params([1.0]))
    assert set(result) == {"majority", "mfcc_logreg"}  # no BirdNET baselines without BirdNET features
    majority = result["majority"]["test"]
    assert set(majority) == METRICS
    assert majority["accuracy"] == pytest.approx(2 / 8)  # always the commonest training species
    assert majority["top5_accuracy"] == pytest.approx(4 / 8)  # species 2 and 6 are outside the prior's top 5
    assert majority["f1_macro"] == pytest.approx((2 * 0.25 / 1.25) / 5)  # species 1 only, of the 5 present
    assert majority["map"] == pytest.approx(1 / 5)  # constant scores: each AP is the species' share
    assert (majority["species"], majority["rare_species"], majority["recordings"]) == (5, 1, 8)
    assert result["majority"]["val"] == majority


@pytest.mark.parametrize(("val_agrees", "chosen"), [(True, 1.0), (False, 1e-4)])
def test_mfcc_logreg_chooses_c_on_val_and_reports_it(val_agrees, chosen):
    """Train and test: species 0 low, species 1 high. A val split that contradicts them makes the
    strongest regularisation (which falls back to the prior: species 0) the best on val, though not on test."""
    rng = np.random.default_rng(1)
    counts = {"train": (12, 8), "val": (4, 4), "test": (4, 4)}
    splits, labels, rows = [], [], []
    for split, per_species in counts.items():
        for label, count in enumerate(per_species):
            side = -1 if (label == 0) == (val_agrees or split != "val") else 1
            splits += [split] * count
            labels += [label] * count
            rows.append(np.column_stack([side * 2 + 0.3 * rng.normal(size=count), rng.normal(size=count)]))
    cache = FakeCache(splits, labels, np.concatenate(rows), 2)
    result = run_baselines(cache, params([1e-4, 1.0]))["mfcc_logreg"]
    assert set(result) == {"val", "test", "c", "val_f1_macro_by_c", "not_converged_c"}
    assert set(result["val"]) == set(result["test"]) == METRICS
    assert list(result["val_f1_macro_by_c"]) == ["0.0001", "1.0"]
    assert result["c"] == chosen
    assert result["val"]["f1_macro"] == pytest.approx(max(result["val_f1_macro_by_c"].values()), abs=1e-6)
    # fit on train only: the chosen model scores on test by the train relation, whatever val says
    assert result["test"]["f1_macro"] == (1.0 if chosen == 1.0 else pytest.approx(1 / 3))


def test_baselines_on_real_clips(real_cache):
    result = run_baselines(real_cache["cache"], params([0.1, 1.0]))
    assert set(result) == {"majority", "mfcc_logreg"}
    for name in result:
        for split in ("val", "test"):
            metrics = result[name][split]
            assert set(metrics) == METRICS and 0.0 <= metrics["accuracy"] <= 1.0
            assert metrics["recordings"] == len(real_cache["cache"].recordings(split))
    assert result["mfcc_logreg"]["c"] in (0.1, 1.0)
