"""features: data/manifest.csv + audio -> data/features/ (memory-mappable frames of every recording, index, config),
before the split: a new split or seed reuses them, and a recording extracted before comes from the store."""

from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import read_table
from birdpipe.common.params import load_params
from birdpipe.features.cache import build_cache
from birdpipe.features.store import store_root


def main() -> None:
    params = load_params()
    summary = build_cache(read_table("data/manifest.csv"), params.features, "data/features", params.data.on_bad_file,
                          store_root=store_root(params.features.store))  # fmt: skip
    print(
        f"features ({params.features.kind}, {summary['channels']}x{summary['bins']}): "
        f"{summary['recordings']} recordings ({summary['hours']} h): {summary['extracted']} extracted, "
        f"{summary['from_store']} from the store, {len(summary['skipped'])} skipped"
    )
    if "birdnet" in summary:
        birdnet = summary["birdnet"]
        print(f"features: BirdNET knows {birdnet['n_matched']} of {birdnet['n_species']} species"
              + (f" (not: {', '.join(birdnet['unmatched'][:10])})" if birdnet["unmatched"] else ""))  # fmt: skip


if __name__ == "__main__":
    run_stage("features", main)
