"""Atomic outputs: whole or absent after a kill at any moment, never a shared temporary, one sentence on a full disk."""

import errno
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

from birdpipe.common import outputs
from birdpipe.common.errors import OutputError, PipelineError
from birdpipe.common.outputs import atomic_path, read_json, write_json, write_table

ROOT = Path(__file__).resolve().parents[1]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".old")))


def folder_text(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def next_run(monkeypatch) -> None:
    """What a new stage process would see: no folder swept yet (a process lists each folder once)."""
    monkeypatch.setattr(outputs, "_SWEPT", set())


def write_folder(target: Path, label: str) -> None:
    with atomic_path(target) as temporary:
        temporary.mkdir()
        for name in ("a.txt", "b.txt"):
            (temporary / name).write_text(f"{label} {name}")


def test_files_and_folders_replace_the_old_output_whole(tmp_path):
    write_json({"x": 1}, tmp_path / "out" / "m.json")
    write_json({"x": float("nan")}, tmp_path / "out" / "m.json")
    assert read_json(tmp_path / "out" / "m.json") == {"x": None}
    write_folder(tmp_path / "models", "old")
    write_folder(tmp_path / "models", "new")
    assert folder_text(tmp_path / "models") == {"a.txt": "new a.txt", "b.txt": "new b.txt"}
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "out") == []


def test_a_failing_block_keeps_the_old_output_and_leaves_no_temporary(tmp_path):
    write_folder(tmp_path / "models", "old")
    with pytest.raises(ValueError), atomic_path(tmp_path / "models") as temporary:
        temporary.mkdir()
        (temporary / "a.txt").write_text("half")
        raise ValueError("boom")
    assert folder_text(tmp_path / "models") == {"a.txt": "old a.txt", "b.txt": "old b.txt"}
    assert leftovers(tmp_path) == []


def test_two_writers_of_one_target_never_share_a_temporary(tmp_path):
    target = tmp_path / "m.json"
    with atomic_path(target) as first, atomic_path(target) as second:  # the old fixed name: second deleted first
        assert first != second and str(os.getpid()) in first.name
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # the last to finish wins, whole
    names, errors = [], []

    def writer(i: int) -> None:
        try:
            with atomic_path(target) as temporary:
                names.append(temporary.name)
                temporary.write_text(str(i) * 1000)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(names)) == 8
    assert target.read_text() in {str(i) * 1000 for i in range(8)} and leftovers(tmp_path) == []


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
import birdpipe.common.outputs as o

target, point = Path(sys.argv[1]), sys.argv[2]


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


real_remove, real_replace = o.remove, os.replace
if point == "swapped":  # the new folder is in place, the old one not yet deleted
    o.remove = lambda path: kill() if path.name.endswith(".partial") else real_remove(path)
if point == "between_renames":  # no atomic swap here: the old folder moved aside, the new one not yet moved in
    o._exchange = lambda a, b: False

    def replace(a, b):
        real_replace(a, b)
        if str(b).endswith(".old"):
            kill()

    o.os.replace = replace
with o.atomic_path(target) as temporary:
    if target.suffix == ".json":
        temporary.write_text('{"half": ')
        kill()
    temporary.mkdir()
    (temporary / "a.txt").write_text("new a.txt")
    if point == "writing":
        kill()
    (temporary / "b.txt").write_text("new b.txt")
