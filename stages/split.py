"""split: data/manifest.csv -> data/split.csv (manifest + split column) and data/split_report.json."""

from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import read_table, write_json, write_table
from birdpipe.common.params import load_params
from birdpipe.data.split import split_recordings, split_seed


def main() -> None:
    params = load_params()
    split, report = split_recordings(read_table("data/manifest.csv"), params.split, seed=split_seed(params))
    write_table(split, "data/split.csv")
    write_json(report, "data/split_report.json")
    dropped = report["small_classes"]["species"]
    seed = "" if params.split.column else f", seed {split_seed(params)}"
    print(f"split ({report['method']}{seed}): {report['recordings']}; species per split {report['species']}")
    if dropped:
        print(f"  {len(dropped)} species handled by small_classes: {report['small_classes']['policy']}")
    for split_name, species in report["species_missing_from"].items():
        print(f"  warning: {len(species)} species have no recording in {split_name}: {', '.join(species[:5])}")


if __name__ == "__main__":
    run_stage("split", main)
