"""baselines: feature cache -> metrics/baselines.json (majority class, MFCC statistics + logistic regression)."""

from birdpipe.baselines import run_baselines
from birdpipe.errors import run_stage
from birdpipe.features import FeatureCache
from birdpipe.outputs import write_json
from birdpipe.params import load_params


def main() -> None:
    params = load_params()
    result = run_baselines(FeatureCache.open("data/features"), params)
    write_json(result, "metrics/baselines.json")
    for name in ("majority", "mfcc_logreg"):
        m = result[name]["test"]
        print(f"{name}: test accuracy {m['accuracy']:.4f}  F1-macro {m['f1_macro']:.4f}  mAP {m['map']:.4f}")


if __name__ == "__main__":
    run_stage("baselines", main)
