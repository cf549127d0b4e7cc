"""Features: log-mel and MFCC+delta+delta-delta, the feature config and a streaming extractor.

The extractor is stateless per frame: a power STFT (Hann window, ``n_fft``, ``hop_length``, reflect
padding at the true start and end only), a high-pass as a 4th-order Butterworth magnitude response on the
spectrum (so it needs no filter state across blocks), a Slaney mel filterbank (as librosa, the study's
tool), and decibels ``10 log10(max(S, 1e-10))`` without a per-clip ``top_db`` floor (which would depend on
the whole clip). MFCCs are the orthonormal DCT-II of the dB mel bands; deltas are torchaudio's
``compute_deltas`` (5-frame window, replicate padding at the ends). Because nothing depends on the block
boundaries, a recording streamed in blocks gives the same frames as the recording processed whole, which
is what lets ``predict`` reproduce ``evaluate`` on hour-long files.

The same bits on every CPU: the math is float64 and avoids every kernel chosen at run time by CPU or thread
count (MKL's FFT and GEMM behind ``torch.stft`` and ``@``, ATen's vectorised kernels): numpy's pocketfft
(compiled for the baseline ISA, no run-time dispatch), element-wise IEEE arithmetic and sums in a fixed
order, the DCT by pocketfft too. Only numpy's ``log10`` kernel (SVML on AVX-512 CPUs) and the window and
mel-edge tables (the C library's cos/exp, once) may differ in the last bit between CPUs: by at most 3e-14 dB,
1e-16 on average (measured, AVX-512 vs baseline kernels). Every value is then rounded to a multiple of
:data:`FEATURE_GRID` (2**-12 dB, finer than float16 above 0.125), which such a difference changes with odds
of ~1e-12 per value: a default cache of 5e7 values comes out the same bits with odds of about 0.9999.

The study's reports disagree on the MFCC input shape (3 x 20 x 500 in phase 0/2B, 3 x 40 x 130 in
phase 1); here ``features.n_mfcc`` (default 20, the phase 0/2B value) and ``train.window_seconds`` set it.

The on-disk cache built from these features is :mod:`birdpipe.features.cache`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import scipy.fft as sfft

from birdpipe.common.params import FeatureParams
from birdpipe.data.audio import AudioError, stream_audio

STATS_MFCC = 20  # MFCCs summarised per recording for the MFCC-statistics baseline
AMIN = 1e-10
HIGHPASS_ORDER = 4
FEATURE_GRID = 2.0**-12  # every feature value is a multiple of this (exact in float32 below 4096)


@dataclass(frozen=True)
class FeatureConfig:
    """Everything needed to compute model inputs from audio; stored with every trained model."""

    kind: str = "mfcc"
    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    n_mels: int = 128
    n_mfcc: int = 20
    fmin: float = 0.0
    fmax: float | None = None
    highpass_hz: float = 500.0
    dtype: str = "float16"
    model_checksum: str | None = None  # kind birdnet: sha256 of the BirdNET model file the embeddings came from
    birdnet_inputs: str | None = None  # kind birdnet: embedding | scores | both (None in bundles before it: embedding)

    @classmethod
    def from_params(cls, params: FeatureParams) -> FeatureConfig:
        if params.kind == "birdnet":  # what BirdNET embeddings depend on, and the model file's checksum
            from birdpipe.birdnet import runtime as birdnet

            return cls(
                kind="birdnet",
                sample_rate=birdnet.SAMPLE_RATE,
                n_fft=birdnet.WINDOW_SAMPLES,
                hop_length=round(params.birdnet.hop_seconds * birdnet.SAMPLE_RATE),
                dtype=params.dtype,
                model_checksum=birdnet.model_checksum(),
                birdnet_inputs=params.birdnet.inputs,
            )
        birdnet_only = ("model_checksum", "birdnet_inputs")
        return cls(**{f.name: getattr(params, f.name) for f in fields(cls) if f.name not in birdnet_only})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def channels(self) -> int:
        return 3 if self.kind == "mfcc" else 1

    @property
    def bins(self) -> int:
        if self.kind == "birdnet":
            return sum(stop - start for start, stop in self.birdnet_parts.values())
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def birdnet_parts(self) -> dict[str, tuple[int, int]]:
        """kind birdnet: the bins (start, stop) of the embedding and of the scores in each cache frame."""
        from birdpipe.birdnet.runtime import EMBEDDING_SIZE, N_CLASSES

        inputs = self.birdnet_inputs or "embedding"
        if inputs not in ("embedding", "scores", "both"):
            raise ValueError(f"unknown BirdNET inputs {inputs!r}; allowed: embedding, scores, both")
        parts: dict[str, tuple[int, int]] = {}
        if inputs in ("embedding", "both"):
            parts["embedding"] = (0, EMBEDDING_SIZE)
        if inputs in ("scores", "both"):
            start = EMBEDDING_SIZE if parts else 0
            parts["scores"] = (start, start + N_CLASSES)
        return parts

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def frames(self, seconds: float) -> int:
        """Frames in a window of ``seconds`` (at least 1)."""
        return max(1, round(seconds * self.frames_per_second))


def _on_grid(x: np.ndarray) -> np.ndarray:
    """Round to multiples of FEATURE_GRID (float64), so last-bit differences between CPUs vanish."""
    return np.rint(x * (1.0 / FEATURE_GRID)) * FEATURE_GRID


def _dct(db: np.ndarray, n: int) -> np.ndarray:
    """First ``n`` orthonormal DCT-II coefficients along axis 1 (torchaudio's ``create_dct(norm="ortho")``).

    By pocketfft in float64, not a matrix product: a BLAS picks its kernel, and so its rounding, by CPU.
    """
    return sfft.dct(np.asarray(db, dtype=np.float64), type=2, norm="ortho", axis=1)[:, :n]


def _deltas(x: np.ndarray) -> np.ndarray:
    """torchaudio's ``compute_deltas`` along axis 0 (5 frames, replicate padding): sum k (x[t+k] - x[t-k]) / 10."""
    p = np.concatenate([x[:1], x[:1], x, x[-1:], x[-1:]])
    return ((p[3:-1] - p[1:-3]) + 2.0 * (p[4:] - p[:-4])) / 10.0


def _slaney_mel(hz: float) -> float:
    return hz * 3 / 200 if hz < 1000 else 15.0 + math.log(hz / 1000) * 27 / math.log(6.4)


def _slaney_hz(mel: float) -> float:
    return mel * 200 / 3 if mel < 15 else 1000 * math.exp((mel - 15.0) * math.log(6.4) / 27)


class FeatureExtractor:
    """Audio -> (frames, channels, bins) float32, identical whether fed whole or in blocks, and on every CPU."""

    def __init__(self, config: FeatureConfig) -> None:
        self.config = config
        n_fft, n_freqs = config.n_fft, config.n_fft // 2 + 1
        # periodic Hann window and the filterbank in float64 from scalar C-library calls (no vector kernels)
        self.window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * i / n_fft) for i in range(n_fft)])
        freqs = np.linspace(0.0, config.sample_rate / 2, n_freqs)
        low, high = _slaney_mel(config.fmin), _slaney_mel(config.fmax or config.sample_rate / 2)
        edges = np.array([_slaney_hz(low + (high - low) * i / (config.n_mels + 1)) for i in range(config.n_mels + 2)])
        rise = (freqs[:, None] - edges[:-2]) / (edges[1:-1] - edges[:-2])
        fall = (edges[2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])
        mel = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (edges[2:] - edges[:-2]))  # Slaney area norm
        if config.highpass_hz > 0:  # |H|^2 of a Butterworth high-pass; the power by products, not a pow kernel
            ratio = config.highpass_hz / np.maximum(freqs, 1e-6)
            response = np.ones_like(ratio)
            for _ in range(2 * HIGHPASS_ORDER):
                response *= ratio
            mel *= (1.0 / (1.0 + response))[:, None]
        self.mel = mel  # (n_freqs, n_mels)
        # The triangles are sparse. Neighbouring bands of similar width form a group; a group holds, for each
        # step j along its bands, the j-th bin of every band and its weight (0 past the band's end), so ``_mel``
        # adds each band's bins in order with whole-array operations and little padding.
        nonzero = mel > 0
        first = np.where(nonzero.any(axis=0), nonzero.argmax(axis=0), 0)
        count = nonzero.sum(axis=0)
        self._groups: list[tuple[int, int, np.ndarray, np.ndarray]] = []
        start = 0
        for stop in range(1, config.n_mels + 1):
            if stop == config.n_mels or count[stop] > 1.5 * count[start] + 2:
                offsets = np.arange(max(1, int(count[start:stop].max())))[:, None]
                bins = np.minimum(first[start:stop] + offsets, n_freqs - 1)  # (width, bands)
                weights = np.where(offsets < count[start:stop], mel[bins, np.arange(start, stop)], 0.0)
                self._groups.append((start, stop, bins, weights[..., None]))
                start = stop

    # -- spectral frames ---------------------------------------------------------------------------
    def _db(self, padded: np.ndarray) -> np.ndarray:
        """dB mel frames (float32 on the grid) of every complete frame in a padded segment."""
        frames = np.lib.stride_tricks.sliding_window_view(padded, self.config.n_fft)[:: self.config.hop_length]
        spec = np.fft.rfft(frames * self.window, axis=1)  # (n, n_freqs) complex128
        power = np.ascontiguousarray((np.square(spec.real) + np.square(spec.imag)).T)  # (n_freqs, n)
        # power @ mel without a BLAS: each band adds its own bins in order, the same sum in every frame and block
        mel = np.empty((self.config.n_mels, power.shape[1]))
        for start, stop, bins, weights in self._groups:
            band = power[bins[0]] * weights[0]
            for row, weight in zip(bins[1:], weights[1:], strict=True):
                band += power[row] * weight
            mel[start:stop] = band
        return np.ascontiguousarray(_on_grid(10.0 * np.log10(np.maximum(mel, AMIN))).T, dtype=np.float32)

    def db_frames(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Stream dB mel frames (n, n_mels); a signal of L samples gives exactly L // hop + 1 frames."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        half = n_fft // 2
        head: list[np.ndarray] = []  # samples gathered before the left reflection can be built
        head_size = 0
        padded: np.ndarray | None = None
        tail = np.zeros(0, dtype=np.float32)  # last real samples, for the right reflection
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            if padded is None:
                head.append(block)
                head_size += block.size
                if head_size <= half:
                    continue
                signal = np.concatenate(head)
                padded = np.concatenate([signal[1 : half + 1][::-1], signal])
                tail = signal[-(half + 1) :]
            else:
                padded = np.concatenate([padded, block])
                tail = np.concatenate([tail, block])[-(half + 1) :]
            count = (padded.size - n_fft) // hop + 1 if padded.size >= n_fft else 0
            if count > 0:
                yield self._db(padded[: (count - 1) * hop + n_fft])
                padded = padded[count * hop :]
        if padded is None:  # the whole signal is shorter than half a window: zero padding, as a fallback
            signal = np.concatenate(head) if head else np.zeros(0, dtype=np.float32)
            if signal.size == 0:
                return
            padded = np.concatenate([np.zeros(half, np.float32), signal, np.zeros(half, np.float32)])
        else:
            padded = np.concatenate([padded, tail[:-1][::-1][:half]])
        if padded.size < n_fft:
            padded = np.pad(padded, (0, n_fft - padded.size))
        count = (padded.size - n_fft) // hop + 1
        if count > 0:
            yield self._db(padded[: (count - 1) * hop + n_fft])

    # -- features ----------------------------------------------------------------------------------
    def from_db(self, db: np.ndarray) -> np.ndarray:
        """Model features (frames, channels, bins) from a whole run of dB mel frames."""
        if self.config.kind == "logmel":
            return db[:, None, :].astype(np.float32, copy=False)
        mfcc = _on_grid(_dct(db, self.config.n_mfcc))  # (n, n_mfcc)
        delta = _on_grid(_deltas(mfcc))
        delta2 = _on_grid(_deltas(delta))
        return np.stack([mfcc, delta, delta2], axis=1).astype(np.float32)

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Stream features equal to ``from_db`` of the whole recording, block after block."""
        if self.config.kind == "logmel":
            for db in self.db_frames(blocks):
                yield self.from_db(db)
            return
        context = 4  # two delta passes of a 5-frame window reach 4 frames each way
        held = np.zeros((0, self.config.n_mels), dtype=np.float32)
        emitted = 0  # rows of ``held`` already output; they stay only as left context for the next rows
        for db in self.db_frames(blocks):
            held = np.concatenate([held, db])
            ready = held.shape[0] - context  # frames whose right context is complete
            if ready - emitted <= 0:
                continue
            out = self.from_db(held)[emitted:ready]
            yield out
            # keep `context` frames of left context before the next unsent frame
            drop = max(0, ready - context)
            held = held[drop:]
            emitted = ready - drop
        if held.shape[0] > emitted:
            yield self.from_db(held)[emitted:]

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        db = np.concatenate(list(self.db_frames([signal])) or [np.zeros((0, self.config.n_mels), np.float32)])
        return self.from_db(db)

    def summary(self, db: np.ndarray) -> np.ndarray:
        """Per-recording MFCC mean and std (2 x 20 values) for the MFCC-statistics baseline."""
        mfcc = _dct(db, min(STATS_MFCC, self.config.n_mels))
        return np.concatenate([mfcc.mean(axis=0), mfcc.std(axis=0)]).astype(np.float32)


# ------------------------------------------------------------------------------------ activity windows
def active_windows(db: np.ndarray, window: int, count: int) -> list[tuple[int, int]]:
    """The ``count`` most active, non-overlapping windows of ``window`` frames, in time order.

    Activity is the energy above each mel band's median over the recording (the stationary background),
    summed over bands and over the window, so steady wind or insect noise does not win over song.
    """
    frames = db.shape[0]
    if frames <= window:
        return [(0, frames)]
    excess = np.clip(db - np.median(db, axis=0, keepdims=True), 0, None).sum(axis=1, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(excess)])
    score = cumulative[window:] - cumulative[:-window]  # score[s] = activity of frames [s, s + window)
    chosen: list[tuple[int, int]] = []
    taken = np.zeros(score.size, dtype=bool)
    for _ in range(count):
        candidates = np.where(~taken, score, -np.inf)
        start = int(np.argmax(candidates))
        if not np.isfinite(candidates[start]):
            break
        chosen.append((start, start + window))
        taken[max(0, start - window + 1) : start + window] = True
    return sorted(chosen)


# ----------------------------------------------------------------------------------------- the cache
@functools.lru_cache(maxsize=4)
def _extractor(config: FeatureConfig) -> FeatureExtractor:
    return FeatureExtractor(config)


def extract_recording(
    path: str, config: FeatureConfig, max_seconds: float, activity_windows: int = 0, activity_seconds: float = 4.0
) -> tuple[np.ndarray, np.ndarray]:
    """Features (frames, channels, bins) in the storage dtype and the baseline summary of one recording."""
    extractor = _extractor(config)
    blocks = stream_audio(path, config.sample_rate, max_seconds=max_seconds)
    parts = list(extractor.db_frames(blocks))
    if not parts:
        raise AudioError(path, "no audio frames")
    db = np.concatenate(parts)
    if activity_windows > 0:
        spans = active_windows(db, config.frames(activity_seconds), activity_windows)
        db = np.concatenate([db[a:b] for a, b in spans])
    return extractor.from_db(db).astype(config.dtype), extractor.summary(db)


def window_starts(frames: int, window: int, hop: int) -> list[int]:
    """Start frames of the sliding windows covering a recording of ``frames`` frames.

    Windows step by ``hop``; the last one is aligned to the end so the tail is covered; a recording shorter
    than a window gives one window (padded by the caller).
    """
    if frames <= window:
        return [0]
    starts = list(range(0, frames - window + 1, hop))
    if starts[-1] + window < frames:
        starts.append(frames - window)
    return starts
