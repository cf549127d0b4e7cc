"""baselines: feature cache -> metrics/baselines.json (majority, MFCC + LR; BirdNET zero-shot and BirdNET + LR)."""

from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import write_json
from birdpipe.common.params import load_params
from birdpipe.evaluation.baselines import run_baselines
from birdpipe.features.cache import FeatureCache


def main() -> None:
    params = load_params()
    result = run_baselines(FeatureCache.open("data/features", "data/split.csv"), params)
    write_json(result, "metrics/baselines.json")
    for name in ("majority", "mfcc_logreg", "birdnet_zero_shot", "birdnet_logreg"):
        if "test" not in result.get(name, {}):
            if name in result:
                print(f"{name}: not applicable ({result[name]['reason']})")
            continue
        m = result[name]["test"]
        print(f"{name}: test accuracy {m['accuracy']:.4f}  F1-macro {m['f1_macro']:.4f}  mAP {m['map']:.4f}")


if __name__ == "__main__":
    run_stage("baselines", main)
