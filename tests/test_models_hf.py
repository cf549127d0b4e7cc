"""Transformer models (birdpipe.models.hf) with tiny configs: shapes, gradients, loading, offline failures."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be fetched from the hub in tests

import time
import warnings
from collections.abc import Iterator

import pytest
import torch

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import ASTParams, ModelParams, ViTParams
from birdpipe.models import InputShape, build_model, hf

TINY_VIT = ViTParams(hidden_size=32, layers=2, heads=2, intermediate_size=64, patch_size=8)
TINY_AST = ASTParams(
    hidden_size=32, layers=2, heads=2, intermediate_size=64, patch_size=8, frequency_stride=8, time_stride=8
)
MFCC = InputShape(3, 20, 87)
LOGMEL = InputShape(1, 64, 87)
N_CLASSES = 5


@pytest.fixture(autouse=True)
def _offline_seeded_single_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # huggingface_hub reads HF_HUB_OFFLINE at import; enforce it even if another test imported it first
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead (several-fold on 2 shared cores)
    yield
    torch.set_num_threads(threads)


def vit_params(**update: object) -> ModelParams:
    return ModelParams(name="audio_vit", vit=TINY_VIT, dropout=0.0).model_copy(update=update)


def ast_params(max_length: int | None = 100, **update: object) -> ModelParams:
    ast = TINY_AST.model_copy(update={"max_length": max_length})
    return ModelParams(name="ast", ast=ast, dropout=0.0).model_copy(update=update)


def logmel(batch: int = 2, bins: int = 64, frames: int = 87) -> torch.Tensor:
    return torch.randn(batch, 1, bins, frames) * 12.0 - 45.0  # raw dB


def assert_trains(model: torch.nn.Module, x: torch.Tensor, embedding: torch.nn.Parameter) -> torch.Tensor:
    logits = model(x)
    assert logits.shape == (x.shape[0], N_CLASSES)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.arange(x.shape[0]) % N_CLASSES).backward()
    assert embedding.grad is not None and embedding.grad.abs().sum() > 0
    return logits


# ---------------------------------------------------------------------------------------------- ViT
def test_vit_mfcc_native_size_pads_to_whole_patches() -> None:
    model = hf.AudioViT(vit_params(), N_CLASSES, MFCC)
    assert tuple(model.model.config.image_size) == (24, 88)  # 20 bins -> 24, 87 frames -> 88 with patch 8
    x = torch.randn(2, 3, 20, 87)
    pixels = model.prepare(x)
    assert pixels.shape == (2, 3, 24, 88)
    assert torch.equal(pixels[:, :, :20, :87], x)  # no bin is lost
    assert pixels[:, :, 20:].abs().sum() == 0 and pixels[..., 87:].abs().sum() == 0
    embeddings = model.model.vit.embeddings
    assert_trains(model, x, embeddings.patch_embeddings.projection.weight)
    assert embeddings.position_embeddings.grad.abs().sum() > 0


def test_vit_logmel_single_channel_is_repeated() -> None:
    model = hf.AudioViT(vit_params(), N_CLASSES, LOGMEL)
    x = torch.randn(2, 1, 64, 87)
    pixels = model.prepare(x)
    assert pixels.shape == (2, 3, 64, 88)
    assert torch.equal(pixels[:, 0], pixels[:, 2])
    assert_trains(model, x, model.model.vit.embeddings.patch_embeddings.projection.weight)


def test_vit_other_input_sizes_interpolate_positions() -> None:
    model = hf.AudioViT(vit_params(), N_CLASSES, MFCC)  # rectangular 3 x 11 position grid
    for shape in [(2, 3, 20, 130), (2, 3, 40, 60), (1, 3, 20, 87)]:
        logits = model(torch.randn(*shape))
        assert logits.shape == (shape[0], N_CLASSES)
    logits = model(torch.randn(2, 3, 20, 130))
    logits.sum().backward()
    assert model.model.vit.embeddings.position_embeddings.grad.abs().sum() > 0


def test_vit_image_size_resizes() -> None:
    params = vit_params(vit=TINY_VIT.model_copy(update={"image_size": (32, 96)}))
    model = hf.AudioViT(params, N_CLASSES, MFCC)
    assert tuple(model.model.config.image_size) == (32, 96)
    assert model.prepare(torch.randn(2, 3, 20, 87)).shape == (2, 3, 32, 96)
    assert_trains(model, torch.randn(2, 1, 64, 87), model.model.vit.embeddings.patch_embeddings.projection.weight)
    with pytest.raises(PipelineError, match="multiples of the patch size"):
        hf.AudioViT(vit_params(vit=TINY_VIT.model_copy(update={"image_size": (30, 96)})), N_CLASSES, MFCC)


def test_vit_forward_is_the_hf_model() -> None:
    model = hf.AudioViT(vit_params(), N_CLASSES, MFCC).eval()
    x = torch.randn(2, 3, 20, 87)
    with torch.no_grad():
        expected = model.model(model.prepare(x), interpolate_pos_encoding=True).logits
        assert torch.allclose(model(x), expected, atol=1e-6)


def test_vit_rejects_wrong_channels() -> None:
    with pytest.raises(PipelineError, match="1 \\(log-mel\\) or 3"):
        hf.AudioViT(vit_params(), N_CLASSES, InputShape(2, 20, 87))
    model = hf.AudioViT(vit_params(), N_CLASSES, MFCC)
    with pytest.raises(hf.InputShapeError, match="channels"):
        model(torch.randn(2, 2, 20, 87))


def test_vit_square_checkpoint_runs_on_native_rectangles(tmp_path) -> None:
    # pretrained ViTs (google/vit-base-patch16-224) have a square grid; feature windows are not square
    square = hf.AudioViT(vit_params(vit=TINY_VIT.model_copy(update={"image_size": (32, 32)})), N_CLASSES, MFCC)
    hf.save_pretrained(square, tmp_path)
    model = hf.AudioViT(vit_params(pretrained=str(tmp_path)), N_CLASSES, MFCC)
    assert model.prepare(torch.randn(2, 3, 20, 87)).shape == (2, 3, 24, 88)
    assert_trains(model, torch.randn(2, 3, 20, 87), model.model.vit.embeddings.position_embeddings)


# ---------------------------------------------------------------------------------------------- AST
@pytest.mark.parametrize("max_length", [100, 64])
def test_ast_pads_or_crops_time(max_length: int) -> None:
    model = hf.AudioAST(ast_params(max_length), N_CLASSES, LOGMEL, mean=-45.0, std=12.0)
    x = logmel()
    values = model.prepare(x)
    assert values.shape == (2, max_length, 64)  # (batch, time, mel) as AST reads it
    kept = min(max_length, 87)
    assert torch.allclose(values[:, :kept], (x[:, 0, :, :kept].transpose(1, 2) + 45.0) / 24.0)
    if max_length > 87:
        assert torch.all(values[:, 87:] == hf.PAD_VALUE)
    assert_trains(model, x, model.model.audio_spectrogram_transformer.embeddings.patch_embeddings.projection.weight)


def test_ast_default_max_length_is_the_window() -> None:
    model = hf.AudioAST(ast_params(None), N_CLASSES, LOGMEL)
    assert model.max_length == 87 and model.model.config.max_length == 87
    assert model(logmel()).shape == (2, N_CLASSES)


def test_ast_rejects_transposed_or_wrong_bins() -> None:
    model = hf.AudioAST(ast_params(100), N_CLASSES, LOGMEL)
    for bad in [torch.randn(2, 1, 87, 64), torch.randn(2, 1, 40, 87), torch.randn(2, 3, 64, 87), torch.randn(64, 87)]:
        with pytest.raises(hf.InputShapeError, match=r"\(batch, 1, 64 mel bins, frames\).*transposed"):
            model(bad)
    with pytest.raises(PipelineError, match=r"features\.kind: logmel"):
        hf.AudioAST(ast_params(100), N_CLASSES, MFCC)


def test_ast_forward_is_the_hf_model() -> None:
    model = hf.AudioAST(ast_params(100), N_CLASSES, LOGMEL).eval()
    x = logmel()
    with torch.no_grad():
        assert torch.allclose(model(x), model.model(model.prepare(x)).logits, atol=1e-6)


def test_ast_normalisation_buffers() -> None:
    assert hf.AudioAST(ast_params(), N_CLASSES, LOGMEL).norm_mean.item() == pytest.approx(hf.AUDIOSET_MEAN)
    model = hf.AudioAST(ast_params(), N_CLASSES, LOGMEL, mean=-45.0, std=12.0)
    state = model.state_dict()
    assert state["norm_mean"].item() == -45.0 and state["norm_std"].item() == 12.0
    fixed = ast_params(ast=TINY_AST.model_copy(update={"max_length": 100, "norm_mean": -30.0, "norm_std": 9.0}))
    overridden = hf.AudioAST(fixed, N_CLASSES, LOGMEL, mean=-45.0, std=12.0)
    assert (overridden.norm_mean.item(), overridden.norm_std.item()) == (-30.0, 9.0)
    overridden.load_state_dict(state)  # the statistics travel with the weights
    assert (overridden.norm_mean.item(), overridden.norm_std.item()) == (-45.0, 12.0)
    with pytest.raises(PipelineError, match="positive std"):
        hf.AudioAST(ast_params(), N_CLASSES, LOGMEL, mean=-45.0, std=0.0)


# ------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize(
    ("model_class", "hub_id", "shape"),
    [
        (hf.AudioAST, "MIT/ast-finetuned-audioset-10-10-0.4593", InputShape(1, 128, 173)),
        (hf.AudioViT, "google/vit-base-patch16-224", InputShape(3, 20, 173)),
    ],
)
def test_hub_id_offline_fails_fast_and_clear(model_class: type, hub_id: str, shape: InputShape) -> None:
    name = "ast" if model_class is hf.AudioAST else "audio_vit"
    started = time.perf_counter()
    with pytest.raises(PipelineError) as error:
        model_class(ModelParams(name=name, pretrained=hub_id), 24, shape)
    assert time.perf_counter() - started < 5.0
    message = str(error.value)
    assert "\n" not in message
    assert f"'{hub_id}' could not be fetched" in message
    assert "model.pretrained" in message and "save_pretrained" in message and "null" in message


@pytest.mark.parametrize("kind", ["vit", "ast"])
def test_local_folder_round_trip(kind: str, tmp_path, capfd: pytest.CaptureFixture[str]) -> None:
    if kind == "vit":
        params, shape, x, build = vit_params(), MFCC, torch.randn(2, 3, 20, 87), hf.AudioViT
    else:
        params, shape, x = ast_params(100), LOGMEL, logmel()

        def build(p: ModelParams, n: int, s: InputShape) -> hf.AudioAST:
            return hf.AudioAST(p, n, s, mean=-45.0, std=12.0)

    model = build(params, N_CLASSES, shape).eval()
    hf.save_pretrained(model, tmp_path / "weights")
    assert (tmp_path / "weights" / "config.json").is_file()
    loaded = build(params.model_copy(update={"pretrained": str(tmp_path / "weights")}), N_CLASSES, shape).eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only the head is new: no warning about the backbone
        other = build(params.model_copy(update={"pretrained": str(tmp_path / "weights")}), 7, shape)
    assert other(x).shape == (2, 7)
    backbone = {k: v for k, v in model.state_dict().items() if "classifier" not in k}
    assert all(torch.equal(other.state_dict()[k], v) for k, v in backbone.items())
    output = capfd.readouterr()
    assert "LOAD REPORT" not in output.err + output.out  # the expected new head is not reported as a problem


def test_save_pretrained_takes_the_registry_classifier(tmp_path) -> None:
    classifier = build_model(vit_params(), N_CLASSES, MFCC, mean=[0.0] * 3, std=[1.0] * 3)
    hf.save_pretrained(classifier, tmp_path)
    loaded = hf.AudioViT(vit_params(pretrained=str(tmp_path)), N_CLASSES, MFCC)
    assert torch.equal(loaded.head.weight, classifier.network.head.weight)


def test_ast_checkpoint_fixes_mel_bins_and_adapts_length(tmp_path) -> None:
    hf.save_pretrained(hf.AudioAST(ast_params(100), N_CLASSES, LOGMEL), tmp_path)
    with pytest.raises(PipelineError, match=r"features\.n_mels: 64"):
        hf.AudioAST(ast_params(100, pretrained=str(tmp_path)), N_CLASSES, InputShape(1, 128, 87))
    positions = {}
    for max_length in (None, 64, 100, 160):  # None = the 87-frame window
        model = hf.AudioAST(ast_params(max_length, pretrained=str(tmp_path)), N_CLASSES, LOGMEL)
        expected = max_length or 87
        assert model.model.config.max_length == expected and model.prepare(logmel()).shape == (2, expected, 64)
        assert model(logmel()).shape == (2, N_CLASSES)
        positions[expected] = model.model.audio_spectrogram_transformer.embeddings.position_embeddings.detach()
    # 8 x 12 patches at 100 frames; 64 frames keep the centre 8 x 8 in time (as AST's authors crop)
    grid = positions[100][:, 2:].reshape(1, 8, 12, 32)
    assert torch.equal(positions[64][:, 2:].reshape(1, 8, 8, 32), grid[:, :, 2:10])
    assert torch.equal(positions[64][:, :2], positions[100][:, :2])  # cls and distillation tokens kept
    assert positions[160].shape[1] == 2 + 8 * 20


def test_bad_pretrained_folders(tmp_path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        hf.AudioViT(vit_params(pretrained=str(tmp_path / "missing" / "weights")), N_CLASSES, MFCC)
    with pytest.raises(PipelineError, match=r"no config\.json"):
        hf.AudioViT(vit_params(pretrained=str(tmp_path)), N_CLASSES, MFCC)
    hf.save_pretrained(hf.AudioAST(ast_params(100), N_CLASSES, LOGMEL), tmp_path / "ast")
    with pytest.raises(PipelineError, match="type 'audio-spectrogram-transformer', not 'vit'"):
        hf.AudioViT(vit_params(pretrained=str(tmp_path / "ast")), N_CLASSES, MFCC)


# --------------------------------------------------------------------------------------------- head
@pytest.mark.parametrize("kind", ["vit", "ast"])
def test_head_is_the_classifier_and_not_backbone(kind: str) -> None:
    if kind == "vit":
        model: torch.nn.Module = hf.AudioViT(vit_params(), N_CLASSES, MFCC)
        assert model.head is model.model.classifier
    else:
        model = hf.AudioAST(ast_params(), N_CLASSES, LOGMEL)
        assert model.head is model.model.classifier
    head = {id(p) for p in model.head.parameters()}
    everything = {id(p) for p in model.parameters()}
    assert head and head < everything  # strict subset: the rest is the backbone
    assert not any(key.startswith("head.") for key in model.state_dict())  # stored once, under model.classifier
    final = model.head if kind == "vit" else model.head.dense
    assert final.out_features == N_CLASSES


def test_registry_builds_both() -> None:
    vit = build_model(vit_params(), N_CLASSES, MFCC, mean=[0.0] * 3, std=[1.0] * 3)
    assert vit(torch.randn(2, 3, 20, 87)).shape == (2, N_CLASSES) and vit.head is vit.network.head
    ast = build_model(ast_params(), N_CLASSES, LOGMEL, ast_stats=(-45.0, 12.0))
    assert ast(logmel()).shape == (2, N_CLASSES)
    assert ast.network.norm_mean.item() == -45.0


def test_missing_backbone_weights_warn(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    hf.save_pretrained(hf.AudioViT(vit_params(), N_CLASSES, MFCC), tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    dropped = next(key for key in state if key.endswith("embeddings.patch_embeddings.projection.bias"))
    del state[dropped]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.warns(UserWarning, match=r"1 backbone tensor\(s\) were not in .*projection\.bias"):
        hf.AudioViT(vit_params(pretrained=str(tmp_path)), N_CLASSES, MFCC)
