import numpy as np
import pytest
import soundfile as sf

from birdpipe.audio import AudioError, check_recording, load_audio, probe, stream_audio
from tests.conftest import chirp, write_bad_files


@pytest.mark.parametrize(("ext", "rate"), [("wav", 44100), ("flac", 16000), ("ogg", 32000), ("mp3", 22050)])
def test_every_format_and_rate_decodes_and_resamples(tmp_path, ext, rate):
    path = tmp_path / f"clip.{ext}"
    sf.write(path, chirp(2.0, rate, 1500, 3000), rate)
    signal, sr = load_audio(path, 22050)
    assert sr == 22050
    assert abs(signal.size - 2.0 * 22050) < 0.05 * 22050  # lossy codecs pad a little
    assert signal.dtype == np.float32 and np.abs(signal).max() > 0.1


def test_stereo_is_downmixed(tmp_path):
    left = chirp(1.0, 22050, 1000, 2000)
    sf.write(tmp_path / "stereo.wav", np.stack([left, np.zeros_like(left)], axis=1), 22050)
    assert probe(tmp_path / "stereo.wav").channels == 2
    signal, _ = load_audio(tmp_path / "stereo.wav")
    np.testing.assert_allclose(signal, left / 2, atol=1e-4)


def test_streaming_in_blocks_equals_reading_whole(xc_clips):
    clip = xc_clips / "audio" / "Vireo_latimeri" / "805338.ogg"
    whole, _ = load_audio(clip, 16000)
    blocks = np.concatenate(list(stream_audio(clip, 16000, block_seconds=1.3)))
    np.testing.assert_array_equal(whole, blocks)
    limited, _ = load_audio(clip, 16000, max_seconds=2.0)
    assert limited.size == pytest.approx(32000, abs=2)


def test_bad_files_get_one_line_reasons(tmp_path):
    expected = write_bad_files(tmp_path)
    for name, reason in expected.items():
        with pytest.raises(AudioError) as error:
            check_recording(tmp_path / name, min_seconds=0.5, silence_dbfs=-70)
        assert reason in error.value.reason
        assert "\n" not in error.value.reason
    with pytest.raises(AudioError, match="file not found"):
        probe(tmp_path / "missing.wav")


def test_too_short_is_reported_with_the_threshold(tmp_path):
    sf.write(tmp_path / "short.wav", chirp(0.3, 22050, 1000, 2000), 22050)
    with pytest.raises(AudioError, match=r"too short \(0.30 s < data.min_seconds 0.5 s\)"):
        check_recording(tmp_path / "short.wav", 0.5, -70)


def test_real_clip_passes_checks(xc_clips):
    info, duration = check_recording(xc_clips / "audio" / "Crotophaga_ani" / "171401.ogg", 0.5, -70)
    assert info.sample_rate == 22050 and 1.3 < duration < 1.5
