"""Model registry: ``model.name`` -> a module mapping (batch, channels, bins, frames) to class logits.

Every model exposes its classifier as ``model.head``; everything else is the backbone, which is what
``train.backbone_lr`` and ``train.head_lr`` (discriminative learning rates) refer to.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from birdpipe.common.params import ModelParams
from birdpipe.models.birdnet_head import BirdNETHead
from birdpipe.models.cnn import AudioCNN, AudioCNNv2
from birdpipe.models.shapes import InputShape


class Standardize(nn.Module):
    """(x - mean) / std with the training split's statistics, saved inside the model.

    Per channel (one value per channel: spectrograms) or per channel and bin (a list of lists: embeddings,
    whose dimensions have scales of their own).
    """

    def __init__(
        self, mean: Sequence[float] | Sequence[Sequence[float]], std: Sequence[float] | Sequence[Sequence[float]]
    ) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32)
        shape = (1, -1, 1, 1) if mean_t.dim() == 1 else (1, *mean_t.shape, 1)
        self.register_buffer("mean", mean_t.reshape(shape))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Optional standardisation followed by the network; what training, evaluate and predict run."""

    def __init__(self, network: nn.Module, standardize: Standardize | None) -> None:
        super().__init__()
        self.standardize = standardize if standardize is not None else nn.Identity()
        self.network = network

    @property
    def head(self) -> nn.Module:
        return self.network.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.standardize(x))


def build_network(
    params: ModelParams, n_classes: int, shape: InputShape, ast_stats: Sequence[float] | None = None
) -> nn.Module:
    if params.name == "audio_cnn":
        return AudioCNN(n_classes, shape.channels, dropout=params.dropout)
    if params.name == "audio_cnn_v2":
        return AudioCNNv2(n_classes, shape.channels, dropout=params.dropout)
    if params.name in ("birdnet_linear", "birdnet_mlp"):
        hidden = params.head.hidden_size if params.name == "birdnet_mlp" else None
        return BirdNETHead(n_classes, shape.channels * shape.bins, hidden, params.head.dropout)
    from birdpipe.models import hf  # transformers is imported only when a transformer is asked for

    if params.name == "audio_vit":
        return hf.AudioViT(params, n_classes, shape)
    if params.name == "ast":
        mean, std = ast_stats if ast_stats is not None else (None, None)
        return hf.AudioAST(params, n_classes, shape, mean, std)
    raise ValueError(f"unknown model.name {params.name!r}")


def build_model(
    params: ModelParams,
    n_classes: int,
    shape: InputShape,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    ast_stats: Sequence[float] | None = None,
) -> Classifier:
    """The network for ``model.name``, preceded by standardisation when mean and std are given.

    AST normalises inside (as its feature extractor does, from ``ast_stats`` = (mean, std)), so it is
    built without the standardisation layer.
    """
    standardize = Standardize(mean, std) if mean is not None and std is not None else None
    return Classifier(build_network(params, n_classes, shape, ast_stats), standardize)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
