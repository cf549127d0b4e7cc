"""Audio input: decoding, checking and streaming recordings with soundfile (libsndfile).

Every format libsndfile decodes is read (:data:`AUDIO_EXTENSIONS`); audio it cannot decode (m4a, aac, wma,
webm...: :data:`UNSUPPORTED_EXTENSIONS`) is refused with the reason "unsupported format", so callers report
it instead of dropping it. Every decoder failure becomes an :class:`AudioError` carrying the path and a
one-line reason, so callers can report and skip a bad recording instead of showing a traceback from inside
libsndfile. NaN or inf samples are never passed on: reading them raises AudioError.
Resampling uses soxr's streaming resampler, so a recording read whole and the same recording read in
blocks (``predict`` on hour-long soundscapes) go through exactly the same code.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from birdpipe.common.errors import PipelineError

# What libsndfile 1.2.2 decodes (each extension is tested by writing a file and reading it back), the
# original four first. Left out: RAW (no header), MAT4/MAT5 (.mat is MATLAB data), XI (stores no sample rate).
AUDIO_EXTENSIONS = (
    *(".wav", ".flac", ".ogg", ".mp3"),
    *(".wave", ".bwf", ".rf64", ".w64", ".oga", ".opus", ".mp2", ".aiff", ".aif", ".aifc", ".caf", ".au"),
    *(".snd", ".sph", ".voc", ".avr", ".paf", ".pvf", ".htk", ".sd2", ".sds", ".svx", ".8svx", ".sf", ".wve"),
)
# Audio that libsndfile cannot decode: reported as "unsupported format", never skipped silently.
UNSUPPORTED_EXTENSIONS = (
    *(".m4a", ".m4b", ".aac", ".alac", ".wma", ".webm", ".mp4", ".mka", ".amr", ".awb", ".3gp", ".3g2", ".ape"),
    *(".ac3", ".eac3", ".dts", ".wv", ".tta", ".tak", ".mpc", ".spx", ".ra", ".rm", ".dsf", ".dff", ".shn"),
    *(".raw", ".pcm", ".gsm", ".aa", ".aax"),
)
_AUDIO_LIKE = frozenset(AUDIO_EXTENSIONS + UNSUPPORTED_EXTENSIONS)
CLIP_LEVEL = 0.999  # a sample at or above this share of full scale counts as clipped
CLIPPED_WARN_FRACTION = 0.01  # a recording with a larger share of clipped samples gets a warning
_READ_BLOCK = 1 << 18  # frames per soundfile read
_DECODER_ERRORS = (sf.SoundFileError, RuntimeError)  # sf.LibsndfileError is both; decoders raise RuntimeError


class AudioError(PipelineError):
    """A recording that cannot be used, with the reason in plain words."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


@dataclass(frozen=True)
class RecordingCheck:
    """A recording that passed :func:`check_recording`."""

    info: AudioInfo
    duration: float  # decoded seconds
    clipped_fraction: float  # share of samples (all channels) at or above CLIP_LEVEL full scale

    @property
    def clipping_warning(self) -> str | None:
        if self.clipped_fraction <= CLIPPED_WARN_FRACTION:
            return None
        return (
            f"clipped: {self.clipped_fraction:.2%} of samples at or above {CLIP_LEVEL:g} full scale "
            f"(warned above {CLIPPED_WARN_FRACTION:.0%})"
        )


def audio_files(folder: Path) -> list[Path]:
    """Files below ``folder`` that look like audio, decodable or not, sorted.

    Hidden files and folders (``.DS_Store``, ``._*`` macOS resource forks, ``.Trash``) are left out.
    """
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in _AUDIO_LIKE
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    )


@contextmanager
def _quiet_decoder() -> Iterator[None]:
    """Silence what libsndfile's decoders (mpg123, vorbis) print straight to file descriptor 2.

    Their notes ("Illegal Audio-MPEG-Header ... Trying to resync") are not for the user: a recording
    that really fails is reported through AudioError instead.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _decoder_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    text = text.removeprefix("Error opening ").strip()
    return re.sub(r"^'[^']*':\s*", "", text)  # the path is already in the message


def probe(path: str | Path) -> AudioInfo:
    """Header information without decoding the samples."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "file not found")
    if path.suffix.lower() in UNSUPPORTED_EXTENSIONS:
        supported = " ".join(AUDIO_EXTENSIONS)
        raise AudioError(path, f"unsupported format ({path.suffix.lower()}; convert to one of: {supported})")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        with _quiet_decoder():
            info = sf.info(str(path))
    except _DECODER_ERRORS as exc:
        raise AudioError(path, f"cannot be decoded ({_decoder_message(exc)})") from exc
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def _block_frames(info: AudioInfo, block_seconds: float) -> int:
    return max(1024, min(int(block_seconds * info.sample_rate), _READ_BLOCK * 16))


