"""Shared fixtures: real Xeno-canto clips (tests/data/xc_clips) and small generated recordings."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# the features stage's per-recording store: the tests' own, never the user's ~/.cache
os.environ.setdefault("BIRDPIPE_FEATURE_STORE", tempfile.mkdtemp(prefix="birdpipe-test-store-"))

XC_CLIPS = Path(__file__).parent / "data" / "xc_clips"


def chirp(seconds: float, rate: int, low: float, high: float, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A repeated frequency sweep over a little noise: bird-like enough for feature and I/O tests."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    phase_t = np.mod(t, 0.5)
    freq = low + (high - low) * phase_t / 0.5
    tone = np.sin(2 * np.pi * np.cumsum(freq) / rate) * (phase_t < 0.3)
    return (level * tone + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_species_folder(root: Path, per_species: dict[str, int], rate: int = 22050, seconds: float = 3.0) -> Path:
    """One sub-folder per species with ``n`` generated recordings each, mixing formats and rates."""
    formats = [("wav", rate), ("flac", 16000), ("mp3", rate), ("ogg", 32000)]
    for s, (species, count) in enumerate(sorted(per_species.items())):
        folder = root / species
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            ext, sr = formats[i % len(formats)]
            signal = chirp(seconds + 0.25 * i, sr, 1000 + 700 * s, 3000 + 700 * s, seed=100 * s + i)
            sf.write(folder / f"{species}_{i}.{ext}", signal, sr)
    return root


def write_bad_files(folder: Path, rate: int = 22050) -> dict[str, str]:
    """The bad recordings of the issue: a truncated mp3, a zero-byte file, a text file named .wav, silence."""
    folder.mkdir(parents=True, exist_ok=True)
    good = chirp(6.0, rate, 2000, 4000)
    sf.write(folder / "whole.mp3", good, rate)
    data = (folder / "whole.mp3").read_bytes()
    (folder / "truncated.mp3").write_bytes(data[: len(data) // 3])
    (folder / "whole.mp3").unlink()
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notes.wav").write_text("field notes, not audio\n" * 10)
    sf.write(folder / "silence.flac", np.zeros(rate * 3, dtype=np.float32), rate)
    return {
        "truncated.mp3": "truncated",
        "empty.wav": "empty file",
        "notes.wav": "cannot be decoded",
        "silence.flac": "silent",
    }


def write_mp2_tone(path: Path, seconds: float) -> Path:
    """An MPEG-1 Layer II stream (48 kHz mono, 64 kbit/s) holding a 250 Hz tone, built bit by bit: no encoder needed.

    Only sub-band 0 carries samples (3 quantisation levels, table B.2a of ISO 11172-3); its 12 granules per
    frame alternate (+, +, 0) and (-, -, 0), a period of 6 sub-band samples at 1500 Hz.
    """
    bits = "111111111111" + "1" + "10" + "1" + "0100" + "01" + "0" + "0" + "11" + "00" + "0" + "0" + "00"  # header
    bits += "0001" + "0" * 84  # bit allocation: sub-band 0 -> 3 levels, the 26 others none
    bits += "10" + "000110"  # one scale factor for the whole frame, index 6 (0.5)
    bits += ("10001" + "01001") * 6  # grouped samples: codes 17 = (2, 2, 1) and 9 = (0, 0, 1)
    frame = int(bits.ljust(192 * 8, "0"), 2).to_bytes(192, "big")
    path.write_bytes(frame * round(seconds * 48000 / 1152))
    return path


def write_signal_problems(folder: Path, rate: int = 22050) -> dict[str, str]:
    """Float WAVs with an inf sample, NaN samples, a DC offset only, and a clipped one (usable, with a warning).

    Returns the expected reason of each file that must be skipped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    signal = chirp(3.0, rate, 1500, 3500, seed=7)
    with_inf = signal.copy()
    with_inf[rate] = np.inf
    with_nan = np.stack([signal, signal], axis=1)
    with_nan[100:103, 1] = np.nan
    sf.write(folder / "inf.wav", with_inf, rate, subtype="FLOAT")
    sf.write(folder / "nan.wav", with_nan, rate, subtype="FLOAT")
    sf.write(folder / "dc.wav", np.full(3 * rate, 0.25, dtype=np.float32), rate, subtype="FLOAT")
    sf.write(folder / "clipped.wav", np.clip(4 * signal, -1.0, 1.0), rate)  # PCM_16: full scale is 32767
    return {
        "inf.wav": f"non-finite samples (NaN or inf): 1 of {3 * rate}",
        "nan.wav": f"non-finite samples (NaN or inf): 3 of {2 * 3 * rate}",
        "dc.wav": "constant signal (DC offset only, no sound",
    }


@pytest.fixture
def xc_clips() -> Path:
    return XC_CLIPS


@pytest.fixture
def species_folder(tmp_path: Path) -> Path:
    return write_species_folder(tmp_path / "recordings", {"Alpha_one": 5, "Beta_two": 4, "Gamma_three": 3})


def copy_train_inputs(real_cache: dict, folder: Path) -> None:
    """What the train stage reads besides params and split: features, class weights and feature statistics."""
    from birdpipe.common.outputs import write_json

    shutil.copytree(real_cache["root"] / "features", folder / "data" / "features")
    write_json(real_cache["weights"], folder / "data" / "class_weights.json")
    write_json(real_cache["stats"], folder / "data" / "feature_stats.json")


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> dict:
    """Ingest, split, features (MFCC, first 8 s) and weights of the real clips, once per test session."""
    from birdpipe.common.params import DataParams, FeatureParams, SplitParams, WeightParams
    from birdpipe.data.ingest import find_candidates, ingest
    from birdpipe.data.split import split_recordings
    from birdpipe.features.cache import FeatureCache, build_cache
    from birdpipe.training.weights import class_weights, feature_stats

    root = tmp_path_factory.mktemp("real_cache")
    data = DataParams(source=str(XC_CLIPS / "metadata.csv"))
    manifest, _ = ingest(find_candidates(data.source, data), data, workers=1, progress=False)
    table, _ = split_recordings(manifest, SplitParams(), seed=0)
    table.to_csv(root / "split.csv", index=False)
    build_cache(table, FeatureParams(kind="mfcc", max_seconds=8.0, workers=1), root / "features", progress=False)
    cache = FeatureCache.open(root / "features")
    counts = cache.recordings("train")["label"].value_counts()
    weights = class_weights(cache.species, [int(counts[s]) for s in cache.species], WeightParams())
    return {
        "root": root,
        "cache": cache,
        "weights": weights,
        "stats": feature_stats(cache.frames, spans=cache.spans("train")),
    }
