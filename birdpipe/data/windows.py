"""Training and evaluation windows cut from the feature cache.

Training: every epoch, windows of ``train.window_seconds`` are cropped at random positions from training
recordings chosen by ``train.sampler``; the epoch holds ``windows_per_recording`` x recordings windows.
- ``recording``: each recording gives that many crops per epoch (every recording seen equally often);
- ``uniform``: draws uniform over all windows, so a recording counts in proportion to its length;
- ``sqrt``: species drawn in proportion to the square root of their windows (a milder rebalancing);
- ``class_balanced``: every species equally often.
Within a species, ``uniform``, ``sqrt`` and ``class_balanced`` pick recordings in proportion to length.
The draws of epoch e depend only on (seed, e), so a resumed run sees the same batches.

Evaluation: fixed sliding windows (``train.hop_seconds`` apart, the last aligned to the end), aggregated
per recording by the caller. A recording shorter than a window is tiled to fill it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from birdpipe.common.workers import distributed_rank
from birdpipe.features.spectral import window_starts

SAMPLER_EXPONENT = {"uniform": 1.0, "sqrt": 0.5, "class_balanced": 0.0}


def crop(array: np.ndarray, start: int, stop: int, offset: int, window: int) -> np.ndarray:
    """Frames [offset, offset + window) of the recording at array[start:stop], tiled if it is shorter.

    Returns (channels, bins, window) float32, the layout the models take.
    """
    length = stop - start
    if length >= window:
        frames = np.asarray(array[start + offset : start + offset + window], dtype=np.float32)
    else:
        recording = np.asarray(array[start:stop], dtype=np.float32)
        positions = (offset + np.arange(window)) % length
        frames = recording[positions]
    return np.ascontiguousarray(frames.transpose(1, 2, 0))


def recording_windows(recordings: pd.DataFrame, window: int) -> np.ndarray:
    """How many non-overlapping windows each recording holds (at least 1)."""
    lengths = (recordings["stop"] - recordings["start"]).to_numpy()
    return np.maximum(1.0, lengths / window)


def sampling_strata(recordings: pd.DataFrame) -> np.ndarray:
    """Each recording's species index for balanced sampling; no-bird negatives (-1) form one stratum of their own,
    drawn like a species."""
    labels = recordings["label_index"].to_numpy()
    return np.where(labels < 0, labels.max(initial=-1) + 1, labels)


def sampling_probabilities(recordings: pd.DataFrame, window: int, sampler: str) -> np.ndarray:
    """Probability of drawing each recording under ``sampler`` (not used by ``recording``)."""
    windows = recording_windows(recordings, window)
    labels = sampling_strata(recordings)
    class_windows = np.bincount(labels, weights=windows)
    class_mass = np.zeros_like(class_windows)
    present = class_windows > 0
    class_mass[present] = np.power(class_windows[present], SAMPLER_EXPONENT[sampler])
    class_mass /= class_mass.sum()
    return class_mass[labels] * windows / class_windows[labels]


def expected_class_frequencies(recordings: pd.DataFrame, window: int, sampler: str, n_classes: int) -> np.ndarray:
    """The share of training draws each species gets: the prior a model learns under this sampler (draws of
    no-bird negatives left out)."""
    labels = recordings["label_index"].to_numpy()
    if sampler == "recording":
        mass = np.ones(len(recordings))
    else:
        mass = sampling_probabilities(recordings, window, sampler)
    species = labels >= 0
    frequencies = np.bincount(labels[species], weights=mass[species], minlength=n_classes)
    return frequencies / frequencies.sum()


class TrainSampler(Sampler):
    """Yields (recording, crop offset) pairs for one epoch; ``set_epoch`` (called by Lightning) reseeds.

    With ``batch_size`` (over all processes) an epoch keeps whole batches only, and with ``world`` DDP processes
    each takes every world-th draw (its rank's share, read when iteration starts): batch k of every process holds
    its share of the k-th batch of the one-process run, so the global batches are the same however many
    processes train.
    """

    def __init__(
        self,
        recordings: pd.DataFrame,
        window: int,
        sampler: str,
        per_recording: float,
        seed: int,
        batch_size: int | None = None,
        world: int = 1,
        span: int | None = None,
    ) -> None:
        """``span``: frames a draw covers (a bag of windows; default one window), for the crop offsets."""
        self.lengths = (recordings["stop"] - recordings["start"]).to_numpy()
        self.window = window
        self.span = span or window
        self.sampler = sampler
        self.size = max(1, round(per_recording * len(recordings)))
        self.per_recording = per_recording
        self.probabilities = None if sampler == "recording" else sampling_probabilities(recordings, window, sampler)
        self.seed = seed
        self.epoch = 0
        self.world = world
        kept = self.size // batch_size * batch_size if batch_size and self.size > batch_size else self.size
        self.kept = kept // world * world
        if self.kept == 0:
            raise ValueError(f"{self.size} training windows per epoch cannot be shared by {world} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.kept // self.world

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.lengths)
        if self.probabilities is None:
            whole, fraction = divmod(self.per_recording, 1.0)
            chosen = np.repeat(np.arange(n), int(whole))
            extra = rng.choice(n, size=self.size - chosen.size, replace=False) if fraction > 0 else []
            chosen = rng.permutation(np.concatenate([chosen, extra]).astype(int))
        else:
            chosen = rng.choice(n, size=self.size, p=self.probabilities)
        room = np.maximum(self.lengths[chosen] - self.span, 0)
        offsets = np.floor(rng.random(self.size) * (room + 1)).astype(int)
        offsets = np.where(self.lengths[chosen] < self.span, rng.integers(0, 1 << 30, self.size), offsets)
        return chosen, offsets

    def __iter__(self) -> Iterator[tuple[int, int]]:
        chosen, offsets = self.draw(self.epoch)
        rank, _ = distributed_rank()
        share = slice(rank, self.kept, self.world)
        return iter(zip(chosen[share].tolist(), offsets[share].tolist(), strict=True))


class TrainWindows(Dataset):
    """Random crops from the training split; indexed by (recording, offset) from :class:`TrainSampler`.

    Yields the recording's species index, or its row of ``targets`` (recordings, species) when given
    (multi-label training)."""

    def __init__(
        self,
        array: np.ndarray,
        recordings: pd.DataFrame,
        window: int,
        targets: np.ndarray | None = None,
        heard: list[np.ndarray | None] | None = None,
        silent_target: float | None = None,
    ) -> None:
        """``heard``: per recording, whether its focal species is heard in the window at each start (None: in
        every one), as :func:`birdpipe.training.audible.audible_starts` gives it. A crop then takes a heard
        window, or with ``silent_target`` any window, the focal species' target set to it where not heard."""
        self.array = array
        self.starts = recordings["start"].to_numpy()
        self.stops = recordings["stop"].to_numpy()
        self.labels = recordings["label_index"].to_numpy()
        self.targets = None if targets is None else torch.from_numpy(targets)
        self.window = window
        if silent_target is not None and targets is None:
            raise ValueError("silent_target needs multi-label targets")
        self.heard = heard
        self.silent_target = silent_target
        drop_silent = heard is not None and silent_target is None
        self.heard_starts = [None if h is None else np.flatnonzero(h) for h in heard] if drop_silent else None

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, int | torch.Tensor]:
        recording, offset = item
        length = self.stops[recording] - self.starts[recording]
        offset = offset % max(length, 1) if length < self.window else min(offset, length - self.window)
        heard = None if self.heard is None else self.heard[recording]
        silent = False
        if heard is not None and self.silent_target is None:  # the sampler's uniform draw, folded onto heard starts
            starts = self.heard_starts[recording]
            offset = int(starts[offset % len(starts)])
        elif heard is not None:
            silent = not heard[offset]
        x = crop(self.array, self.starts[recording], self.stops[recording], offset, self.window)
        target = int(self.labels[recording]) if self.targets is None else self.targets[recording]
        if silent:
            target = target.clone()
            target[int(self.labels[recording])] = self.silent_target
        return torch.from_numpy(x), target


