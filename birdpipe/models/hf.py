"""Transformer classifiers built on Hugging Face ``transformers``: ViT on feature "images" and AST.

``AudioViT`` (``model.name: audio_vit``) wraps ``ViTForImageClassification``. Inputs are (batch, channels,
bins, frames), standardised upstream: a 3-channel MFCC stack passes as it is, a 1-channel log-mel is
repeated to 3 channels. With ``model.vit.image_size`` set, inputs are resized (bilinear) to it, as the study
did for ViT-Base at 224x224; with ``image_size: null`` they keep their native size, zero-padded up to whole
patches (20 MFCC bins with 16-pixel patches become 32 bins rather than silently losing 4). Position
embeddings are interpolated to whatever patch grid the input makes, rectangular grids included (the
``transformers`` version assumes a square pretrained grid), so inputs of any size run.

``AudioAST`` (``model.name: ast``) wraps ``ASTForAudioClassification``. It takes RAW log-mel in dB
(batch, 1, mel, frames), normalises it as AST's feature extractor does, ``(x - mean) / (2 * std)``, with
mean and std kept as buffers, transposes it to AST's (batch, time, mel) and pads (with 0, the normalised
mean) or crops the time axis to ``max_length``. A pretrained AST fixes ``num_mel_bins`` (128 for the
AudioSet checkpoint); a different ``max_length`` than the checkpoint's (1024 frames) is handled as AST's
authors did: the time axis of the position embeddings is centre-cropped (shorter) or interpolated (longer).

Both expose the classifier as ``model.head`` (everything else is the backbone) and apply ``model.dropout``
to the pooled representation just before the classifier's linear layer.

``model.pretrained`` is a hub id (needs a network once, then the Hugging Face cache) or a local folder made
by :func:`save_pretrained`; a failed fetch stops with one :class:`PipelineError` line saying how to fix it.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers
from torch import nn
from torch.nn import functional as F
from transformers import ASTConfig, ASTForAudioClassification, ViTConfig, ViTForImageClassification
from transformers.models.vit.modeling_vit import ViTEmbeddings

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import ModelParams

if TYPE_CHECKING:
    from birdpipe.models.shapes import InputShape

# AST's feature-extractor defaults (AudioSet statistics of Kaldi log-mel fbanks)
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
# AST inputs shorter than max_length are padded with this value AFTER normalisation: 0 is the normalised
# mean, a neutral level whatever the dB floor of the features (AST's extractor pads its Kaldi fbanks with 0
# before normalising, which in our dB scale would be a loud, not a silent, level)
PAD_VALUE = 0.0
HEAD_PREFIX = "classifier."
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class InputShapeError(PipelineError, ValueError):
    """An input tensor whose shape does not fit the model (wrong orientation, mel bins or channels)."""


# ------------------------------------------------------------------------------------------ loading
def _pair(value: int | Iterable[int]) -> tuple[int, int]:
    if isinstance(value, Iterable):
        first, second = value
        return int(first), int(second)
    return int(value), int(value)


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def _is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def _looks_like_path(source: str) -> bool:
    """A value that can only be a folder (a hub id is 'name' or 'owner/name')."""
    return source.startswith(("/", "./", "../", "~", ".\\")) or source.count("/") > 1 or "\\" in source


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _fetch_error(source: str, model_class: type, exc: BaseException) -> PipelineError:
    if _is_offline():
        reason = "HF_HUB_OFFLINE is set and they are not in the Hugging Face cache"
    else:
        reason = f"offline or unknown id: {_first_line(exc)}"
    reason += "; nor is it an existing local folder"
    folder = f"weights/{source.rsplit('/', 1)[-1]}"
    hint = (
        f"python -c \"import transformers as t; t.{model_class.__name__}.from_pretrained('{source}')"
        f".save_pretrained('{folder}')\""
    )
    return PipelineError(
        f"the weights '{source}' could not be fetched ({reason}): run once with a network to cache them, set "
        f"model.pretrained to a local folder made with save_pretrained (with a network: {hint} or "
        f"`hf download {source} --local-dir {folder}`), or set model.pretrained: null for a config-built model"
    )


def _folder_error(source: str, problem: str) -> PipelineError:
    return PipelineError(
        f"model.pretrained folder '{source}' {problem}; point model.pretrained at a folder written by "
        "birdpipe.models.hf.save_pretrained (config.json + model.safetensors), a hub id, or null"
    )


@contextmanager
def _quiet(local: bool) -> Iterator[None]:
    """Hide transformers' load report (the new head is always 'newly initialised') and, for a local folder,
    its progress bars; errors are still raised, and :func:`_check_loaded` warns about backbone keys."""
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    if local:
        transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if local and bars:
            transformers.utils.logging.enable_progress_bar()


def _load_config(config_class: type, source: str, model_class: type) -> Any:
    """The checkpoint's config, fetched first so that a wrong or unreachable source fails before any weights."""
    local = os.path.isdir(os.path.expanduser(source))
    if local:
        source = os.path.expanduser(source)
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise _folder_error(source, "has no config.json")  # from_pretrained would silently use defaults
        if not any(os.path.isfile(os.path.join(source, name)) for name in WEIGHT_FILES):
            raise _folder_error(source, "has no weights (model.safetensors or pytorch_model.bin)")
    elif _looks_like_path(source):
        raise _folder_error(source, "does not exist")
    try:
        with _quiet(local):
            config = config_class.from_pretrained(source)
    except (OSError, ValueError) as exc:  # unreachable or missing (OSError), unreadable JSON or config (ValueError)
        if local:
            raise _folder_error(source, f"could not be read ({_first_line(exc)})") from exc
        raise _fetch_error(source, model_class, exc) from exc
    if config.model_type != config_class.model_type:
        where = f"folder '{source}'" if local else f"'{source}'"
        raise PipelineError(
            f"model.pretrained {where} holds a model of type '{config.model_type}', not '{config_class.model_type}': "
            "use a checkpoint of the model.name's architecture (audio_vit: ViT, ast: AST)"
        )
    return config


