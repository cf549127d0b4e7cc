import numpy as np
import pytest
import soundfile as sf

from birdpipe.data.audio import (
    AUDIO_EXTENSIONS,
    CLIP_LEVEL,
    UNSUPPORTED_EXTENSIONS,
    AudioError,
    audio_files,
    check_recording,
    load_audio,
    probe,
    stream_audio,
)
from tests.conftest import chirp, write_bad_files, write_mp2_tone, write_signal_problems

# How soundfile writes each decodable extension: (format, subtype, sample rate); .mp2 is built by hand.
WRITERS = {
    **{ext: ("WAV", None, 44100) for ext in (".wav", ".wave", ".bwf")},
    ".rf64": ("RF64", None, 44100),
    ".w64": ("W64", None, 44100),
    ".flac": ("FLAC", None, 16000),
    **{ext: ("OGG", "VORBIS", 32000) for ext in (".ogg", ".oga")},
    ".opus": ("OGG", "OPUS", 48000),
    ".mp3": ("MP3", None, 22050),
    **{ext: ("AIFF", None, 44100) for ext in (".aiff", ".aif", ".aifc")},
    ".caf": ("CAF", None, 48000),
    **{ext: ("AU", None, 16000) for ext in (".au", ".snd")},
    ".sph": ("NIST", None, 16000),
    ".voc": ("VOC", None, 22050),
    ".avr": ("AVR", None, 22050),
    ".paf": ("PAF", None, 22050),
    ".pvf": ("PVF", None, 22050),
    ".htk": ("HTK", None, 16000),
    ".sd2": ("SD2", None, 22050),  # its header lies in the ._clip.sd2 resource fork beside it
    ".sds": ("SDS", None, 22050),
    **{ext: ("SVX", None, 22050) for ext in (".svx", ".8svx")},
    ".sf": ("IRCAM", None, 22050),
    ".wve": ("WVE", "ALAW", 8000),
}


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


def test_real_clips_pass_checks_without_warnings(xc_clips):
    checked = check_recording(xc_clips / "audio" / "Crotophaga_ani" / "171401.ogg", 0.5, -70)
    assert checked.info.sample_rate == 22050 and 1.3 < checked.duration < 1.5
    for clip in sorted((xc_clips / "audio").rglob("*.ogg")):  # 171403.ogg has 0.13% clipped samples: no warning
        checked = check_recording(clip, 0.5, -70)
        assert checked.clipped_fraction < 0.01 and checked.clipping_warning is None


def test_every_decodable_extension_is_tested():
    assert set(WRITERS) | {".mp2"} == set(AUDIO_EXTENSIONS)
    assert not set(AUDIO_EXTENSIONS) & set(UNSUPPORTED_EXTENSIONS)


@pytest.mark.parametrize("ext", sorted(WRITERS))
def test_every_decodable_extension_reads_back_through_the_checks(tmp_path, ext):
    fmt, subtype, rate = WRITERS[ext]
    path = tmp_path / f"clip{ext}"
    sf.write(path, chirp(2.0, rate, 1000, 3000), rate, format=fmt, subtype=subtype)
    checked = check_recording(path, min_seconds=1.0, silence_dbfs=-70)
    assert checked.info.sample_rate == rate and checked.duration == pytest.approx(2.0, abs=0.1)
    signal, _ = load_audio(path, 16000)
    assert abs(signal.size - 32000) < 1600 and np.abs(signal).max() > 0.1


def test_mpeg_layer_2_decodes(tmp_path):
    path = write_mp2_tone(tmp_path / "tone.mp2", 2.0)
    checked = check_recording(path, min_seconds=1.0, silence_dbfs=-70)
    assert checked.info.sample_rate == 48000 and checked.duration == pytest.approx(2.0, abs=0.05)
    signal, _ = load_audio(path)
    spectrum = np.abs(np.fft.rfft(signal[4800:52800]))  # 1 s: bins are 1 Hz apart
    assert np.argmax(spectrum) == 250 and 0.2 < np.abs(signal).max() < 0.5


@pytest.mark.parametrize("ext", [".m4a", ".aac", ".wma", ".webm", ".mp4", ".amr", ".ape", ".mka", ".M4A"])
def test_unsupported_formats_are_named_with_the_supported_list(tmp_path, ext):
    path = tmp_path / f"clip{ext}"
    sf.write(path, chirp(1.0, 22050, 1000, 3000), 22050, format="WAV")  # even a WAV inside: judged by its name
    for read in (probe, lambda p: list(stream_audio(p)), lambda p: check_recording(p, 0.5, -70)):
        with pytest.raises(AudioError) as error:
            read(path)
        assert error.value.reason.startswith(f"unsupported format ({ext.lower()}; convert to one of: .wav .flac")
        assert ".aiff" in error.value.reason and ".opus" in error.value.reason


def test_audio_files_keep_undecodable_audio_and_skip_hidden_files(tmp_path):
    for name in ("a.wav", "b.M4A", "c.opus", "d.aiff", "notes.txt", "photo.jpg", ".DS_Store", "._a.wav", ".x/e.wav"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.wma").write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in audio_files(tmp_path)]
    assert found == ["a.wav", "b.M4A", "c.opus", "d.aiff", "sub/f.wma"]


def test_non_finite_dc_and_clipped_recordings(tmp_path):
    expected = write_signal_problems(tmp_path)
    for name, reason in expected.items():
        with pytest.raises(AudioError) as error:
            check_recording(tmp_path / name, min_seconds=0.5, silence_dbfs=-70)
        assert error.value.reason.startswith(reason), error.value.reason
    clipped = check_recording(tmp_path / "clipped.wav", min_seconds=0.5, silence_dbfs=-70)
    decoded, _ = sf.read(tmp_path / "clipped.wav", dtype="float32")
    assert (
        clipped.clipped_fraction == pytest.approx(np.mean(np.abs(decoded) >= CLIP_LEVEL))
        and clipped.clipped_fraction > 0.05
    )
    assert clipped.clipping_warning.startswith(f"clipped: {clipped.clipped_fraction:.2%} of samples")


def test_a_dc_offset_under_real_sound_is_kept(tmp_path):
    sf.write(tmp_path / "offset.wav", 0.4 + chirp(2.0, 22050, 1000, 3000), 22050, subtype="FLOAT")
    assert check_recording(tmp_path / "offset.wav", 0.5, -70).clipping_warning is None


@pytest.mark.parametrize("rate", [None, 16000])
def test_streaming_never_yields_non_finite_samples(tmp_path, rate):
    write_signal_problems(tmp_path)
    for name, count in (("inf.wav", "1 of 66150"), ("nan.wav", "3 of 132300")):
        with pytest.raises(AudioError, match=rf"non-finite samples \(NaN or inf\): {count}$"):
            for _ in stream_audio(tmp_path / name, rate, block_seconds=0.5):
                pass
    with pytest.raises(AudioError, match=r"non-finite samples \(NaN or inf\): 1 of 44100$"):  # first 2 s only
        load_audio(tmp_path / "inf.wav", rate, max_seconds=2.0)
    load_audio(tmp_path / "inf.wav", rate, max_seconds=0.5)  # the inf sample lies at 1 s
