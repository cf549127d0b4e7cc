"""predict: window timing, streaming equals evaluate, output formats, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from birdpipe.__main__ import main as cli
from birdpipe.bundle import BundleError, load_bundle, save_bundle
from birdpipe.common.params import EvaluateParams, ModelParams
from birdpipe.evaluation.evaluate import evaluate_split
from birdpipe.features.cache import FeatureCache, build_cache
from birdpipe.features.spectral import window_starts
from birdpipe.models import InputShape, build_model
from birdpipe.predict import PredictOptions, Predictor, find_audio, sliding_windows
from birdpipe.predict_outputs import RAVEN_COLUMNS, write_outputs
from tests.conftest import chirp, write_bad_files, write_signal_problems

RATE = 22050


def make_bundle(cache: FeatureCache, folder: Path, aggregate: str = "mean", seed: int = 0) -> Path:
    """A random-initialised AudioCNN bundle over the cache's species (predict needs no training)."""
    torch.manual_seed(seed)
    config = cache.config
    window = config.frames(4.0)
    shape = InputShape(config.channels, config.bins, window)
    stats = np.asarray(cache.arrays["train"][:2000], dtype=np.float32)
    mean = stats.mean(axis=(0, 2)).tolist()
    std = (stats.std(axis=(0, 2)) + 1e-3).tolist()
    model_params = ModelParams(name="audio_cnn")
    model = build_model(model_params, len(cache.species), shape, mean, std).eval()
    counts = cache.recordings("train")["label"].value_counts()
    info = {
        "species": cache.species,
        "names": {cache.species[0]: {"scientific_name": "Testus primus", "english_name": "First Tester"}},
        "feature_config": config.to_dict(),
        "max_seconds": cache.info["max_seconds"],
        "activity": cache.info["activity"],
        "window_seconds": 4.0,
        "hop_seconds": 2.0,
        "aggregate": aggregate,
        "topk": 3,
        "model": model_params.model_dump(mode="json"),
        "input_shape": {"channels": shape.channels, "bins": shape.bins, "frames": shape.frames},
        "normalization": {"mean": mean, "std": std},
        "train_counts": {s: int(counts.get(s, 0)) for s in cache.species},
    }
    save_bundle(folder, model, info)
    return folder


@pytest.fixture(scope="module")
def bundle_dir(real_cache, tmp_path_factory) -> Path:
    return make_bundle(real_cache["cache"], tmp_path_factory.mktemp("bundle") / "models")


def write_wav(path: Path, seconds: float, rate: int = RATE, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, chirp(seconds, rate, 2000, 6000, seed=seed), rate)
    return path


@pytest.mark.parametrize(("total", "window", "hop", "block"), [
    (500, 172, 86, 37), (500, 172, 172, 500), (172, 172, 86, 10), (100, 172, 86, 7), (1, 172, 86, 1),
    (173, 172, 172, 50), (1000, 50, 30, 999),
])  # fmt: skip
def test_sliding_windows_equal_evaluate_windows(total, window, hop, block):
    frames = np.random.default_rng(0).normal(size=(total, 3, 4)).astype(np.float32)
    blocks = (frames[i : i + block] for i in range(0, total, block))
    got = list(sliding_windows(blocks, window, hop))
    assert [start for start, _ in got] == window_starts(total, window, hop)
    for start, x in got:
        positions = (start + np.arange(window)) % total if total < window else np.arange(start, start + window)
        np.testing.assert_array_equal(x, frames[positions].transpose(1, 2, 0))


