"""Soundscapes end to end on real audio: a split's own val/test clips mixed over non-bird sound, their BirdNET
features and segment truth, a multi-label head fused with BirdNET and thresholded on val, evaluation beside
BirdNET zero-shot, and predict (scores in [0, 1], several detections per window, no detection on real frogs)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdpipe.__main__ import main as cli
from birdpipe.bundle import load_bundle, save_bundle, save_fusion
from birdpipe.common.params import validate_params
from birdpipe.evaluation.fuse import fit_fuse, open_soundscapes
from birdpipe.evaluation.soundscapes import evaluate_soundscapes
from birdpipe.features.cache import FeatureCache, build_cache
from birdpipe.predict import PredictOptions, Predictor
from birdpipe.predict_outputs import detections
from birdpipe.soundscapes.prepare import prepare_soundscapes
from birdpipe.training.loop import fit
from birdpipe.training.weights import class_weights, feature_stats

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT / "tests" / "data" / "xc_clips"
NO_BIRD = ROOT / "tests" / "data" / "no_bird"
PARAMS = {
    "features": {"kind": "birdnet", "max_seconds": 12.0, "workers": 1, "birdnet": {"inputs": "scores"}},
    "model": {"name": "birdnet_linear", "head": {"dropout": 0.2}, "fusion": {"method": "birdnet"}},
    "train": {"objective": "multilabel", "epochs": 25, "window_seconds": 3.0, "hop_seconds": 3.0, "batch_size": 16,
              "windows_per_recording": 8, "threads": 2, "lr": 0.003, "sampler": "sqrt"},
    "loss": {"name": "bce"},
    "soundscapes": {"source": "mix", "min_positives": 3,
                    "mix": {"files": 1, "seconds": 60.0, "excerpt_seconds": [3.0, 6.0], "distractors_per_minute": 3.0}},
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("soundscapes")
    params = validate_params(PARAMS)
    table = pd.read_csv(CLIPS / "metadata.csv", dtype={"xc_id": str})
    table["path"] = [str(CLIPS / p) for p in table["path"]]
    table["id"] = table["xc_id"]
    table["split"] = table.groupby("label").cumcount().map({0: "train", 1: "val", 2: "test"})
    manifest = table.drop(columns="split")
    prepare_soundscapes(params, table, manifest, root / "soundscapes", progress=False)
    build_cache(table, params.features, root / "features", progress=False)
    cache = FeatureCache.open(root / "features")
    counts = cache.recordings("train")["label"].value_counts()
    weights = class_weights(cache.species, [int(counts[s]) for s in cache.species], params.weights)
    stats = feature_stats(
        cache.frames, spans=cache.spans("train"), per_bin=True, parts=list(cache.config.birdnet_parts.values())
    )
    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = fit(params, cache, weights, stats, checkpoint_dir=root / "ck", live_dir=None, progress=False)
    finally:
        os.chdir(cwd)
    save_bundle(root / "models" / "network", result.model, result.info)
    soundscapes = open_soundscapes(root / "soundscapes")
    fusion, thresholds = fit_fuse(load_bundle(root / "models"), cache, soundscapes, params, "cpu")
    save_fusion(root / "models" / "fusion", fusion)
    return {"root": root, "params": params, "cache": cache, "soundscapes": soundscapes, "thresholds": thresholds,
            "bundle": load_bundle(root / "models")}  # fmt: skip


def test_mixed_soundscapes_have_exact_truth_from_held_out_clips(run):
    data = run["soundscapes"]
    report = (run["root"] / "soundscapes" / "report.json").read_text()
    assert '"source": "mix"' in report
    assert set(data.segments["split"]) == {"val", "test"} and len(data.segments) == 24  # 2 files of 60 s
    assert data.truth.shape == (24, 4) and data.truth.any() and (~data.truth.any(axis=1)).any()
    events = pd.read_csv(run["root"] / "soundscapes" / "events.csv")
    assert set(events["label"]) <= set(run["cache"].species)
    # val soundscapes hold val clips, test ones test clips: each excerpt's label is a species of its split
    assert (data.cache.files("val")["file"].str.startswith("val/")).all()


def test_fuse_fits_the_window_fusion_and_thresholds_on_val_only(run):
    fusion = run["bundle"].fusion
    window = fusion["window"]
    assert window["applicable"] and window["fitted_on"].startswith("val soundscapes")
    assert window["weight"] in run["params"].model.fusion.weights
    assert window["absent_logit"] < -3  # BirdNET's median logit on val soundscape windows: it hears little
    thresholds = run["thresholds"]
    assert list(thresholds["species"]) == run["bundle"].species
    assert ((thresholds["threshold"] > 0) & (thresholds["threshold"] <= 1)).all()
    assert np.allclose(run["bundle"].thresholds, thresholds["threshold"])


def test_soundscape_metrics_sit_beside_birdnet_zero_shot(run):
    scored = evaluate_soundscapes(run["bundle"], run["soundscapes"], run["params"], "cpu")
    test = scored["metrics"]["soundscape"]["test"]
    for key in ("cmap", "auroc", "t1", "precision", "recall", "f1", "empty_detection_rate"):
        assert key in test
    assert 0 <= test["cmap"] <= 1 and 0 <= test["empty_detection_rate"] <= 1
    assert set(test["birdnet_zero_shot"]) >= {"cmap", "auroc", "t1"} and "model_alone" in test
    known = run["soundscapes"].cache.birdnet_known  # the group cmAPs only where BirdNET knows some, not all
    assert ("cmap_birdnet_unknown" in test) == bool(known.any() and not known.all())
    assert set(scored["per_species"]["species"]) == set(run["bundle"].species)


def test_predict_scores_every_window_in_zero_one_and_detects_several_species(run, tmp_path):
    clip = CLIPS / "audio" / "Vireo_latimeri" / "805338.ogg"
    out = tmp_path / "out"
    code = cli(["predict", str(clip), "--model", str(run["root"] / "models"), "--out", str(out), "--scores",
                "--hop", "1.5", "--quiet"])  # fmt: skip
    assert code == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns) == ["file", "start_s", "end_s", *run["bundle"].species]
    values = scores[run["bundle"].species].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    starts = scores["start_s"].to_numpy()
    assert np.allclose(np.diff(starts), 1.5)  # --hop works for BirdNET bundles: overlapping 3 s windows
    assert (scores["end_s"] - scores["start_s"]).max() == pytest.approx(3.0)
    # every species over its threshold is detected: none, one or several per window
    prediction = Predictor(run["bundle"], PredictOptions(min_confidence=0.0), "cpu").recording(clip)
    per_window = pd.Series([w for w, *_ in detections(run["bundle"], prediction, None, 0.0)]).value_counts()
    assert per_window.max() == len(run["bundle"].species)
    raven = pd.read_csv(next(out.glob("*.selections.txt")), sep="\t")
    assert set(raven["Low Freq (Hz)"]) == {0.0} and set(raven["High Freq (Hz)"]) == {15000.0}  # BirdNET's band


def test_real_frogs_get_no_detection_at_the_calibrated_thresholds(run):
    predictor = Predictor(run["bundle"], PredictOptions(hop_seconds=1.5), "cpu")
    for clip in sorted(NO_BIRD.glob("*.ogg")):
        prediction = predictor.recording(clip)
        assert detections(run["bundle"], prediction, None, None) == [], clip.name
    bird = predictor.recording(CLIPS / "audio" / "Vireo_latimeri" / "805338.ogg")
    assert detections(run["bundle"], bird, None, None)  # while a real song is detected


def test_predict_equals_evaluate_for_the_default_recipe(run):
    """The default recipe's kind of bundle (a multi-label head on BirdNET's scores, fused with BirdNET): predict's
    recording predictions are evaluate's, also at another --hop (the summary then reads evaluate's windows)."""
    from birdpipe.evaluation.evaluate import evaluate_split

    bundle, cache = run["bundle"], run["cache"]
    result = evaluate_split(bundle, cache, "test", run["params"].evaluate, "cpu")
    assert result["metrics"]["parts"]  # fused with BirdNET
    table = pd.read_csv(CLIPS / "metadata.csv", dtype={"xc_id": str}).set_index("xc_id")
    files = [CLIPS / table.loc[i, "path"] for i in result["recordings"]["id"]]
    for hop in (None, 1.5):
        predicted = Predictor(bundle, PredictOptions(hop_seconds=hop), "cpu").run(files, progress=False)
        np.testing.assert_allclose(np.stack([r.probs for r in predicted.recordings]), result["probs"], atol=1e-5)
