"""Multi-label targets and multiple-instance bags (``train.objective: multilabel``).

A focal recording is weakly labelled: its species is true of the recording, not of every window (the bird
pauses), and other species may sing in its background. So a recording's target is a vector over the label
set: 1 for its focal species, ``loss.background_target`` for each label-set species named in its
``background_species``, 0 elsewhere; a no-bird recording (a negative) is all zeros.

With ``train.pooling`` other than ``none`` the model sees bags: ``train.bag_windows`` consecutive windows of
one recording, whose window logits are pooled into one score per species before the loss (multiple-instance
learning: "the species sings in some window of the bag"), so silent windows are not pushed towards the
recording's label. Pooling (logit space, over the bag's K windows):

- ``max``: the highest window logit;
- ``lse``: log-sum-exp, ``(1/r) log mean_k exp(r z_k)``, between the mean (r -> 0) and the max (r -> inf),
  ``r = train.lse_sharpness``;
- ``attention``: ``sum_k softmax_k(a_c z_k) z_k`` with a learned sharpness ``a_c`` per species (auto-pool,
  McFee et al. 2018, "Adaptive pooling operators for weakly labeled sound event detection").

A recording shorter than a bag repeats its windows to fill it (a repeated window changes neither max nor
log-sum-exp's maximum, and keeps every bag the same shape for batching and MixUp).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from birdpipe.data.windows import crop


def recording_targets(recordings: pd.DataFrame, species: list[str], background_target: float) -> np.ndarray:
    """(recordings, species) float32 targets: focal 1, background species ``background_target``, negatives 0."""
    targets = np.zeros((len(recordings), len(species)), dtype=np.float32)
    column = {name: i for i, name in enumerate(species)}
    if background_target > 0 and "background" in recordings.columns:  # caches before background targets lack it
        for row, value in enumerate(recordings["background"].fillna("")):
            for name in filter(None, str(value).split(";")):
                if name in column:
                    targets[row, column[name]] = background_target
    labels = recordings["label_index"].to_numpy()
    focal = labels >= 0
    targets[np.flatnonzero(focal), labels[focal]] = 1.0
    return targets


def bag_offsets(length: int, offset: int, window: int, bag: int) -> np.ndarray:
    """Start frames of a bag's ``bag`` windows (hop = window) in a recording of ``length`` frames.

    ``offset`` is the sampler's draw: the bag's start when the recording holds a whole bag; a shorter
    recording cycles through its non-overlapping windows (from a drawn start), and one shorter than a
    window gives the tiled window ``crop`` makes.
    """
    if length >= bag * window:
        start = min(max(offset, 0), length - bag * window)
        return start + window * np.arange(bag)
    whole = length // window
    if whole == 0:
        return np.full(bag, offset % max(length, 1))
    start = offset % (length - whole * window + 1)
    return (start + window * np.arange(whole))[np.arange(bag) % whole]


class TrainBags(Dataset):
    """Bags of consecutive training windows, indexed by (recording, offset) from the sampler; yields
    (x (bag, channels, bins, window), target (species,))."""

    def __init__(self, array: np.ndarray, recordings: pd.DataFrame, window: int, bag: int, targets: np.ndarray) -> None:
        self.array = array
        self.starts = recordings["start"].to_numpy()
        self.stops = recordings["stop"].to_numpy()
        self.window = window
        self.bag = bag
        self.targets = torch.from_numpy(targets)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        recording, offset = item
        start, stop = int(self.starts[recording]), int(self.stops[recording])
        offsets = bag_offsets(stop - start, offset, self.window, self.bag)
        x = np.stack([crop(self.array, start, stop, int(o), self.window) for o in offsets])
        return torch.from_numpy(x), self.targets[recording]


class BagPooling(nn.Module):
    """Pools window logits (batch, bag, species) into bag logits (batch, species): max, lse or attention."""

    def __init__(self, kind: str, n_classes: int, sharpness: float = 5.0) -> None:
        super().__init__()
        if kind not in ("max", "lse", "attention"):
            raise ValueError(f"unknown pooling {kind!r}; allowed: max, lse, attention")
        self.kind = kind
        self.sharpness = sharpness
        self.attention = nn.Parameter(torch.ones(n_classes)) if kind == "attention" else None

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.kind == "max":
            return logits.max(dim=1).values
        if self.kind == "lse":
            r = self.sharpness
            return (torch.logsumexp(r * logits, dim=1) - math.log(logits.shape[1])) / r
        weights = torch.softmax(self.attention * logits, dim=1)
        return (weights * logits).sum(dim=1)
