import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from birdpipe.bundle import BundleError, load_bundle, save_bundle
from birdpipe.evaluation import evaluate_split
from birdpipe.params import TrainParams, validate_params
from birdpipe.training import LitClassifier, NonFiniteLossError, fit, lr_factor

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
    from birdpipe.augment import Augmenter

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

    from birdpipe.features import FeatureCache, build_cache
    from birdpipe.params import FeatureParams
    from birdpipe.weights import feature_stats

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
    result = fit(p, cache, real_cache["weights"], feature_stats(cache.arrays["train"]), checkpoint_dir=tmp_path / "ck",
                 live_dir=tmp_path / "live", progress=False)  # fmt: skip
    save_bundle(tmp_path / "models", result.model, result.info)
    assert (tmp_path / "models" / "backbone" / "config.json").exists()
    bundle = load_bundle(tmp_path / "models")
    x = torch.randn(3, 1, 64, bundle.window_frames)
    torch.testing.assert_close(bundle.model(x), result.model.eval()(x))
    metrics = evaluate_split(bundle, cache, "test", p.evaluate, "cpu")["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
