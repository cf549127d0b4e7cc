"""Atomic output writing: every stage output appears whole or not at all.

A stage interrupted mid-write (Ctrl-C, ``kill -9``, a full disk) leaves only a hidden temporary beside the
target, which the next write of that target removes; the previous output, if any, is untouched until the new
one is complete. A folder replaces the old one in a single rename that swaps the two (Linux
``renameat2(RENAME_EXCHANGE)``), so even a kill at that moment leaves the old folder or the new one; where
the swap is unsupported, two renames are used and the next write puts the old folder back if a kill fell
between them. Temporaries carry the writer's process id and a random token: two processes (or two threads)
writing the same target never share one. A full disk or an unwritable folder becomes an
:class:`~birdpipe.common.errors.OutputError`: one sentence naming the output and the space it needs.
"""

from __future__ import annotations

import ctypes
import errno
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from birdpipe.common.errors import OutputError, write_error

_WRITING: set[str] = set()  # real paths of the temporaries (and fallback .old folders) this process holds now
_SWEPT: set[str] = set()  # folders this process has cleared of killed writers' temporaries
TEMPORARY = re.compile(r"\.(.+)\.(\d+)-[0-9a-f]{8}\.(partial|old)")  # .<target>.<pid>-<token>.partial|old


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _size(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder), 0 if it is gone."""
    try:
        if not path.is_dir():
            return path.lstat().st_size
        return sum(os.lstat(os.path.join(root, name)).st_size for root, _, names in os.walk(path) for name in names)
    except OSError:
        return 0


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send Ctrl-C there: leave other processes' temporaries alone
        return pid != os.getpid()
    if pid == os.getpid():  # not in _WRITING, so an earlier, killed process that had our pid
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _sweep(target: Path) -> None:
    """Remove what killed writers left beside ``target``; an old folder whose target is missing is put back.

    A folder is listed once per process (predict writes thousands of files into one); the names of the
    earlier, untagged temporaries are checked for every target.
    """
    found = [(target.with_name(f".{target.name}.{kind}"), None, kind, target) for kind in ("old", "partial")]
    folder = os.path.realpath(target.parent)
    if folder not in _SWEPT:
        _SWEPT.add(folder)
        found += [(Path(entry.path), int(m[2]), m[3], Path(folder, m[1])) for entry in os.scandir(folder)
                  if (m := TEMPORARY.fullmatch(entry.name))]  # fmt: skip
    for leftover, pid, kind, own in sorted(found, key=lambda item: item[2] != "old"):  # old folders first
        if os.path.realpath(leftover) in _WRITING or (pid is not None and _alive(pid)) or not os.path.lexists(leftover):
            continue
        if kind == "old" and not os.path.lexists(own):
            os.replace(leftover, own)  # killed between the two renames of the fallback: the old output returns
        else:
            remove(leftover)


_libc: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic rename; False where the OS or file system cannot."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    renameat2 = getattr(_libc, "renameat2", None) if _libc else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel, or a file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _move_into_place(temporary: Path, target: Path, tag: str) -> None:
    if not (target.exists() and (temporary.is_dir() or target.is_dir())):
        os.replace(temporary, target)  # a file replaces a file atomically
        return
    if _exchange(temporary, target):
        remove(temporary)  # now the old output
        return
    old = target.with_name(f".{target.name}.{tag}.old")
    _WRITING.add(os.path.realpath(old))
    try:
        os.replace(target, old)
        try:
            os.replace(temporary, target)
        except BaseException:
            os.replace(old, target)
            raise
        remove(old)
    finally:
        _WRITING.discard(os.path.realpath(old))


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only if the block succeeds.

    Works for files and folders (a folder replaces the old one whole). A full disk or an unwritable folder
    raises :class:`OutputError` with the temporary removed and the old output untouched.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _sweep(target)
    except OSError as exc:
        clear = write_error(exc, target)
        if clear is None:
            raise
        raise clear from None
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    temporary = target.with_name(f".{target.name}.{tag}.partial")
    _WRITING.add(os.path.realpath(temporary))
    try:
        yield temporary
        _move_into_place(temporary, target, tag)
    except BaseException as exc:
        written = _size(temporary)
        remove(temporary)
        if isinstance(exc, (OSError, OutputError)):  # an inner atomic_path's error is restated for this target
            clear = write_error(exc, target, written + getattr(exc, "needed", 0))
            if clear is not None:
                raise clear from None
        raise
    finally:
        _WRITING.discard(os.path.realpath(temporary))


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
