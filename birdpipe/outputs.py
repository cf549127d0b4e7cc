"""Atomic output writing: every stage output appears whole or not at all.

A stage interrupted mid-write (Ctrl-C, a killed process, a full disk) leaves only a hidden temporary
beside the target, which the next run removes; the previous output, if any, is untouched until the new
one is complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only if the block succeeds.

    Works for files and folders (a folder replaces the old one whole).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial")
    remove(temporary)
    try:
        yield temporary
    except BaseException:
        remove(temporary)
        raise
    if temporary.is_dir() and target.exists():
        old = target.with_name(f".{target.name}.old")
        remove(old)
        os.replace(target, old)
        os.replace(temporary, target)
        remove(old)
    else:
        os.replace(temporary, target)


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinity become null so every JSON reader accepts the file."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, target: str | Path) -> None:
    with atomic_path(target) as temporary:
        temporary.write_text(json.dumps(_jsonable(data), indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_table(frame: pd.DataFrame, target: str | Path) -> None:
    """CSV with Unix line ends and no index, written atomically."""
    with atomic_path(target) as temporary:
        frame.to_csv(temporary, index=False, lineterminator="\n")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV written by :func:`write_table`, keeping ids and labels as strings."""
    return pd.read_csv(path, dtype={"id": str, "label": str}, keep_default_na=False, na_values=[""])
