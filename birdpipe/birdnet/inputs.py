"""``features.kind: birdnet``: BirdNET V2.4 embeddings as a feature cache, and BirdNET's own logits beside them.

Each cache frame is one 3 s window at 48 kHz (``features.birdnet.hop_seconds`` apart): 1 channel x the
window's inputs (``features.birdnet.inputs``): the 1024-d embedding, BirdNET's scores for all 6,522 of its
classes, or both side by side (embedding first). A score is the log-confidence ``log sigmoid(logit)``: on a
log scale the classes that never fire in training windows still vary smoothly (about 1 on the logit scale),
so per-dimension standardisation stays well conditioned; raw sigmoid confidences near 0 have standard
deviations of 1e-5 and turn noise into huge standardised values. The scores carry what the embedding
hides: which of BirdNET's classes (congeners, look-alikes) a window sounds like, the signal a head needs
for the species BirdNET lacks. The models, samplers and windows of :mod:`birdpipe.data.windows` work
unchanged (a "window" of one frame is one BirdNET window). Beside ``<split>.npy`` the cache holds
``<split>.logits.npy``: BirdNET's own classifier logits per frame for our species (0 for the species
BirdNET lacks; ``config.json`` lists the matches), which the zero-shot baseline and late fusion read.
``stats.npy`` holds the same MFCC summaries as the mfcc cache (decoded at 22,050 Hz), so the MFCC
baseline runs on the same split.

The embedder runs BirdNET in one process per core, one thread each; every window is embedded in a
fixed-size batch, so its bytes do not depend on the recording's length or on the worker.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import log_expit

from birdpipe.birdnet import runtime as birdnet
from birdpipe.birdnet.runtime import EMBEDDING_SIZE, SAMPLE_RATE

__all__ = ["EMBEDDING_SIZE", "BirdNETStream", "extract_birdnet", "species_columns", "window_inputs"]

MFCC_SUMMARY_RATE = 22050  # the mfcc cache's default rate, so mfcc_logreg scores the same as in mfcc runs


def species_columns(species: list[str], table: pd.DataFrame) -> dict[str, Any]:
    """Match our species to BirdNET's labels (by label, or a ``scientific_name`` column); the features report."""
    names: dict[str, str] | None = None
    if "scientific_name" in table.columns:
        first = table.drop_duplicates("label").set_index("label")["scientific_name"]
        names = {str(label): str(name) for label, name in first.items() if isinstance(name, str) and name.strip()}
    columns = birdnet.match_species(species, names)
    labels = birdnet.birdnet_labels()
    matched = {s: labels[c] for s, c in zip(species, columns, strict=True) if c is not None}
    return {
        "model": birdnet.model_path().name,
        "model_checksum": birdnet.model_checksum(),
        "license": birdnet.LICENSE_NOTE,
        "n_matched": len(matched),
        "n_species": len(species),
        "matched": matched,
        "unmatched": [s for s, c in zip(species, columns, strict=True) if c is None],
        "columns": columns,
    }


@functools.lru_cache(maxsize=1)
def _embedder() -> birdnet.BirdNETEmbedder:
    return birdnet.BirdNETEmbedder(threads=1)  # one per process: the features stage runs a process per core


def logit_columns(logits: np.ndarray, columns: list[int | None] | None) -> np.ndarray:
    """The logits of ``columns`` (0 for a species BirdNET lacks: None); all of BirdNET's classes for ``None``."""
    if columns is None:
        return np.asarray(logits, dtype=np.float32)
    out = np.zeros((logits.shape[0], len(columns)), dtype=np.float32)
    known = [i for i, c in enumerate(columns) if c is not None]
    if known:
        out[:, known] = logits[:, [columns[i] for i in known]]
    return out


def window_inputs(embeddings: np.ndarray, logits: np.ndarray, parts: Iterable[str]) -> np.ndarray:
    """What a cache frame holds per window (n, bins): the parts of ``FeatureConfig.birdnet_parts``, in order."""
    columns = [
        np.asarray(embeddings, dtype=np.float32) if part == "embedding" else log_expit(np.asarray(logits, np.float32))
        for part in parts
    ]
    return np.concatenate(columns, axis=1)


class BirdNETStream:
    """Audio blocks at 48 kHz -> (features (n, 1, bins) rounded to the cache dtype, logits (n, species))."""

    def __init__(
        self, config: Any, columns: list[int | None] | None, embedder: birdnet.BirdNETEmbedder | None = None
    ) -> None:
        self.config = config
        self.columns = columns
        self.embedder = embedder or _embedder()

    def _embed(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embeddings, logits = self.embedder.embed(windows)
        inputs = window_inputs(embeddings, logits, self.config.birdnet_parts)
        rounded = inputs.astype(self.config.dtype)[:, None, :]
        return rounded, logit_columns(logits, self.columns)

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        windows = birdnet.WindowStream(self.config.hop_length)
        for block in blocks:
            ready = windows.push(block)
            if len(ready):
                yield self._embed(ready)
        rest = windows.finish()
        if len(rest):
            yield self._embed(rest)


def extract_birdnet(
    path: str, config: Any, max_seconds: float | None, columns: list[int | None] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window inputs (frames, 1, bins), the MFCC summary for the baseline, and BirdNET logits of one recording (of
    ``columns``, or of all BirdNET's classes for None)."""
    from birdpipe.data.audio import AudioError, stream_audio
    from birdpipe.features.spectral import FeatureConfig, _extractor

    parts = list(BirdNETStream(config, columns).stream(stream_audio(path, SAMPLE_RATE, max_seconds=max_seconds)))
    if not parts:
        raise AudioError(path, "no audio frames")
    features = np.concatenate([p[0] for p in parts])
    logits = np.concatenate([p[1] for p in parts])
    if not (np.isfinite(features).all() and np.isfinite(logits).all()):
        raise AudioError(path, "non-finite BirdNET embedding values")
    mfcc = _extractor(FeatureConfig(sample_rate=MFCC_SUMMARY_RATE))
    db = np.concatenate(list(mfcc.db_frames(stream_audio(path, MFCC_SUMMARY_RATE, max_seconds=max_seconds))))
    return features, mfcc.summary(db), logits
