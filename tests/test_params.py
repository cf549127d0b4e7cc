from pathlib import Path

import pytest
import yaml

from birdpipe.common.inert import inert_params
from birdpipe.common.params import Params, ParamsError, apply_overrides, load_params, schema_lines, validate_params

ROOT = Path(__file__).resolve().parents[1]


def test_project_params_file_is_valid_and_complete():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = validate_params(raw)
    # every key of the schema is written out in params.yaml, so `dvc exp run -S` can reach it
    assert params.model_dump(mode="json") == Params.model_validate(raw).model_dump(mode="json")
    flat = {line.split(":")[0] for line in schema_lines()}

    def keys(node, prefix=""):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from keys(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}"

    assert set(keys(raw)) == flat


def test_params_listing_shows_types_the_recipe_values_and_the_defaults_they_override():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["loss"]["gamma"] = 3.5
    lines = {line.split(":")[0]: line for line in schema_lines(values=raw)}
    assert lines["loss.gamma"].startswith("loss.gamma: float = 3.5  (default 2.0)")
    assert lines["train.objective"].startswith("train.objective: 'multiclass' | 'multilabel' = ")
    assert lines["model.pretrained"].startswith("model.pretrained: str | None = None  #")  # same as default: no note
    assert lines["split.group_by"].startswith("split.group_by: list[str] = ")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"loss": {"gama": 3}}, ["loss.gama: unknown key", "gamma"]),
        ({"lossx": 1}, ["lossx: unknown key", "loss"]),
        ({"data": {"synthetic": {"specie": 3}}}, ["data.synthetic.specie: unknown key", "species"]),
        ({"features": {"kind": "mel"}}, ["features.kind = 'mel'", "'mfcc'", "'logmel'"]),
        ({"train": {"lr": -1}}, ["train.lr = -1", "greater than 0"]),
        ({"train": {"batch_size": "big"}}, ["train.batch_size = 'big'", "valid integer"]),
        ({"loss": {"alpha": 2.0}}, ["loss.alpha = 2.0", "(0, 1]"]),
        ({"split": {"train": 0.8}}, ["split", "must be 1"]),
        ({"features": {"fmax": 20000}}, ["fmax", "Nyquist"]),
        ({"augment": {"noise": {"p": 0.5}}}, ["features.kind: logmel"]),
        ({"model": {"name": "ast"}}, ["model.name: ast needs features.kind: logmel"]),
    ],
)
def test_bad_params_name_the_key_and_what_is_allowed(raw, expected):
    with pytest.raises(ParamsError) as error:
        validate_params(raw)
    message = str(error.value)
    for fragment in expected:
        assert fragment in message


def test_every_error_is_reported_at_once():
    with pytest.raises(ParamsError) as error:
        validate_params({"loss": {"gama": 3}, "train": {"epochs": 0}})
    assert "loss.gama" in str(error.value) and "train.epochs" in str(error.value)


def test_overrides_are_validated_like_params():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    to_cnn = {"features.kind": "mfcc", "model.fusion.method": "none", "train.objective": "multiclass"}
    params = validate_params(
        apply_overrides(raw, {"loss.name": "focal", "loss.gamma": 3, "model.name": "audio_cnn_v2", **to_cnn})
    )
    assert (params.loss.name, params.loss.gamma, params.model.name) == ("focal", 3.0, "audio_cnn_v2")
    with pytest.raises(ParamsError, match=r"loss\.gamma"):
        validate_params(apply_overrides(raw, {"loss.gamma": "high"}))
    with pytest.raises(ParamsError, match="phases run from_scratch_cnn"):  # a CNN on the BirdNET default
        validate_params(apply_overrides(raw, {"model.name": "audio_cnn"}))


def test_load_params_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "params.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("loss: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)


def _inert(overrides: dict) -> list[str]:
    return inert_params(validate_params(apply_overrides({}, overrides)))


def test_default_and_project_params_warn_of_nothing():
    assert inert_params(Params()) == []
    assert inert_params(validate_params(yaml.safe_load((ROOT / "params.yaml").read_text()))) == []


def test_focal_gamma_under_ce_is_named_once():
    (line,) = _inert({"loss.gamma": 3})
    assert line == "loss.gamma has no effect: it is used only with loss.name: focal or focal_bce (now ce)"
    assert _inert({"loss.gamma": 3, "loss.name": "focal"}) == []


@pytest.mark.parametrize(
    ("overrides", "inert"),
    [
        ({"loss.tau": 2, "loss.name": "balanced_softmax"}, ["loss.tau"]),
        ({"loss.tau": 2, "loss.name": "logit_adjusted"}, []),
        ({"loss.weights": "balanced", "loss.name": "focal", "loss.alpha": "sqrt"}, ["loss.weights"]),
        ({"loss.weights": "balanced", "loss.name": "weighted_ce"}, []),
        ({"weights.clip": [0.2, 5.0]}, ["weights.clip"]),
        ({"weights.clip": [0.2, 5.0], "loss.name": "focal", "loss.alpha": 0.25}, ["weights.clip"]),
        ({"weights.clip": [0.2, 5.0], "loss.name": "focal", "loss.alpha": "balanced"}, []),
        ({"weights.effective_beta": 0.99, "loss.name": "weighted_ce"}, ["weights.effective_beta"]),
        ({"weights.effective_beta": 0.99, "loss.name": "weighted_ce", "loss.weights": "effective_number"}, []),
        ({"model.vit.layers": 2, "model.pretrained": "x"}, ["model.pretrained", "model.vit.layers"]),
        ({"model.vit.layers": 2, "model.vit.image_size": [224, 224], "model.name": "audio_vit"}, []),
        ({"model.vit.layers": 2, "model.vit.image_size": [224, 224], "model.name": "audio_vit",
          "model.pretrained": "x"}, ["model.vit.layers"]),
        ({"augment.specaugment.time_mask": 10, "augment.mixup.alpha": 1.0}, ["augment.specaugment.time_mask",
                                                                             "augment.mixup.alpha"]),
        ({"augment.specaugment.time_mask": 10, "augment.specaugment.p": 0.5}, []),
        ({"train.step_size": 5}, ["train.step_size"]),
        ({"train.step_size": 5, "train.scheduler": "step"}, []),
        ({"train.backbone_lr": 1e-4, "train.head_lr": 1e-2}, []),
        ({"split.val_fold": 1, "split.test_fold": 2}, ["split.val_fold", "split.test_fold"]),
        ({"split.column": "fold", "split.seed": 3}, ["split.seed"]),
        ({"features.n_mfcc": 40, "features.kind": "logmel"}, ["features.n_mfcc"]),
        ({"features.activity.seconds": 2.0}, ["features.activity.seconds"]),
    ],
)  # fmt: skip
def test_inert_keys_are_named(overrides, inert):
    assert [line.split(" ")[0] for line in _inert(overrides)] == inert


def test_load_params_warns_on_stderr(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"loss": {"gamma": 3.0}}))
    assert load_params(path).loss.gamma == 3.0
    assert (
        capsys.readouterr().err
        == "warning: loss.gamma has no effect: it is used only with loss.name: focal or focal_bce (now ce)\n"
    )
