import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest

from birdpipe.common.params import DataParams, FeatureParams, SplitParams
from birdpipe.data.audio import load_audio
from birdpipe.data.ingest import find_candidates, ingest
from birdpipe.data.split import split_recordings
from birdpipe.features.cache import FeatureCache, build_cache
from birdpipe.features.spectral import FEATURE_GRID, FeatureConfig, FeatureExtractor, active_windows, extract_recording
from tests.conftest import chirp

CLIP = "audio/Vireo_latimeri/805338.ogg"


@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_frame_count_and_shape(kind):
    config = FeatureConfig(kind=kind)
    for samples in (0 + 700, 1024, 1025, 22050, 22050 * 3 + 17):
        out = FeatureExtractor(config)(np.zeros(samples, np.float32) + 1e-3)
        assert out.shape == (samples // 512 + 1, config.channels, config.bins)


@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_streaming_gives_the_same_bits_as_whole(xc_clips, kind):
    signal, _ = load_audio(xc_clips / CLIP, 22050)
    extractor = FeatureExtractor(FeatureConfig(kind=kind))
    whole = extractor(signal)
    for block in (777, 4096, 22050 * 2 + 3):
        streamed = np.concatenate(list(extractor.stream(signal[i : i + block] for i in range(0, signal.size, block))))
        np.testing.assert_array_equal(streamed, whole)


def test_logmel_matches_librosa_without_highpass(xc_clips):
    signal, _ = load_audio(xc_clips / CLIP, 22050)
    ours = FeatureExtractor(FeatureConfig(kind="logmel", highpass_hz=0))(signal)[:, 0, :].T
    mel = librosa.feature.melspectrogram(y=signal, sr=22050, n_fft=2048, hop_length=512, n_mels=128, pad_mode="reflect")
    reference = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)
    assert np.median(np.abs(ours - reference)) < 1e-3
    assert np.percentile(np.abs(ours - reference), 99) < 0.05


def test_highpass_removes_low_frequency_energy():
    t = np.arange(22050 * 2) / 22050
    low = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    plain = FeatureExtractor(FeatureConfig(kind="logmel", highpass_hz=0))(low).max()
    filtered = FeatureExtractor(FeatureConfig(kind="logmel", highpass_hz=500))(low).max()
    # a 4th-order Butterworth response at 200 Hz with a 500 Hz cut-off: 10 log10(1 + 2.5^8) = 31.8 dB
    assert plain - filtered == pytest.approx(31.8, abs=1.0)


def test_activity_windows_find_the_song():
    quiet = 0.001 * np.random.default_rng(0).standard_normal(22050 * 20).astype(np.float32)
    quiet[22050 * 12 : 22050 * 16] += chirp(4.0, 22050, 2000, 5000)
    extractor = FeatureExtractor(FeatureConfig(kind="logmel"))
    db = extractor(quiet)[:, 0, :]
    window = FeatureConfig().frames(4.0)
    ((start, _stop),) = active_windows(db, window, 1)
    assert abs(start / FeatureConfig().frames_per_second - 12.0) < 0.5
    two = active_windows(db, window, 2)
    assert len(two) == 2 and two[0][1] <= two[1][0]


def split_table(source, tmp_path):
    data = DataParams(source=str(source))
    manifest, _ = ingest(find_candidates(data.source, data), data, workers=1, progress=False)
    table, _ = split_recordings(manifest, SplitParams(), seed=0)
    return table


def test_cache_on_real_clips_is_memory_mappable_and_indexed(xc_clips, tmp_path):
    table = split_table(xc_clips / "metadata.csv", tmp_path)
    summary = build_cache(table, FeatureParams(kind="mfcc", workers=2), tmp_path / "features", progress=False)
    cache = FeatureCache.open(tmp_path / "features")
    assert cache.species == sorted(table["label"].unique())
    assert summary["recordings"] == 12 and summary["extracted"] == 12 and summary["from_store"] == 0
    array = cache.frames
    assert isinstance(array, np.memmap) and array.dtype == np.float16 and array.shape[1:] == (3, 20)
    rows = cache.index.sort_values("start")
    assert rows["start"].iloc[0] == 0 and (rows["start"].iloc[1:].to_numpy() == rows["stop"].iloc[:-1].to_numpy()).all()
    assert rows["stop"].iloc[-1] == array.shape[0]
    for split in ("train", "val", "test"):
        assert len(cache.recordings(split)) == 4 and cache.arrays[split] is array  # every split reads one array
    row = cache.index[cache.index["id"] == "XC805338"].iloc[0]
    signal, _ = load_audio(xc_clips / CLIP, 22050)
    expected = FeatureExtractor(cache.config)(signal).astype(np.float16)
    np.testing.assert_array_equal(cache.arrays[row["split"]][row["start"] : row["stop"]], expected)
    assert cache.stats().shape == (12, 40)


