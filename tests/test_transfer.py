"""Transfer from BirdNET on real clips: the embedding cache, baselines, a head with fusion, evaluate, predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdpipe.bundle import load_bundle, save_bundle, save_fusion
from birdpipe.common.params import validate_params
from birdpipe.evaluation.baselines import run_baselines
from birdpipe.evaluation.evaluate import evaluate_split
from birdpipe.evaluation.fuse import fit_fuse
from birdpipe.features.cache import FeatureCache, build_cache
from birdpipe.predict import PredictOptions, Predictor
from birdpipe.predict_outputs import DEFAULT_MIN_CONFIDENCE
from birdpipe.training.loop import fit
from birdpipe.training.weights import class_weights, feature_stats

ROOT = Path(__file__).resolve().parents[1]
HEAD = {
    "features": {"kind": "birdnet", "max_seconds": 12.0, "workers": 1},
    "model": {"name": "birdnet_mlp", "head": {"hidden_size": 64, "dropout": 0.1},
              "fusion": {"method": "birdnet"}},
    "train": {"epochs": 25, "window_seconds": 3.0, "hop_seconds": 3.0, "batch_size": 16,
              "windows_per_recording": 8, "threads": 2, "lr": 0.003},
    "baselines": {"c_grid": [0.1, 1.0]},
}  # fmt: skip


def _fit_fused_head(root: Path, params, table: pd.DataFrame) -> dict:
    """A BirdNET cache of ``table`` under ``root``, and a head (fused as ``params`` say) trained on it."""
    summary = build_cache(table, params.features, root / "features", progress=False)
    cache = FeatureCache.open(root / "features")
    counts = cache.recordings("train")["label"].value_counts()
    weights = class_weights(cache.species, [int(counts[s]) for s in cache.species], params.weights)
    stats = feature_stats(
        cache.frames, spans=cache.spans("train"), per_bin=True, parts=list(cache.config.birdnet_parts.values())
    )
    import os

    cwd = os.getcwd()
    os.chdir(root)  # dvclive wants to sit outside our repository
    try:
        result = fit(params, cache, weights, stats, checkpoint_dir=root / "ck", live_dir=None, progress=False)
    finally:
        os.chdir(cwd)
    save_bundle(root / "models" / "network", result.model, result.info)
    fusion, _ = fit_fuse(load_bundle(root / "models"), cache, None, params, "cpu")
    save_fusion(root / "models" / "fusion", fusion)
    return {"root": root, "params": params, "summary": summary, "cache": cache, "result": result}


@pytest.fixture(scope="module")
def birdnet_run(tmp_path_factory, xc_clips_table):
    """A BirdNET cache of the 12 real clips (one val and one test clip per species) and a fused head on it."""
    return _fit_fused_head(tmp_path_factory.mktemp("birdnet"), validate_params(HEAD), xc_clips_table)


def _clip_files(ids) -> list[Path]:
    """The audio files of the xc_clips recordings ``ids``, in that order."""
    table = pd.read_csv(ROOT / "tests" / "data" / "xc_clips" / "metadata.csv", dtype={"xc_id": str})
    path_of = dict(zip(table["xc_id"], table["path"], strict=True))
    return [ROOT / "tests" / "data" / "xc_clips" / path_of[i] for i in ids]


@pytest.fixture(scope="module")
def xc_clips_table() -> pd.DataFrame:
    table = pd.read_csv(ROOT / "tests" / "data" / "xc_clips" / "metadata.csv", dtype={"xc_id": str})
    table["path"] = [str(ROOT / "tests" / "data" / "xc_clips" / p) for p in table["path"]]
    table["id"] = table["xc_id"]
    table["split"] = table.groupby("label").cumcount().map({0: "train", 1: "val", 2: "test"})
    table = table[table["split"].notna()]
    extra = table[table["split"] == "train"].assign(split="train", id=lambda t: t["id"] + "b")
    return pd.concat([table, extra], ignore_index=True)  # two training rows per species


def test_birdnet_cache_holds_embeddings_logits_and_the_species_match(birdnet_run):
    cache, summary = birdnet_run["cache"], birdnet_run["summary"]
    assert cache.config.kind == "birdnet" and cache.config.model_checksum
    assert (summary["channels"], summary["bins"]) == (1, 1024)
    assert summary["birdnet"]["n_matched"] == 4 and summary["birdnet"]["unmatched"] == []
    for split in ("train", "val", "test"):
        embeddings, logits = cache.arrays[split], cache.birdnet_logits[split]
        assert embeddings.shape[1:] == (1, 1024) and logits.shape == (embeddings.shape[0], 4)
        assert np.isfinite(np.asarray(embeddings, dtype=np.float32)).all()
    # a 1.6 s clip gives one (zero-padded) window, a 11.7 s one four windows of 3 s
    lengths = dict(zip(cache.index["id"], cache.index["stop"] - cache.index["start"], strict=True))
    assert lengths["XC171396"] == 1 and lengths["XC737278"] == 4


def test_birdnet_cache_bytes_are_deterministic(birdnet_run, xc_clips_table, tmp_path):
    params = birdnet_run["params"]
    subset = xc_clips_table[xc_clips_table["label"] == "Vireo_latimeri"]
    build_cache(subset, params.features, tmp_path / "again", progress=False)
    first = FeatureCache.open(birdnet_run["root"] / "features")
    again = FeatureCache.open(tmp_path / "again")
    row = first.index[first.index["id"] == "XC9423"].iloc[0]
    row_again = again.index[again.index["id"] == "XC9423"].iloc[0]
    a = np.asarray(first.arrays[row.split][row.start : row.stop])
    b = np.asarray(again.arrays[row_again.split][row_again.start : row_again.stop])
    assert a.tobytes() == b.tobytes()


def test_birdnet_baselines_on_the_same_split(birdnet_run):
    result = run_baselines(birdnet_run["cache"], birdnet_run["params"])
    assert {"majority", "mfcc_logreg", "birdnet_zero_shot", "birdnet_logreg"} <= set(result)
    zero_shot = result["birdnet_zero_shot"]
    assert zero_shot["known_species"] == 4
    assert zero_shot["test"]["accuracy"] >= 0.5  # BirdNET knows these Puerto Rican species
    assert 0.0 <= result["birdnet_logreg"]["test"]["f1_macro"] <= 1.0


def test_head_with_fusion_evaluates_and_predict_reproduces_evaluate(birdnet_run):
    root, params = birdnet_run["root"], birdnet_run["params"]
    bundle = load_bundle(root / "models")
    assert bundle.recording_fusion["applicable"] and bundle.info["birdnet"]["n_matched"] == 4
    assert bundle.feature_config.model_checksum == birdnet_run["cache"].config.model_checksum
    result = evaluate_split(bundle, birdnet_run["cache"], "test", params.evaluate, "cpu")
    metrics = result["metrics"]
    assert set(metrics["parts"]) == {"model", "birdnet_zero_shot"}
    recordings = result["recordings"]
    files = _clip_files(recordings["id"])
    run = Predictor(bundle, PredictOptions(max_seconds=12.0), "cpu").run(files, progress=False)
    predicted = np.stack([r.probs for r in run.recordings])
    np.testing.assert_allclose(predicted, result["probs"], atol=1e-5)


def test_pure_noise_is_not_predicted_with_confidence(birdnet_run, tmp_path):
    """The classic failure of custom BirdNET classifiers (scaled in training, raw at inference): certain scores
    on pure noise. Here the standardisation lives in the model, and a window's detection confidence needs a
    sound that BirdNET hears."""
    bundle = load_bundle(birdnet_run["root"] / "models")
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.05 * rng.standard_normal(48000 * 9)).astype(np.float32), 48000)
    predictor = Predictor(bundle, PredictOptions(), "cpu")
    assert predictor.recording(noise).window_probs.max() < DEFAULT_MIN_CONFIDENCE  # no detection at all
    bird = ROOT / "tests" / "data" / "xc_clips" / "audio" / "Vireo_latimeri" / "805338.ogg"
    assert predictor.recording(bird).window_probs.max() > 0.5  # a real song still is


def test_noise_gets_no_detection_even_for_a_species_birdnet_does_not_know(xc_clips_table, tmp_path):
    """BirdNET's gate silences the species it knows on noise; a species it lacks has only the head to answer, so an
    over-confident head would show here (one real species renamed to a name BirdNET has no class for)."""
    table = xc_clips_table.copy()
    renamed = table["label"] == "Vireo_latimeri"
    table.loc[renamed, ["label", "scientific_name", "english_name"]] = ["Ignota_birdnetii", "Ignota birdnetii", "-"]
    run = _fit_fused_head(tmp_path / "unknown", validate_params(HEAD), table)
    bundle = load_bundle(run["root"] / "models")
    known = dict(zip(bundle.species, run["cache"].birdnet_known, strict=True))
    assert known["Ignota_birdnetii"] is np.False_ and sum(known.values()) == 3
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.05 * np.random.default_rng(2).standard_normal(48000 * 9)).astype(np.float32), 48000)
    result = Predictor(bundle, PredictOptions(), "cpu").recording(noise)
    column = bundle.species.index("Ignota_birdnetii")
    assert result.window_probs[:, column].max() < DEFAULT_MIN_CONFIDENCE
    assert result.window_probs.max() < DEFAULT_MIN_CONFIDENCE


@pytest.fixture(scope="module")
def scores_run(tmp_path_factory, xc_clips_table):
    """The same clips with ``features.birdnet.inputs: both`` (embedding and BirdNET's scores), a fused head on it."""
    params = validate_params({**HEAD, "features": {**HEAD["features"], "birdnet": {"inputs": "both"}}})
    return _fit_fused_head(tmp_path_factory.mktemp("birdnet_scores"), params, xc_clips_table)


def test_scores_sit_beside_the_embedding_as_log_confidences(birdnet_run, scores_run):
    from scipy.special import log_expit

    from birdpipe.birdnet import runtime as birdnet

    plain, both = birdnet_run["cache"], scores_run["cache"]
    assert both.config.birdnet_parts == {"embedding": (0, 1024), "scores": (1024, 1024 + 6522)}
    assert both.config.bins == 7546 and plain.config.bins == 1024
    columns = birdnet.match_species(both.species)
    for split in ("train", "val", "test"):
        frames = np.asarray(both.arrays[split], dtype=np.float32)[:, 0]
        assert frames.shape[1] == 7546
        # the embedding part is byte for byte the embedding-only cache
        assert frames[:, :1024].astype(np.float16).tobytes() == np.asarray(plain.arrays[split])[:, 0].tobytes()
        scores = frames[:, 1024:]
        assert (scores <= 0).all()  # log sigmoid
        # BirdNET's logits for our species, kept beside the features, are the same windows' scores
        expected = log_expit(np.asarray(both.birdnet_logits[split], dtype=np.float32))
        np.testing.assert_allclose(scores[:, columns], expected, atol=0.02, rtol=0.01)


def test_birdnet_logreg_reads_the_embedding_part_of_a_cache_with_scores(birdnet_run, scores_run):
    from birdpipe.evaluation.baselines import mean_embeddings

    for split in ("train", "test"):
        np.testing.assert_allclose(
            mean_embeddings(scores_run["cache"], split), mean_embeddings(birdnet_run["cache"], split), atol=1e-9
        )
    plain = run_baselines(birdnet_run["cache"], birdnet_run["params"])["birdnet_logreg"]
    both = run_baselines(scores_run["cache"], scores_run["params"])["birdnet_logreg"]
    assert plain["c"] == both["c"] and plain["test"]["f1_macro"] == pytest.approx(both["test"]["f1_macro"])


def test_a_head_on_scores_predicts_as_evaluate_does_and_is_not_confident_on_noise(scores_run, tmp_path):
    root, params = scores_run["root"], scores_run["params"]
    bundle = load_bundle(root / "models")
    assert bundle.feature_config.birdnet_inputs == "both" and bundle.info["input_shape"]["bins"] == 7546
    result = evaluate_split(bundle, scores_run["cache"], "test", params.evaluate, "cpu")
    files = _clip_files(result["recordings"]["id"])
    run = Predictor(bundle, PredictOptions(max_seconds=12.0), "cpu").run(files, progress=False)
    np.testing.assert_allclose(np.stack([r.probs for r in run.recordings]), result["probs"], atol=1e-5)
    noise = tmp_path / "noise.wav"
    sf.write(noise, (0.05 * np.random.default_rng(1).standard_normal(48000 * 9)).astype(np.float32), 48000)
    predictor = Predictor(bundle, PredictOptions(), "cpu")
    assert predictor.recording(noise).window_probs.max() < DEFAULT_MIN_CONFIDENCE


def test_the_scores_part_gets_a_std_floor_of_its_own():
    rng = np.random.default_rng(0)
    train = np.concatenate([rng.normal(0, 1.0, (200, 1, 8)), rng.normal(-20, 1e-3, (200, 1, 4))], axis=2)
    train[:, :, 10] = -30.0  # a class that never fires
    shared = feature_stats(train, per_bin=True)
    parts = feature_stats(train, per_bin=True, parts=[(0, 8), (8, 12)])
    assert np.allclose(shared["bin_std"][0][:8], parts["bin_std"][0][:8], atol=1e-6)  # the wide part alone
    assert shared["bin_std"][0][10] == pytest.approx(0.1 * np.median(np.std(train[:, 0], axis=0)), rel=1e-3)
    assert parts["bin_std"][0][10] == pytest.approx(0.1 * 1e-3, rel=0.2)  # a tenth of its own part's median


def test_an_ensemble_of_linear_heads_is_the_mean_of_its_members(birdnet_run, tmp_path):
    """train.ensemble: members trained with seed, seed+1, their weights averaged; for a linear head that is
    exactly the mean of the members' logits, so the bundle stays one model."""
    import torch

    from birdpipe.training.ensemble import fit_ensemble

    cache = birdnet_run["cache"]
    raw = {**HEAD, "model": {**HEAD["model"], "name": "birdnet_linear"}, "train": {**HEAD["train"], "epochs": 3}}
    params = validate_params({**raw, "train": {**raw["train"], "ensemble": 2}})
    stats = feature_stats(cache.frames, spans=cache.spans("train"), per_bin=True,
                          parts=list(cache.config.birdnet_parts.values()))  # fmt: skip
    args = (cache, None, stats)
    cwd = Path.cwd()
    import os

    os.chdir(tmp_path)  # dvclive wants to sit outside our repository
    try:
        both = fit_ensemble(params, *args, checkpoint_dir=tmp_path / "ens", live_dir=None, progress=False)
        members = [fit(validate_params({**raw, "seed": params.seed + k}), *args, checkpoint_dir=tmp_path / f"m{k}",
                       live_dir=None, progress=False) for k in range(2)]  # fmt: skip
    finally:
        os.chdir(cwd)
    assert both.info["ensemble"]["seeds"] == [params.seed, params.seed + 1]
    assert len(both.metrics["train"]["ensemble"]["best_val_f1_macro"]) == 2
    first, second = (m.model.state_dict()["network.head.weight"] for m in members)
    assert not torch.equal(first, second)  # the seeds differ, so the members do
    torch.testing.assert_close(both.model.state_dict()["network.head.weight"], (first + second) / 2)
    x = torch.from_numpy(np.asarray(cache.frames[:8], dtype=np.float32)).permute(0, 2, 1)[:, None]
    with torch.no_grad():
        mean_logits = (members[0].model.eval()(x) + members[1].model.eval()(x)) / 2
        torch.testing.assert_close(both.model.eval()(x), mean_logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"train\.ensemble"):
        validate_params({**HEAD, "train": {**HEAD["train"], "ensemble": 3}})  # an MLP: weights do not average
