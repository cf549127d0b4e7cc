"""evaluate: models/ + feature cache + soundscapes -> metrics/eval.json (recordings), metrics/soundscapes.json
(segments), per-species tables, predictions and plots."""

import pandas as pd

from birdpipe.bundle import load_bundle
from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import write_json, write_table
from birdpipe.common.params import load_params
from birdpipe.common.workers import resolve_device
from birdpipe.evaluation.evaluate import evaluate_split, micro_pr_curve, predictions_table
from birdpipe.evaluation.fuse import open_soundscapes
from birdpipe.evaluation.plots import confusion_matrix_png, f1_vs_count_png, soundscape_png
from birdpipe.evaluation.soundscapes import evaluate_soundscapes
from birdpipe.features.cache import FeatureCache


def main() -> None:
    params = load_params()
    device = resolve_device(params.train.device)
    bundle = load_bundle("models", device)
    cache = FeatureCache.open("data/features", "data/split.csv")
    bundle.check_matches(cache.species, cache.config, "the feature cache data/features")
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
    soundscapes = open_soundscapes("data/soundscapes")
    if soundscapes is None:
        write_json({"soundscape": None}, "metrics/soundscapes.json")
        write_table(pd.DataFrame(columns=["species"]), "metrics/soundscape_per_species.csv")
        write_table(pd.DataFrame(columns=["model", "curve", "recall", "precision"]), "plots/soundscape_pr.csv")
        soundscape_png(None, None, "plots/soundscape_pr.png")
    else:
        scored = evaluate_soundscapes(bundle, soundscapes, params, device)
        write_json(scored["metrics"], "metrics/soundscapes.json")
        write_table(scored["per_species"], "metrics/soundscape_per_species.csv")
        write_table(scored["curves"], "plots/soundscape_pr.csv")
        soundscape_png(scored["curves"], scored["per_species"], "plots/soundscape_pr.png")
        for split, m in scored["metrics"]["soundscape"].items():
            line = f"soundscapes {split}: cmAP {m['cmap']:.4f}  AUROC {m['auroc']:.4f}  T1 {m['t1']:.4f}"
            if "empty_detection_rate" in m:
                line += f"  P {m['precision']:.3f} R {m['recall']:.3f}"
                line += f"  bird-free with a detection {m['empty_detection_rate']:.3f}"
            if "birdnet_zero_shot" in m:
                line += f"  (BirdNET zero-shot cmAP {m['birdnet_zero_shot']['cmap']:.4f})"
            print(line)
    for split, r in results.items():
        m = r["metrics"]
        print(f"{split}: accuracy {m['accuracy']:.4f}  F1-macro {m['f1_macro']:.4f}  F1-weighted {m['f1_weighted']:.4f}"
              f"  mAP {m['map']:.4f}  F1 rare {m['f1_rare']:.4f}  F1 common {m['f1_common']:.4f}"
              f"  ({m['recordings']} recordings; window F1-macro {m['window']['f1_macro']:.4f})")  # fmt: skip


if __name__ == "__main__":
    run_stage("evaluate", main)
