"""Lightning DDP through params: two CPU processes (gloo) train the model one process trains, within tolerance.

The train stage runs as DVC runs it (`python -m stages.train` in a project folder); with train.devices: 2
Lightning starts the second process by running the same command again. What the two must share: the global batches
(each process takes half of every batch of the one-process run), the validation set (each process scores half the
windows, the halves are gathered, so early stopping and model selection see every window), and the outputs
(rank 0 alone writes them). BatchNorm statistics are per process on CPU (torch has no CPU SyncBatchNorm), and the
gradient average is summed in another order, so the runs agree within tolerance, not bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import copy_train_inputs

ROOT = Path(__file__).resolve().parents[1]
PARAMS = {
    "seed": 3,
    "features": {"max_seconds": 8.0, "workers": 1},
    "model": {"dropout": 0.0},  # dropout masks are drawn per process; without them the runs can be compared
    "train": {"epochs": 3, "patience": 10, "window_seconds": 1.0, "hop_seconds": 0.5, "batch_size": 16,
              "windows_per_recording": 8, "threads": 2, "lr": 0.0005},
}  # fmt: skip


def train_in(folder: Path, real_cache: dict, **train: int) -> subprocess.CompletedProcess:
    (folder / "data").mkdir(parents=True)
    table = pd.read_csv(real_cache["root"] / "split.csv", dtype={"id": str})
    table.to_csv(folder / "data" / "split.csv", index=False)
    copy_train_inputs(real_cache, folder)
    params = {**PARAMS, "train": {**PARAMS["train"], **train}}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TQDM_DISABLE": "1", "MASTER_PORT": "29517"}
    return subprocess.run([sys.executable, "-m", "stages.train"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "models" / "network" / "model.pt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_cpu_processes_train_the_model_of_one_within_tolerance(real_cache, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    one = train_in(single, real_cache)
    assert one.returncode == 0, one.stderr[-3000:]
    two = train_in(ddp, real_cache, devices=2)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "distributed_backend=gloo" in two.stderr + two.stdout and "All distributed processes registered" in (
        two.stderr + two.stdout
    )

    a, b = weights(single), weights(ddp)
    assert a.keys() == b.keys()
    learned = [n for n in a if a[n].is_floating_point() and "running" not in n]  # BatchNorm buffers: rank 0's
    flat_a, flat_b = (torch.cat([w[n].flatten() for n in learned]) for w in (a, b))
    assert 0 < float((flat_a - flat_b).norm() / flat_a.norm()) < 0.01  # two processes really ran, and agree

    def curve(folder: Path, name: str) -> list[float]:
        return pd.read_csv(folder / "dvclive" / "plots" / "metrics" / f"{name}.tsv", sep="\t").iloc[:, -1].tolist()

    # val loss over every val window, each once: within 0.5 %; train loss (per-process BatchNorm) within 5 %
    assert curve(ddp, "val/loss") == pytest.approx(curve(single, "val/loss"), rel=0.005)
    assert curve(ddp, "train/loss") == pytest.approx(curve(single, "train/loss"), rel=0.05)
    assert len(curve(ddp, "val/f1_macro")) == 3  # rank 0 alone logged, each epoch once
    metrics_one = json.loads((single / "metrics" / "train.json").read_text())["train"]
    metrics_two = json.loads((ddp / "metrics" / "train.json").read_text())["train"]
    assert metrics_two["epochs"] == metrics_one["epochs"] == 3
    assert metrics_two["best_val_f1_macro"] == pytest.approx(metrics_one["best_val_f1_macro"], abs=0.05)
    assert (ddp / "models" / "network" / "bundle.json").exists() and not list((ddp / "models").glob(".*.partial"))
