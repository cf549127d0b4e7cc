"""The feature cache: every recording of the manifest turned into features once, stored memory-mappable.

The features stage runs before the split: a new split, seed or phase reuses the cache as it is, and every
recording comes from the per-recording store (:mod:`birdpipe.features.store`) when its bytes were extracted
before under the same config. Layout (``data/features/``): ``frames.npy`` holds every recording concatenated
along time, shape (frames, channels, bins), memory-mappable; ``index.csv`` maps each recording (id, label,
background species) to its frame range; ``stats.npy`` holds per-recording MFCC mean and std (for the baseline);
``config.json`` holds the feature config, the species the manifest names and, for BirdNET features, which of
them BirdNET knows; BirdNET caches add ``logits.npy`` (BirdNET's own logits per frame for those species, 0 for
the ones it lacks). :meth:`FeatureCache.open` joins the split (``data/split.csv``) to it: the label set is the
training split's species, and every split reads the same arrays through its recordings' frame ranges. Training
crops windows from the memmap and never decodes audio.
"""

from __future__ import annotations

import functools
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from birdpipe.common.errors import PipelineError
from birdpipe.common.outputs import atomic_path, write_json, write_table
from birdpipe.common.params import FeatureParams
from birdpipe.common.workers import cpu_workers
from birdpipe.data.audio import AudioError
from birdpipe.data.labels import NO_BIRD, LabelMatcher
from birdpipe.features.spectral import STATS_MFCC, FeatureConfig
from birdpipe.features.store import FeatureStore, extract, store_key

SPLITS = ("train", "val", "test")


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core; also keeps results independent of the core count


def _extract_job(job: tuple) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, str | None, bool]:
    """(features, baseline summary, BirdNET logits of all its classes or None, error reason or None, whether it came
    from the store) of one recording: from the store when it holds the recording's bytes under this config."""
    path, md5, config, max_seconds, activity_windows, activity_seconds, store = job
    stored = store.get(md5)
    if stored is not None:
        return (*stored, None, True)
    try:
        features, summary, logits = extract(path, config, max_seconds, activity_windows, activity_seconds)
    except AudioError as exc:
        return None, None, None, exc.reason, False
    store.put(md5, features, summary, logits)
    return features, summary, logits, None, False