def test_cache_is_byte_identical_across_runs_and_worker_counts(xc_clips, tmp_path):
    table = split_table(xc_clips / "metadata.csv", tmp_path)
    digests = []
    for workers, folder in ((1, "a"), (2, "b")):
        build_cache(table, FeatureParams(kind="logmel", workers=workers, max_seconds=5.0), tmp_path / folder,
                    progress=False)  # fmt: skip
        digests.append({p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted((tmp_path / folder).iterdir())})
    assert digests[0] == digests[1]
    assert FeatureCache.open(tmp_path / "a").index["seconds"].max() <= 5.1


def test_activity_detection_keeps_only_the_chosen_windows(xc_clips, tmp_path):
    table = split_table(xc_clips / "metadata.csv", tmp_path)
    params = FeatureParams(kind="logmel", activity={"windows": 1, "seconds": 2.0})
    build_cache(table, params, tmp_path / "features", progress=False)
    seconds = FeatureCache.open(tmp_path / "features").index["seconds"]
    assert seconds.max() <= 2.05
    assert (seconds < 1.9).sum() == 3  # the three Crotophaga clips are shorter than a window


def test_species_only_outside_train_are_left_out_of_the_label_set(species_folder, tmp_path):
    table = split_table(species_folder, tmp_path)
    extra = table[table["split"] == "test"].head(1).assign(label="Ghost_species", id="ghost")
    summary = build_cache(pd.concat([table, extra]), FeatureParams(), tmp_path / "f", progress=False)
    assert "Ghost_species" in summary["species"]  # the cache holds the whole manifest, before any split
    cache = FeatureCache.open(tmp_path / "f")
    assert "Ghost_species" not in cache.species and "ghost" not in set(cache.index["id"])


def test_a_cache_where_no_recording_can_be_read_is_an_error_not_an_empty_cache(tmp_path):
    import pandas as pd

    from birdpipe.common.params import FeatureParams
    from birdpipe.data.audio import AudioError
    from birdpipe.features.cache import build_cache

    table = pd.DataFrame({"id": ["a", "b"], "path": [str(tmp_path / "missing.wav"), str(tmp_path / "gone.flac")],
                          "label": ["x", "x"], "split": ["train", "test"]})  # fmt: skip
    with pytest.raises(AudioError, match=r"no recording could be turned into features.*missing\.wav"):
        build_cache(table, FeatureParams(workers=1), tmp_path / "features", progress=False)
    assert not (tmp_path / "features").exists()


# ----------------------------------------------------------------------------- bytes pinned across machines
SHORT_CLIP = "audio/Crotophaga_ani/171396.ogg"  # 1.6 s
# sha256 of the cache bytes (storage dtype, then the baseline summary) of SHORT_CLIP with default params, made on
# x86-64 Linux with the versions pinned in requirements.txt
FEATURES_SHA256 = {
    "mfcc": "b79dc94cb145d781560ad0ad07d0ff16b510f8de19d51b67015b17ed57795b43",
    "logmel": "5762348a47ebca25729ae7bcff2019824b536355ea0604513d78dc2964c69ca0",
}


def _cache_digest(path: Path, kind: str) -> str:
    features, summary = extract_recording(str(path), FeatureConfig(kind=kind), max_seconds=60.0)
    return hashlib.sha256(features.tobytes() + summary.tobytes()).hexdigest()


@pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the stored hashes are for x86-64 Linux, where the README claims bit-identical outputs",
)
@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_features_of_a_real_clip_have_the_stored_bytes(xc_clips, kind):
    digest = _cache_digest(xc_clips / SHORT_CLIP, kind)
    assert digest == FEATURES_SHA256[kind], (
        f"The {kind} features of {SHORT_CLIP} are no longer what they were. If you changed the extractor "
        f"(birdpipe/features/spectral.py, the decoding or resampling in birdpipe/data/audio.py) or a version pinned in "
        f"requirements.txt on purpose, set FEATURES_SHA256[{kind!r}] = {digest!r} (tests/test_features.py) and "
        f"rerun the pipeline: data/features in dvc.lock changes with it. If not, the features now depend on "
        f"something they should not (CPU, thread count, library version: numpy {np.__version__})."
    )


def test_features_do_not_depend_on_cpu_specific_kernels(xc_clips):
    """numpy's, ATen's and MKL's kernels forced down to their baselines (a CPU without AVX2) change no bit."""
    from numpy._core import _multiarray_umath as umath

    code = (
        "import json; from pathlib import Path; from tests.test_features import SHORT_CLIP, _cache_digest; "
        f"print(json.dumps({{k: _cache_digest(Path({str(xc_clips)!r}) / SHORT_CLIP, k) for k in ('mfcc', 'logmel')}}))"
    )
    env = {
        **os.environ,
        "NPY_DISABLE_CPU_FEATURES": " ".join(t for t in umath.__cpu_dispatch__ if umath.__cpu_features__.get(t)),
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
    }
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, check=True, timeout=120, capture_output=True)
    baseline = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert baseline == {kind: _cache_digest(xc_clips / SHORT_CLIP, kind) for kind in ("mfcc", "logmel")}


@pytest.mark.parametrize("kind", ["mfcc", "logmel"])
def test_every_feature_value_is_on_the_grid(xc_clips, kind):
    signal, _ = load_audio(xc_clips / SHORT_CLIP, 22050)
    out = FeatureExtractor(FeatureConfig(kind=kind))(signal).astype(np.float64) / FEATURE_GRID
    np.testing.assert_array_equal(out, np.rint(out))


def test_the_store_serves_a_recording_extracted_before_under_the_same_config(xc_clips, tmp_path):
    """A second build (a new split, seed or experiment) extracts nothing and writes the same bytes; another config
    is another key; a damaged entry is extracted again."""
    table = split_table(xc_clips / "metadata.csv", tmp_path)
    store = tmp_path / "store"
    params = FeatureParams(kind="mfcc", workers=1, max_seconds=5.0)
    first = build_cache(table, params, tmp_path / "a", progress=False, store_root=store)
    second = build_cache(table.sample(frac=1.0, random_state=0), params, tmp_path / "b", progress=False,
                         store_root=store)  # fmt: skip
    assert (first["extracted"], first["from_store"]) == (12, 0)
    assert (second["extracted"], second["from_store"]) == (0, 12)
    a, b = FeatureCache.open(tmp_path / "a"), FeatureCache.open(tmp_path / "b")
    for row in a.index.itertuples():
        other = b.index[b.index["id"] == row.id].iloc[0]
        assert (
            np.asarray(a.frames[row.start : row.stop]).tobytes()
            == np.asarray(b.frames[other.start : other.stop]).tobytes()
        )
    entry = next(store.rglob("*.npz"))
    entry.write_bytes(b"cut")
    again = build_cache(table, params, tmp_path / "d", progress=False, store_root=store)
    assert (again["extracted"], again["from_store"]) == (1, 11)
    assert (tmp_path / "d" / "frames.npy").read_bytes() == (tmp_path / "a" / "frames.npy").read_bytes()
    longer = build_cache(table, params.model_copy(update={"max_seconds": 6.0}), tmp_path / "c", progress=False,
                         store_root=store)  # fmt: skip
    assert longer["extracted"] == 12  # max_seconds is part of the key


def test_the_store_key_digests_the_extraction_code_but_not_the_params_schema():
    """Adding a training param must not re-extract every stored recording; editing the extractor must."""
    from birdpipe.features.store import extraction_digest

    files = set(extraction_digest())
    assert {"birdpipe/features/spectral.py", "birdpipe/data/audio.py", "birdpipe/birdnet/runtime.py"} <= files
    assert "birdpipe/common/params.py" not in files
