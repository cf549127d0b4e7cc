"""Soundscape annotations read into checked, label-set events and a val/test split of whole files.

A folder holds either Raven selection tables beside their audio (``<audio stem>[.<anything>].selections.txt``,
or BirdNET's ``*.selection.table.txt``), read with crowsetta, or one ``annotations.csv`` (``file,start_s,
end_s,label[,split]``) at its root. Truth must be exact, so nothing is guessed and nothing vanishes unreported:
names outside the label set, impossible times, tables without audio, audio without annotations (unannotated is
not bird-free) and unreadable files are left out and listed in the report; events past a file's end are clipped,
duplicates removed and overlapping events of a species merged, each counted. An empty table or an empty-label
CSV row is an annotated file without birds, a valid negative.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdpipe.common.errors import PipelineError
from birdpipe.common.outputs import atomic_path
from birdpipe.data.audio import AudioError, audio_files, probe
from birdpipe.data.labels import LabelMatcher
from birdpipe.soundscapes.raven import first_line, raven_tables, read_raven

CSV_NAME = "annotations.csv"
CSV_COLUMNS = ("file", "start_s", "end_s", "label")
EVENT_COLUMNS = ["file", "start_s", "end_s", "label"]
SPLITS = ("val", "test")
# An event ending this little past its file's end is clipped without a report: times written to 3 decimals
# (write_annotations_csv) may round an end at the file's end up by half a millisecond.
END_TOLERANCE_S = 0.001


@dataclass
class SoundscapeSet:
    """The scorable soundscapes, their events and the report of everything left out or changed."""

    files: pd.DataFrame  # file (posix, relative to the source), path, duration_s, split ('val'|'test'), events
    events: pd.DataFrame  # file, start_s, end_s, label (a label of the label set), sorted by file, start_s
    report: dict[str, Any]  # JSON-serialisable


def read_soundscapes(
    source: str | Path,
    species: list[str],
    names: dict | None = None,
    *,
    species_column: str = "Species",
    val_share: float = 0.5,
    seed: int = 0,
) -> SoundscapeSet:
    """Read a folder of annotated soundscapes (Raven tables or annotations.csv) for segment scoring.

    ``names``: per label its scientific name or a mapping with ``scientific_name``/``english_name``, so
    annotations may name a species in any of those forms (:class:`~birdpipe.data.labels.LabelMatcher`).
    The split: ``val/`` and ``test/`` sub-folders if the folder has both, else the CSV's ``split`` column,
    else whole files drawn at random (``round(val_share * n)`` to val, at least one in each split).
    """
    source = Path(source)
    if not source.is_dir():
        raise PipelineError(f"soundscapes.source {source} is not a folder")
    audio = {path.relative_to(source).as_posix(): path for path in audio_files(source)}
    tables = raven_tables(source)
    csv_path = source / CSV_NAME
    report = _empty_report(source)
    csv_split, unusable = None, set()
    if csv_path.is_file() and tables:
        raise PipelineError(
            f"{source} holds both {CSV_NAME} and Raven selection tables ({_names(_relative(tables, source))}): "
            "keep one kind of annotation"
        )
    if csv_path.is_file():
        report["format"] = "csv"
        raw, annotated, csv_split = _read_csv(csv_path)
        report["annotations_without_audio"] = sorted(file for file in annotated if file not in audio)
    elif tables:
        report["format"] = "raven"
        raw, annotated, unusable = read_raven(source, tables, audio, species_column, report)
    else:
        raise PipelineError(
            f"no annotations in {source}: put a Raven selection table (<audio stem>.selections.txt) beside each "
            f"recording, or an {CSV_NAME} (file,start_s,end_s,label) at the folder's root"
        )
    report["audio_without_annotations"] = sorted(set(audio) - annotated - unusable)
    durations = _durations({file: audio[file] for file in sorted(annotated) if file in audio}, report)
    if not durations:
        problems = "; ".join(summary_lines(report))
        raise PipelineError(f"no annotated, readable soundscape in {source}" + (f": {problems}" if problems else ""))
    report["bird_free_files"] = sorted(set(durations) - set(raw["file"]))
    events = _clean(raw, durations, LabelMatcher(species, names), report)
    split = _assign_splits(list(durations), source, csv_split, val_share, seed, report)
    counts = events["file"].value_counts()
    files = pd.DataFrame(
        {
            "file": list(durations),
            "path": [str(audio[file]) for file in durations],
            "duration_s": list(durations.values()),
            "split": [split[file] for file in durations],
            "events": [int(counts.get(file, 0)) for file in durations],
        }
    )
    per_species = events["label"].value_counts()
    report["files"] = {name: int((files["split"] == name).sum()) for name in SPLITS}
    report["events"] = len(events)
    report["events_per_species"] = {label: int(per_species.get(label, 0)) for label in species}
    return SoundscapeSet(files, events, report)


def write_annotations_csv(files: pd.DataFrame, events: pd.DataFrame, path: str | Path) -> None:
    """Write soundscape truth as an annotations.csv (``file,start_s,end_s,label,split``) for :func:`read_soundscapes`.

    Times are rounded to 3 decimals (1 ms), then events sorted by file and start (as read back); each file
    without events gets one row with an empty label, so a bird-free file stays annotated, not unannotated.
    """
    split = files.set_index("file")["split"]
    strays = sorted(set(events["file"]) - set(split.index))
    if strays:
        raise ValueError(f"events of files missing from files: {_names(strays)}")
    rows = events[EVENT_COLUMNS].assign(split=events["file"].map(split))
    free = files.loc[~files["file"].isin(events["file"]), ["file", "split"]].assign(
        start_s=np.nan, end_s=np.nan, label=""
    )
    table = pd.concat([rows, free], ignore_index=True).round(3)
    table = table.sort_values(["file", "start_s", "end_s", "label"], ignore_index=True)
    with atomic_path(path) as temporary:
        table[[*EVENT_COLUMNS, "split"]].to_csv(temporary, index=False, float_format="%.3f")


def summary_lines(report: dict) -> list[str]:
    """One line per kind of problem in ``report``, for the stage's output; none for clean annotations."""
    lines = []
    unknown = report["unknown_species"]
    if unknown:
        described = [f"{name} ({_count(v['events'], 'event')} in {_count(len(v['files']), 'file')})"
                     for name, v in unknown.items()]  # fmt: skip
        total = sum(v["events"] for v in unknown.values())
        lines.append(f"{_count(total, 'event')} of {_count(len(unknown), 'name')} outside the label set "
                     f"left out of scoring: {_names(described)}")  # fmt: skip
    for reason, found in report["dropped_events"].items():
        lines.append(f"{_count(found['events'], 'event')} dropped ({reason}) in {_names(found['files'])}")
    clipped = report["clipped_events"]
    if clipped["events"]:
        lines.append(f"{_count(clipped['events'], 'event')} past the file's end clipped to its duration in "
                     f"{_names(clipped['files'])}")  # fmt: skip
    if report["duplicates_removed"]:
        lines.append(f"{_count(report['duplicates_removed'], 'exact duplicate event')} removed")
    if report["overlaps_merged"]:
        lines.append(f"{_count(report['overlaps_merged'], 'event')} merged into an overlapping or touching event "
                     "of the same species")  # fmt: skip
    if report["annotations_without_audio"]:
        found = report["annotations_without_audio"]
        lines.append(f"{_count(len(found), 'annotation')} without audio left out: {_names(found)}")
    if report["audio_without_annotations"]:
        found = report["audio_without_annotations"]
        lines.append(f"{_count(len(found), 'audio file')} without annotations left out of scoring (unannotated is "
                     f"not bird-free): {_names(found)}")  # fmt: skip
    if report["unreadable_audio"]:
        found = [f"{file} ({reason})" for file, reason in report["unreadable_audio"].items()]
        lines.append(f"{_count(len(found), 'unreadable audio file')} left out: {_names(found)}")
    if report["unreadable_tables"]:
        found = [f"{table} ({reason})" for table, reason in report["unreadable_tables"].items()]
        lines.append(f"{_count(len(found), 'unreadable selection table')}, audio left out: {_names(found)}")
    return lines


