"""A store of per-recording features, keyed by the recording's content and the feature config.

The features stage runs on the manifest, before the split, and asks this store first: a recording whose bytes
(the manifest's md5) were extracted before under the same config is read back, never extracted again, whatever
split, seed, phase or queued experiment asks for it. The key of a config holds everything the bytes depend on:
the feature config (BirdNET's model checksum included), ``max_seconds``, the activity windows, and a digest of the
extraction code itself, so an edit of the extractor starts a fresh key instead of serving stale features.

Where: ``features.store`` in params.yaml, else ``$BIRDPIPE_FEATURE_STORE``, else ``~/.cache/birdpipe/features``:
outside the repository on purpose, so the temporary copies that ``dvc exp run --temp`` and ``dvc queue`` work in
share it. It is a cache, never a DVC output: deleting it costs time, not results. Each entry is one ``.npz`` file
(features, the MFCC summary the baseline reads, BirdNET's logits for all its classes) written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from birdpipe.common.outputs import atomic_path
from birdpipe.data.audio import AudioError
from birdpipe.features.spectral import FeatureConfig, extract_recording

DEFAULT_ROOT = Path("~/.cache/birdpipe/features")
EXTRACTION_CODE = ("birdpipe.features.store",)  # its import closure computes every stored byte
# In that closure but computing no stored byte: the params schema only turns params.yaml into the FeatureConfig,
# whose values are in the key themselves. Digesting it would re-extract every recording whenever any param of
# any stage is added.
NOT_EXTRACTION = frozenset({"birdpipe/common/params.py"})


@functools.cache
def extraction_digest() -> dict[str, str]:
    """sha256 per file of the extraction code (the store key's ``code`` part digests this mapping)."""
    from birdpipe.common.codedeps import code_digest

    return {path: digest for path, digest in code_digest(EXTRACTION_CODE).items() if path not in NOT_EXTRACTION}


def _code_digest() -> str:
    return hashlib.sha256(json.dumps(extraction_digest(), sort_keys=True).encode()).hexdigest()


def store_root(configured: str | None = None) -> Path:
    return Path(configured or os.environ.get("BIRDPIPE_FEATURE_STORE") or DEFAULT_ROOT).expanduser()


def store_key(config: FeatureConfig, max_seconds: float | None, activity_windows: int, activity_seconds: float) -> str:
    """The config part of an entry's key: what a recording's stored bytes depend on, besides the recording."""
    described = {
        "config": config.to_dict(),
        "max_seconds": max_seconds,
        "activity": [activity_windows, activity_seconds] if activity_windows else None,
        "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:20]


def extract(
    path: str, config: FeatureConfig, max_seconds: float | None, activity_windows: int, activity_seconds: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(features in the storage dtype, MFCC summary, BirdNET's logits for all its classes or None) of a recording;
    AudioError when it cannot be turned into features."""
    if config.kind == "birdnet":
        from birdpipe.birdnet.inputs import extract_birdnet  # BirdNET's runtime only when asked for

        return extract_birdnet(path, config, max_seconds, None)
    features, summary = extract_recording(path, config, max_seconds, activity_windows, activity_seconds)
    if not np.isfinite(features).all():  # e.g. float16 overflow: never let a non-finite value into a cache
        raise AudioError(path, "non-finite feature values (overflow in the feature dtype)")
    return features, summary, None


class FeatureStore:
    """Entries ``<root>/<config key>/<md5[:2]>/<md5>.npz``; ``root`` None keeps nothing (every lookup misses)."""

    def __init__(self, root: Path | None, key: str) -> None:
        self.folder = None if root is None else root / key

    def _path(self, md5: str) -> Path:
        assert self.folder is not None
        return self.folder / md5[:2] / f"{md5}.npz"

    def get(self, md5: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        if self.folder is None or not md5:
            return None
        path = self._path(md5)
        if not path.is_file():
            return None
        try:
            with np.load(path) as entry:
                logits = entry["logits"] if "logits" in entry.files else None
                return entry["features"], entry["summary"], logits
        except (OSError, ValueError, KeyError, EOFError):  # a damaged entry: extract again and overwrite it
            return None

    def put(self, md5: str | None, features: np.ndarray, summary: np.ndarray, logits: np.ndarray | None) -> None:
        if self.folder is None or not md5:
            return
        target = self._path(md5)
        target.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {"features": features, "summary": summary}
        if logits is not None:
            arrays["logits"] = logits
        with atomic_path(target) as temporary, temporary.open("wb") as handle:
            np.savez(handle, **arrays)
