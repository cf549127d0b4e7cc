"""Multi-label training: targets from focal and background species, no-bird negatives, bags and their pooling,
the sigmoid losses, and a negative clip that trains toward all zeros (on real clips)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from birdpipe.common.params import DataParams, FeatureParams, LossParams, SplitParams, validate_params
from birdpipe.data.ingest import find_candidates, ingest, scan_negatives
from birdpipe.data.labels import NO_BIRD
from birdpipe.data.split import split_recordings
from birdpipe.data.windows import EvalWindows, TrainSampler
from birdpipe.evaluation.evaluate import window_probabilities
from birdpipe.features.cache import FeatureCache, build_cache
from birdpipe.training.loop import fit
from birdpipe.training.losses import MultilabelLoss, build_loss
from birdpipe.training.targets import BagPooling, TrainBags, bag_offsets, recording_targets
from birdpipe.training.weights import class_weights, feature_stats

RATE = 22050
XC_CLIPS = Path(__file__).parent / "data" / "xc_clips"


def _noise_clips(folder: Path, seeds: range) -> Path:
    """No-bird recordings: brown-ish wind noise with rain crackle, each of its own seed and length."""
    for i in seeds:
        rng = np.random.default_rng(i)
        n = int((6 + i % 3) * RATE)
        wind = np.cumsum(rng.standard_normal(n)) * 0.002
        wind -= np.convolve(wind, np.ones(2001) / 2001, mode="same")
        crackle = (rng.random(n) < 0.002) * rng.standard_normal(n) * 0.3
        sf.write(folder / f"noise_{i}.wav", (wind + crackle).astype(np.float32) * 0.5, RATE)
    return folder


@pytest.fixture(scope="module")
def with_negatives(tmp_path_factory) -> dict:
    """The real clips plus six no-bird clips from a negatives folder: ingest, split, MFCC cache, stats."""
    root = tmp_path_factory.mktemp("negatives")
    (root / "negatives" / "site_a").mkdir(parents=True)
    (root / "negatives" / "site_b").mkdir(parents=True)
    _noise_clips(root / "negatives" / "site_a", range(3))
    _noise_clips(root / "negatives" / "site_b", range(3, 6))
    data = DataParams(source=str(XC_CLIPS / "metadata.csv"))
    candidates = find_candidates(data.source, data) + scan_negatives(root / "negatives")
    manifest, report = ingest(candidates, data, workers=1, progress=False)
    table, _ = split_recordings(manifest, SplitParams(), seed=0)
    build_cache(table, FeatureParams(kind="mfcc", max_seconds=8.0, workers=1), root / "features", progress=False)
    cache = FeatureCache.open(root / "features")
    counts = cache.recordings("train")["label"].value_counts()
    weights = class_weights(cache.species, [int(counts[s]) for s in cache.species], validate_params({}).weights)
    return {"root": root, "report": report, "table": table, "cache": cache, "weights": weights,
            "stats": feature_stats(cache.frames, spans=cache.spans("train"))}  # fmt: skip


def test_negatives_are_ingested_split_and_cached_without_a_species(with_negatives):
    report, table, cache = with_negatives["report"], with_negatives["table"], with_negatives["cache"]
    assert report["negatives"] == 6 and NO_BIRD not in report["recordings_per_species"]
    assert (cache.index["label_index"] == -1).sum() == 6
    negatives = table[table["label"] == NO_BIRD]
    assert len(negatives) == 6 and set(negatives["split"]) == {"train", "val", "test"}
    assert NO_BIRD not in cache.species and len(cache.species) == 4
    for split in ("train", "val", "test"):
        assert (cache.recordings(split)["label_index"] >= 0).all()  # species only, unless asked
        with_them = cache.recordings(split, negatives=True)
        assert (with_them["label_index"] == -1).sum() == (negatives["split"] == split).sum()
    assert cache.info["negatives"] == 6


def test_the_split_label_wins_so_small_classes_negative_reaches_the_cache(with_negatives):
    table = with_negatives["table"].copy()
    moved = table["label"] == "Vireo_latimeri"
    table.loc[moved, "label"] = NO_BIRD  # what split.small_classes negative writes for a small species
    cache = FeatureCache.open(with_negatives["root"] / "features", table)
    assert "Vireo_latimeri" not in cache.species and len(cache.species) == 3
    rows = cache.index.set_index("id").loc[table.loc[moved, "id"]]
    assert (rows["label_index"] == -1).all() and (rows["label"] == NO_BIRD).all()
    assert len(cache.recordings("train", negatives=True)) == (table["split"] == "train").sum()


def test_background_species_become_soft_targets_and_negatives_all_zeros(with_negatives):
    cache = with_negatives["cache"]
    rows = cache.index.reset_index(drop=True)
    # the real clip XC33688 (Melanerpes portoricensis) names Gymnasio nudipes and Coereba flaveola in its
    # background: neither is in this label set, so the cache keeps no background for it
    woodpecker = rows[rows["id"] == "XC33688"]
    assert woodpecker["background"].iloc[0] == ""
    table = pd.DataFrame({"label": ["Vireo_latimeri", NO_BIRD, "Crotophaga_ani"], "label_index": [3, -1, 0],
                          "background": ["Crotophaga_ani;Coereba_flaveola", "", ""]})  # fmt: skip
    targets = recording_targets(table, cache.species, background_target=0.4)
    expected = np.zeros((3, 4), dtype=np.float32)
    expected[0, 3], expected[0, 0], expected[2, 0] = 1.0, 0.4, 1.0
    np.testing.assert_array_equal(targets, expected)
    assert recording_targets(table, cache.species, background_target=0.0)[0, 0] == 0.0


def test_background_species_in_xeno_canto_metadata_are_matched_by_scientific_name(tmp_path):
    from birdpipe.features.cache import background_labels

    table = pd.DataFrame({
        "label": ["Coereba_flaveola", "Vireo_latimeri", "Vireo_latimeri"],
        "scientific_name": ["Coereba flaveola", "Vireo latimeri", "Vireo latimeri"],
        "background_species": ["Vireo latimeri; Todus mexicanus", "", "Coereba flaveola;Vireo latimeri"],
    })  # fmt: skip
    found = background_labels(table, ["Coereba_flaveola", "Vireo_latimeri"])
    assert found == {0: "Vireo_latimeri", 1: "", 2: "Coereba_flaveola"}  # the focal itself is left out


def test_bag_offsets_cover_long_short_and_tiny_recordings():
    assert bag_offsets(100, 7, 10, 4).tolist() == [7, 17, 27, 37]
    assert bag_offsets(100, 95, 10, 4).tolist() == [60, 70, 80, 90]  # clipped so the bag fits
    assert bag_offsets(25, 3, 10, 4).tolist() == [3, 13, 3, 13]  # 2 whole windows, cycled
    assert bag_offsets(6, 11, 10, 3).tolist() == [5, 5, 5]  # shorter than a window: crop tiles it


def test_bags_hold_consecutive_windows_of_one_recording(with_negatives):
    cache = with_negatives["cache"]
    train = cache.recordings("train", negatives=True)
    targets = recording_targets(train, cache.species, 0.5)
    bags = TrainBags(cache.arrays["train"], train, window=43, bag=3, targets=targets)
    longest = int((train["stop"] - train["start"]).argmax())  # holds a whole bag from offset 10
    assert train["stop"][longest] - train["start"][longest] >= 10 + 3 * 43
    x, target = bags[(longest, 10)]
    assert x.shape == (3, 3, 20, 43) and torch.equal(target, torch.from_numpy(targets[longest]))
    start = int(train["start"][longest])
    frames = np.asarray(cache.arrays["train"][start + 53 : start + 96], dtype=np.float32).transpose(1, 2, 0)
    np.testing.assert_array_equal(x[1].numpy(), frames)


def test_pooling_by_hand():
    logits = torch.tensor([[[0.0, -2.0], [4.0, -1.0]]])  # one bag of two windows, two species
    assert torch.allclose(BagPooling("max", 2)(logits), torch.tensor([[4.0, -1.0]]))
    r = 2.0
    expected = [(math.log((math.exp(0) + math.exp(8)) / 2)) / r, math.log((math.exp(-4) + math.exp(-2)) / 2) / r]
    assert torch.allclose(BagPooling("lse", 2, r)(logits), torch.tensor([expected]))
    attention = BagPooling("attention", 2)
    with torch.no_grad():
        attention.attention.zero_()  # sharpness 0: the mean
    assert torch.allclose(attention(logits), torch.tensor([[2.0, -1.5]]))
    assert BagPooling("attention", 2).attention.requires_grad  # learned with the head


def test_sigmoid_losses():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.5], [0.0, 0.0, 0.0]])
    plain = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()
    assert torch.allclose(MultilabelLoss("bce", 3)(logits, target), plain)
    assert torch.allclose(MultilabelLoss("focal_bce", 3, gamma=0.0)(logits, target), plain)
    focal = MultilabelLoss("focal_bce", 3, gamma=2.0)(logits, target)
    assert focal < plain  # easy decisions are down-weighted
    weights = torch.tensor([2.0, 1.0, 1.0])
    weighted = F.binary_cross_entropy_with_logits(logits, target, weight=weights, reduction="none").sum(1).mean()
    assert torch.allclose(MultilabelLoss("weighted_bce", 3, class_weights=weights)(logits, target), weighted)
    ranked = MultilabelLoss("bce", 3, softmax_weight=0.5)(logits, target)
    cross_entropy = -(target[0] / target[0].sum() * F.log_softmax(logits[0], dim=0)).sum() / 2  # row 2 names none
    assert torch.allclose(ranked, plain + 0.5 * cross_entropy)
    loss = build_loss(LossParams(name="focal_bce", alpha=0.25, gamma=0.0), ["a", "b", "c"], [5, 3, 1])
    by_hand = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * (
        0.25 * target + 0.75 * (1 - target)
    )
    assert torch.allclose(loss(logits, target), by_hand.sum(1).mean())


def test_negatives_form_their_own_sampling_stratum(with_negatives):
    train = with_negatives["cache"].recordings("train", negatives=True)
    sampler = TrainSampler(train, 43, "class_balanced", 4.0, seed=0)
    chosen, _ = sampler.draw(0)
    shares = pd.Series(train["label_index"].to_numpy()[chosen]).value_counts(normalize=True)
    assert len(shares) == 5 and shares.min() > 0.08  # four species and the negatives, drawn about equally


def _scores_by_recording(model, cache, rows: pd.DataFrame, window: int) -> np.ndarray:
    """Each recording's highest window score per species."""
    from birdpipe.evaluation.metrics import aggregate

    windows = EvalWindows(cache.arrays["train"], rows, window, window)
    scores = window_probabilities(model, windows, 16, "cpu", multilabel=True)
    assert ((scores >= 0) & (scores <= 1)).all()
    return aggregate(scores, windows.window_recording, len(rows), "max", normalize=False)


