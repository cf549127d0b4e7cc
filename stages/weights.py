"""weights: data/features + data/split.csv -> data/class_weights.json and data/feature_stats.json (training split
only)."""

from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import write_json
from birdpipe.common.params import load_params
from birdpipe.features.cache import FeatureCache
from birdpipe.training.weights import class_weights, feature_stats


def main() -> None:
    params = load_params()
    cache = FeatureCache.open("data/features", "data/split.csv")
    train = cache.recordings("train")
    counts = train["label"].value_counts()
    weights = class_weights(cache.species, [int(counts[s]) for s in cache.species], params.weights)
    birdnet = cache.config.kind == "birdnet"
    parts = list(cache.config.birdnet_parts.values()) if birdnet else None
    stats = feature_stats(cache.frames, per_bin=birdnet, parts=parts, spans=cache.spans("train"))
    write_json(weights, "data/class_weights.json")
    write_json(stats, "data/feature_stats.json")
    ranges = ", ".join(f"{m} {v['min']:.3g}-{v['max']:.3g}" for m, v in weights["methods"].items())
    print(f"weights: imbalance {weights['imbalance_ratio']:.0f}:1; {ranges}")


if __name__ == "__main__":
    run_stage("weights", main)
