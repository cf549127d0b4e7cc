"""Stages under failure: a kill in the middle of features or models, a full disk or an unwritable folder during
features and train. Either the old outputs or the new ones, never a mix; one sentence, no traceback."""

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from birdpipe.bundle import load_bundle, save_bundle
from birdpipe.common import outputs
from birdpipe.common.errors import run_stage
from birdpipe.common.params import ModelParams
from birdpipe.models import InputShape, build_model
from stages import features as features_stage  # at collection, so Lightning's log handler gets the session's stderr
from stages import train as train_stage
from tests.conftest import copy_train_inputs

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    "features": {"max_seconds": 8.0, "workers": 1},
    "train": {"epochs": 1, "window_seconds": 1.0, "hop_seconds": 0.5, "batch_size": 8, "windows_per_recording": 2,
              "threads": 2},
}  # fmt: skip


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".old")))


def set_params(**sections) -> None:
    raw = {section: dict(values) for section, values in PARAMS.items()}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    Path("params.yaml").write_text(yaml.safe_dump(raw))


@pytest.fixture
def project(tmp_path, real_cache, monkeypatch) -> Path:
    """A project folder as the stages see it: params.yaml, data/manifest.csv, data/split.csv and (for train) the
    features' outputs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    table = pd.read_csv(real_cache["root"] / "split.csv", dtype={"id": str})
    table["path"] = [str(ROOT / p) for p in table["path"]]
    table.to_csv("data/split.csv", index=False)
    table.drop(columns="split").to_csv("data/manifest.csv", index=False)
    set_params()
    return tmp_path


def with_train_inputs(real_cache) -> None:
    copy_train_inputs(real_cache, Path("."))


def stage_error(name: str, main, capsys) -> str:
    """Run a stage as `python -m stages.<name>` does; return its one error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        run_stage(name, main)
    assert caught.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]  # after Lightning's INFO lines, if any


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what write() raises: no file name


def test_a_full_disk_during_features_is_one_sentence_and_keeps_the_old_cache(project, monkeypatch, capsys):
    from birdpipe.features import cache as features

    main = features_stage.main
    run_stage("features", main)
    old = snapshot(project / "data" / "features")
    set_params(features={"n_mfcc": 13})
    real_write_npy = features._write_npy

    def write_then_fill(raw, target, dtype, shape):
        if target.name == "stats.npy" or target.name == "frames.npy":  # the disk fills in the middle of the cache
            target.write_bytes(b"\x93NUMPY" + bytes(1000))
            full_disk()
        real_write_npy(raw, target, dtype, shape)

    monkeypatch.setattr(features, "_write_npy", write_then_fill)
    err = stage_error("features", main, capsys)
    assert err.startswith("error in stage features: no space left on the device of data/features (")
    assert "free; it needs more than " in err and "kB" in err
    assert snapshot(project / "data" / "features") == old and leftovers(project / "data") == []


def test_an_unwritable_data_folder_stops_features_with_one_sentence(project, monkeypatch, capsys):
    main = features_stage.main
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self.name.startswith(".features."):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    err = stage_error("features", main, capsys)
    assert err == "error in stage features: cannot write data/features: data is not writable (permission denied); " \
        "make it writable or run elsewhere"  # fmt: skip
    assert not (project / "data" / "features").exists() and leftovers(project / "data") == []


KILLED_FEATURES = """
import os, signal
from birdpipe.features import cache as features
from birdpipe.common.errors import run_stage
from stages.features import main

real = features._write_npy


def write_then_die(raw, target, dtype, shape):
    real(raw, target, dtype, shape)
    if target.name == "frames.npy":  # the frames written, the index and config not yet
        os.kill(os.getpid(), signal.SIGKILL)


features._write_npy = write_then_die
run_stage("features", main)
"""


def test_features_killed_in_the_middle_leave_the_old_cache_then_the_rerun_writes_the_new_one(project, monkeypatch):
    from birdpipe.features.cache import FeatureCache

    main = features_stage.main
    run_stage("features", main)
    old = snapshot(project / "data" / "features")
    set_params(features={"n_mfcc": 13})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED_FEATURES], env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert snapshot(project / "data" / "features") == old and leftovers(project / "data")  # the killed temporary
    monkeypatch.setattr(outputs, "_SWEPT", set())  # dvc repro again: a new process, which lists data/ afresh
    run_stage("features", main)
    assert FeatureCache.open("data/features", "data/split.csv").config.n_mfcc == 13
    assert leftovers(project / "data") == []


KILLED_MODELS = """
import json, os, signal, sys
import birdpipe.bundle
from birdpipe.bundle import save_bundle
from birdpipe.models import InputShape, build_model
from birdpipe.common.outputs import atomic_path
from birdpipe.common.params import ModelParams


class DieOnDump:  # model.pt is written; bundle.json, written next, never is
    def __getattr__(self, name):
        return getattr(json, name)

    def dumps(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)


info = json.loads(sys.argv[1])
birdpipe.bundle.json = DieOnDump()
with atomic_path("models") as folder:  # as stages/train.py writes the bundle
    save_bundle(folder, build_model(ModelParams(), 4, InputShape(3, 20, 43), None, None), info)
"""