def test_predict_reproduces_evaluate_on_real_clips(real_cache, bundle_dir):
    cache = real_cache["cache"]
    bundle = load_bundle(bundle_dir)
    result = evaluate_split(bundle, cache, "test", EvaluateParams(), "cpu")
    split = pd.read_csv(real_cache["root"] / "split.csv", dtype={"id": str})
    paths = split.set_index("id").loc[result["recordings"]["id"], "path"].map(Path).tolist()
    run = Predictor(bundle, PredictOptions(max_seconds=8.0), "cpu").run(paths, progress=False)
    assert not run.skipped and len(run.recordings) == len(paths)
    predicted = np.stack([r.probs for r in run.recordings])
    np.testing.assert_array_equal(predicted.argmax(axis=1), result["probs"].argmax(axis=1))
    np.testing.assert_allclose(predicted, result["probs"], atol=1e-5)


def _evaluate_and_predict(cache: FeatureCache, bundle_dir: Path, split_csv: Path, **options) -> tuple:
    bundle = load_bundle(bundle_dir)
    result = evaluate_split(bundle, cache, "test", EvaluateParams(), "cpu")
    split = pd.read_csv(split_csv, dtype={"id": str})
    paths = split.set_index("id").loc[result["recordings"]["id"], "path"].map(Path).tolist()
    run = Predictor(bundle, PredictOptions(**options), "cpu").run(paths, progress=False)
    return result["probs"], np.stack([r.probs for r in run.recordings]), [r.duration for r in run.recordings]


def test_predict_equals_evaluate_for_recordings_longer_than_the_cache_keeps(real_cache, bundle_dir):
    """The cache keeps features.max_seconds (8 s here) of each recording; predict analyses whole files, and its
    recording prediction still comes from those 8 s, as evaluate's does."""
    expected, predicted, durations = _evaluate_and_predict(real_cache["cache"], bundle_dir,
                                                            real_cache["root"] / "split.csv")  # fmt: skip
    assert max(durations) > 8.0  # some test recordings are longer than what the cache holds
    np.testing.assert_allclose(predicted, expected, atol=1e-5)


def test_predict_equals_evaluate_for_a_model_on_activity_windows(real_cache, tmp_path):
    """A cache of the 2 most active 1 s windows per recording (the study's AST recipe); predict's recording
    prediction reads the same windows, its detections every window."""
    from birdpipe.common.params import FeatureParams

    split_csv = real_cache["root"] / "split.csv"
    params = FeatureParams(
        kind="logmel", n_mels=64, max_seconds=8.0, workers=1, activity={"windows": 2, "seconds": 1.0}
    )
    build_cache(pd.read_csv(split_csv, dtype={"id": str}), params, tmp_path / "features", progress=False)
    cache = FeatureCache.open(tmp_path / "features")
    assert cache.index["seconds"].max() <= 2.05
    bundle_dir = make_bundle(cache, tmp_path / "models")
    expected, predicted, _ = _evaluate_and_predict(cache, bundle_dir, split_csv)
    np.testing.assert_allclose(predicted, expected, atol=1e-5)


def test_window_timing_first_last_short_and_overlap(bundle_dir, tmp_path):
    bundle = load_bundle(bundle_dir)
    long = write_wav(tmp_path / "long.wav", 10.0)
    short = write_wav(tmp_path / "short.wav", 1.5)
    frame = 512 / RATE
    no_overlap = Predictor(bundle, PredictOptions(hop_seconds=4.0), "cpu").run([long, short], progress=False)
    rec_long, rec_short = no_overlap.recordings
    window = round(4.0 * RATE / 512) * frame  # 172 frames = 3.994 s
    assert rec_long.starts[0] == 0.0
    np.testing.assert_allclose(rec_long.starts[:2], [0.0, round(window, 3)], atol=1e-3)
    assert rec_long.ends[-1] == pytest.approx(10.0, abs=frame)  # the last window is aligned to the end
    assert len(rec_long.starts) == 3
    assert list(rec_short.starts) == [0.0] and rec_short.ends[0] == pytest.approx(1.5, abs=1e-3)
    overlap = Predictor(bundle, PredictOptions(hop_seconds=1.0), "cpu").recording(long)
    assert np.diff(overlap.starts)[:3] == pytest.approx([1.0, 1.0, 1.0], abs=frame)
    assert overlap.window_probs.shape == (len(overlap.starts), len(bundle.species))
    np.testing.assert_allclose(overlap.window_probs.sum(axis=1), 1.0, atol=1e-5)


