import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from birdpipe.bundle import BundleError, load_bundle, save_bundle
from birdpipe.common.outputs import write_json
from birdpipe.common.params import TrainParams, validate_params
from birdpipe.evaluation.evaluate import evaluate_split
from birdpipe.training.loop import fit
from birdpipe.training.module import LitClassifier, NonFiniteLossError, lr_factor
from birdpipe.training.resume import training_fingerprint

TINY = {"train": {"epochs": 2, "window_seconds": 1.0, "hop_seconds": 0.5, "batch_size": 8, "windows_per_recording": 4,
                  "threads": 2}}  # fmt: skip


def params(**sections):
    raw = {key: dict(value) for key, value in TINY.items()}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return validate_params(raw)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # dvclive looks for a DVC/git repo in the working directory; keep out of ours


def run_fit(real_cache, tmp_path, p, **kwargs):
    return fit(p, real_cache["cache"], real_cache["weights"], real_cache["stats"], checkpoint_dir=tmp_path / "ck",
               live_dir=tmp_path / "live", progress=False, **kwargs)  # fmt: skip


def test_training_runs_through_lightning_and_logs_every_epoch(real_cache, tmp_path):
    result = run_fit(real_cache, tmp_path, params(loss={"name": "focal"}))
    assert result.metrics["train"]["epochs"] == 2
    assert 1 <= result.metrics["train"]["best_epoch"] <= 2
    assert result.metrics["model"]["params"] > 400_000
    assert [row["epoch"] for row in result.history] == [1, 2]
    for key in ("train/loss", "train/accuracy", "train/lr", "train/grad_norm", "val/loss", "val/accuracy",
                "val/f1_macro"):  # fmt: skip
        assert key in result.history[0]
        assert (tmp_path / "live" / "plots" / "metrics" / f"{key}.tsv").exists()
    summary = json.loads((tmp_path / "live" / "metrics.json").read_text())
    assert summary["step"] == 2


def test_training_learns_the_training_recordings(real_cache, tmp_path):
    """Loss falls and the model beats the majority class on the windows it trains on (real clips, 4 species)."""
    p = params(train={**TINY["train"], "epochs": 12, "lr": 0.003, "scheduler": "none", "patience": 100},
               augment={"mixup": {"p": 0.0}}, model={"dropout": 0.0})  # fmt: skip
    result = run_fit(real_cache, tmp_path, p)
    losses = [row["train/loss"] for row in result.history]
    assert min(losses[-3:]) < 0.6 * losses[0], losses
    labels = real_cache["cache"].recordings("train")["label"]
    majority = labels.value_counts(normalize=True).max()
    assert max(row["train/accuracy"] for row in result.history[-3:]) > majority + 0.25


def test_training_is_deterministic_on_cpu(real_cache, tmp_path):
    p = params(train={**TINY["train"], "epochs": 1}, augment={"mixup": {"p": 0.5}, "specaugment": {"p": 0.5}})
    first = run_fit(real_cache, tmp_path / "a", p)
    second = run_fit(real_cache, tmp_path / "b", p)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    assert first.history[0]["val/loss"] == second.history[0]["val/loss"]


