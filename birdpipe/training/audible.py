"""Training windows where BirdNET hears the focal species (``train.window_selection: birdnet``).

A focal recording's label is true of the recording, not of every window: the bird pauses, and the windows
between its songs hold the site's background. Trained on every window, a model learns to name the species
from that background, and on a soundscape some species always scores high. With BirdNET features the cache
holds BirdNET's own logit for the focal species in every window, so a window counts as heard when its
sigmoid reaches ``train.audible_confidence``. With ``train.silent_target`` null the other windows are never
drawn; with a number they are drawn with that target for the focal species (0: the silent stretches of
focal recordings become the "none of this species here" examples that focal recordings otherwise lack).
Where BirdNET cannot judge, every window counts as heard: a species it lacks, a recording in which it hears
the species nowhere (a weak BirdNET class, a quiet call), and no-bird negatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import logit


def audible_starts(
    recordings: pd.DataFrame, logits: np.ndarray, known: np.ndarray, window: int, confidence: float
) -> list[np.ndarray | None]:
    """Per recording, whether BirdNET hears the focal species in the window at each start (frames from the
    recording's start; a bool array of ``length - window + 1``): some frame of the window has its logit at
    ``logit(confidence)`` or more. None where it cannot judge (every window counts as heard).

    ``logits``: (frames, species) BirdNET logits of the label set, indexed like the cache's frames (a
    :class:`birdpipe.features.cache.ColumnView` works); ``known``: (species,) which species BirdNET knows.
    """
    bar = float(logit(confidence))
    allowed: list[np.ndarray | None] = []
    for start, stop, label in zip(recordings["start"], recordings["stop"], recordings["label_index"], strict=True):
        length = int(stop - start)
        if label < 0 or not known[label] or length < window:
            allowed.append(None)
            continue
        heard = np.asarray(logits[int(start) : int(stop)])[:, label] >= bar
        # a window start is audible when any of its frames is
        hits = np.convolve(heard.astype(np.int32), np.ones(window, dtype=np.int32), mode="valid") > 0
        allowed.append(hits if hits.any() else None)
    return allowed


def kept_share(recordings: pd.DataFrame, allowed: list[np.ndarray | None], window: int) -> float:
    """The share of the focal recordings' window starts where BirdNET hears the focal species (or cannot judge)."""
    total = kept = 0
    for length, label, starts in zip(recordings["stop"] - recordings["start"], recordings["label_index"], allowed,
                                     strict=True):  # fmt: skip
        if label < 0:
            continue
        n = max(int(length) - window + 1, 1)
        total += n
        kept += n if starts is None else int(starts.sum())
    return kept / total if total else 1.0
