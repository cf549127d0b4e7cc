"""The study's convolutional models.

``AudioCNN`` (phase 0/1/2A baseline): four blocks conv3x3-BN-ReLU-maxpool with 32, 64, 128, 256 channels,
global average pooling, then a 256-unit FC layer and the classifier. The study quotes "~344K parameters"
(343,801 for 89 species); four 3x3 conv blocks of those widths alone hold 388,416 weights, so that count
cannot belong to the architecture it describes. This implementation follows the description; it has
478,041 parameters for 89 species and 3 input channels.

``AudioCNNv2`` (phase 2B): five blocks 64-128-256-512-512 (max-pool after the first four, global average
pool after the fifth), dropout 0.5, FC 512, dropout 0.5, classifier: exactly 4,222,041 parameters for 89
species and 3 input channels, as the study reports.

Both take (batch, channels, bins, frames) of any size (global pooling makes the head size-independent).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        # ceil_mode keeps inputs with only a few bins (e.g. 20 MFCCs) from pooling down to nothing
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    return nn.Sequential(*layers)


class AudioCNN(nn.Module):
    def __init__(self, n_classes: int, in_channels: int = 3, hidden: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        widths = (32, 64, 128, 256)
        blocks, previous = [], in_channels
        for width in widths:
            blocks.append(conv_block(previous, width))
            previous = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(previous, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class AudioCNNv2(nn.Module):
    def __init__(self, n_classes: int, in_channels: int = 3, hidden: int = 512, dropout: float = 0.5) -> None:
        super().__init__()
        widths = (64, 128, 256, 512, 512)
        blocks, previous = [], in_channels
        for i, width in enumerate(widths):
            blocks.append(conv_block(previous, width, pool=i < len(widths) - 1))
            previous = width
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(previous, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