"""


def killed_write(target: Path, point: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(target), point], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr


OLD = {"a.txt": "old a.txt", "b.txt": "old b.txt"}
NEW = {"a.txt": "new a.txt", "b.txt": "new b.txt"}


@pytest.mark.parametrize(("point", "after_kill"), [("writing", OLD), ("swapped", NEW), ("between_renames", {})])
def test_a_folder_killed_at_any_moment_is_old_or_new_and_the_next_write_cleans_up(
    tmp_path, monkeypatch, point, after_kill
):
    target = tmp_path / "models"
    write_folder(target, "old")
    killed_write(target, point)
    assert folder_text(target) == after_kill and leftovers(tmp_path)  # what the kill left behind
    next_run(monkeypatch)
    with atomic_path(target) as temporary:  # the next run (a stage writing the same output)
        assert folder_text(target) == (after_kill or OLD)  # between the renames: the old folder is put back
        assert leftovers(tmp_path) == []  # the killed writer's temporaries are gone
        temporary.mkdir()
        (temporary / "c.txt").write_text("c")
    assert folder_text(target) == {"c.txt": "c"} and leftovers(tmp_path) == []


def test_a_file_killed_mid_write_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json({"old": True}, target)
    killed_write(target, "writing")
    assert read_json(target) == {"old": True}
    next_run(monkeypatch)
    write_json({"new": True}, target)
    assert read_json(target) == {"new": True} and leftovers(tmp_path) == []


def test_a_live_writers_temporary_is_left_alone(tmp_path, monkeypatch):
    target = tmp_path / "m.json"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        alive = tmp_path / f".m.json.{other.pid}-0123abcd.partial"
        dead = tmp_path / ".m.json.partial"  # the name the old code used: its writer is gone
        alive.write_text("busy")
        dead.write_text("stale")
        write_json([1], target)
        assert leftovers(tmp_path) == [alive.name]
    finally:
        other.kill()
        other.wait()
    next_run(monkeypatch)
    write_json([2], target)
    assert leftovers(tmp_path) == []


def disk_fills_after(monkeypatch, share: float = 0.5) -> None:
    """Every text write stops with ENOSPC after ``share`` of its data, like a disk filling up."""

    def write_text(self, data, *args, **kwargs):
        with open(self, "w") as handle:
            handle.write(data[: int(len(data) * share)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # no file name: write() does not give one

    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(pd.DataFrame, "to_csv", lambda self, path, **kw: write_text(Path(path), self.to_json()))


def test_a_full_disk_is_one_sentence_with_the_path_and_the_space_needed(tmp_path, monkeypatch):
    target = tmp_path / "out" / "m.json"
    write_json({"old": 1}, target)
    disk_fills_after(monkeypatch)
    with pytest.raises(OutputError) as caught:
        write_json({"values": list(range(1000))}, target)
    message = str(caught.value)
    assert message.startswith(f"no space left on the device of {target} (") and "\n" not in message
    assert "free; it needs more than" in message and isinstance(caught.value, PipelineError)
    monkeypatch.undo()
    assert read_json(target) == {"old": 1} and leftovers(target.parent) == []


def test_a_full_disk_inside_an_output_folder_names_the_folder_not_the_temporary(tmp_path, monkeypatch):
    target = tmp_path / "data" / "features"
    write_folder(target, "old")
    disk_fills_after(monkeypatch)
    expected = rf"^no space left on the device of {target} \(.* needs more than \d+ B\)"
    with pytest.raises(OutputError, match=expected), atomic_path(target) as temporary:
        temporary.mkdir()
        write_table(pd.DataFrame({"x": range(100)}), temporary / "index.csv")
    assert folder_text(target) == OLD and leftovers(target.parent) == []


def test_an_unwritable_folder_is_one_sentence(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "write_text", refuse)
    with pytest.raises(OutputError, match=rf"^cannot write {tmp_path / 'm.json'}: {tmp_path} is not writable \(perm"):
        write_json({}, tmp_path / "m.json")
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_sentence(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    try:
        with pytest.raises(OutputError, match="is not writable"):
            write_json({}, tmp_path / "ro" / "m.json")
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "m.json"):
        (tmp_path / "missing.txt").read_text()
    assert leftovers(tmp_path) == []


def test_the_swap_of_folders_is_atomic_where_the_os_supports_it(tmp_path, monkeypatch):
    if sys.platform != "linux":
        pytest.skip("renameat2 is Linux's")
    write_folder(tmp_path / "models", "old")
    renames = []
    monkeypatch.setattr(outputs.os, "replace", lambda a, b: renames.append((a, b)))  # only the swap may move things
    write_folder(tmp_path / "models", "new")
    assert renames == [] and folder_text(tmp_path / "models") == NEW


def test_a_folder_is_listed_once_however_many_files_go_into_it(tmp_path, monkeypatch):
    listed = []
    real_scandir = os.scandir
    monkeypatch.setattr(outputs.os, "scandir", lambda path: listed.append(path) or real_scandir(path))
    for i in range(50):  # predict writes a Raven table per recording
        write_table(pd.DataFrame({"x": [i]}), tmp_path / f"{i}.selections.txt")
    assert len(listed) == 1 and len(list(tmp_path.iterdir())) == 50
