"""The feature cache: every recording of the split turned into features once, stored memory-mappable.

Cache layout (``data/features/``): ``<split>.npy`` holds every recording of the split concatenated along
time, shape (frames, channels, bins), memory-mappable; ``index.csv`` maps each recording to its frame
range; ``stats.npy`` holds per-recording MFCC mean and std (for the baseline); ``config.json`` holds the
feature config and the species list; BirdNET caches add ``<split>.logits.npy`` (BirdNET's own logits for
the species it knows). Training crops windows from the memmap and never decodes audio.
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
from birdpipe.features.spectral import STATS_MFCC, FeatureConfig, extract_recording

SPLITS = ("train", "val", "test")


def _init_worker() -> None:
    torch.set_num_threads(1)  # one process per core; also keeps results independent of the core count


def _extract_job(job: tuple) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None, str | None]:
    """(features, baseline summary, BirdNET logits or None, error reason or None) of one recording."""
    path, config, max_seconds, activity_windows, activity_seconds, birdnet_columns = job
    try:
        if config.kind == "birdnet":
            from birdpipe.features.embeddings import extract_birdnet  # BirdNET's runtime only when asked for

            return (*extract_birdnet(path, config, max_seconds, birdnet_columns), None)
        features, summary = extract_recording(path, config, max_seconds, activity_windows, activity_seconds)
    except AudioError as exc:
        return None, None, None, exc.reason
    if not np.isfinite(features).all():  # e.g. float16 overflow: never let a non-finite value into a cache
        return None, None, None, "non-finite feature values (overflow in the feature dtype)"
    return features, summary, None, None


def _write_npy(raw: Path, target: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """Wrap a raw C-order dump as a .npy file (header, then the bytes) without loading it."""
    with target.open("wb") as out, raw.open("rb") as source:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(out, header)
        shutil.copyfileobj(source, out, length=1 << 24)
    raw.unlink()


def build_cache(
    table: pd.DataFrame,
    params: FeatureParams,
    out_dir: str | Path,
    on_bad_file: str = "skip",
    progress: bool = True,
) -> dict[str, Any]:
    """Extract features for every recording of the split table into ``out_dir``; return a summary."""
    config = FeatureConfig.from_params(params)
    species = sorted(set(table.loc[table["split"] == "train", "label"]) - {NO_BIRD})
    label_index = {label: i for i, label in enumerate(species)} | {NO_BIRD: -1}  # negatives: no species
    unknown = table[~table["label"].isin(label_index)]
    table = table[table["label"].isin(label_index)]
    ordered = pd.concat([table[table["split"] == split] for split in SPLITS])
    background = background_labels(ordered, species)
    birdnet_info: dict[str, Any] | None = None
    columns: list[int | None] = []
    if config.kind == "birdnet":
        from birdpipe.features.embeddings import species_columns

        birdnet_info = species_columns(species, table)
        columns = birdnet_info.pop("columns")
    jobs = [
        (row.path, config, params.max_seconds, params.activity.windows, params.activity.seconds, columns)
        for row in ordered.itertuples()
    ]
    dtype = np.dtype(config.dtype)
    skipped = [{"path": p, "reason": "species absent from train"} for p in unknown["path"]]
    index_rows = []
    summaries = []
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        handles = {split: (tmp / f"{split}.raw").open("wb") for split in SPLITS}
        logit_handles = {split: (tmp / f"{split}.logits.raw").open("wb") for split in SPLITS} if columns else {}
        offsets = dict.fromkeys(SPLITS, 0)
        with ProcessPoolExecutor(max_workers=cpu_workers(params.workers), initializer=_init_worker) as pool:
            results = pool.map(_extract_job, jobs, chunksize=1 if columns else 2)
            bar = tqdm(total=len(jobs), desc="features: extracting", unit="rec", disable=not progress or None)
            for row, (features, summary, logits, error) in zip(ordered.itertuples(), results, strict=True):
                bar.update()
                if error is not None:
                    if on_bad_file == "error":
                        raise AudioError(row.path, error)
                    skipped.append({"path": row.path, "reason": error})
                    continue
                handles[row.split].write(np.ascontiguousarray(features).tobytes())
                if logits is not None:
                    logit_handles[row.split].write(np.ascontiguousarray(logits, dtype=np.float32).tobytes())
                start = offsets[row.split]
                offsets[row.split] += features.shape[0]
                index_rows.append(
                    {
                        "id": row.id,
                        "split": row.split,
                        "label": row.label,
                        "label_index": label_index[row.label],
                        "background": background[row.Index],
                        "start": start,
                        "stop": offsets[row.split],
                        "seconds": round(features.shape[0] / config.frames_per_second, 3),
                    }
                )
                summaries.append(summary)
            bar.close()
        if not index_rows:
            for handle in [*handles.values(), *logit_handles.values()]:
                handle.close()
            reasons = "; ".join(f"{Path(item['path']).name}: {item['reason']}" for item in skipped[:3])
            raise AudioError(out_dir, f"no recording could be turned into features ({len(skipped)} failed: {reasons})")
        for split, handle in handles.items():
            handle.close()
            shape = (offsets[split], config.channels, config.bins)
            _write_npy(tmp / f"{split}.raw", tmp / f"{split}.npy", dtype, shape)
            if split in logit_handles:
                logit_handles[split].close()
                shape = (offsets[split], len(species))
                _write_npy(tmp / f"{split}.logits.raw", tmp / f"{split}.logits.npy", np.dtype(np.float32), shape)
        index = pd.DataFrame(index_rows)
        write_table(index, tmp / "index.csv")
        np.save(tmp / "stats.npy", np.stack(summaries) if summaries else np.zeros((0, 2 * STATS_MFCC), np.float32))
        summary = {
            "config": config.to_dict(),
            "species": species,
            "channels": config.channels,
            "bins": config.bins,
            "frames_per_second": config.frames_per_second,
            "max_seconds": params.max_seconds,
            "activity": params.activity.model_dump(),
            "recordings": {s: int((index["split"] == s).sum()) if len(index) else 0 for s in SPLITS},
            "negatives": {s: int(((index["split"] == s) & (index["label_index"] < 0)).sum()) for s in SPLITS},
            "frames": offsets,
            "hours": {s: round(offsets[s] / config.frames_per_second / 3600, 4) for s in SPLITS},
            "skipped": skipped,
        }
        if birdnet_info is not None:
            summary["birdnet"] = birdnet_info
        write_json(summary, tmp / "config.json")
    return summary


def background_labels(table: pd.DataFrame, species: list[str]) -> dict[Any, str]:
    """Per row, the label-set species named in its ``background_species`` (``;``-joined, the focal excluded),
    matched by label or scientific name as annotation tables are."""
    if "background_species" not in table.columns:
        return dict.fromkeys(table.index, "")
    names = {}
    if "scientific_name" in table.columns:
        first = table[table["label"].isin(species)].drop_duplicates("label").set_index("label")["scientific_name"]
        names = {str(k): str(v) for k, v in first.items() if isinstance(v, str) and v.strip()}
    matcher = LabelMatcher(species, names)
    found = {}
    for index, label, value in zip(table.index, table["label"], table["background_species"], strict=True):
        matched, _ = matcher.match_all(value)
        found[index] = ";".join(m for m in matched if m != label)
    return found


# ----------------------------------------------------------------------------------------- reading
@dataclass
class FeatureCache:
    """A read-only view of the cache: memory-mapped arrays and the index."""

    root: Path
    config: FeatureConfig
    species: list[str]
    index: pd.DataFrame
    info: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path = "data/features") -> FeatureCache:
        root = Path(root)
        if not (root / "config.json").exists():
            raise PipelineError(f"no feature cache at {root}: run `dvc repro features` first")
        info = json.loads((root / "config.json").read_text())
        index = pd.read_csv(root / "index.csv", dtype={"id": str, "label": str}, keep_default_na=False)
        return cls(root, FeatureConfig.from_dict(info["config"]), info["species"], index, info)

    @functools.cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        return {split: np.load(self.root / f"{split}.npy", mmap_mode="r") for split in SPLITS}

    def recordings(self, split: str, negatives: bool = False) -> pd.DataFrame:
        """The split's recordings of the label set's species; with ``negatives`` also its no-bird recordings
        (``label_index`` -1)."""
        rows = self.index["split"] == split
        if not negatives:
            rows &= self.index["label_index"] >= 0
        return self.index[rows].reset_index(drop=True)

    def stats(self) -> np.ndarray:
        return np.load(self.root / "stats.npy")

    @property
    def birdnet_known(self) -> np.ndarray | None:
        """Which species BirdNET's own classifier knows (kind birdnet), in species order; else None."""
        info = self.info.get("birdnet")
        return None if info is None else np.array([s in info["matched"] for s in self.species])

    @functools.cached_property
    def birdnet_logits(self) -> dict[str, np.ndarray]:
        """BirdNET's logits per frame for our species (0 where it lacks the species), per split."""
        if self.info.get("birdnet") is None:
            raise PipelineError(
                f"the feature cache at {self.root} holds no BirdNET logits (features.kind is not birdnet)"
            )
        return {split: np.load(self.root / f"{split}.logits.npy", mmap_mode="r") for split in SPLITS}
