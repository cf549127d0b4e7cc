"""The input shape every model is built for: (channels, bins, frames) of one window."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputShape:
    channels: int
    bins: int
    frames: int
