"""Soundscape files cut into fixed scoring segments, their truth from annotated events, and their scores from a
model's sliding windows, as BirdSet scores soundscapes (5-second segments).

Segments rather than windows are scored so that every model, whatever its window and hop, is judged on the same
rows. Work is vectorised per file: an hour-long file has 720 segments and may hold thousands of events.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_EPS = 1e-9  # seconds: float noise in times computed from sample counts


def segment_table(files: pd.DataFrame, segment_s: float) -> pd.DataFrame:
    """One row per segment (file, split, start_s, end_s), consecutive from 0 in each file of ``files`` (file,
    split, duration_s).

    A last partial segment is kept when it is at least half a segment long (it ends at the file's end), else
    dropped; a file shorter than half a segment still gets one segment, so no annotated file goes unscored.
    """
    durations = files["duration_s"].to_numpy(float)
    full = np.floor(durations / segment_s + _EPS).astype(np.int64)
    partial = durations - full * segment_s >= segment_s / 2 - _EPS
    counts = np.maximum(full + partial, 1)
    row = np.repeat(np.arange(len(files)), counts)
    index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    start = index * float(segment_s)
    return pd.DataFrame(
        {
            "file": files["file"].to_numpy(object)[row],
            "split": files["split"].to_numpy(object)[row],
            "start_s": start,
            "end_s": np.minimum(start + segment_s, durations[row]),
        }
    )


def _by_file(segments: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Row positions of each file's segments in time order, and all segment starts and ends."""
    start = segments["start_s"].to_numpy(float)
    rows = {
        file: positions[np.argsort(start[positions], kind="stable")]
        for file, positions in segments.groupby("file", sort=False).indices.items()
    }
    return rows, start, segments["end_s"].to_numpy(float)


def segment_truth(segments: pd.DataFrame, events: pd.DataFrame, species: list[str], min_overlap_s: float) -> np.ndarray:
    """Bool (n_segments, n_species): an event of the species overlaps the segment by at least ``min_overlap_s``.

    An event shorter than ``min_overlap_s`` counts in a segment that holds it whole (a short call is not lost),
    but not in two segments it straddles. Segments of one file must not overlap (as :func:`segment_table`'s).
    """
    column = {label: i for i, label in enumerate(species)}
    strays = sorted(set(events["label"]) - column.keys())
    if strays:
        raise ValueError(f"event labels outside the species list: {', '.join(strays)}")
    truth = np.zeros((len(segments), len(species)), dtype=bool)
    rows_of, seg_start, seg_end = _by_file(segments)
    for file, found in events.groupby("file", sort=False):
        rows = rows_of.get(file)
        if rows is None:
            continue
        starts, ends = seg_start[rows], seg_end[rows]
        ev_start, ev_end = found["start_s"].to_numpy(float), found["end_s"].to_numpy(float)
        first = np.searchsorted(ends, ev_start, side="right")  # first segment ending after the event starts
        stop = np.searchsorted(starts, ev_end, side="left")  # past the last segment starting before it ends
        n = np.maximum(stop - first, 0)
        event = np.repeat(np.arange(len(found)), n)
        seg = np.repeat(first, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        overlap = np.minimum(ends[seg], ev_end[event]) - np.maximum(starts[seg], ev_start[event])
        inside = (ev_start[event] >= starts[seg] - _EPS) & (ev_end[event] <= ends[seg] + _EPS)
        short = ev_end[event] - ev_start[event] < min_overlap_s
        hit = (overlap >= min_overlap_s - _EPS) | (short & inside)
        labels = found["label"].map(column).to_numpy(np.int64)
        truth[rows[seg[hit]], labels[event[hit]]] = True
    return truth


def window_segments(
    segments: pd.DataFrame, window_file: np.ndarray | list, window_start_s: np.ndarray, window_end_s: np.ndarray
) -> np.ndarray:
    """Index into ``segments`` of the segment of the same file whose [start, end) holds each window's centre;
    -1 for a window whose centre lies in no segment (a dropped short tail, a file without segments)."""
    centre = (np.asarray(window_start_s, float) + np.asarray(window_end_s, float)) / 2
    owner = np.full(len(centre), -1, dtype=np.int64)
    rows_of, seg_start, seg_end = _by_file(segments)
    window_file = np.asarray(window_file, dtype=object)
    for file, windows in pd.Series(window_file).groupby(window_file).indices.items():
        rows = rows_of.get(file)
        if rows is None:
            continue
        at = np.searchsorted(seg_start[rows], centre[windows], side="right") - 1
        inside = (at >= 0) & (centre[windows] < seg_end[rows][np.maximum(at, 0)])
        owner[windows[inside]] = rows[at[inside]]
    return owner


def segment_scores(
    window_scores: np.ndarray,
    window_segment: np.ndarray,
    segments: pd.DataFrame,
    window_file: np.ndarray | list,
    window_start_s: np.ndarray,
    window_end_s: np.ndarray,
) -> np.ndarray:
    """(n_segments, n_species) float: per segment the highest score of the windows whose centre it holds
    (``window_segment``, from :func:`window_segments`).

    A segment holding no window centre (a partial last segment, a hop longer than a segment) takes the highest
    score of the windows of its file that overlap it, so no segment is left without a score; a segment that no
    window overlaps at all raises ValueError naming the file and time.
    """
    scores = np.asarray(window_scores, float)
    window_start_s, window_end_s = np.asarray(window_start_s, float), np.asarray(window_end_s, float)
    window_file = np.asarray(window_file, dtype=object)
    owner = np.asarray(window_segment, dtype=np.int64)
    if not len(scores) == len(owner) == len(window_file) == len(window_start_s) == len(window_end_s):
        raise ValueError("window scores, segments, files, starts and ends must have one row per window")
    result = np.full((len(segments), scores.shape[1]), -np.inf)
    held = owner >= 0
    np.maximum.at(result, owner[held], scores[held])
    covered = np.zeros(len(segments), dtype=bool)
    covered[owner[held]] = True
    files = segments["file"].to_numpy(object)
    seg_start, seg_end = segments["start_s"].to_numpy(float), segments["end_s"].to_numpy(float)
    windows_of = pd.Series(window_file).groupby(window_file).indices
    for row in np.flatnonzero(~covered):
        windows = windows_of.get(files[row], np.zeros(0, dtype=np.int64))
        over = windows[(window_start_s[windows] < seg_end[row]) & (window_end_s[windows] > seg_start[row])]
        if not over.size:
            raise ValueError(f"no window of {files[row]} overlaps its segment {seg_start[row]:g}-{seg_end[row]:g} s")
        result[row] = scores[over].max(axis=0)
    return result
