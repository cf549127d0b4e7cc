"""Training-time augmentation on batches of raw features (batch, channels, bins, frames).

Applied in this order, to the training split only (evaluation and predict never augment):
- random gain (``augment.gain_db``): a level change of g dB adds g to every log-mel bin, which for MFCCs
  (orthonormal DCT) is g * sqrt(n_mels) on coefficient 0, deltas unchanged;
- background noise (``augment.noise``, log-mel only): a window of another training recording or of a
  noise clip is added in the power domain, scaled to a random SNR in ``snr_db``, where SNR is the ratio of
  the mean mel power of the example to that of the noise;
- SpecAugment (``augment.specaugment``, Park et al. 2019) with torchaudio's masking: frequency and time
  masks, filled with the training mean of each channel so a mask looks like "average" not "silence";
- MixUp (``augment.mixup``, Zhang et al. 2018): with probability p per batch, examples are mixed with a
  shuffled copy with lambda ~ Beta(alpha, alpha) and the targets become the same mixture of one-hot
  labels (soft targets that every loss in :mod:`birdpipe.training.losses` accepts), or of the multi-label
  target vectors.
Bags of windows (multiple-instance training: (batch, bag, channels, bins, frames)) are augmented window by
window, and MixUp mixes whole bags.
Randomness comes from torch's generator, which training seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import AugmentParams, Params
from birdpipe.features.cache import FeatureCache


class NoiseBank:
    """Random windows from feature spans (training recordings or noise clips), for noise mixing."""

    def __init__(self, array: np.ndarray, spans: Sequence[tuple[int, int]]) -> None:
        if not spans:
            raise ValueError("the noise bank is empty")
        self.array = array
        self.spans = [(int(a), int(b)) for a, b in spans]

    def sample(self, count: int, window: int) -> torch.Tensor:
        from birdpipe.data.windows import crop

        picks = torch.randint(len(self.spans), (count,)).tolist()
        windows = []
        for pick in picks:
            start, stop = self.spans[pick]
            room = max(stop - start - window, 0)
            offset = int(torch.randint(room + 1, (1,)))
            windows.append(torch.from_numpy(crop(self.array, start, stop, offset, window)))
        return torch.stack(windows)


def mix_at_snr(signal_db: torch.Tensor, noise_db: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """Add noise to each example (dB mel features) in the power domain at the given SNR (dB) per example."""
    signal = torch.pow(10.0, signal_db / 10.0)
    noise = torch.pow(10.0, noise_db / 10.0)
    dims = tuple(range(1, signal_db.dim()))
    gain = signal.mean(dim=dims) / (noise.mean(dim=dims).clamp(min=1e-20) * torch.pow(10.0, snr_db / 10.0))
    shape = (-1,) + (1,) * (signal_db.dim() - 1)
    return 10.0 * torch.log10((signal + gain.view(shape) * noise).clamp(min=1e-10))


def mixup(x: torch.Tensor, target: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with a shuffled copy; ``target`` is (batch, classes) soft targets."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    order = torch.randperm(x.shape[0])
    return lam * x + (1.0 - lam) * x[order], lam * target + (1.0 - lam) * target[order]


class Augmenter:
    def __init__(
        self,
        params: AugmentParams,
        kind: str,
        n_mels: int,
        channel_mean: Sequence[float],
        n_classes: int,
        noise: NoiseBank | None = None,
    ) -> None:
        self.params = params
        self.kind = kind
        self.n_mels = n_mels
        self.fill = torch.tensor(list(channel_mean), dtype=torch.float32).view(1, -1, 1, 1)
        self.n_classes = n_classes
        self.noise = noise
        if params.noise.p > 0 and noise is None:
            raise ValueError("augment.noise is on but no noise bank was given")

    @property
    def active(self) -> bool:
        p = self.params
        return p.gain_db > 0 or p.noise.p > 0 or p.specaugment.p > 0 or p.mixup.p > 0

    def _chosen(self, batch: int, probability: float) -> torch.Tensor:
        return torch.rand(batch) < probability

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        g = (torch.rand(x.shape[0], device=x.device) * 2.0 - 1.0) * self.params.gain_db  # on the batch's device
        if self.kind == "logmel":
            return x + g.view(-1, 1, 1, 1)
        x = x.clone()
        x[:, 0, 0, :] += g.view(-1, 1) * math.sqrt(self.n_mels)
        return x

    def add_noise(self, x: torch.Tensor) -> torch.Tensor:
        chosen = self._chosen(x.shape[0], self.params.noise.p)
        if not chosen.any():
            return x
        count = int(chosen.sum())
        low, high = self.params.noise.snr_db
        snr = low + torch.rand(count) * (high - low)
        noise = self.noise.sample(count, x.shape[-1]).to(x)
        x = x.clone()
        x[chosen] = mix_at_snr(x[chosen], noise, snr.to(x))
        return x

    def specaugment(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params.specaugment
        chosen = self._chosen(x.shape[0], p.p).to(x.device)
        if not chosen.any():
            return x
        keep = torch.ones(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device)
        for _ in range(p.n_freq_masks):
            if p.freq_mask > 0:
                keep = AF.mask_along_axis_iid(keep, min(p.freq_mask, x.shape[2]), 0.0, axis=2)
        for _ in range(p.n_time_masks):
            if p.time_mask > 0:
                keep = AF.mask_along_axis_iid(keep, min(p.time_mask, x.shape[3]), 0.0, axis=3)
        keep = torch.where(chosen.view(-1, 1, 1, 1), keep, torch.ones_like(keep))
        fill = self.fill.to(x)
        return x * keep + fill * (1.0 - keep)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented inputs and targets: ``labels`` (batch,) or multi-label targets (batch, classes); hard labels
        become (batch, classes) when MixUp mixes them."""
        shape = x.shape
        if x.dim() == 5:  # bags: augment each window
            x = x.flatten(0, 1)
        if self.params.gain_db > 0:
            x = self.gain(x)
        if self.params.noise.p > 0:
            x = self.add_noise(x)
        if self.params.specaugment.p > 0:
            x = self.specaugment(x)
        x = x.reshape(shape)
        target: torch.Tensor = labels
        if self.params.mixup.p > 0 and float(torch.rand(1)) < self.params.mixup.p:
            soft = F.one_hot(labels, self.n_classes).float() if labels.dim() == 1 else labels.float()
            x, target = mixup(x, soft, self.params.mixup.alpha)
        return x, target


def noise_bank(params: Params, cache: FeatureCache, train: pd.DataFrame) -> NoiseBank | None:
    noise = params.augment.noise
    if noise.p <= 0:
        return None
    if noise.source == "recordings":
        return NoiseBank(cache.arrays["train"], list(zip(train["start"], train["stop"], strict=True)))
    from birdpipe.data.audio import AUDIO_EXTENSIONS, AudioError
    from birdpipe.features.spectral import extract_recording

    folder = Path(noise.folder)
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) if folder.is_dir() else []
    if not clips:
        raise PipelineError(f"augment.noise.folder {folder} holds no audio clips ({', '.join(AUDIO_EXTENSIONS)})")
    arrays, spans, offset = [], [], 0
    for clip in clips:
        try:
            features, _ = extract_recording(str(clip), cache.config, max_seconds=600.0)
        except AudioError as exc:
            print(f"noise clip skipped: {exc}")
            continue
        arrays.append(features.astype(np.float32))
        spans.append((offset, offset + features.shape[0]))
        offset += features.shape[0]
    if not arrays:
        raise PipelineError(f"no clip in augment.noise.folder {folder} could be decoded")
    return NoiseBank(np.concatenate(arrays), spans)