def _read_blocks(path: Path, block: int, max_frames: float = math.inf) -> Iterator[np.ndarray]:
    """Decoded (frames, channels) float32 blocks, as stored; a decoder failure becomes AudioError."""
    try:
        with _quiet_decoder():
            handle = sf.SoundFile(str(path))
        with handle:
            while max_frames > 0:
                with _quiet_decoder():
                    data = handle.read(int(min(block, max_frames)), dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    return
                max_frames -= data.shape[0]
                yield data
    except _DECODER_ERRORS as exc:
        raise AudioError(path, f"cannot be decoded ({_decoder_message(exc)})") from exc


def _nonfinite_error(path: Path, samples_before: int, block: np.ndarray, rest: Iterator[np.ndarray]) -> AudioError:
    """The error for NaN or inf samples, counted from ``block`` to the end of what is read."""
    bad, total = 0, samples_before
    for data in itertools.chain([block], rest):
        bad += data.size - int(np.count_nonzero(np.isfinite(data)))
        total += data.size
    return AudioError(path, f"non-finite samples (NaN or inf): {bad} of {total}")


def _mono(data: np.ndarray) -> np.ndarray:
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def stream_audio(
    path: str | Path,
    sample_rate: int | None = None,
    block_seconds: float = 60.0,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of a recording, resampled to ``sample_rate`` (native if None).

    Memory stays bounded by the block size whatever the recording's length. NaN or inf samples raise
    AudioError (with their count up to ``max_seconds``), so a file changed after ingest is still caught.
    """
    path = Path(path)
    info = probe(path)
    target_rate = sample_rate or info.sample_rate
    resampler = (
        soxr.ResampleStream(info.sample_rate, target_rate, 1, dtype="float32", quality="HQ")
        if target_rate != info.sample_rate
        else None
    )
    max_frames = math.inf if max_seconds is None else round(max_seconds * info.sample_rate)
    blocks = _read_blocks(path, _block_frames(info, block_seconds), max_frames)
    samples = 0
    for data in blocks:
        if not np.isfinite(data).all():
            raise _nonfinite_error(path, samples, data, blocks)
        samples += data.size
        mono = _mono(data)
        if resampler is not None:
            mono = resampler.resample_chunk(mono)
        if mono.size:
            yield np.ascontiguousarray(mono, dtype=np.float32)
    if resampler is not None:  # flush the resampler's tail
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield np.ascontiguousarray(tail, dtype=np.float32)


def load_audio(
    path: str | Path, sample_rate: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode a whole recording (mono float32), resampled to ``sample_rate`` if given."""
    blocks = list(stream_audio(path, sample_rate, max_seconds=max_seconds))
    signal = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    rate = sample_rate or probe(path).sample_rate
    return signal, rate


def _dbfs(level: float) -> float:
    return 20.0 * math.log10(level) if level > 0 else -math.inf


def peak_dbfs(signal: np.ndarray) -> float:
    return _dbfs(float(np.max(np.abs(signal)))) if signal.size else -math.inf


def check_recording(path: str | Path, min_seconds: float, silence_dbfs: float) -> RecordingCheck:
    """Decode a recording fully, in one streaming pass, and check it is usable.

    Raises AudioError for a file that cannot be decoded, is empty, holds NaN or inf samples, is truncated,
    shorter than ``min_seconds``, silent (peak below ``silence_dbfs``) or constant (a DC offset whose
    variation, half its peak-to-peak range, stays below ``silence_dbfs``). The share of clipped samples is
    returned: clipping is worth a warning, not a reason to drop the recording.
    """
    path = Path(path)
    info = probe(path)
    if info.frames == 0 or info.sample_rate == 0:
        raise AudioError(path, "no audio frames")
    frames = samples = clipped = 0
    low, high = math.inf, -math.inf  # of the mono signal, as the features see it
    blocks = _read_blocks(path, _block_frames(info, 60.0))
    for data in blocks:
        if not np.isfinite(data).all():
            raise _nonfinite_error(path, samples, data, blocks)
        frames += data.shape[0]
        samples += data.size
        clipped += int(np.count_nonzero(np.abs(data) >= CLIP_LEVEL))
        mono = _mono(data)
        low, high = min(low, float(mono.min())), max(high, float(mono.max()))
    if frames == 0:
        raise AudioError(path, "no audio frames")
    duration = frames / info.sample_rate
    if frames < 0.9 * info.frames:
        raise AudioError(path, f"truncated (header says {info.duration:.2f} s, only {duration:.2f} s can be decoded)")
    if duration < min_seconds:
        raise AudioError(path, f"too short ({duration:.2f} s < data.min_seconds {min_seconds:g} s)")
    peak = _dbfs(max(-low, high))
    if peak < silence_dbfs:
        level = "digital silence" if peak == -math.inf else f"peak {peak:.1f} dBFS"
        raise AudioError(path, f"silent ({level} < data.silence_dbfs {silence_dbfs:g})")
    variation = _dbfs((high - low) / 2)
    if variation < silence_dbfs:
        level = "none" if variation == -math.inf else f"{variation:.1f} dBFS"
        raise AudioError(
            path,
            f"constant signal (DC offset only, no sound: offset {(high + low) / 2:+.4f} full scale, "
            f"variation {level} < data.silence_dbfs {silence_dbfs:g})",
        )
    return RecordingCheck(info, duration, clipped / samples)
