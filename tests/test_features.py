import hashlib

import librosa
import numpy as np
import pandas as pd
import pytest

from birdpipe.audio import load_audio
from birdpipe.features import FeatureCache, FeatureConfig, FeatureExtractor, active_windows, build_cache
from birdpipe.ingest import find_candidates, ingest
from birdpipe.params import DataParams, FeatureParams, SplitParams
from birdpipe.split import split_recordings
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
    assert summary["recordings"] == {"train": 4, "val": 4, "test": 4}
    for split in ("train", "val", "test"):
        array = cache.arrays[split]
        assert isinstance(array, np.memmap) and array.dtype == np.float16 and array.shape[1:] == (3, 20)
        rows = cache.recordings(split)
        assert (
            rows["start"].iloc[0] == 0
            and (rows["start"].iloc[1:].to_numpy() == rows["stop"].iloc[:-1].to_numpy()).all()
        )
        assert rows["stop"].iloc[-1] == array.shape[0]
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


def test_species_only_outside_train_are_left_out_and_reported(species_folder, tmp_path):
    table = split_table(species_folder, tmp_path)
    extra = table[table["split"] == "test"].head(1).assign(label="Ghost_species")
    summary = build_cache(pd.concat([table, extra]), FeatureParams(), tmp_path / "f", progress=False)
    assert "Ghost_species" not in summary["species"]
    assert summary["skipped"][0]["reason"] == "species absent from train"


def test_a_cache_where_no_recording_can_be_read_is_an_error_not_an_empty_cache(tmp_path):
    import pandas as pd

    from birdpipe.audio import AudioError
    from birdpipe.features import build_cache
    from birdpipe.params import FeatureParams

    table = pd.DataFrame({"id": ["a", "b"], "path": [str(tmp_path / "missing.wav"), str(tmp_path / "gone.flac")],
                          "label": ["x", "x"], "split": ["train", "test"]})  # fmt: skip
    with pytest.raises(AudioError, match=r"no recording could be turned into features.*missing\.wav"):
        build_cache(table, FeatureParams(workers=1), tmp_path / "features", progress=False)
    assert not (tmp_path / "features").exists()