def test_a_negative_clip_trains_toward_all_zeros(with_negatives, tmp_path, monkeypatch):
    """Trained with its no-bird clips, a model scores them far lower than the same model trained without them."""
    monkeypatch.chdir(tmp_path)
    cache = with_negatives["cache"]
    params = validate_params({
        "train": {"objective": "multilabel", "pooling": "max", "bag_windows": 3, "epochs": 8, "window_seconds": 1.0,
                  "hop_seconds": 1.0, "batch_size": 8, "windows_per_recording": 6, "threads": 2, "lr": 0.003,
                  "sampler": "class_balanced"},
        "loss": {"name": "bce"}, "evaluate": {"aggregate": "max"}, "features": {"normalize": True},
    })  # fmt: skip
    birds_only = dataclasses.replace(cache, index=cache.index[cache.index["label_index"] >= 0])
    models = {}
    for name, training_cache in (("with", cache), ("without", birds_only)):
        result = fit(params, training_cache, with_negatives["weights"], with_negatives["stats"],
                     checkpoint_dir=tmp_path / name, live_dir=None, progress=False)  # fmt: skip
        models[name] = result.model
    assert result.info["objective"] == "multilabel"
    train = cache.recordings("train", negatives=True)
    window = cache.config.frames(1.0)
    negatives = train[train["label_index"] < 0].reset_index(drop=True)
    birds = train[train["label_index"] >= 0].reset_index(drop=True)
    with_them = _scores_by_recording(models["with"], cache, negatives, window).max(axis=1)
    without = _scores_by_recording(models["without"], cache, negatives, window).max(axis=1)
    assert with_them.mean() < 0.2 and with_them.mean() < 0.5 * without.mean(), (with_them, without)
    own = _scores_by_recording(models["with"], cache, birds, window)[np.arange(len(birds)), birds["label_index"]]
    assert own.min() > with_them.max(), (own, with_them)  # each bird recording still names its own species


def test_baselines_leave_the_negatives_out(with_negatives):
    from birdpipe.evaluation.baselines import run_baselines

    cache = with_negatives["cache"]
    result = run_baselines(cache, validate_params({"baselines": {"c_grid": [1.0]}}))
    for split in ("val", "test"):
        assert result["mfcc_logreg"][split]["recordings"] == len(cache.recordings(split))
        assert len(cache.recordings(split, negatives=True)) > len(cache.recordings(split))  # negatives were there
