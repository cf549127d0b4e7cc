"""features: data/split.csv + audio -> data/features/ (memory-mappable arrays per split, index, config)."""

from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import read_table
from birdpipe.common.params import load_params
from birdpipe.features.cache import build_cache


def main() -> None:
    params = load_params()
    summary = build_cache(read_table("data/split.csv"), params.features, "data/features", params.data.on_bad_file)
    print(
        f"features ({params.features.kind}, {summary['channels']}x{summary['bins']}): "
        f"{summary['recordings']} recordings, hours {summary['hours']}, {len(summary['skipped'])} skipped"
    )
    if "birdnet" in summary:
        birdnet = summary["birdnet"]
        print(f"features: BirdNET knows {birdnet['n_matched']} of {birdnet['n_species']} species"
              + (f" (not: {', '.join(birdnet['unmatched'][:10])})" if birdnet["unmatched"] else ""))  # fmt: skip


if __name__ == "__main__":
    run_stage("features", main)
