"""The project's error type for problems the user can fix, and the stage runner that reports them."""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class PipelineError(Exception):
    """A problem with the user's params, data or files; its message says what to do, no traceback needed."""


class OutputError(PipelineError):
    """An output could not be written (disk full, folder not writable); nothing half-written was left behind.

    ``code`` is the errno and ``needed`` the bytes written before the failure, so an enclosing
    :func:`birdpipe.common.outputs.atomic_path` can restate the error for its own, outer target.
    """

    def __init__(self, message: str, code: int, needed: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.needed = needed


def size_text(count: float) -> str:
    units = ["B", "kB", "MB", "GB", "TB"]
    while count >= 1000 and len(units) > 1:
        count /= 1000
        units.pop(0)
    return f"{count:.0f} B" if units[0] == "B" else f"{count:.1f} {units[0]}"


def free_bytes(path: Path) -> int:
    """Free bytes on the device holding ``path`` (its nearest existing ancestor)."""
    for folder in (path.absolute(), *path.absolute().parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def write_error(
    exc: OSError | OutputError, target: str | Path, needed: int = 0, writing: bool = True
) -> OutputError | None:
    """One sentence for a failed write of ``target`` when the disk is full or the place is not writable, else None.

    ``needed``: bytes written before the failure, a lower bound of the space the output needs. ``writing``: False
    where the failing call is unknown, so a permission error may come from a read.
    """
    code = exc.code if isinstance(exc, OutputError) else exc.errno
    target = Path(target)
    if code in DISK_FULL:
        need = f"more than {size_text(needed)}" if needed else "more space than that"
        return OutputError(f"no space left on the device of {target} ({size_text(free_bytes(target))} free; "
                           f"it needs {need}): free some space and rerun", code, needed)  # fmt: skip
    folder = target.parent if target.parent != Path() else Path.cwd()
    if code in NOT_WRITABLE and not writing and code != errno.EROFS:
        return OutputError(f"cannot open {target}: {os.strerror(code).lower()}; let this user read and write it and "
                           f"{folder}", code, needed)  # fmt: skip
    if code in NOT_WRITABLE:
        return OutputError(f"cannot write {target}: {folder} is not writable ({os.strerror(code).lower()}); "
                           "make it writable or run elsewhere", code, needed)  # fmt: skip
    return None


def is_launch_main(node_only: bool = False) -> bool:
    """Whether this process is rank 0 as its launcher started it, before any process group exists.

    Lightning's DDP children get LOCAL_RANK and NODE_RANK, torchrun sets RANK and LOCAL_RANK, SLURM SLURM_PROCID
    and SLURM_LOCALID; a process started by none of them is the main one. ``node_only``: rank 0 of its machine.
    """
    names = ("LOCAL_RANK", "SLURM_LOCALID") if node_only else ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in names)


@contextmanager
def workspace_lock(name: str, folder: Path = Path(".dvc/tmp")) -> Iterator[None]:
    """Hold the workspace's stage lock while a stage runs; a second stage started in it meanwhile stops at once.

    DVC's own locks let two pipelines in one workspace run stages whose files do not overlap side by side (one
    run's ingest while the other trains), so outputs of two experiments would mix. Queued and ``--temp``
    experiments each run in a copy of their own, with their own lock. The OS drops the lock when its holder dies,
    even of ``kill -9``. Outside a DVC workspace, or without ``fcntl`` (Windows), there is nothing to lock.
    """
    try:
        import fcntl
    except ImportError:
        fcntl = None
    # a DDP process other than its machine's first (Lightning, torchrun, srun) runs inside that one's stage
    if fcntl is None or not folder.is_dir() or not is_launch_main(node_only=True):
        yield
        return
    with open(folder / "birdpipe-stage.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another stage"
            raise PipelineError(
                f"{holder} is running in this workspace; run experiments side by side with `dvc exp run --queue` "
                "and `dvc queue start -j N` (or `dvc exp run --temp`), each in a copy of its own"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"stage {name} (pid {os.getpid()})\n")
        handle.flush()
        yield


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's main: a PipelineError, a full disk or an unwritable folder becomes one clear message and
    exit status 1."""
    started = time.perf_counter()
    try:
        with workspace_lock(name):
            main()
    except PipelineError as exc:
        print(f"error in stage {name}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as exc:  # a write outside atomic_path (checkpoints, dvclive): exc names the file when it can
        clear = write_error(exc, exc.filename or Path.cwd(), writing=False)
        if clear is None:
            raise
        print(f"error in stage {name}: {clear}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print(f"stage {name} interrupted; its outputs were left as they were", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"stage {name} done in {time.perf_counter() - started:.1f} s")
