"""Zero-shot BirdNET probabilities, late fusion fitted on validation, embedding heads and their params."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from birdpipe.birdnet.zero_shot import pool_logits, zero_shot_probs
from birdpipe.common.params import ModelParams, ParamsError, validate_params
from birdpipe.evaluation.fusion import Fusion, cross_fit_fusion, fit_fusion
from birdpipe.models import InputShape, Standardize, build_model


def _simulated(n: int, k: int, known: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A weak model (right 45% of the time) and a sharper BirdNET that knows only some species."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), y] += 1.0
    model = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frames = 4
    frame_logits = rng.normal(-4, 1, (n * frames, k))
    for i in range(n):
        frame_logits[i * frames : (i + 1) * frames, y[i]] += 4.0 * known[y[i]]
    bounds = np.array([[i * frames, (i + 1) * frames] for i in range(n)])
    return model, frame_logits, bounds, y


def test_pooling_of_window_logits():
    frames = np.array([[0.0, 1.0], [2.0, -1.0], [4.0, 0.0], [10.0, 10.0]])
    bounds = np.array([[0, 3], [3, 4]])
    assert np.allclose(pool_logits(frames, bounds, "mean")[0], [2.0, 0.0])
    assert np.allclose(pool_logits(frames, bounds, "max")[0], [4.0, 1.0])
    assert np.allclose(pool_logits(frames, bounds, "top3_mean")[1], [10.0, 10.0])
    with pytest.raises(ValueError, match="allowed"):
        pool_logits(frames, bounds, "median")


def test_zero_shot_never_predicts_a_species_birdnet_lacks():
    pooled = np.array([[5.0, 1.0, 9.0], [0.0, 3.0, 1.0]])
    known = np.array([True, True, False])
    probs = zero_shot_probs(pooled, known)
    assert np.allclose(probs.sum(axis=1), 1.0) and np.all(probs[:, 2] == 0)
    assert probs.argmax(axis=1).tolist() == [0, 1]
    with pytest.raises(ValueError, match="knows none"):
        zero_shot_probs(pooled, np.zeros(3, dtype=bool))


def test_fusion_fitted_on_validation_beats_each_part_on_held_out_data():
    k = 8
    known = np.array([True] * 6 + [False] * 2)
    val = _simulated(300, k, known, seed=0)
    test = _simulated(600, k, known, seed=1)
    fusion, scores = fit_fusion(val[0], val[1], val[2], known, val[3], poolings=["mean", "max"])
    assert len(scores) == 10 and f"{fusion.pooling} w={fusion.weight:g}" in scores
    assert 0.0 < fusion.weight < 1.0  # both models carry information
    head_alone = Fusion(fusion.pooling, 1.0)
    assert np.allclose(head_alone.probs(val[0], np.zeros_like(val[0]), known), val[0], atol=1e-4)
    model, frame_logits, bounds, y = test
    pooled = pool_logits(frame_logits, bounds, fusion.pooling) * known
    fused = fusion.probs(model, pooled, known).argmax(axis=1)
    model_acc = (model.argmax(axis=1) == y).mean()
    zero_shot_acc = (zero_shot_probs(pooled, known).argmax(axis=1) == y).mean()
    fused_acc = (fused == y).mean()
    assert fused_acc > max(model_acc, zero_shot_acc) + 0.05
    unknown = ~known[y]  # species BirdNET lacks are still found, through the model
    assert (fused[unknown] == y[unknown]).mean() > 0.3
    assert Fusion.from_dict(fusion.to_dict()) == fusion


def test_cross_fitted_val_score_is_out_of_fold_and_not_optimistic():
    k = 8
    known = np.array([True] * 6 + [False] * 2)
    model, frame_logits, bounds, y = _simulated(200, k, known, seed=2)
    honest = cross_fit_fusion(model, frame_logits, bounds, known, y, poolings=["mean", "max"], folds=4)
    assert honest["folds"] == 4 and len(honest["fold_choices"]) == 4
    assert all(choice["weight"] < 1.0 for choice in honest["fold_choices"])  # BirdNET carries the known species
    # a real gain over the model alone survives cross-fitting
    assert honest["val_f1_macro"] > honest["val_f1_macro_model"] + 0.1
    # noise everywhere: the best in-sample candidate looks better than chance, its out-of-fold score does not
    rng = np.random.default_rng(3)
    noise_model = rng.dirichlet(np.ones(k), 120)
    noise_frames = rng.normal(0, 1, (480, k))
    noise_bounds = np.array([[i * 4, (i + 1) * 4] for i in range(120)])
    noise_y = rng.integers(0, k, 120)
    _, scores = fit_fusion(noise_model, noise_frames, noise_bounds, known, noise_y, ["mean", "max", "top3_mean"])
    in_sample = max(s["val_f1_macro"] for s in scores.values())
    out_of_fold = cross_fit_fusion(noise_model, noise_frames, noise_bounds, known, noise_y,
                                   ["mean", "max", "top3_mean"], folds=5)["val_f1_macro"]  # fmt: skip
    assert out_of_fold < in_sample
    # deterministic for a seed
    again = cross_fit_fusion(model, frame_logits, bounds, known, y, poolings=["mean", "max"], folds=4)
    assert again == honest


def test_birdnet_heads_standardise_each_dimension_inside_the_model():
    shape = InputShape(1, 16, 1)
    mean = [[float(i) for i in range(16)]]
    std = [[2.0] * 16]
    for name, hidden in (("birdnet_linear", None), ("birdnet_mlp", 32)):
        params = ModelParams(name=name, embedding={"hidden_size": hidden or 512, "dropout": 0.0})
        model = build_model(params, 5, shape, mean, std).eval()
        assert isinstance(model.standardize, Standardize) and model.standardize.mean.shape == (1, 1, 16, 1)
        x = torch.arange(16, dtype=torch.float32).view(1, 1, 16, 1)  # exactly the mean: standardises to 0
        assert torch.allclose(model.standardize(x), torch.zeros_like(x))
        assert model(torch.randn(3, 1, 16, 2)).shape == (3, 5)
        head_in = model.head.in_features
        assert head_in == (16 if hidden is None else 32)


def test_heads_under_their_former_names_still_load():
    former = validate_params({"features": {"kind": "birdnet"},
                              "model": {"name": "embedding_mlp", "embedding": {"hidden_size": 64}}})  # fmt: skip
    assert former.model.name == "birdnet_mlp" and former.model.head.hidden_size == 64


def test_birdnet_models_and_birdnet_features_go_together():
    with pytest.raises(ParamsError, match="go together"):
        validate_params({"model": {"name": "birdnet_mlp"}})
    with pytest.raises(ParamsError, match="go together"):
        validate_params({"features": {"kind": "birdnet"}})
    with pytest.raises(ParamsError, match="act on spectrograms"):
        validate_params(
            {"features": {"kind": "birdnet"}, "model": {"name": "birdnet_mlp"}, "augment": {"gain_db": 6.0}}
        )
    with pytest.raises(ParamsError, match=r"needs features\.kind: birdnet"):
        validate_params({"model": {"fusion": {"method": "birdnet"}}})
    with pytest.raises(ParamsError, match=r"model\.fusion\.weights"):
        validate_params({"model": {"fusion": {"weights": [0.5, 2.0]}}})
    ok = validate_params(
        {"features": {"kind": "birdnet"}, "model": {"name": "birdnet_linear", "fusion": {"method": "birdnet"}}}
    )
    assert ok.features.birdnet.hop_seconds == 3.0


def test_a_species_birdnet_lacks_is_fused_on_the_same_scale_as_the_others():
    """model.fusion.unknown_species: absent. A head trained without bird-free audio scores a species BirdNET lacks
    high on windows without it, where BirdNET's strongly negative logits pull the known species down: left to the
    head alone it tops windows that hold another species (T1 wrong). Fused with BirdNET's median logit as its vote,
    it is ranked on the others' scale; its own ranking over windows (its AP) does not change."""
    from sklearn.metrics import average_precision_score

    from birdpipe.evaluation.fusion import absent_logit, fuse_window_scores
    from birdpipe.evaluation.soundscape_metrics import soundscape_metrics

    known = np.array([True, True, False])
    # windows 0-1 hold species 0, 2-3 species 1, window 4 species 2 (BirdNET lacks it), 5-7 no bird
    truth = np.zeros((8, 3), dtype=bool)
    truth[[0, 1], 0] = truth[[2, 3], 1] = truth[4, 2] = True
    birdnet = np.full((8, 3), -11.0)
    birdnet[[0, 1], 0] = birdnet[[2, 3], 1] = 2.0
    birdnet[:, 2] = 0.0  # BirdNET has no column for species 2
    head = np.full((8, 3), 0.2)
    head[[0, 1], 0] = head[[2, 3], 1] = 0.7
    head[:, 2] = [0.9, 0.88, 0.86, 0.87, 0.97, 0.9, 0.6, 0.65]  # high everywhere, highest where it calls
    a = absent_logit(birdnet, known)
    assert a == pytest.approx(-11.0)  # the median over the known species' columns only
    assert absent_logit(birdnet[:0], known) is None  # no windows: no vote, never NaN scores
    alone = fuse_window_scores(head, birdnet, known, 0.5)
    fused = fuse_window_scores(head, birdnet, known, 0.5, a)
    np.testing.assert_allclose(fused[:, known], alone[:, known])
    z = np.log(head[:, 2] / (1 - head[:, 2]))
    np.testing.assert_allclose(fused[:, 2], 1 / (1 + np.exp(-(0.5 * z + 0.5 * a))))
    assert average_precision_score(truth[:, 2], fused[:, 2]) == average_precision_score(truth[:, 2], alone[:, 2])
    assert soundscape_metrics(truth, alone)["t1"] == pytest.approx(1 / 5)  # species 2 tops every bird window
    assert soundscape_metrics(truth, fused)["t1"] == pytest.approx(1.0)  # and still where it calls
    assert validate_params({}).model.fusion.unknown_species == "absent"
