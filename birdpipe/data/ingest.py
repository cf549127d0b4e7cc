"""Ingest: turn a source of labelled recordings into a checked manifest.

Sources (``data.source``):
- ``synthetic``: the seeded generator in :mod:`birdpipe.data.synthetic.corpus` writes MP3s and a metadata CSV, which
  is then ingested like any other CSV.
- a folder with one sub-folder per species (BirdCLEF ``train_audio`` style); files are found recursively.
- a folder holding ``metadata.csv`` (the recommended form of a CSV source: ``dvc status`` then hashes the table
  and every recording under the folder, so a re-encoded or replaced recording reruns ingest), read as that CSV;
- a metadata CSV in one of three forms: explicit ``path,label``; BirdCLEF ``primary_label,filename``;
  Xeno-canto API fields (``gen`` + ``sp`` for the label, ``file-name``/``file``/``id`` for the file,
  ``rec``, ``q``, ``date``). Paths resolve relative to the CSV's folder unless absolute. Every other
  column (recordist, date, quality, licence, a predefined split or fold) is carried into the manifest.

Every recording is decoded in full (in parallel) and checked; one that cannot be decoded, is in a format
libsndfile does not read (m4a, aac, wma...), is empty, truncated, holds NaN or inf samples, is silent, a
constant DC offset, too short, missing or a byte-identical duplicate is listed with its reason in the ingest
report and skipped, or stops the stage when ``data.on_bad_file: error``. A kept recording with more than 1%
clipped samples is listed under the report's warnings. Hidden files (``.DS_Store``, ``._*``) are ignored.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import DataParams
from birdpipe.common.workers import cpu_workers
from birdpipe.data.audio import AUDIO_EXTENSIONS, UNSUPPORTED_EXTENSIONS, AudioError, audio_files, check_recording
from birdpipe.data.labels import NO_BIRD

TEMPORARY_COPY = "/.dvc/tmp/exps/"  # where DVC runs queued and --temp experiments

# Xeno-canto API field names and the manifest names they are carried under.
XENO_CANTO_RENAMES = {"rec": "recordist", "q": "quality", "lic": "license", "cnt": "country", "loc": "locality"}


class IngestError(PipelineError):
    """The source cannot be ingested (bad layout, unknown columns, bad files under on_bad_file: error)."""


@dataclass(frozen=True)
class Candidate:
    """A recording named by the source, before it is checked."""

    path: str
    label: str
    extra: dict[str, Any]


# ----------------------------------------------------------------------------------------- sources
def scan_folder(root: Path) -> list[Candidate]:
    """One sub-folder per species; audio files anywhere below it, undecodable formats too (to be reported)."""
    species_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not species_dirs:
        raise IngestError(f"{root} has no sub-folders: expected one folder of recordings per species")
    candidates = [Candidate(str(file), d.name, {}) for d in species_dirs for file in audio_files(d)]
    if not candidates:
        raise IngestError(f"{root} holds no audio files ({', '.join(AUDIO_EXTENSIONS)}) in its sub-folders")
    return candidates


def scan_negatives(root: Path) -> list[Candidate]:
    """``data.negatives``: every audio file below ``root`` is a recording with none of the label set's species.

    Its recordist is the first sub-folder under ``root`` (or ``negatives``), so a grouped split keeps a
    folder of one place or device together."""
    if not root.is_dir():
        raise IngestError(f"data.negatives {str(root)!r} is not a folder of no-bird recordings")
    files = audio_files(root)
    if not files:
        raise IngestError(f"data.negatives {str(root)!r} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    candidates = []
    for file in files:
        parts = file.relative_to(root).parts
        recordist = parts[0] if len(parts) > 1 else "negatives"
        candidates.append(Candidate(str(file), NO_BIRD, {"negative": True, "recordist": recordist}))
    return candidates


def _is_true(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _clean(value: Any) -> Any:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) or value == "" else value


def _resolve(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return path if path.is_absolute() else base / path


def _xeno_canto_file(base: Path, row: pd.Series, label: str) -> Path:
    """Where the audio of a Xeno-canto API row lies: its file name, or ``<id>``/``XC<id>`` with any extension."""
    names = []
    for column in ("file-name", "file"):
        value = _clean(row.get(column))
        if value:
            names.append(str(value).rsplit("/", 1)[-1] if "://" in str(value) else str(value))
    xc_id = _clean(row.get("id"))
    if xc_id is not None:
        stem = str(xc_id).removeprefix("XC")
        extensions = AUDIO_EXTENSIONS + UNSUPPORTED_EXTENSIONS  # an undecodable one is reported as such
        names += [f"{prefix}{stem}{ext}" for prefix in ("", "XC") for ext in extensions]
    for name in names:
        for folder in (base, base / label, base / "audio" / label, base / "audio"):
            if (folder / name).is_file():
                return folder / name
    return _resolve(base, names[0]) if names else base / f"<no file column for id {xc_id}>"


def _convention(columns: set[str], params: DataParams) -> tuple[str, str | None, str | None]:
    """Which metadata convention a CSV follows, and its path and label columns."""
    for key, name in (("data.path_column", params.path_column), ("data.label_column", params.label_column)):
        if name and name not in columns:
            raise IngestError(f"{key} {name!r} is not a column of the metadata CSV")
    if params.path_column and params.label_column:
        return "explicit", params.path_column, params.label_column
    if {"path", "label"} <= columns:
        return "explicit", params.path_column or "path", params.label_column or "label"
    if {"primary_label", "filename"} <= columns:
        return "birdclef", params.path_column or "filename", params.label_column or "primary_label"
    if {"gen", "sp"} <= columns:
        return "xeno-canto", params.path_column, params.label_column
    raise IngestError(
        f"cannot tell which columns hold the file and the label (columns: {sorted(columns)}). "
        "Use path,label; BirdCLEF primary_label,filename; Xeno-canto gen,sp with file-name/file/id; "
        "or set data.path_column and data.label_column."
    )


def read_metadata(csv_path: Path, params: DataParams) -> list[Candidate]:
    """Rows of a metadata CSV as candidates, whatever its convention."""
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise IngestError(f"{csv_path} cannot be read as CSV: {exc}") from None
    try:
        convention, path_column, label_column = _convention(set(table.columns), params)
    except IngestError as exc:
        raise IngestError(f"{csv_path}: {exc}") from None
    base = csv_path.parent
    used = {path_column, label_column} | ({"gen", "sp"} if convention == "xeno-canto" else set())
    candidates = []
    for _, row in table.iterrows():
        negative = _is_true(row.get("negative", ""))
        if negative:  # a no-bird recording (the synthetic corpus's negatives): targets all 0
            label = NO_BIRD
        elif label_column is not None:
            label = str(row[label_column]).strip()
        else:
            label = f"{row['gen'].strip()}_{row['sp'].strip()}"
        if path_column is not None:
            path = _resolve(base, str(row[path_column]).strip())
        else:
            path = _xeno_canto_file(base, row, label)
        extra = {k: _clean(v) for k, v in row.items() if k not in used}
        if "negative" in extra:
            extra["negative"] = negative
        if convention == "xeno-canto":
            extra = {XENO_CANTO_RENAMES.get(k, k): v for k, v in extra.items()}
            if "id" in extra:
                extra["xc_id"] = extra.pop("id")
        candidates.append(Candidate(str(path), label, extra))
    return candidates


METADATA_CSV = "metadata.csv"


def find_candidates(source: str, params: DataParams) -> list[Candidate]:
    path = Path(source).expanduser()
    if path.is_dir() and (path / METADATA_CSV).is_file():
        return read_metadata(path / METADATA_CSV, params)
    if path.is_dir():
        return scan_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        print(
            "warning: "
            f"data.source names the table {path.name}: DVC tracks its bytes but not the recordings it names, so a "
            f"replaced recording leaves ingest up to date; name its folder instead (data.source={path.parent}) "
            f"when the recordings live under it and the table is called {METADATA_CSV}",
            file=sys.stderr,
        )
        return read_metadata(path, params)
    if path.is_file():
        raise IngestError(f"data.source {source!r} is a file but not a .csv metadata table")
    hint = ""
    if not path.is_absolute() and TEMPORARY_COPY in Path.cwd().as_posix():
        hint = (
            " (this experiment runs in a temporary copy of the repository, queued or with --temp, where a "
            "relative path points elsewhere: give data.source as an absolute path)"
        )
    raise IngestError(
        f"data.source {source!r} does not exist: give 'synthetic', a folder with one sub-folder per "
        f"species, or a metadata CSV{hint}"
    )


# ---------------------------------------------------------------------------------------- checking
def _check(args: tuple[str, float, float]) -> dict[str, Any]:
    path, min_seconds, silence_dbfs = args
    try:
        checked = check_recording(path, min_seconds, silence_dbfs)
    except AudioError as exc:
        return {"ok": False, "reason": exc.reason}
    with open(path, "rb") as handle:  # streamed: memory stays flat for long recordings
        digest = hashlib.file_digest(handle, "md5").hexdigest()
    return {
        "ok": True,
        "duration_s": round(checked.duration, 4),
        "sample_rate": checked.info.sample_rate,
        "channels": checked.info.channels,
        "md5": digest,
        "clipped_fraction": checked.clipped_fraction,
        "warning": checked.clipping_warning,
    }


def _recording_id(candidate: Candidate) -> str:
    for key in ("id", "xc_id", "recording_id"):
        value = candidate.extra.get(key)
        if value:
            return str(value)
    return Path(candidate.path).stem


def _display_path(path: str) -> str:
    """A recording inside the project relative to its root (so manifests move with the project), any other one
    absolute: relative to the working directory, a path outside would depend on where the project runs (inside
    ``dvc exp run --temp`` it is a temporary copy, ``../../../..``) and break after ``dvc exp apply``."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(resolved)