class Interrupt(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise KeyboardInterrupt


def test_interrupted_training_resumes_from_its_last_checkpoint(real_cache, tmp_path, capsys):
    p = params(train={**TINY["train"], "epochs": 3})
    with pytest.raises(SystemExit):  # Lightning ends the process after a graceful shutdown on Ctrl-C
        run_fit(real_cache, tmp_path, p, callbacks=[Interrupt()])
    assert (tmp_path / "ck" / "last.ckpt").exists() and not (tmp_path / "ck" / "complete").exists()
    result = run_fit(real_cache, tmp_path, p)
    assert "resuming from" in capsys.readouterr().out
    assert [row["epoch"] for row in result.history] == [1, 2, 3]  # epoch 1 from before, 2-3 after the resume
    assert (tmp_path / "ck" / "complete").exists()
    # a finished run is not resumed: the same params start over
    again = run_fit(real_cache, tmp_path, p)
    assert "resuming" not in capsys.readouterr().out and len(again.history) == 3


ROOT = Path(__file__).resolve().parents[1]
KILLED_RUN = """
import os, signal, sys
import lightning as L
from birdpipe.features.cache import FeatureCache
from birdpipe.common.outputs import read_json
from birdpipe.common.params import validate_params
from birdpipe.training.loop import fit

job = read_json(sys.argv[1])


class Kill(L.Callback):  # SIGKILL, as `kill -9` sends: no hook, no cleanup, no final checkpoint
    def _maybe(self, hook, trainer, batch_idx=None):
        if [hook, trainer.current_epoch, batch_idx] == job["kill"]:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self._maybe("batch", trainer, batch_idx)

    def on_validation_end(self, trainer, module):  # after dvclive logged the epoch, before ModelCheckpoint saves it
        self._maybe("validation_end", trainer)


fit(validate_params(job["params"]), FeatureCache.open(job["cache"]), job["weights"], job["stats"],
    checkpoint_dir="ck", live_dir="live", progress=False, callbacks=[Kill()])
"""


def killed_fit(real_cache, folder, p, kill):
    """Run fit in a child process that SIGKILLs itself at ``kill`` = [hook, epoch index, batch index]."""
    folder.mkdir(exist_ok=True)
    job = {"params": p.model_dump(mode="json"), "cache": str(real_cache["root"] / "features"), "kill": kill,
           "weights": real_cache["weights"], "stats": real_cache["stats"]}  # fmt: skip
    write_json(job, folder / "job.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", KILLED_RUN, "job.json"], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def test_a_run_killed_mid_training_resumes_to_the_model_of_an_uninterrupted_run(real_cache, tmp_path, capsys):
    augment = {"gain_db": 3.0, "specaugment": {"p": 0.5, "freq_mask": 4, "time_mask": 8}, "mixup": {"p": 0.5}}
    p = params(train={**TINY["train"], "epochs": 3, "windows_per_recording": 2, "batch_size": 4}, augment=augment)
    whole = run_fit(real_cache, tmp_path / "whole", p)
    killed = tmp_path / "killed"
    # killed after epoch 2 was logged but before its checkpoint: the resume redoes epoch 2 from last.ckpt (epoch 1)
    killed_fit(real_cache, killed, p, ["validation_end", 1, None])
    assert torch.load(killed / "ck" / "last.ckpt", weights_only=False)["epoch"] == 0
    assert len((killed / "live" / "plots" / "metrics" / "val" / "f1_macro.tsv").read_text().splitlines()) == 3
    killed_fit(real_cache, killed, p, ["batch", 2, 1])  # resumed, then killed again in the middle of epoch 3
    resumed = run_fit(real_cache, killed, p)
    assert capsys.readouterr().out.count("resuming from") == 1  # this process's; the children's went to their pipes
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.history == whole.history
    assert {**resumed.metrics["train"], "seconds": 0} == {**whole.metrics["train"], "seconds": 0}
    for tsv in sorted((tmp_path / "whole" / "live" / "plots").rglob("*.tsv")):  # DVC plots them: no epoch twice
        assert (killed / tsv.relative_to(tmp_path / "whole")).read_text() == tsv.read_text(), tsv.name


def test_a_cut_last_checkpoint_starts_over_instead_of_crashing(real_cache, tmp_path, capsys):
    p = params(train={**TINY["train"], "epochs": 1})
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "fingerprint").write_text(training_fingerprint(p, []) + "\n")  # the same run, so it would resume
    (tmp_path / "ck" / "last.ckpt").write_bytes(b"PK\x03\x04" + bytes(100))  # a zip cut short, as a kill can leave
    result = run_fit(real_cache, tmp_path, p)
    assert "last.ckpt is unreadable" in capsys.readouterr().out and len(result.history) == 1


