"""Audio input: decoding, checking and streaming recordings with soundfile (wav, flac, ogg, mp3).

Every decoder failure becomes an :class:`AudioError` carrying the path and a one-line reason, so callers
can report and skip a bad recording instead of showing a traceback from inside libsndfile.
Resampling uses soxr's streaming resampler, so a recording read whole and the same recording read in
blocks (``predict`` on hour-long soundscapes) go through exactly the same code.
"""

from __future__ import annotations

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

from birdpipe.errors import PipelineError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
_READ_BLOCK = 1 << 18  # frames per soundfile read


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
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        with _quiet_decoder():
            info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types; none may escape
        raise AudioError(path, f"cannot be decoded ({_decoder_message(exc)})") from None
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def stream_audio(
    path: str | Path,
    sample_rate: int | None = None,
    block_seconds: float = 60.0,
    max_seconds: float | None = None,
) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of a recording, resampled to ``sample_rate`` (native if None).

    Memory stays bounded by the block size whatever the recording's length.
    """
    path = Path(path)
    info = probe(path)
    target_rate = sample_rate or info.sample_rate
    resampler = (
        soxr.ResampleStream(info.sample_rate, target_rate, 1, dtype="float32", quality="HQ")
        if target_rate != info.sample_rate
        else None
    )
    frames_left = math.inf if max_seconds is None else round(max_seconds * info.sample_rate)
    block = max(1024, min(int(block_seconds * info.sample_rate), _READ_BLOCK * 16))
    try:
        with _quiet_decoder():
            handle = sf.SoundFile(str(path))
        with handle:
            while frames_left > 0:
                with _quiet_decoder():
                    data = handle.read(int(min(block, frames_left)), dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                frames_left -= data.shape[0]
                mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
                if resampler is not None:
                    mono = resampler.resample_chunk(mono)
                if mono.size:
                    yield np.ascontiguousarray(mono, dtype=np.float32)
        if resampler is not None:  # flush the resampler's tail
            tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            if tail.size:
                yield np.ascontiguousarray(tail, dtype=np.float32)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(path, f"cannot be decoded ({_decoder_message(exc)})") from None


def load_audio(
    path: str | Path, sample_rate: int | None = None, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Decode a whole recording (mono float32), resampled to ``sample_rate`` if given."""
    blocks = list(stream_audio(path, sample_rate, max_seconds=max_seconds))
    signal = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    rate = sample_rate or probe(path).sample_rate
    return signal, rate


def peak_dbfs(signal: np.ndarray) -> float:
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    return 20.0 * math.log10(peak) if peak > 0 else -math.inf


def check_recording(path: str | Path, min_seconds: float, silence_dbfs: float) -> tuple[AudioInfo, float]:
    """Decode a recording fully and check it is usable; return its header info and decoded duration.

    Raises AudioError for a file that cannot be decoded, is empty, silent, or shorter than min_seconds.
    """
    info = probe(path)
    if info.frames == 0 or info.sample_rate == 0:
        raise AudioError(path, "no audio frames")
    peak = -math.inf
    frames = 0
    for block in stream_audio(path):
        frames += block.size
        peak = max(peak, peak_dbfs(block))
    duration = frames / info.sample_rate
    if frames == 0:
        raise AudioError(path, "no audio frames")
    if frames < 0.9 * info.frames:
        raise AudioError(path, f"truncated (header says {info.duration:.2f} s, only {duration:.2f} s can be decoded)")
    if duration < min_seconds:
        raise AudioError(path, f"too short ({duration:.2f} s < data.min_seconds {min_seconds:g} s)")
    if peak < silence_dbfs:
        level = "digital silence" if peak == -math.inf else f"peak {peak:.1f} dBFS"
        raise AudioError(path, f"silent ({level} < data.silence_dbfs {silence_dbfs:g})")
    return info, duration