def _empty_report(source: Path) -> dict[str, Any]:
    return {
        "source": str(source),
        "format": None,
        "split_by": None,
        "files": {name: 0 for name in SPLITS},
        "events": 0,
        "events_per_species": {},
        "bird_free_files": [],
        "unknown_species": {},  # name -> {"events": n, "files": [...]}
        "dropped_events": {},  # reason -> {"events": n, "files": [...]}
        "clipped_events": {"events": 0, "files": []},
        "duplicates_removed": 0,
        "overlaps_merged": 0,
        "annotations_without_audio": [],  # tables, or annotations.csv's file names
        "audio_without_annotations": [],
        "unreadable_audio": {},  # file -> reason
        "unreadable_tables": {},  # table -> crowsetta's first error line
    }


def _count(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


def _names(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _relative(paths: list[Path], source: Path) -> list[str]:
    return [path.relative_to(source).as_posix() for path in paths]


# ----------------------------------------------------------------------------------------------------- csv
def _read_csv(path: Path) -> tuple[pd.DataFrame, set[str], dict[str, str] | None]:
    """Raw events (file, start_s, end_s, name), the files named, and the split column's split per file if any.

    A row with an empty label and empty times marks a bird-free file; any other row is an event, checked later.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError) as exc:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        raise PipelineError(f"{path} cannot be read as CSV ({first_line(exc)})") from None
    table.columns = [str(column).strip() for column in table.columns]
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise PipelineError(f"{path} lacks the column(s) {', '.join(missing)}: it needs file,start_s,end_s,label "
                            "(and optionally split)")  # fmt: skip
    table = table.apply(lambda column: column.str.strip())
    if (table["file"] == "").any():
        raise PipelineError(f"{path}: row {int(np.flatnonzero(table['file'] == '')[0]) + 2} names no file")
    table["file"] = [posixpath.normpath(file) for file in table["file"]]
    marker = (table["label"] == "") & (table["start_s"] == "") & (table["end_s"] == "")
    rows = table[~marker]
    raw = pd.DataFrame(
        {
            "file": rows["file"],
            "start_s": pd.to_numeric(rows["start_s"], errors="coerce").astype(float),
            "end_s": pd.to_numeric(rows["end_s"], errors="coerce").astype(float),
            "name": rows["label"],
        }
    )
    return raw, set(table["file"]), _csv_split(table, path)


def _csv_split(table: pd.DataFrame, path: Path) -> dict[str, str] | None:
    """The split of each file from the CSV's split column; None without the column or with the column empty."""
    if "split" not in table.columns or not (table["split"] != "").any():
        return None
    values = table["split"].str.lower()
    wrong = sorted(set(values[values != ""]) - set(SPLITS))
    if wrong:
        raise PipelineError(f"{path}: split must be val or test, not {', '.join(map(repr, wrong))}")
    given = table.loc[values != "", "file"].to_frame().assign(split=values[values != ""])
    given = given.groupby("file")["split"].unique()
    both = sorted(file for file, splits in given.items() if len(splits) > 1)
    if both:
        raise PipelineError(f"{path} puts {_names(both)} in both val and test: a file belongs to one split")
    missing = sorted(set(table["file"]) - set(given.index))
    if missing:
        raise PipelineError(f"{path} gives no split for {_names(missing)}: give every file val or test, or leave "
                            "the split column out")  # fmt: skip
    return {file: splits[0] for file, splits in given.items()}


# ---------------------------------------------------------------------------------------------- checking
def _durations(paths: dict[str, Path], report: dict) -> dict[str, float]:
    """Duration of each readable file; the others are reported with the reason and left out."""
    durations = {}
    for file, path in paths.items():
        try:
            duration = probe(path).duration
        except AudioError as exc:
            report["unreadable_audio"][file] = exc.reason
            continue
        if duration <= 0:
            report["unreadable_audio"][file] = "no audio frames"
            continue
        durations[file] = duration
    return durations


def _drop(events: pd.DataFrame, mask: pd.Series, reason: str, report: dict) -> pd.DataFrame:
    if mask.any():
        report["dropped_events"][reason] = {"events": int(mask.sum()),
                                            "files": sorted(events.loc[mask, "file"].unique())}  # fmt: skip
    return events[~mask]


def _clean(raw: pd.DataFrame, durations: dict[str, float], matcher: LabelMatcher, report: dict) -> pd.DataFrame:
    """Label-set events with valid times inside their readable file, duplicates removed and overlaps merged."""
    events = raw[raw["file"].isin(list(durations))]
    events = events.assign(name=events["name"].fillna("").astype(str).str.strip())
    unique = events.drop_duplicates(["file", "start_s", "end_s", "name"])
    report["duplicates_removed"] = len(events) - len(unique)
    events = _drop(unique, unique["name"] == "", "no species name", report)
    labels = events["name"].map({name: matcher.match(name) for name in events["name"].unique()})
    for name, rows in events[labels.isna()].groupby("name"):
        report["unknown_species"][name] = {"events": len(rows), "files": sorted(rows["file"].unique())}
    events = events[labels.notna()].assign(label=labels[labels.notna()])
    events = _drop(events, ~(events["start_s"] >= 0) | ~(events["end_s"] >= 0), "missing or negative time", report)
    events = _drop(events, events["end_s"] <= events["start_s"], "end not after start", report)
    duration = events["file"].map(durations).astype(float)
    events = _drop(events, events["start_s"] >= duration, "starts at or after the end of the file", report)
    duration = events["file"].map(durations).astype(float)
    past = events["end_s"] > duration + END_TOLERANCE_S
    report["clipped_events"] = {"events": int(past.sum()), "files": sorted(events.loc[past, "file"].unique())}
    return _merge(events.assign(end_s=np.minimum(events["end_s"], duration))[EVENT_COLUMNS], report)


def _merge(events: pd.DataFrame, report: dict) -> pd.DataFrame:
    """One event per run of overlapping or touching events of a species in a file: a segment's truth must not
    depend on how an annotator cut a song into selections."""
    events = events.sort_values(["file", "label", "start_s", "end_s"], ignore_index=True)
    keys = [events["file"], events["label"]]
    previous_end = events.groupby(keys)["end_s"].cummax().groupby(keys).shift()
    run = (previous_end.isna() | (events["start_s"] > previous_end)).cumsum()
    merged = events.groupby(run).agg(
        file=("file", "first"), start_s=("start_s", "min"), end_s=("end_s", "max"), label=("label", "first")
    )
    report["overlaps_merged"] = len(events) - len(merged)
    merged = merged[EVENT_COLUMNS].astype({"file": str, "label": str, "start_s": float, "end_s": float})
    return merged.sort_values(["file", "start_s", "end_s", "label"], ignore_index=True)


# ------------------------------------------------------------------------------------------------- split
def _assign_splits(
    files: list[str], source: Path, csv_split: dict[str, str] | None, val_share: float, seed: int, report: dict
) -> dict[str, str]:
    """val or test for each file, whole files only (thresholds chosen on val must not see test audio)."""
    if (source / "val").is_dir() and (source / "test").is_dir():
        report["split_by"] = "folders"
        split = {file: file.split("/")[0] for file in files}
        outside = sorted(file for file, name in split.items() if name not in SPLITS)
        if outside:
            raise PipelineError(f"{source} has val/ and test/ sub-folders, but {_names(outside)} lie outside "
                                "them: move each soundscape into val/ or test/")  # fmt: skip
        contradicted = sorted(file for file in files if (csv_split or {}).get(file, split[file]) != split[file])
        if contradicted:
            raise PipelineError(f"{source / CSV_NAME}'s split column contradicts the val/ and test/ sub-folders "
                                f"for {_names(contradicted)}: fix the column or leave it out")  # fmt: skip
    elif csv_split is not None:
        report["split_by"] = "column"
        split = {file: csv_split[file] for file in files}
    else:
        report["split_by"] = "random"
        n_val = min(max(round(val_share * len(files)), 1), len(files) - 1)
        order = np.random.default_rng(seed).permutation(len(files))
        split = {files[i]: "val" if rank < n_val else "test" for rank, i in enumerate(order)}
    empty = [name for name in SPLITS if name not in split.values()]
    if empty:
        raise PipelineError(f"val and test need a soundscape each, but {source} has no usable annotated one for "
                            f"{' or '.join(empty)} ({_count(len(files), 'usable file')} in all)")  # fmt: skip
    return split
