"""fuse: models/network + val recordings and soundscapes -> models/fusion/ (fusion with BirdNET, per-species
thresholds), metrics/fusion.json."""

from pathlib import Path

import numpy as np

from birdpipe.bundle import FUSION, load_bundle, save_fusion
from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import atomic_path, write_json, write_table
from birdpipe.common.params import load_params
from birdpipe.common.workers import resolve_device
from birdpipe.evaluation.fuse import fit_fuse, open_soundscapes
from birdpipe.features.cache import FeatureCache


def main() -> None:
    params = load_params()
    device = resolve_device(params.train.device)
    bundle = load_bundle("models", device)
    cache = FeatureCache.open("data/features", "data/split.csv")
    bundle.check_matches(cache.species, cache.config, "the feature cache data/features")
    soundscapes = open_soundscapes("data/soundscapes")
    fusion, thresholds = fit_fuse(bundle, cache, soundscapes, params, device)
    with atomic_path(Path("models") / FUSION) as folder:
        save_fusion(folder, fusion)
        if thresholds is not None:
            write_table(thresholds, folder / "thresholds.csv")
    summary = {}
    for part in ("recording", "window"):
        fitted = fusion[part] or {}
        if fitted.get("applicable"):
            summary[f"{part}_weight"] = fitted["weight"]
    if (fusion["recording"] or {}).get("cross_fit"):  # the val score to compare recipes by (out-of-fold)
        honest = fusion["recording"]["cross_fit"]
        summary["val_f1_macro_crossfit"] = honest["val_f1_macro"]
        summary["val_f1_macro_model"] = honest["val_f1_macro_model"]
    if thresholds is not None:
        summary["thresholds"] = {
            "median": float(np.median(thresholds["threshold"])),
            "never": int((thresholds["method"] == "none").sum()),
            "by_method": thresholds["method"].value_counts().to_dict(),
        }
    write_json(summary, "metrics/fusion.json")
    print(f"fuse: {summary or 'nothing to fuse (no BirdNET fusion, no soundscapes)'}")


if __name__ == "__main__":
    run_stage("fuse", main)