def test_cli_outputs_parse_back_and_bad_files_are_reported(bundle_dir, tmp_path, xc_clips):
    folder = tmp_path / "recordings"
    clip = sorted(p for p in xc_clips.rglob("*") if p.suffix in (".mp3", ".ogg", ".flac", ".wav"))[0]
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / clip.name).write_bytes(clip.read_bytes())
    write_wav(folder / "tone.wav", 6.0)
    bad = write_bad_files(folder / "bad")
    out = tmp_path / "out"
    code = cli(["predict", str(folder), "--model", str(bundle_dir), "--out", str(out), "--min-confidence", "0",
                "--top-k", "2", "--quiet", "--max-seconds", "12"])  # fmt: skip
    assert code == 0
    detections = pd.read_csv(out / "detections.csv")
    assert list(detections.columns) == ["file", "start_s", "end_s", "label", "scientific_name", "english_name",
                                        "confidence"]  # fmt: skip
    # silent and truncated files are usable recordings; the summary notes the truncation
    assert set(detections["file"]) == {f"sub/{clip.name}", "tone.wav", "bad/silence.flac", "bad/truncated.mp3"}
    assert (detections["end_s"] > detections["start_s"]).all() and detections["confidence"].between(0, 1).all()
    assert detections.groupby(["file", "start_s"]).size().eq(2).all()  # top-2 per window
    raven = out / "sub" / f"{clip.stem}.selections.txt"
    with raven.open() as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert tuple(rows[0]) == RAVEN_COLUMNS
    assert [int(r[0]) for r in rows[1:]] == list(range(1, len(rows)))  # Selection numbers 1..n
    assert all(r[1] == "Spectrogram 1" and r[2] == "1" for r in rows[1:])
    assert float(rows[1][3]) == 0.0 and float(rows[1][6]) == pytest.approx(RATE / 2)
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    ok = summary[summary["status"] == "ok"]
    skipped = summary[summary["status"] == "skipped"]
    assert len(ok) == 4 and (ok["windows"].astype(int) >= 1).all()
    assert ok.set_index("file").loc["bad/truncated.mp3", "reason"].startswith("truncated: decoded")
    assert set(ok["reason"]) == {"", ok.set_index("file").loc["bad/truncated.mp3", "reason"]}
    unreadable = {name for name in bad if name.startswith(("empty", "notes"))}
    assert set(Path(f).name for f in skipped["file"]) == unreadable and (skipped["reason"] != "").all()


