"""Defects found while reading the code, each pinned by a test that failed before its fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from birdpipe.common.errors import PipelineError
from birdpipe.common.inert import inert_params
from birdpipe.common.params import AugmentParams, validate_params
from birdpipe.training.augment import Augmenter


def test_random_gain_is_drawn_on_the_batchs_device():
    """The gains were drawn on the CPU and added to the batch: a crash for a CUDA batch (`augment.gain_db > 0`).
    The meta device stands for any device that is not the CPU."""
    augmenter = Augmenter(AugmentParams(gain_db=6.0), "logmel", 128, [0.0], 3)
    x = torch.zeros(4, 1, 8, 8, device="meta")
    assert augmenter.gain(x).device.type == "meta"


@pytest.mark.parametrize("loss", ["logit_adjusted", "balanced_softmax"])
def test_a_prior_adjusted_loss_under_a_class_balanced_sampler_is_named_as_plain_ce(loss):
    lines = inert_params(validate_params({"loss": {"name": loss}, "train": {"sampler": "class_balanced"}}))
    assert any(line.startswith(f"loss.name has no effect: {loss} adds the log") for line in lines), lines
    assert not any("loss.name" in line for line in inert_params(validate_params({"loss": {"name": loss}})))


def test_a_bug_while_reading_a_pretrained_config_is_not_called_an_unreadable_folder(tmp_path, monkeypatch):
    """``except Exception`` turned any bug into "could not be read"; only I/O and parse errors mean that."""
    import transformers

    from birdpipe.models import hf

    folder = tmp_path / "vit"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")

    def broken(*args, **kwargs):
        raise TypeError("a bug, not a missing file")

    monkeypatch.setattr(transformers.ViTConfig, "from_pretrained", broken)
    with pytest.raises(TypeError, match="a bug"):
        hf._load_config(transformers.ViTConfig, str(folder), transformers.ViTForImageClassification)
    (folder / "config.json").write_text("{not json")
    monkeypatch.undo()
    with pytest.raises(PipelineError, match="could not be read"):
        hf._load_config(transformers.ViTConfig, str(folder), transformers.ViTForImageClassification)


def test_a_baseline_that_does_not_converge_says_so(monkeypatch, capsys):
    from birdpipe.evaluation import baselines

    monkeypatch.setattr(baselines, "MAX_ITER", 1)
    rng = np.random.default_rng(0)
    features = {s: rng.normal(size=(30, 5)) for s in ("train", "val", "test")}
    labels = {s: np.arange(30) % 3 for s in ("train", "val", "test")}
    result = baselines._logistic_regression(features, labels, 3, np.full(3, 10), validate_params({}))
    assert result["not_converged_c"] == [0.01, 0.1, 1.0, 10.0]
    assert "did not converge in 1 iterations" in capsys.readouterr().err


def test_manifest_paths_outside_the_project_are_absolute(tmp_path, monkeypatch, xc_clips):
    """Relative to the working directory, an outside path read ``../../../..`` inside ``dvc exp run --temp`` (a
    temporary copy of the project) and broke after ``dvc exp apply``."""
    from birdpipe.common.params import DataParams
    from birdpipe.data.ingest import _display_path, find_candidates, ingest

    project = tmp_path / "project"
    (project / "inside").mkdir(parents=True)
    monkeypatch.chdir(project)
    data = DataParams(source=str(xc_clips / "metadata.csv"))
    manifest, _ = ingest(find_candidates(data.source, data), data, workers=1, progress=False)
    assert all(path.startswith(str(xc_clips.resolve())) for path in manifest["path"])
    (project / "inside" / "a.wav").write_bytes(b"")
    assert _display_path(str(project / "inside" / "a.wav")) == "inside/a.wav"


def test_evaluate_refuses_a_bundle_trained_on_other_species_or_features():
    """Issue 25: evaluate never checked that the bundle's species equal the cache's; columns were misread."""
    from birdpipe.bundle import Bundle, BundleError
    from birdpipe.features.spectral import FeatureConfig

    config = FeatureConfig(kind="mfcc")
    bundle = Bundle(model=None, info={"species": ["a", "b", "c"], "feature_config": config.to_dict()}, folder=Path("m"))
    bundle.check_matches(["a", "b", "c"], config, "the cache")  # the same: no error
    with pytest.raises(BundleError, match=r"only in the bundle: c; only in the cache: d"):
        bundle.check_matches(["a", "b", "d"], config, "the cache")
    with pytest.raises(BundleError, match="same names in another order"):
        bundle.check_matches(["b", "a", "c"], config, "the cache")
    with pytest.raises(BundleError, match="feature config differs in n_mfcc"):
        bundle.check_matches(["a", "b", "c"], FeatureConfig(kind="mfcc", n_mfcc=13), "the cache")