def _load_model(model_class: type, source: str, config: Any, n_classes: int) -> Any:
    """Weights from ``source`` with a new ``n_classes`` head; warns if anything but the head is new."""
    local = os.path.isdir(os.path.expanduser(source))
    source = os.path.expanduser(source) if local else source
    config.num_labels = n_classes  # resets id2label / label2id to n_classes entries
    try:
        with _quiet(local):
            model, info = model_class.from_pretrained(
                source, config=config, ignore_mismatched_sizes=True, output_loading_info=True
            )
    except OSError as exc:  # network, cache or file errors; shape and code errors propagate as they are
        if local:
            raise _folder_error(source, f"could not be loaded ({_first_line(exc)})") from exc
        raise _fetch_error(source, model_class, exc) from exc
    _check_loaded(source, info)
    return model


def _check_loaded(source: str, info: dict[str, Any]) -> None:
    new = [key for key in info.get("missing_keys", ()) if not key.startswith(HEAD_PREFIX)]
    new += [
        key if isinstance(key, str) else key[0]
        for key in info.get("mismatched_keys", ())
        if not (key if isinstance(key, str) else key[0]).startswith(HEAD_PREFIX)
    ]
    if new:
        shown = ", ".join(sorted(new)[:5]) + (" ..." if len(new) > 5 else "")
        warnings.warn(
            f"{len(new)} backbone tensor(s) were not in '{source}' and start from random values: {shown}",
            stacklevel=3,
        )


def _check_heads(section: str, hidden_size: int, heads: int) -> None:
    if hidden_size % heads:
        raise PipelineError(
            f"model.{section}.hidden_size ({hidden_size}) must be a multiple of model.{section}.heads ({heads})"
        )


# ---------------------------------------------------------------------------------------------- ViT
class _GridViTEmbeddings(ViTEmbeddings):
    """ViT embeddings whose position-encoding interpolation knows the (possibly rectangular) trained grid.

    ``transformers`` reshapes the trained position embeddings to a square, which fails for a config-built
    model trained at its native 24x176 size; here the trained grid is ``image_size // patch_size``.
    """

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        patch_h, patch_w = _pair(self.patch_size)
        grid_h, grid_w = self.image_size[0] // patch_h, self.image_size[1] // patch_w
        new_h, new_w = height // patch_h, width // patch_w
        if (new_h, new_w) == (grid_h, grid_w):
            return self.position_embeddings
        dim = self.position_embeddings.shape[-1]
        cls_position = self.position_embeddings[:, :1]
        grid = self.position_embeddings[:, 1:].reshape(1, grid_h, grid_w, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(new_h, new_w), mode="bicubic", align_corners=False)
        return torch.cat((cls_position, grid.permute(0, 2, 3, 1).reshape(1, new_h * new_w, dim)), dim=1)


