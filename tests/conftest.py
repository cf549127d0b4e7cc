"""Shared fixtures: real Xeno-canto clips (tests/data/xc_clips) and small generated recordings."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

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


@pytest.fixture
def xc_clips() -> Path:
    return XC_CLIPS


@pytest.fixture
def species_folder(tmp_path: Path) -> Path:
    return write_species_folder(tmp_path / "recordings", {"Alpha_one": 5, "Beta_two": 4, "Gamma_three": 3})


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> dict:
    """Ingest, split, features (MFCC, first 8 s) and weights of the real clips, once per test session."""
    from birdpipe.features import FeatureCache, build_cache
    from birdpipe.ingest import find_candidates, ingest
    from birdpipe.params import DataParams, FeatureParams, SplitParams, WeightParams
    from birdpipe.split import split_recordings
    from birdpipe.weights import class_weights, feature_stats

    root = tmp_path_factory.mktemp("real_cache")
    data = DataParams(source=str(XC_CLIPS / "metadata.csv"))
    manifest, _ = ingest(find_candidates(data.source, data), data, workers=1, progress=False)
    table, _ = split_recordings(manifest, SplitParams(), seed=0)
    table.to_csv(root / "split.csv", index=False)
    build_cache(table, FeatureParams(kind="mfcc", max_seconds=8.0, workers=1), root / "features", progress=False)
    cache = FeatureCache.open(root / "features")
    counts = cache.recordings("train")["label"].value_counts()
    weights = class_weights(cache.species, [int(counts[s]) for s in cache.species], WeightParams())
    return {"root": root, "cache": cache, "weights": weights, "stats": feature_stats(cache.arrays["train"])}