def _write_npy(raw: Path, target: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Wrap a raw C-order dump as a .npy file (header, then the bytes) without loading it."""
    with target.open("wb") as out, raw.open("rb") as source:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(source, out, length=1 << 24)
    raw.unlink()


def _names(table: pd.DataFrame) -> dict[str, str]:
    """Scientific name per label, when the source gives them."""
    if "scientific_name" not in table.columns:
        return {}
    first = table.drop_duplicates("label").set_index("label")["scientific_name"]
    return {str(k): str(v) for k, v in first.items() if isinstance(v, str) and v.strip()}


def build_cache(
    table: pd.DataFrame,
    params: FeatureParams,
    out_dir: str | Path,
    on_bad_file: str = "skip",
    progress: bool = True,
    store_root: Path | None = None,
) -> dict[str, Any]:
    """Features of every recording of ``table`` (the manifest; a ``split`` column is kept when present) into
    ``out_dir``, reading and filling the store under ``store_root`` (None: no store); return a summary."""
    config = FeatureConfig.from_params(params)
    store = FeatureStore(store_root, store_key(config, params.max_seconds, params.activity.windows,
                                               params.activity.seconds))  # fmt: skip
    table = table.reset_index(drop=True)
    species = sorted(set(table["label"]) - {NO_BIRD})
    birdnet_info: dict[str, Any] | None = None
    columns: list[int | None] = []
    if config.kind == "birdnet":
        from birdpipe.birdnet.inputs import species_columns

        birdnet_info = species_columns(species, table)
        columns = birdnet_info.pop("columns")
    md5 = table["md5"] if "md5" in table.columns else pd.Series([None] * len(table))
    jobs = [(row.path, digest, config, params.max_seconds, params.activity.windows, params.activity.seconds, store)
            for row, digest in zip(table.itertuples(), md5, strict=True)]  # fmt: skip
    dtype = np.dtype(config.dtype)
    skipped: list[dict[str, str]] = []
    index_rows, summaries = [], []
    hits = 0
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        frames_out = (tmp / "frames.raw").open("wb")
        logits_out = (tmp / "logits.raw").open("wb") if columns else None
        offset = 0
        with ProcessPoolExecutor(max_workers=cpu_workers(params.workers), initializer=_init_worker) as pool:
            results = pool.map(_extract_job, jobs, chunksize=1 if columns else 2)
            bar = tqdm(total=len(jobs), desc="features: extracting", unit="rec", disable=not progress or None)
            for row, (features, summary, logits, error, cached) in zip(table.itertuples(), results, strict=True):
                bar.update()
                hits += cached
                if error is not None:
                    if on_bad_file == "error":
                        raise AudioError(row.path, error)
                    skipped.append({"path": row.path, "reason": error})
                    continue
                frames_out.write(np.ascontiguousarray(features, dtype=dtype).tobytes())
                if logits_out is not None:
                    logits_out.write(_species_logits(logits, columns).tobytes())
                entry = {"id": row.id, "label": row.label, "start": offset, "stop": offset + features.shape[0],
                         "seconds": round(features.shape[0] / config.frames_per_second, 3),
                         "background_species": getattr(row, "background_species", "") or ""}  # fmt: skip
                if "split" in table.columns:
                    entry["split"] = row.split
                offset += features.shape[0]
                index_rows.append(entry)
                summaries.append(summary)
            bar.close()
        frames_out.close()
        if logits_out is not None:
            logits_out.close()
        if not index_rows:
            reasons = "; ".join(f"{Path(item['path']).name}: {item['reason']}" for item in skipped[:3])
            raise AudioError(out_dir, f"no recording could be turned into features ({len(skipped)} failed: {reasons})")
        _write_npy(tmp / "frames.raw", tmp / "frames.npy", dtype, (offset, config.channels, config.bins))
        if logits_out is not None:
            _write_npy(tmp / "logits.raw", tmp / "logits.npy", np.dtype(np.float32), (offset, len(species)))
        index = pd.DataFrame(index_rows)
        write_table(index, tmp / "index.csv")
        np.save(tmp / "stats.npy", np.stack(summaries) if summaries else np.zeros((0, 2 * STATS_MFCC), np.float32))
        summary = {
            "config": config.to_dict(),
            "species": species,
            "names": _names(table),
            "channels": config.channels,
            "bins": config.bins,
            "frames_per_second": config.frames_per_second,
            "max_seconds": params.max_seconds,
            "activity": params.activity.model_dump(),
            "recordings": len(index),
            "negatives": int((index["label"] == NO_BIRD).sum()),
            "frames": offset,
            "hours": round(offset / config.frames_per_second / 3600, 4),
            "skipped": skipped,
        }
        if birdnet_info is not None:
            summary["birdnet"] = birdnet_info
        write_json(summary, tmp / "config.json")
    summary["extracted"] = len(jobs) - hits - len(skipped)  # reported by the stage, not stored: it varies by store
    summary["from_store"] = hits
    return summary


def _species_logits(logits: np.ndarray, columns: list[int | None]) -> np.ndarray:
    """BirdNET's logits of the cache's species (0 for those it lacks) from the logits of all its classes."""
    from birdpipe.birdnet.inputs import logit_columns

    return np.ascontiguousarray(logit_columns(logits, columns), dtype=np.float32)


def background_labels(table: pd.DataFrame, species: list[str], names: dict[str, str] | None = None) -> dict[Any, str]:
    """Per row, the label-set species named in its ``background_species`` (``;``-joined, the focal excluded),
    matched by label or scientific name (``names``, else the table's ``scientific_name``) as annotation tables are."""
    if "background_species" not in table.columns:
        return dict.fromkeys(table.index, "")
    if names is None:
        names = _names(table[table["label"].isin(species)])
    matcher = LabelMatcher(species, names)
    found = {}
    for index, label, value in zip(table.index, table["label"], table["background_species"], strict=True):
        matched, _ = matcher.match_all(value)
        found[index] = ";".join(m for m in matched if m != label)
    return found


# ----------------------------------------------------------------------------------------- reading
class ColumnView:
    """Rows of a (frames, all species) memmap restricted to some columns, read only when sliced."""

    def __init__(self, array: np.ndarray, columns: np.ndarray) -> None:
        self.array = array
        self.columns = columns
        self.shape = (array.shape[0], len(columns))

    def __getitem__(self, rows: Any) -> np.ndarray:
        return np.asarray(self.array[rows])[..., self.columns]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self.array[:, self.columns], dtype=dtype)


@dataclass
class FeatureCache:
    """A read-only view of the cache joined to a split: memory-mapped arrays, the index and the label set."""

    root: Path
    config: FeatureConfig
    species: list[str]
    index: pd.DataFrame
    info: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path = "data/features", split: str | Path | pd.DataFrame | None = None) -> FeatureCache:
        """The cache at ``root`` with the split of ``split`` (a split table or its CSV; None: the cache's own
        ``split`` column, as caches built from a split table have). The label set is the training split's
        species; recordings of species absent from training are left out, no-bird negatives get label_index -1."""
        root = Path(root)
        if not (root / "config.json").exists():
            raise PipelineError(f"no feature cache at {root}: run `dvc repro features` first")
        info = json.loads((root / "config.json").read_text())
        if "frames" not in info or not (root / "frames.npy").exists():
            raise PipelineError(f"the feature cache at {root} has an older layout: rerun `dvc repro features`")
        index = pd.read_csv(root / "index.csv", dtype={"id": str, "label": str, "background_species": str},
                            keep_default_na=False)  # fmt: skip
        index["row"] = np.arange(len(index))  # the recording's row of stats.npy
        if split is not None:
            table = split if isinstance(split, pd.DataFrame) else pd.read_csv(split, dtype={"id": str},
                                                                               keep_default_na=False)  # fmt: skip
            # The split's label wins: split.small_classes negative makes some species' recordings no-bird negatives.
            taken = ["id", "split"] + (["label"] if "label" in table.columns else [])
            index = index.drop(columns=[c for c in taken[1:] if c in index.columns])
            index = index.merge(table[taken], on="id", how="inner", validate="one_to_one")
        elif "split" not in index.columns:
            raise PipelineError(f"the feature cache at {root} holds no split: open it with data/split.csv")
        species = sorted(set(index.loc[index["split"] == "train", "label"]) - {NO_BIRD})
        label_index = {label: i for i, label in enumerate(species)} | {NO_BIRD: -1}
        index = index[index["label"].isin(label_index)].reset_index(drop=True)
        index["label_index"] = index["label"].map(label_index).astype(int)
        background = background_labels(index, species, info.get("names", {}))
        index["background"] = [background[i] for i in index.index]
        cache_species = info["species"]
        if "birdnet" in info:
            matched = {s: b for s, b in info["birdnet"]["matched"].items() if s in species}
            info = {**info, "birdnet": {**info["birdnet"], "matched": matched, "n_matched": len(matched),
                                        "n_species": len(species),
                                        "unmatched": [s for s in species if s not in matched]}}  # fmt: skip
        info = {**info, "label_set": species, "cache_species": cache_species}
        return cls(root, FeatureConfig.from_dict(info["config"]), species, index, info)

    @functools.cached_property
    def frames(self) -> np.ndarray:
        return np.load(self.root / "frames.npy", mmap_mode="r")

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The frames every split's recordings index into (one array: a recording's start/stop are global)."""
        return dict.fromkeys(SPLITS, self.frames)

    def recordings(self, split: str, negatives: bool = False) -> pd.DataFrame:
        """The split's recordings of the label set's species; with ``negatives`` also its no-bird recordings
        (``label_index`` -1)."""
        rows = self.index["split"] == split
        if not negatives:
            rows &= self.index["label_index"] >= 0
        return self.index[rows].reset_index(drop=True)

    def spans(self, split: str, negatives: bool = True) -> list[tuple[int, int]]:
        """Frame ranges of the split's recordings (for statistics over the split only)."""
        rows = self.recordings(split, negatives)
        return list(zip(rows["start"].astype(int), rows["stop"].astype(int), strict=True))

    def stats(self) -> np.ndarray:
        """Per-recording MFCC summaries, one row per row of ``index``."""
        return np.load(self.root / "stats.npy")[self.index["row"].to_numpy()]

    @property
    def birdnet_known(self) -> np.ndarray | None:
        """Which species BirdNET's own classifier knows (kind birdnet), in species order; else None."""
        info = self.info.get("birdnet")
        return None if info is None else np.array([s in info["matched"] for s in self.species])

    @functools.cached_property
    def birdnet_logits(self) -> dict[str, ColumnView]:
        """BirdNET's logits per frame for the label set (0 where it lacks the species); every split reads the same
        frames through its recordings' ranges."""
        if self.info.get("birdnet") is None:
            raise PipelineError(
                f"the feature cache at {self.root} holds no BirdNET logits (features.kind is not birdnet)"
            )
        columns = np.array([self.info["cache_species"].index(s) for s in self.species], dtype=np.int64)
        view = ColumnView(np.load(self.root / "logits.npy", mmap_mode="r"), columns)
        return dict.fromkeys(SPLITS, view)
