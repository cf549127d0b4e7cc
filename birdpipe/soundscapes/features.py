"""Features of soundscape files: the model's inputs at the soundscape hop, and BirdNET's logits beside them.

A soundscape is scored window by window: the model's windows start every ``soundscapes.hop_seconds``. For
``features.kind: birdnet`` a frame is one BirdNET window, so the cache holds BirdNET windows every hop (a
config equal to the training one but for ``hop_length``); spectral kinds keep their frames and the windows
are cut at the hop when scored. BirdNET's own logits for the label set's species are cached for every
feature kind (one extra BirdNET pass for spectral kinds), so its zero-shot scores sit beside every model on
the same windows. Layout (``data/soundscapes/features/``): ``<split>.npy`` (frames, channels, bins) of
every file of the split concatenated, ``<split>.logits.npy`` (BirdNET windows, species), ``index.csv``
(file, split, frame and logit ranges) and ``config.json``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from birdpipe.birdnet import runtime as birdnet
from birdpipe.common.errors import PipelineError
from birdpipe.common.outputs import atomic_path, write_json, write_table
from birdpipe.common.params import FeatureParams
from birdpipe.common.workers import cpu_workers
from birdpipe.data.audio import AudioError
from birdpipe.features.cache import _init_worker, _species_logits, _write_npy
from birdpipe.features.spectral import FeatureConfig
from birdpipe.features.store import extract

SPLITS = ("val", "test")


def soundscape_config(params: FeatureParams, hop_seconds: float) -> FeatureConfig:
    """The training feature config, with BirdNET windows every ``hop_seconds`` for ``kind: birdnet``."""
    config = FeatureConfig.from_params(params)
    if config.kind == "birdnet":
        return dataclasses.replace(config, hop_length=round(hop_seconds * birdnet.SAMPLE_RATE))
    return config


def same_inputs(a: FeatureConfig, b: FeatureConfig) -> bool:
    """Two configs give the same model inputs per frame (their frame hop may differ)."""
    return dataclasses.replace(a, hop_length=0) == dataclasses.replace(b, hop_length=0)


def _feature_job(job: tuple) -> tuple[np.ndarray | None, np.ndarray | None, str | None]:
    """(model inputs, BirdNET's logits of the label set (BirdNET inputs) or None, error) of a whole soundscape."""
    path, config, columns = job
    try:
        features, _, logits = extract(path, config, None, 0, 4.0)
    except AudioError as exc:
        return None, None, exc.reason
    return features, None if logits is None else _species_logits(logits, columns), None


def _logit_job(job: tuple[str, int, list[int | None]]) -> tuple[np.ndarray | None, str | None]:
    """BirdNET's logits for the label set of one file's windows every ``hop`` samples (spectral kinds)."""
    from birdpipe.birdnet.inputs import BirdNETStream
    from birdpipe.data.audio import stream_audio

    path, hop, columns = job
    config = FeatureConfig(kind="birdnet", sample_rate=birdnet.SAMPLE_RATE, n_fft=birdnet.WINDOW_SAMPLES,
                           hop_length=hop, birdnet_inputs="embedding")  # fmt: skip
    try:
        parts = [logits for _, logits in BirdNETStream(config, columns).stream(stream_audio(path, birdnet.SAMPLE_RATE))]
    except AudioError as exc:
        return None, exc.reason
    return (np.concatenate(parts) if parts else np.zeros((0, len(columns)), np.float32)), None


def build_soundscape_cache(
    files: pd.DataFrame,
    params: FeatureParams,
    hop_seconds: float,
    species: list[str],
    names: dict[str, str] | None,
    out_dir: str | Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Features and BirdNET logits of every soundscape file (``files``: file, path, split) into ``out_dir``."""
    config = soundscape_config(params, hop_seconds)
    columns = birdnet.match_species(species, names)
    hop_samples = round(hop_seconds * birdnet.SAMPLE_RATE)
    ordered = pd.concat([files[files["split"] == split] for split in SPLITS]).reset_index(drop=True)
    feature_jobs = [(str(path), config, columns) for path in ordered["path"]]
    logit_jobs = [] if config.kind == "birdnet" else [(str(path), hop_samples, columns) for path in ordered["path"]]
    rows, offsets, logit_offsets = [], dict.fromkeys(SPLITS, 0), dict.fromkeys(SPLITS, 0)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        handles = {s: (tmp / f"{s}.raw").open("wb") for s in SPLITS}
        logit_handles = {s: (tmp / f"{s}.logits.raw").open("wb") for s in SPLITS}
        with ProcessPoolExecutor(max_workers=cpu_workers(params.workers), initializer=_init_worker) as pool:
            features = pool.map(_feature_job, feature_jobs, chunksize=1)
            logits = pool.map(_logit_job, logit_jobs, chunksize=1) if logit_jobs else None
            bar = tqdm(total=len(ordered), desc="soundscapes: features", unit="file", disable=not progress or None)
            for row in ordered.itertuples():
                frames, frame_logits, error = next(features)
                if logits is not None and error is None:
                    frame_logits, error = next(logits)
                if error is not None:
                    raise AudioError(row.path, error)  # ingest of soundscapes checked them: this is a real fault
                bar.update()
                handles[row.split].write(np.ascontiguousarray(frames).tobytes())
                logit_handles[row.split].write(np.ascontiguousarray(frame_logits, dtype=np.float32).tobytes())
                start, logit_start = offsets[row.split], logit_offsets[row.split]
                offsets[row.split] += frames.shape[0]
                logit_offsets[row.split] += frame_logits.shape[0]
                rows.append({"file": row.file, "split": row.split, "start": start, "stop": offsets[row.split],
                             "logit_start": logit_start, "logit_stop": logit_offsets[row.split]})  # fmt: skip
            bar.close()
        for split in SPLITS:
            handles[split].close()
            logit_handles[split].close()
            shape = (offsets[split], config.channels, config.bins)
            _write_npy(tmp / f"{split}.raw", tmp / f"{split}.npy", np.dtype(config.dtype), shape)
            shape = (logit_offsets[split], len(species))
            _write_npy(tmp / f"{split}.logits.raw", tmp / f"{split}.logits.npy", np.dtype(np.float32), shape)
        write_table(pd.DataFrame(rows), tmp / "index.csv")
        summary = {
            "config": config.to_dict(),
            "species": species,
            "hop_seconds": hop_seconds,
            "birdnet_window_seconds": birdnet.WINDOW_SECONDS,
            "birdnet_known": [c is not None for c in columns],
            "birdnet_model_checksum": birdnet.model_checksum(),
            "files": {s: int((ordered["split"] == s).sum()) for s in SPLITS},
            "frames": offsets,
        }
        write_json(summary, tmp / "config.json")
    return summary


@dataclass
class SoundscapeCache:
    """A read-only view of a soundscape feature cache."""

    root: Path
    config: FeatureConfig
    species: list[str]
    index: pd.DataFrame
    info: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path = "data/soundscapes/features") -> SoundscapeCache:
        root = Path(root)
        if not (root / "config.json").exists():
            raise PipelineError(f"no soundscape feature cache at {root}: run `dvc repro soundscapes` first")
        info = json.loads((root / "config.json").read_text())
        index = pd.read_csv(root / "index.csv", dtype={"file": str}, keep_default_na=False)
        return cls(root, FeatureConfig.from_dict(info["config"]), info["species"], index, info)

    @functools.cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        return {split: np.load(self.root / f"{split}.npy", mmap_mode="r") for split in SPLITS}

    @functools.cached_property
    def logits(self) -> dict[str, np.ndarray]:
        return {split: np.load(self.root / f"{split}.logits.npy", mmap_mode="r") for split in SPLITS}

    @property
    def birdnet_known(self) -> np.ndarray:
        return np.array(self.info["birdnet_known"], dtype=bool)

    def files(self, split: str) -> pd.DataFrame:
        return self.index[self.index["split"] == split].reset_index(drop=True)