def ingest(
    candidates: list[Candidate], params: DataParams, workers: int = 0, progress: bool = True
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Check every candidate; return the manifest of good recordings and the ingest report."""
    skipped: list[dict[str, str]] = []
    warnings: list[dict[str, Any]] = []
    jobs = [(c.path, params.min_seconds, params.silence_dbfs) for c in candidates]
    with ProcessPoolExecutor(max_workers=cpu_workers(workers)) as pool:
        results = list(
            tqdm(
                pool.map(_check, jobs, chunksize=4),
                total=len(jobs),
                desc="ingest: checking recordings",
                unit="file",
                disable=not progress or None,
            )
        )
    rows = []
    seen_paths: dict[str, str] = {}
    seen_content: dict[str, str] = {}
    for candidate, result in zip(candidates, results, strict=True):
        shown = _display_path(candidate.path)
        if not candidate.label:
            skipped.append({"path": shown, "reason": "no label (a no-bird recording needs negative: true)"})
            continue
        if not result["ok"]:
            skipped.append({"path": shown, "reason": result["reason"]})
            continue
        resolved = str(Path(candidate.path).resolve())
        if resolved in seen_paths:
            skipped.append({"path": shown, "reason": "listed twice in the source"})
            continue
        if result["md5"] in seen_content:
            skipped.append({"path": shown, "reason": f"byte-identical duplicate of {seen_content[result['md5']]}"})
            continue
        seen_paths[resolved] = shown
        seen_content[result["md5"]] = shown
        if result["warning"]:
            warnings.append(
                {"path": shown, "warning": result["warning"], "clipped_fraction": round(result["clipped_fraction"], 6)}
            )
        row = {"id": _recording_id(candidate), "path": shown, "label": candidate.label}
        row.update({k: result[k] for k in ("duration_s", "sample_rate", "channels", "md5")})
        for key, value in candidate.extra.items():
            row.setdefault(key, value)
        rows.append(row)

    if skipped and params.on_bad_file == "error":
        listing = "\n".join(f"  {item['path']}: {item['reason']}" for item in skipped)
        raise IngestError(f"{len(skipped)} recording(s) cannot be used (data.on_bad_file: error):\n{listing}")
    reasons = Counter(re.sub(r"\s*\(.*", "", item["reason"]) for item in skipped)
    if not rows:
        summary = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        raise IngestError(f"no usable recordings were found in the source (skipped: {summary or 'none'})")

    manifest = pd.DataFrame(rows)
    manifest["id"] = _unique_ids(manifest["id"].astype(str).tolist())
    manifest = manifest.sort_values(["label", "id"], kind="stable").reset_index(drop=True)
    if (manifest["label"] == NO_BIRD).any():
        manifest["negative"] = manifest["label"] == NO_BIRD
    counts = Counter(label for label in manifest["label"] if label != NO_BIRD)
    if not counts:
        raise IngestError("the source holds no-bird recordings only: a label set needs recordings of species")
    report = {
        "files_found": len(candidates),
        "recordings": len(manifest),
        "species": len(counts),
        "total_hours": round(float(manifest["duration_s"].sum()) / 3600, 4),
        "skipped_count": len(skipped),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped": skipped,
        "warning_count": len(warnings),
        "warnings": warnings,
        "negatives": int((manifest["label"] == NO_BIRD).sum()),
        "recordings_per_species": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "imbalance_ratio": round(max(counts.values()) / min(counts.values()), 3),
    }
    return manifest, report


def _unique_ids(ids: list[str]) -> list[str]:
    seen: Counter[str] = Counter()
    unique = []
    for value in ids:
        seen[value] += 1
        unique.append(value if seen[value] == 1 else f"{value}_{seen[value]}")
    return unique