def test_cli_exit_codes_and_one_line_errors(bundle_dir, tmp_path, capsys):
    write_bad_files(tmp_path / "bad")
    for usable in ("silence.flac", "truncated.mp3"):
        (tmp_path / "bad" / usable).unlink()
    assert cli(["predict", str(tmp_path / "bad"), "--model", str(bundle_dir), "--out", str(tmp_path / "o"),
                "--quiet"]) == 1  # fmt: skip
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert sorted(summary["status"]) == ["skipped", "skipped"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bundle.json").write_text("{}")
    wav = write_wav(tmp_path / "a.wav", 2.0)
    assert cli(["predict", str(wav), "--model", str(broken), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "missing model.pt" in err[-1]


def test_bundle_with_mismatched_feature_config_is_refused(bundle_dir, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for file in bundle_dir.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    info = json.loads((folder / "bundle.json").read_text())
    info["feature_config"]["n_mfcc"] = 40
    (folder / "bundle.json").write_text(json.dumps(info))
    with pytest.raises(BundleError, match=r"feature config does not match.*bins 20"):
        load_bundle(folder)


def test_find_audio_recurses_and_rejects_missing(tmp_path):
    write_wav(tmp_path / "a" / "b" / "x.wav", 1.0)
    (tmp_path / "a" / "notes.txt").write_text("no audio")
    assert [p.name for p in find_audio([tmp_path / "a"])] == ["x.wav"]
    with pytest.raises(Exception, match="does not exist"):
        find_audio([tmp_path / "missing.wav"])


def test_find_audio_keeps_unsupported_audio_and_ignores_hidden_files(tmp_path):
    write_wav(tmp_path / "a" / "x.wav", 1.0)
    for name in ("y.m4a", "z.WMA", ".DS_Store", "._x.wav"):
        (tmp_path / "a" / name).write_bytes(b"\x00" * 64)
    assert [p.name for p in find_audio([tmp_path / "a"])] == ["x.wav", "y.m4a", "z.WMA"]
    assert [p.name for p in find_audio([tmp_path / "a" / "._x.wav"])] == ["._x.wav"]  # named: the user means it


def test_unsupported_and_non_finite_files_get_a_skipped_row_in_the_summary(bundle_dir, tmp_path):
    folder = tmp_path / "recordings"
    write_wav(folder / "tone.wav", 5.0)
    (folder / "phone.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    write_signal_problems(folder / "bad")
    direct = tmp_path / "elsewhere" / "memo.aac"
    direct.parent.mkdir()
    direct.write_bytes(b"\xff\xf1" + bytes(64))
    out = tmp_path / "out"
    assert cli(["predict", str(folder), str(direct), "--model", str(bundle_dir), "--out", str(out), "--quiet"]) == 0
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    rows = {Path(f).name: (status, reason) for f, status, reason in summary[["file", "status", "reason"]].values}
    assert {name for name, (status, _) in rows.items() if status == "ok"} == {"tone.wav", "dc.wav", "clipped.wav"}
    assert rows["phone.m4a"][1].startswith("unsupported format (.m4a; convert to one of: .wav .flac")
    assert rows["memo.aac"][1].startswith("unsupported format (.aac; convert to one of: .wav .flac")
    assert rows["inf.wav"][1] == "non-finite samples (NaN or inf): 1 of 66150"
    assert rows["nan.wav"][1] == "non-finite samples (NaN or inf): 3 of 132300"
    assert len(rows) == len(summary) == 7 and len(summary[summary["status"] == "skipped"]) == 4


def test_write_outputs_csv_only(bundle_dir, tmp_path):
    bundle = load_bundle(bundle_dir)
    wav = write_wav(tmp_path / "a.wav", 5.0)
    options = PredictOptions(min_confidence=0.0)
    run = Predictor(bundle, options, "cpu").run([wav], progress=False)
    written = write_outputs(run, bundle, options, tmp_path / "out", "csv")
    assert set(written) == {"detections", "summary"}
    assert not list((tmp_path / "out").glob("*.selections.txt"))


def test_relative_paths_stay_as_named_and_raven_tables_stay_in_the_output_folder(bundle_dir, tmp_path, monkeypatch):
    recordings = tmp_path / "field" / "site1"
    wav = write_wav(recordings / "dawn.wav", 5.0)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    named = Path("../field/site1/dawn.wav")
    assert find_audio([named, wav, Path("../field")]) == [named]  # one file, however often it is named
    bundle = load_bundle(bundle_dir)
    options = PredictOptions(min_confidence=0.0)
    run = Predictor(bundle, options, "cpu").run([named], progress=False)
    write_outputs(run, bundle, options, Path("out"))
    rows = list(csv.DictReader(Path("out/detections.csv").read_text().splitlines()))
    assert {row["file"] for row in rows} == {"../field/site1/dawn.wav"}
    tables = list(tmp_path.rglob("*.selections.txt"))
    assert tables == [work / "out" / "dawn.selections.txt"]
    raven = list(csv.DictReader(tables[0].read_text().splitlines(), delimiter="\t"))
    assert {row["Begin Path"] for row in raven} == {str(wav.resolve())}  # Raven opens the file from anywhere


def _copy_bundle(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for file in source.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    return folder


@pytest.mark.parametrize("cut", [0, 10, 0.5])
def test_truncated_model_pt_gives_a_one_line_bundle_error_with_its_cause(bundle_dir, tmp_path, cut):
    folder = _copy_bundle(bundle_dir, tmp_path / "models")
    data = (folder / "model.pt").read_bytes()
    (folder / "model.pt").write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut])
    with pytest.raises(BundleError, match=r"model\.pt cannot be read") as caught:
        load_bundle(folder)
    message = str(caught.value)
    assert "\n" not in message and not message.endswith("()")  # one line, never an empty reason
    assert isinstance(caught.value.__cause__, (RuntimeError, EOFError, OSError))


def test_model_pt_of_another_model_names_the_mismatch_and_keeps_the_cause(bundle_dir, tmp_path):
    folder = _copy_bundle(bundle_dir, tmp_path / "models")
    info = json.loads((folder / "bundle.json").read_text())
    norm = info["normalization"]
    shape = InputShape(**info["input_shape"])
    other = build_model(ModelParams(name="audio_cnn"), len(info["species"]) + 1, shape, norm["mean"], norm["std"])
    torch.save({"format": 1, "state_dict": other.state_dict()}, folder / "model.pt")
    with pytest.raises(BundleError, match=r"model\.pt does not match bundle\.json .*size mismatch") as caught:
        load_bundle(folder)
    assert "\n" not in str(caught.value) and isinstance(caught.value.__cause__, RuntimeError)
    torch.save({"weights": {}}, folder / "model.pt")  # a torch file, but not a bundle's
    with pytest.raises(BundleError, match=r"model\.pt holds no state_dict"):
        load_bundle(folder)
    (folder / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="is not valid JSON") as caught:
        load_bundle(folder)
    assert isinstance(caught.value.__cause__, json.JSONDecodeError)


def _two_recordings(bundle_dir: Path, tmp_path: Path):
    bundle = load_bundle(bundle_dir)
    options = PredictOptions(min_confidence=0.0)
    wavs = [write_wav(tmp_path / "in" / f"{n}.wav", 5.0, seed=n) for n in range(2)]
    return bundle, options, Predictor(bundle, options, "cpu").run(wavs, progress=False)


def test_detections_are_computed_once_per_recording(bundle_dir, tmp_path, monkeypatch):
    from birdpipe import predict_outputs

    bundle, options, run = _two_recordings(bundle_dir, tmp_path)
    calls = []
    real = predict_outputs.detections
    monkeypatch.setattr(predict_outputs, "detections", lambda *args: calls.append(args[1].path) or real(*args))
    write_outputs(run, bundle, options, tmp_path / "out", "both")
    assert calls == [r.path for r in run.recordings]  # one pass feeds detections.csv and the Raven tables


@pytest.mark.parametrize("fmt", ["csv", "raven"])
def test_a_failure_mid_write_leaves_the_previous_outputs_and_no_partial_file(bundle_dir, tmp_path, monkeypatch, fmt):
    bundle, options, run = _two_recordings(bundle_dir, tmp_path)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    write_outputs(run, bundle, options, out, fmt)
    before = {p: p.read_bytes() for p in out.rglob("*")}
    real_writer = csv.writer

    class FailingWriter:  # the first file written fails at its second detection, after the header and one row
        def __init__(self, handle, *args, **kwargs) -> None:
            self.inner, self.rows = real_writer(handle, *args, **kwargs), 0

        def writerow(self, row):
            if self.rows == 2:
                raise OSError(5, "Input/output error")  # EIO: passes through atomic_path as it is
            self.rows += 1
            return self.inner.writerow(row)

        def writerows(self, rows):
            for row in rows:
                self.writerow(row)

    monkeypatch.setattr(csv, "writer", FailingWriter)
    for folder in (out, fresh):
        with pytest.raises(OSError, match="Input/output error"):
            write_outputs(run, bundle, options, folder, fmt)
    assert {p: p.read_bytes() for p in out.rglob("*")} == before  # the last complete outputs, untouched
    assert [p.name for p in fresh.rglob("*")] == []  # nothing half-written, no temporary left behind


def _write_long(path: Path, seconds: int, rate: int = 8000) -> Path:
    """A long 8 kHz int16 mono file, written fast: one minute of noise repeated."""
    block = (np.random.default_rng(3).normal(0, 0.1, rate * 60) * 32767).astype(np.int16)
    with sf.SoundFile(path, "w", rate, 1, "PCM_16") as handle:
        for _ in range(seconds // 60):
            handle.write(block)
    return path


def test_a_thousand_mixed_files_each_get_a_summary_row_and_memory_stays_flat(bundle_dir, tmp_path, monkeypatch):
    """1,000 files: tiny wav/flac/ogg, bad ones (empty, text named .wav, .m4a, NaN samples), one deleted during
    the run and one 2-hour file. Every file gets one summary row (ok, or skipped with a reason) and the 2-hour file
    costs far less peak memory than its decoded size (7200 s x 8 kHz x 4 bytes = 230 MB)."""
    import resource

    from birdpipe import predict

    folder = tmp_path / "in"
    folder.mkdir()
    rate, rng = 8000, np.random.default_rng(0)
    suffixes = [".wav"] * 6 + [".flac"] * 3 + [".ogg"]
    for i in range(990):
        sf.write(folder / f"f{i:04d}{suffixes[i % 10]}", rng.normal(0, 0.1, rate // 2 + 40 * (i % 10)), rate)
    expected_skips = {"empty.wav": "empty", "notes.wav": "decoded", "phone.m4a": "unsupported",
                      "nan.wav": "non-finite", "f0501.wav": "not found"}  # fmt: skip
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("field notes, not audio\n" * 10)
    (folder / "phone.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    with_nan = rng.normal(0, 0.1, rate).astype(np.float32)
    with_nan[100:110] = np.nan
    sf.write(folder / "nan.wav", with_nan, rate, subtype="FLOAT")
    for i in range(5):
        sf.write(folder / f"g{i}.wav", rng.normal(0, 0.1, rate), rate)
    _write_long(folder / "long.wav", 7200)
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == 1000

    original = predict.Predictor.recording

    def vanishing(self, path, on_audio=None):
        if path.name == "f0500.wav":  # the next file disappears while the run is under way
            (folder / "f0501.wav").unlink()
        return original(self, path, on_audio)

    fast = ["--model", str(bundle_dir), "--window", "1", "--hop", "2", "--format", "csv", "--quiet"]  # 1 s windows
    # a 10-minute file first: the model's and extractor's own peak is reached, so what follows is what length costs
    warm = _write_long(tmp_path / "ten_minutes.wav", 600)
    assert cli(["predict", str(warm), "--out", str(tmp_path / "warm"), *fast]) == 0
    monkeypatch.setattr(predict.Predictor, "recording", vanishing)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = tmp_path / "out"
    assert cli(["predict", str(folder), "--out", str(out), *fast]) == 0
    growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert sorted(summary["file"]) == files and summary["file"].is_unique
    assert set(summary["status"]) == {"ok", "skipped"}
    skipped = summary[summary["status"] == "skipped"].set_index("file")["reason"]
    assert sorted(skipped.index) == sorted(expected_skips)
    for name, word in expected_skips.items():
        assert word in skipped[name], (name, skipped[name])
    ok = summary[summary["status"] == "ok"].set_index("file")
    assert (ok["windows"].astype(int) >= 1).all() and (ok["label"] != "").all()
    assert float(ok.loc["long.wav", "duration_s"]) == pytest.approx(7200.0, abs=0.1)
    assert ok.loc["long.wav", "reason"] == ""
    assert growth_mb < 100, f"peak memory grew {growth_mb:.0f} MB on a 230 MB (decoded) recording"
