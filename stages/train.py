"""train: feature cache + weights + stats -> models/network/ (the trained network of the bundle), metrics/train.json,
dvclive/ curves."""

from pathlib import Path

from birdpipe.bundle import NETWORK, save_bundle
from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import atomic_path, read_json, read_table, write_json
from birdpipe.common.params import load_params
from birdpipe.evaluation.plots import training_curves_png
from birdpipe.features.cache import FeatureCache
from birdpipe.training.ensemble import fit_ensemble

INPUTS = [
    Path("data/features/config.json"),
    Path("data/features/index.csv"),
    Path("data/split.csv"),
    Path("data/class_weights.json"),
    Path("data/feature_stats.json"),
]


def species_names(split_csv: str = "data/split.csv") -> dict[str, dict[str, str]]:
    """Scientific and English names per label, when the source gives them."""
    table = read_table(split_csv)
    columns = [c for c in ("scientific_name", "english_name") if c in table.columns]
    if not columns:
        return {}
    first = table.drop_duplicates("label").set_index("label")[columns]
    return {label: {c: str(v) for c, v in row.items() if isinstance(v, str) and v} for label, row in first.iterrows()}


TIME_FILE = "metrics/train_time.json"


def main() -> None:
    params = load_params()
    cache = FeatureCache.open("data/features", "data/split.csv")
    result = fit_ensemble(
        params,
        cache,
        read_json("data/class_weights.json"),
        read_json("data/feature_stats.json"),
        names=species_names(),
        fingerprint_inputs=INPUTS,
    )
    if result is None:  # a DDP process other than rank 0: rank 0 writes the outputs
        return
    with atomic_path(Path("models") / NETWORK) as folder:
        save_bundle(folder, result.model, result.info)
    # wall-clock seconds go to a file no stage declares (dvc.yaml lists it under top-level metrics), so that a
    # rerun on another machine of the same kind leaves dvc.lock unchanged
    timed = {key: value for key, value in result.metrics["train"].items() if key != "seconds"}
    write_json({**result.metrics, "train": timed}, "metrics/train.json")
    write_json({"train": {"seconds": result.metrics["train"]["seconds"]}}, TIME_FILE)
    training_curves_png(result.history, "plots/training_curves.png")
    best = result.metrics["train"]
    print(f"train: best epoch {best['best_epoch']} of {best['epochs']}, val F1-macro {best['best_val_f1_macro']:.4f}, "
          f"{best['seconds']:.0f} s, {result.metrics['model']['params']:,} parameters")  # fmt: skip


if __name__ == "__main__":
    run_stage("train", main)