def test_a_bundle_killed_in_the_middle_leaves_the_old_model(tmp_path, monkeypatch):
    import json

    monkeypatch.chdir(tmp_path)
    info = {"species": list("abcd"), "feature_config": {"kind": "mfcc", "n_mfcc": 20}, "window_seconds": 1.0,
            "hop_seconds": 0.5, "aggregate": "mean", "model": ModelParams().model_dump(mode="json"),
            "input_shape": {"channels": 3, "bins": 20, "frames": 43}}  # fmt: skip
    torch.manual_seed(0)
    save_bundle(tmp_path / "models", build_model(ModelParams(), 4, InputShape(3, 20, 43), None, None), info)
    old = snapshot(tmp_path / "models")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED_MODELS, json.dumps(info)], env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert snapshot(tmp_path / "models") == old
    assert load_bundle(tmp_path / "models").species == list("abcd")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".models.")]  # the cut bundle, hidden


def test_a_full_disk_while_train_writes_the_model_is_one_sentence(project, real_cache, monkeypatch, capsys):
    from birdpipe import bundle

    main = train_stage.main
    with_train_inputs(real_cache)
    (project / "models" / "network").mkdir(parents=True)
    (project / "models" / "network" / "model.pt").write_bytes(b"old")
    real_save = torch.save

    def save(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        if Path(target).name == "model.pt":
            full_disk()

    monkeypatch.setattr(bundle.torch, "save", save)
    err = stage_error("train", main, capsys)
    assert err.startswith("error in stage train: no space left on the device of models/network (")
    assert snapshot(project / "models" / "network") == {"model.pt": b"old"} and leftovers(project) == []
    assert not (project / "metrics").exists()  # nothing after the model either


def test_a_full_disk_while_saving_a_checkpoint_is_one_sentence(project, real_cache, monkeypatch, capsys):
    main = train_stage.main
    with_train_inputs(real_cache)

    def save(obj, target, *args, **kwargs):
        Path(target).write_bytes(b"PK\x03\x04 cut short")
        full_disk()

    monkeypatch.setattr(torch, "save", save)
    err = stage_error("train", main, capsys)
    checkpoints = (project / "checkpoints").resolve()
    assert err.startswith(f"error in stage train: no space left on the device of {checkpoints}/best.ckpt (")
    assert sorted(p.name for p in checkpoints.iterdir()) == ["fingerprint"]  # no cut checkpoint to resume from


def test_run_stage_turns_any_full_disk_or_unwritable_file_into_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = stage_error("train", full_disk, capsys)
    assert err.startswith(f"error in stage train: no space left on the device of {tmp_path} (") and "free" in err

    def unwritable():
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), "dvclive/metrics.json")

    err = stage_error("train", unwritable, capsys)
    assert err == "error in stage train: cannot write dvclive/metrics.json: dvclive is not writable (read-only " \
        "file system); make it writable or run elsewhere"  # fmt: skip

    def unreadable():  # raised by a read or a write: the sentence does not guess which
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "data/split.csv")

    err = stage_error("split", unreadable, capsys)
    assert err == "error in stage split: cannot open data/split.csv: permission denied; let this user read and write " \
        "it and data"  # fmt: skip

    def bug():
        raise FileNotFoundError(errno.ENOENT, "not a write problem", "x")

    with pytest.raises(FileNotFoundError):  # anything else keeps its traceback
        run_stage("train", bug)


HOLDER = """
import time
from pathlib import Path
from birdpipe.common.errors import run_stage


def main():
    Path("started").touch()
    while not Path("finish").exists():
        time.sleep(0.02)
    Path("out.txt").write_text("first")


run_stage("train", main)
"""


def start_holder() -> subprocess.Popen:
    Path("started").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    for _ in range(3000):
        if Path("started").exists() or holder.poll() is not None:
            break
        time.sleep(0.02)
    assert Path("started").exists(), holder.communicate()
    return holder


def test_a_second_stage_in_the_same_workspace_stops_with_one_sentence_and_the_first_finishes(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)  # a DVC workspace
    first = start_holder()
    err = stage_error("ingest", lambda: Path("out.txt").write_text("second"), capsys)
    assert err == f"error in stage ingest: stage train (pid {first.pid}) is running in this workspace; run " \
        "experiments side by side with `dvc exp run --queue` and `dvc queue start -j N` (or `dvc exp run --temp`), " \
        "each in a copy of its own"  # fmt: skip
    Path("finish").touch()
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 0 and "stage train done" in out and Path("out.txt").read_text() == "first"
    Path("finish").unlink()
    killed = start_holder()
    killed.kill()  # SIGKILL: the OS drops the lock with the process
    killed.wait()
    run_stage("ingest", lambda: Path("out.txt").write_text("second"))
    assert Path("out.txt").read_text() == "second"