class EvalWindows(Dataset):
    """Every sliding window of every recording of a split: (features, recording position, label)."""

    def __init__(self, array: np.ndarray, recordings: pd.DataFrame, window: int, hop: int) -> None:
        self.array = array
        self.window = window
        self.recordings = recordings.reset_index(drop=True)
        items = []
        for position, row in enumerate(self.recordings.itertuples()):
            for offset in window_starts(row.stop - row.start, window, hop):
                items.append((position, row.start, row.stop, offset))
        self.items = items
        self.labels = self.recordings["label_index"].to_numpy()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        position, start, stop, offset = self.items[index]
        x = crop(self.array, start, stop, offset, self.window)
        return torch.from_numpy(x), position, int(self.labels[position])

    @property
    def window_recording(self) -> np.ndarray:
        """The recording position of every window, in dataset order."""
        return np.array([item[0] for item in self.items], dtype=np.int64)


class NumberedWindows(Dataset):
    """A dataset's items with their index appended, so windows gathered from DDP processes are put back in order
    and counted once."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        return (*self.dataset[index], index)


class ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...`` of ``size`` items (rank read when iteration starts), padded with the
    share's last index so every process runs the same number of batches (DDP collectives need that)."""

    def __init__(self, size: int, world: int) -> None:
        self.size = size
        self.world = world

    def __len__(self) -> int:
        return -(-self.size // self.world)

    def __iter__(self) -> Iterator[int]:
        rank, _ = distributed_rank()
        share = list(range(rank, self.size, self.world)) or [0]
        return iter(share + [share[-1]] * (len(self) - len(share)))
