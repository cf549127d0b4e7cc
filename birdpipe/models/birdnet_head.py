"""Classifier heads on pretrained embeddings (``features.kind: birdnet``).

Input (batch, 1, bins, frames): one or more consecutive BirdNET windows (embedding and/or scores, as
``features.birdnet.inputs`` says), averaged over frames, so a head sees the same thing whether a model
window holds one 3 s window or several. Standardisation
per embedding dimension happens before the head (:class:`birdpipe.models.Standardize`, saved in the model),
so training, evaluate and predict scale embeddings the same way.
"""

from __future__ import annotations

import torch
from torch import nn


class BirdNETHead(nn.Module):
    """``birdnet_linear`` (dropout + linear) or ``birdnet_mlp`` (one hidden layer)."""

    def __init__(self, n_classes: int, size: int, hidden_size: int | None, dropout: float) -> None:
        super().__init__()
        if hidden_size is None:
            self.body = nn.Dropout(dropout)
            self.head = nn.Linear(size, n_classes)
        else:
            self.body = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, hidden_size), nn.GELU(), nn.Dropout(dropout))
            self.head = nn.Linear(hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.mean(dim=(1, 3))))