class AudioViT(nn.Module):
    """ViT on (batch, channels, bins, frames) features; see the module docstring."""

    def __init__(self, params: ModelParams, n_classes: int, shape: InputShape) -> None:
        super().__init__()
        vit = params.vit
        if shape.channels not in (1, 3):
            raise PipelineError(f"audio_vit takes 1 (log-mel) or 3 (MFCC) input channels, not {shape.channels}")
        if params.pretrained:
            config = _load_config(ViTConfig, params.pretrained, ViTForImageClassification)
            self.model = _load_model(ViTForImageClassification, params.pretrained, config, n_classes)
        else:
            _check_heads("vit", vit.hidden_size, vit.heads)
            patch = vit.patch_size
            if vit.image_size is not None:
                image_size = tuple(vit.image_size)
            else:
                image_size = (_round_up(shape.bins, patch), _round_up(shape.frames, patch))
            config = ViTConfig(
                hidden_size=vit.hidden_size,
                num_hidden_layers=vit.layers,
                num_attention_heads=vit.heads,
                intermediate_size=vit.intermediate_size,
                patch_size=patch,
                image_size=image_size,
                num_channels=3,
                num_labels=n_classes,
            )
            self.model = ViTForImageClassification(config)
        self.patch = _pair(self.model.config.patch_size)
        self.channels = int(self.model.config.num_channels)
        self.image_size = tuple(vit.image_size) if vit.image_size is not None else None
        if self.image_size is not None and (self.image_size[0] % self.patch[0] or self.image_size[1] % self.patch[1]):
            raise PipelineError(
                f"model.vit.image_size {list(self.image_size)} must be whole multiples of the patch size "
                f"{self.patch[0]}; e.g. [{_round_up(self.image_size[0], self.patch[0])}, "
                f"{_round_up(self.image_size[1], self.patch[1])}]"
            )
        self.model.vit.embeddings.__class__ = _GridViTEmbeddings
        self.dropout = nn.Dropout(params.dropout)

    @property
    def head(self) -> nn.Module:
        return self.model.classifier

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The pixel values the ViT sees: channels matched, then resized or padded to whole patches."""
        if x.ndim != 4:
            raise InputShapeError(f"audio_vit expects (batch, channels, bins, frames), got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            if x.shape[1] != 1:
                raise InputShapeError(
                    f"audio_vit was built for {self.channels} channels (or 1, repeated), got shape {tuple(x.shape)}"
                )
            x = x.expand(-1, self.channels, -1, -1)
        if self.image_size is not None:
            if tuple(x.shape[-2:]) != self.image_size:
                x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
            return x
        pad_bins = _round_up(x.shape[2], self.patch[0]) - x.shape[2]
        pad_frames = _round_up(x.shape[3], self.patch[1]) - x.shape[3]
        if pad_bins or pad_frames:
            x = F.pad(x, (0, pad_frames, 0, pad_bins))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.model.vit(self.prepare(x), interpolate_pos_encoding=True).last_hidden_state
        return self.head(self.dropout(hidden[:, 0]))


# ---------------------------------------------------------------------------------------------- AST
def _resize_time_positions(model: ASTForAudioClassification, max_length: int) -> None:
    """Adapt a pretrained AST to ``max_length`` frames as AST's authors did: centre-crop the time axis of the
    position embeddings for shorter inputs, interpolate it (bilinear) for longer ones."""
    config = model.config
    embeddings = model.audio_spectrogram_transformer.embeddings
    freq_patches, time_patches = embeddings.get_shape(config)
    new_time = (max_length - config.patch_size) // config.time_stride + 1
    position = embeddings.position_embeddings.detach()
    dim = position.shape[-1]
    grid = position[:, 2:].reshape(1, freq_patches, time_patches, dim).permute(0, 3, 1, 2)
    if new_time <= time_patches:
        start = time_patches // 2 - new_time // 2
        grid = grid[..., start : start + new_time]
    else:
        grid = F.interpolate(grid, size=(freq_patches, new_time), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, freq_patches * new_time, dim)
    embeddings.position_embeddings = nn.Parameter(torch.cat((position[:, :2], grid), dim=1).contiguous())
    config.max_length = max_length


class AudioAST(nn.Module):
    """AST on raw log-mel (batch, 1, mel, frames); see the module docstring."""

    def __init__(
        self,
        params: ModelParams,
        n_classes: int,
        shape: InputShape,
        mean: float | None = None,
        std: float | None = None,
    ) -> None:
        super().__init__()
        ast = params.ast
        if shape.channels != 1:
            raise PipelineError(
                f"ast takes 1-channel log-mel features (features.kind: logmel), not {shape.channels} channels"
            )
        max_length = ast.max_length or shape.frames
        if params.pretrained:
            config = _load_config(ASTConfig, params.pretrained, ASTForAudioClassification)
            if config.num_mel_bins != shape.bins:
                raise PipelineError(
                    f"model.pretrained '{params.pretrained}' was trained on {config.num_mel_bins} mel bins but the "
                    f"features have {shape.bins}: set features.n_mels: {config.num_mel_bins} (and features.kind: "
                    "logmel), or model.pretrained: null"
                )
            self._check_length("the checkpoint's patch_size", max_length, config.patch_size)
            self.model = _load_model(ASTForAudioClassification, params.pretrained, config, n_classes)
            if max_length != config.max_length:
                _resize_time_positions(self.model, max_length)
        else:
            _check_heads("ast", ast.hidden_size, ast.heads)
            if shape.bins < ast.patch_size:
                raise PipelineError(
                    f"model.ast.patch_size ({ast.patch_size}) is larger than the {shape.bins} mel bins: "
                    "lower model.ast.patch_size or raise features.n_mels"
                )
            self._check_length("model.ast.patch_size", max_length, ast.patch_size)
            config = ASTConfig(
                hidden_size=ast.hidden_size,
                num_hidden_layers=ast.layers,
                num_attention_heads=ast.heads,
                intermediate_size=ast.intermediate_size,
                patch_size=ast.patch_size,
                frequency_stride=ast.frequency_stride,
                time_stride=ast.time_stride,
                max_length=max_length,
                num_mel_bins=shape.bins,
                num_labels=n_classes,
            )
            self.model = ASTForAudioClassification(config)
        self.max_length = int(max_length)
        self.num_mel_bins = int(self.model.config.num_mel_bins)
        mean = ast.norm_mean if ast.norm_mean is not None else mean if mean is not None else AUDIOSET_MEAN
        std = ast.norm_std if ast.norm_std is not None else std if std is not None else AUDIOSET_STD
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise PipelineError(
                f"AST normalisation needs a finite mean and a positive std (got {mean}, {std}): "
                "set model.ast.norm_mean and model.ast.norm_std"
            )
        self.register_buffer("norm_mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("norm_std", torch.tensor(float(std), dtype=torch.float32))
        self.dropout = nn.Dropout(params.dropout)

    @staticmethod
    def _check_length(origin: str, max_length: int, patch_size: int) -> None:
        if max_length < patch_size:
            raise PipelineError(
                f"AST max_length ({max_length} frames) is shorter than {origin} ({patch_size}): "
                "raise model.ast.max_length or train.window_seconds"
            )

    @property
    def head(self) -> nn.Module:
        return self.model.classifier

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """AST's ``input_values``: normalised, (batch, max_length, num_mel_bins), padded or cropped in time."""
        if x.ndim != 4 or x.shape[1] != 1 or x.shape[2] != self.num_mel_bins:
            raise InputShapeError(
                f"ast expects raw log-mel shaped (batch, 1, {self.num_mel_bins} mel bins, frames), got "
                f"{tuple(x.shape)}: check features.kind/n_mels and that the input is not transposed"
            )
        values = (x[:, 0].transpose(1, 2) - self.norm_mean) / (2 * self.norm_std)  # (batch, frames, mel)
        frames = values.shape[1]
        if frames < self.max_length:
            values = F.pad(values, (0, 0, 0, self.max_length - frames), value=PAD_VALUE)
        elif frames > self.max_length:
            values = values[:, : self.max_length]
        expected = (x.shape[0], self.max_length, self.num_mel_bins)
        if tuple(values.shape) != expected:  # a transposed input runs silently when the patch counts match
            raise InputShapeError(
                f"AST input_values must be (batch, max_length, num_mel_bins) = {expected}, got {tuple(values.shape)}"
            )
        return values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.model.audio_spectrogram_transformer(self.prepare(x)).pooler_output
        return self.head.dense(self.dropout(self.head.layernorm(pooled)))


# --------------------------------------------------------------------------------------------- save
def save_pretrained(model: AudioViT | AudioAST | nn.Module, folder: str | Path) -> None:
    """Write the transformer in Hugging Face format (config.json + model.safetensors) to ``folder``, which
    ``model.pretrained`` can then point to. Takes an AudioViT/AudioAST or a Classifier wrapping one.

    AST normalisation statistics are not part of the folder: they come from params or the training split.
    """
    network = getattr(model, "network", model)
    if not isinstance(network, AudioViT | AudioAST):
        raise TypeError(f"save_pretrained takes an AudioViT or AudioAST, not {type(network).__name__}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _quiet(local=True):
        network.model.save_pretrained(folder)
