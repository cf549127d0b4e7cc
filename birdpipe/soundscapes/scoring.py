"""A model, BirdNET and their fusion on soundscapes: window scores, then segment scores.

Windows: the bundle's model window, every ``soundscapes.hop_seconds`` (for BirdNET inputs one cache frame is
one 3 s BirdNET window at that hop). A window's score per species is the model's sigmoid (multilabel) or,
for a softmax (multiclass) bundle on BirdNET inputs, its probability gated by BirdNET hearing one of the
label set's species, as ``predict`` reports it. BirdNET's zero-shot score is its own sigmoid for the
species it knows, 0 for the others. A segment's score is the highest score of the windows whose centre lies
in it (:mod:`birdpipe.soundscapes.segments`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from birdpipe.birdnet import runtime as birdnet
from birdpipe.birdnet.zero_shot import gate_scores, zero_shot_scores
from birdpipe.bundle import Bundle
from birdpipe.data.windows import EvalWindows
from birdpipe.evaluation.evaluate import window_probabilities
from birdpipe.evaluation.fusion import fuse_as_fitted
from birdpipe.soundscapes.features import SoundscapeCache, same_inputs
from birdpipe.soundscapes.segments import segment_scores, window_segments


@dataclass
class Windows:
    """Scored windows of one split's soundscapes."""

    file: np.ndarray  # (n,) file of each window
    start_s: np.ndarray
    end_s: np.ndarray
    scores: np.ndarray  # (n, species): the model's (gated for a softmax bundle)
    birdnet_logits: np.ndarray | None  # (n, species): BirdNET's logits on the same windows (BirdNET inputs only)

    def segment_scores(self, segments: pd.DataFrame, scores: np.ndarray | None = None) -> np.ndarray:
        """(segments, species): the highest window score per segment (the model's unless ``scores`` given)."""
        scores = self.scores if scores is None else scores
        where = window_segments(segments, self.file, self.start_s, self.end_s)
        return segment_scores(scores, where, segments, self.file, self.start_s, self.end_s)


def _frame_windows(cache: SoundscapeCache, split: str, window: int, hop: int) -> tuple[EvalWindows, pd.DataFrame]:
    files = cache.files(split).assign(label_index=0)
    return EvalWindows(cache.arrays[split], files, window, hop), files


def model_windows(bundle: Bundle, cache: SoundscapeCache, split: str, batch_size: int, device: str) -> Windows:
    """The bundle's scores on every window of the split's soundscapes (and BirdNET's logits on them)."""
    if not same_inputs(cache.config, bundle.feature_config):
        raise ValueError("the soundscape features were built with another feature config than the model was trained on")
    config = cache.config
    hop_seconds = cache.info["hop_seconds"]
    is_birdnet = config.kind == "birdnet"
    window = bundle.window_frames
    hop = 1 if is_birdnet else config.frames(hop_seconds)
    dataset, files = _frame_windows(cache, split, window, hop)
    scores = window_probabilities(bundle.model, dataset, batch_size, device, f"soundscapes {split}",
                                  bundle.multilabel)  # fmt: skip
    positions = dataset.window_recording
    offsets = np.array([item[3] for item in dataset.items], dtype=np.int64)
    if is_birdnet:  # frame f is the BirdNET window starting at f * hop
        start = offsets * hop_seconds
        end = start + (window - 1) * hop_seconds + birdnet.WINDOW_SECONDS
        logits = cache.logits[split]
        starts = files["logit_start"].to_numpy()[positions] + offsets
        window_logits = np.stack([np.asarray(logits[s : s + window]).max(axis=0) for s in starts]) if len(starts) else (
            np.zeros((0, len(cache.species)), np.float32))  # fmt: skip
        if not bundle.multilabel:
            scores = gate_scores(scores, window_logits, cache.birdnet_known)
    else:
        frame_seconds = config.hop_length / config.sample_rate
        start = offsets * frame_seconds
        end = (offsets + window) * frame_seconds
        window_logits = None
    return Windows(files["file"].to_numpy()[positions], start, end, scores, window_logits)


def birdnet_windows(cache: SoundscapeCache, split: str) -> Windows:
    """BirdNET's zero-shot scores on its own 3 s windows every hop (for every feature kind)."""
    files = cache.files(split)
    counts = (files["logit_stop"] - files["logit_start"]).to_numpy()
    logits = np.asarray(cache.logits[split], dtype=np.float32)
    index = np.concatenate([np.arange(n) for n in counts]) if len(counts) else np.zeros(0, np.int64)
    start = index * cache.info["hop_seconds"]
    file = np.repeat(files["file"].to_numpy(), counts)
    scores = zero_shot_scores(logits, cache.birdnet_known)
    return Windows(file, start, start + birdnet.WINDOW_SECONDS, scores, logits)


def fused_windows(windows: Windows, known: np.ndarray, fusion: dict[str, Any]) -> np.ndarray:
    """The multi-label fusion of a model's window scores with BirdNET's logits on the same windows, as the
    bundle's window fusion (``weight``, ``absent_logit``) says."""
    if windows.birdnet_logits is None:
        raise ValueError("fusion with BirdNET needs BirdNET inputs (features.kind: birdnet)")
    return fuse_as_fitted(windows.scores, windows.birdnet_logits, known, fusion)