def test_changed_params_do_not_resume(real_cache, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_fit(real_cache, tmp_path, params(train={**TINY["train"], "epochs": 3}), callbacks=[Interrupt()])
    run_fit(real_cache, tmp_path, params(train={**TINY["train"], "epochs": 3, "lr": 0.01}))
    assert "resuming" not in capsys.readouterr().out


def test_non_finite_loss_stops_with_epoch_and_step(real_cache, tmp_path, monkeypatch):
    original = LitClassifier.training_step

    def poisoned(self, batch, batch_idx):
        x, labels = batch
        return original(self, (x * float("nan"), labels), batch_idx)

    monkeypatch.setattr(LitClassifier, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"became nan at epoch 1, step 0"):
        run_fit(real_cache, tmp_path, params())


def test_bundle_round_trip_and_incomplete_folders(real_cache, tmp_path):
    p = params(train={**TINY["train"], "epochs": 1})
    result = run_fit(real_cache, tmp_path, p)
    save_bundle(tmp_path / "models", result.model, result.info)
    bundle = load_bundle(tmp_path / "models")
    x = torch.randn(2, 3, 20, 43)
    assert torch.allclose(bundle.model(x), result.model(x))
    assert bundle.species == real_cache["cache"].species
    evaluation = evaluate_split(bundle, real_cache["cache"], "test", p.evaluate, "cpu")
    assert 0.0 <= evaluation["metrics"]["accuracy"] <= 1.0
    assert evaluation["probs"].shape == (4, 4)
    np.testing.assert_allclose(evaluation["probs"].sum(axis=1), 1.0, rtol=1e-5)
    (tmp_path / "models" / "model.pt").unlink()
    with pytest.raises(BundleError, match=r"incomplete: missing model\.pt"):
        load_bundle(tmp_path / "models")
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_learning_rate_schedules():
    step = TrainParams(scheduler="step", step_size=10, step_gamma=0.5, warmup_epochs=5, epochs=50)
    assert lr_factor(0.0, step) == pytest.approx(0.0002)
    assert lr_factor(2.5, step) == pytest.approx(0.5002)
    assert lr_factor(9.9, step) == 1.0 and lr_factor(10.0, step) == 0.5 and lr_factor(25, step) == 0.25
    cosine = TrainParams(scheduler="cosine", warmup_epochs=0, epochs=10)
    assert lr_factor(0, cosine) == 1.0 and lr_factor(5, cosine) == pytest.approx(0.5) and lr_factor(10, cosine) == 0.0
    assert lr_factor(7, TrainParams(scheduler="none")) == 1.0


def test_discriminative_learning_rates_reach_the_optimizer(real_cache, tmp_path):
    p = params(train={**TINY["train"], "epochs": 1, "backbone_lr": 1e-4, "head_lr": 1e-2, "scheduler": "none"})
    result = run_fit(real_cache, tmp_path, p)
    assert result.history[0]["train/backbone_lr"] == pytest.approx(1e-4)
    assert result.history[0]["train/lr"] == pytest.approx(1e-2)


def test_augmentation_runs_in_training_steps_only(real_cache, tmp_path, monkeypatch):
    from birdpipe.training.augment import Augmenter

    state = {"validating": False, "train_calls": 0}
    original_call, original_val = Augmenter.__call__, LitClassifier.validation_step

    def call(self, x, labels):
        assert not state["validating"], "augmentation ran on validation windows"
        state["train_calls"] += 1
        x_aug, target = original_call(self, x, labels)
        assert target.shape == (x.shape[0], self.n_classes)  # MixUp's soft targets
        torch.testing.assert_close(target.sum(dim=1), torch.ones(x.shape[0]))
        return x_aug, target

    def validation_step(self, *args, **kwargs):
        state["validating"] = True
        try:
            return original_val(self, *args, **kwargs)
        finally:
            state["validating"] = False

    monkeypatch.setattr(Augmenter, "__call__", call)
    monkeypatch.setattr(LitClassifier, "validation_step", validation_step)
    p = params(augment={"specaugment": {"p": 1.0, "freq_mask": 4, "time_mask": 8}, "mixup": {"p": 1.0}})
    run_fit(real_cache, tmp_path, p)
    assert state["train_calls"] > 0


def test_ast_bundle_round_trip_through_training(real_cache, tmp_path):
    import pandas as pd

    from birdpipe.common.params import FeatureParams
    from birdpipe.features.cache import FeatureCache, build_cache
    from birdpipe.training.weights import feature_stats

    table = pd.read_csv(real_cache["root"] / "split.csv", dtype={"id": str})
    root = Path(__file__).resolve().parents[1]  # paths are relative to the repo; this test runs in tmp_path
    table["path"] = [str(root / p) for p in table["path"]]
    build_cache(table, FeatureParams(kind="logmel", n_mels=64, max_seconds=6.0, workers=1), tmp_path / "lm",
                progress=False)  # fmt: skip
    cache = FeatureCache.open(tmp_path / "lm")
    tiny_ast = {"name": "ast", "ast": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64,
                                       "patch_size": 16, "frequency_stride": 16, "time_stride": 16}}  # fmt: skip
    p = params(model=tiny_ast, features={"kind": "logmel", "n_mels": 64}, train={"epochs": 1, "optimizer": "adamw",
               "backbone_lr": 1e-4, "head_lr": 1e-3})  # fmt: skip
    stats = feature_stats(cache.frames, spans=cache.spans("train"))
    result = fit(p, cache, real_cache["weights"], stats, checkpoint_dir=tmp_path / "ck", live_dir=tmp_path / "live",
                 progress=False)  # fmt: skip
    save_bundle(tmp_path / "models", result.model, result.info)
    assert (tmp_path / "models" / "backbone" / "config.json").exists()
    bundle = load_bundle(tmp_path / "models")
    x = torch.randn(3, 1, 64, bundle.window_frames)
    torch.testing.assert_close(bundle.model(x), result.model.eval()(x))
    metrics = evaluate_split(bundle, cache, "test", p.evaluate, "cpu")["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
