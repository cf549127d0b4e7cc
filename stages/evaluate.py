"""evaluate: models/ + feature cache -> metrics/eval.json, metrics/per_class.csv, predictions and plots."""

import pandas as pd

from birdpipe.bundle import load_bundle
from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import write_json, write_table
from birdpipe.common.params import load_params
from birdpipe.common.workers import resolve_device
from birdpipe.evaluation.evaluate import evaluate_split, micro_pr_curve, predictions_table
from birdpipe.evaluation.plots import confusion_matrix_png, f1_vs_count_png
from birdpipe.features.cache import FeatureCache


def main() -> None:
    params = load_params()
    device = resolve_device(params.train.device)
    bundle = load_bundle("models", device)
    cache = FeatureCache.open("data/features")
    results = {split: evaluate_split(bundle, cache, split, params.evaluate, device) for split in ("val", "test")}
    species = bundle.species
    test = results["test"]
    write_json({split: r["metrics"] for split, r in results.items()}, "metrics/eval.json")
    write_table(pd.DataFrame(test["per_class"]), "metrics/per_class.csv")
    write_table(pd.concat([predictions_table(r, species, s) for s, r in results.items()]), "metrics/predictions.csv")
    write_table(pd.DataFrame(test["confusion"], columns=["actual", "predicted", "count"]), "plots/confusion.csv")
    per_class = pd.DataFrame(test["per_class"])
    write_table(per_class.loc[per_class["support"] > 0, ["species", "f1"]], "plots/per_class_f1.csv")
    write_table(micro_pr_curve(test["y_true"], test["probs"]), "plots/precision_recall.csv")
    confusion_matrix_png(test["y_true"], test["probs"].argmax(axis=1), species, "plots/confusion_matrix.png",
                         "test confusion matrix (rows normalised)")  # fmt: skip
    f1_vs_count_png(test["per_class"], "plots/f1_vs_train_count.png", params.evaluate.rare_threshold,
                    "per-species test F1 against training recordings")  # fmt: skip
    for split, r in results.items():
        m = r["metrics"]
        print(f"{split}: accuracy {m['accuracy']:.4f}  F1-macro {m['f1_macro']:.4f}  F1-weighted {m['f1_weighted']:.4f}"
              f"  mAP {m['map']:.4f}  F1 rare {m['f1_rare']:.4f}  F1 common {m['f1_common']:.4f}"
              f"  ({m['recordings']} recordings; window F1-macro {m['window']['f1_macro']:.4f})")  # fmt: skip


if __name__ == "__main__":
    run_stage("evaluate", main)
