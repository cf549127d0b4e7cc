"""Predict's outputs: detections at per-species thresholds, ``detections.csv``, Raven selection tables (a row per
window and species detected), ``scores.csv`` (every window's score for every species) and ``summary.csv`` (one row
per file, skipped files with their reason), each written whole or not at all."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from birdpipe.bundle import Bundle
from birdpipe.common.outputs import atomic_path
from birdpipe.predict import PredictOptions, PredictRun, RecordingPrediction

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
DEFAULT_MIN_CONFIDENCE = 0.1  # without per-species thresholds in the bundle
BIRDNET_BAND_HZ = (0.0, 15000.0)  # what BirdNET V2.4 listens to (its input is 48 kHz, band-limited to 15 kHz)


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


def thresholds(bundle: Bundle, min_confidence: float | None) -> np.ndarray:
    """Per-species detection thresholds: ``min_confidence`` for all when given, else the bundle's (chosen on val
    soundscapes by the fuse stage), else DEFAULT_MIN_CONFIDENCE."""
    if min_confidence is None and bundle.thresholds is not None:
        return bundle.thresholds
    value = DEFAULT_MIN_CONFIDENCE if min_confidence is None else min_confidence
    return np.full(len(bundle.species), value)


def detections(
    bundle: Bundle, prediction: RecordingPrediction, top_k: int | None, min_confidence: float | None
) -> list[tuple]:
    """(window index, start, end, species index, confidence) of every species at or above its threshold in each
    window (highest first; at most ``top_k`` per window when given)."""
    limits = thresholds(bundle, min_confidence)
    rows = []
    order = np.argsort(-prediction.window_probs, axis=1, kind="stable")[:, :top_k]
    for w, classes in enumerate(order):
        for c in classes:
            confidence = float(prediction.window_probs[w, c])
            if confidence >= limits[c]:
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
    if config.kind == "birdnet":
        low, high = BIRDNET_BAND_HZ
    recording = str(prediction.path.resolve())  # Raven opens the recording from here
    for selection, (_, begin, end, c, confidence) in enumerate(found, 1):
        label = _names(bundle, bundle.species[c])[1] or bundle.species[c]
        yield [selection, "Spectrogram 1", 1, f"{begin:.3f}", f"{end:.3f}", f"{low:.1f}", f"{high:.1f}", label,
               f"{confidence:.4f}", recording]  # fmt: skip


def _score_rows(run: PredictRun, root: Path | None) -> Iterator[list]:
    for prediction in run.recordings:
        name = _display(prediction.path, root)
        for w in range(len(prediction.starts)):
            yield [name, f"{prediction.starts[w]:.3f}", f"{prediction.ends[w]:.3f}",
                   *(f"{v:.5f}" for v in prediction.window_probs[w])]  # fmt: skip


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
    if options.scores:
        header = ("file", "start_s", "end_s", *bundle.species)
        written["scores"] = _write_rows(out_dir / "scores.csv", header, _score_rows(run, root))
    written["summary"] = _write_rows(out_dir / "summary.csv", SUMMARY_COLUMNS, _summary_rows(run, bundle, root))
    return written
