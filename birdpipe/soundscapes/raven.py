"""Raven selection tables read with crowsetta (the maintained library for animal-sound annotation formats): table
discovery beside the audio, pairing a table with its recording, and the workarounds for what crowsetta refuses
but Raven and hand-written tables hold (integer times or frequencies, a selection without a species, a table
without rows: a bird-free recording)."""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath

import crowsetta
import pandas as pd
from pandera.errors import SchemaError, SchemaErrorReason

RAVEN_SUFFIXES = (".selections.txt", ".selection.table.txt")
RAVEN_NUMBERS = {  # Raven's columns that crowsetta renames and wants as float64
    "Begin Time (s)": "begin_time_s",
    "End Time (s)": "end_time_s",
    "Low Freq (Hz)": "low_freq_hz",
    "High Freq (Hz)": "high_freq_hz",
}


def first_line(exc: Exception, species_column: str = "") -> str:
    """An exception's first line, with crowsetta's internal column names turned back into the table's."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else type(exc).__name__
    renamed = [*RAVEN_NUMBERS.items(), (species_column, "annotation")] if species_column else []
    for raw, internal in renamed:
        line = line.replace(f"'{internal}'", f"'{raw}'")
    return line


def raven_tables(source: Path) -> list[Path]:
    return sorted(
        path
        for path in source.rglob("*")
        if path.name.lower().endswith(RAVEN_SUFFIXES)
        and not any(part.startswith(".") for part in path.relative_to(source).parts)
        and path.is_file()
    )


def _table_audio(table: Path, candidates: list[str]) -> list[str]:
    """The audio files (of the table's folder) whose stem begins the table's name; the longest stem wins, so
    ``rec.b.Table.1.selections.txt`` belongs to ``rec.b.wav``, not ``rec.wav``. Audio files sharing a stem
    (``rec.wav``, ``rec.flac``) share the table."""
    fits = [file for file in candidates if table.name.startswith(PurePosixPath(file).stem + ".")]
    longest = max((len(PurePosixPath(file).stem) for file in fits), default=0)
    return [file for file in fits if len(PurePosixPath(file).stem) == longest]


def read_raven(
    source: Path, tables: list[Path], audio: dict[str, Path], species_column: str, report: dict
) -> tuple[pd.DataFrame, set[str], set[str]]:
    """Raw events of every table, the annotated audio files, and the audio files left out for an unreadable table
    (their truth is incomplete). Several tables of one file are combined."""
    by_folder: dict[Path, list[str]] = {}
    for file, path in audio.items():
        by_folder.setdefault(path.parent, []).append(file)
    frames, annotated, unusable = [], set(), set()
    for table in tables:
        name = table.relative_to(source).as_posix()
        files = _table_audio(table, by_folder.get(table.parent, []))
        if not files:
            report["annotations_without_audio"].append(name)
            continue
        events, error = _read_table(table, species_column)
        if events is None:
            report["unreadable_tables"][name] = error
            unusable.update(files)
            continue
        annotated.update(files)
        frames.extend(events.assign(file=file) for file in files)
    raw = pd.concat([no_events(), *frames], ignore_index=True)
    return raw, annotated - unusable, unusable


def no_events() -> pd.DataFrame:
    return pd.DataFrame({"file": pd.Series(dtype=object), "start_s": pd.Series(dtype=float),
                         "end_s": pd.Series(dtype=float), "name": pd.Series(dtype=object)})  # fmt: skip


def _crowsetta_events(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "start_s": df["begin_time_s"].to_numpy(float),
            "end_s": df["end_time_s"].to_numpy(float),
            "name": df["annotation"].astype(str).to_numpy(object),
        }
    )


def _read_table(path: Path, species_column: str) -> tuple[pd.DataFrame | None, str]:
    """A Raven table's events (start_s, end_s, name) read with crowsetta, or None and why it cannot be read."""
    try:
        raven = crowsetta.formats.bbox.Raven.from_file(path, annot_col=species_column)
    except SchemaError as exc:
        if _fixable(exc):
            return _read_fixed_copy(path, species_column)
        return None, first_line(exc, species_column)
    except (ValueError, OSError) as exc:  # pandas' parser errors and UnicodeDecodeError are ValueErrors
        # Crowsetta refuses a table without rows ("there are no rows in Raven txt file"), but that is what Raven
        # writes for a recording without any selection: a bird-free file. Only that case is read here, by pandas.
        try:
            header = pd.read_csv(path, sep="\t")
        except (ValueError, OSError):
            return None, first_line(exc, species_column)
        if len(header):
            return None, first_line(exc, species_column)
        missing = [column for column in ("Begin Time (s)", "End Time (s)", species_column) if column not in header]
        if missing:
            return None, f"no column {', '.join(map(repr, missing))} (and no rows)"
        return no_events().drop(columns="file"), ""
    return _crowsetta_events(raven.df), ""


def _fixable(exc: SchemaError) -> bool:
    """Whether crowsetta refused the table only for integer times or frequencies (hand-written tables often hold
    them: "expected series 'low_freq_hz' to have type float64, got int64") or for a selection without a species."""
    column = getattr(exc.schema, "name", None)
    return (exc.reason_code == SchemaErrorReason.WRONG_DATATYPE and column in RAVEN_NUMBERS.values()) or (
        exc.reason_code == SchemaErrorReason.SERIES_CONTAINS_NULLS and column == "annotation"
    )


def _read_fixed_copy(path: Path, species_column: str) -> tuple[pd.DataFrame | None, str]:
    """Read a table with crowsetta through a temporary copy that has integer times and frequencies as floats and
    no rows without a species; those rows come back with an empty name, to be reported as dropped."""
    table = pd.read_csv(path, sep="\t")
    for column in RAVEN_NUMBERS:
        if column in table.columns and pd.api.types.is_integer_dtype(table[column]):
            table[column] = table[column].astype(float)
    frames = [no_events().drop(columns="file")]
    if {species_column, "Begin Time (s)", "End Time (s)"} <= set(table.columns):  # else crowsetta names the gap
        nameless = table[species_column].isna()
        frames.append(pd.DataFrame({"start_s": pd.to_numeric(table.loc[nameless, "Begin Time (s)"], errors="coerce"),
                                    "end_s": pd.to_numeric(table.loc[nameless, "End Time (s)"], errors="coerce"),
                                    "name": ""}))  # fmt: skip
        table = table[~nameless]
    if len(table):
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / path.name
            table.to_csv(copy, sep="\t", index=False)
            try:
                raven = crowsetta.formats.bbox.Raven.from_file(copy, annot_col=species_column)
            except (SchemaError, ValueError, OSError) as exc:
                return None, first_line(exc, species_column)
        frames.append(_crowsetta_events(raven.df))
    return pd.concat(frames, ignore_index=True), ""
