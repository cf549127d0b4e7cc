"""ingest: the data source -> data/manifest.csv and data/ingest_report.json (data/synthetic/ when synthetic)."""

from pathlib import Path

from birdpipe.common.errors import run_stage
from birdpipe.common.outputs import atomic_path, write_json, write_table
from birdpipe.common.params import DataParams, load_params
from birdpipe.data.ingest import find_candidates, ingest, read_metadata, scan_negatives

SYNTHETIC_DIR = Path("data/synthetic")


def main() -> None:
    params = load_params()
    with atomic_path(SYNTHETIC_DIR) as synthetic_dir:
        synthetic_dir.mkdir(parents=True)
        if params.data.source == "synthetic":
            from birdpipe.data.synthetic.corpus import generate_corpus

            generate_corpus(params.data.synthetic, synthetic_dir, seed=params.seed)
        elif params.data.negatives == "synthetic":  # the generator's no-bird clips beside a real source
            from birdpipe.data.synthetic.corpus import generate_negatives

            generate_negatives(params.data.synthetic, synthetic_dir, seed=params.seed)
        else:  # the output exists for DVC whatever the source; it says why it is empty
            (synthetic_dir / "README.txt").write_text("data.source is not 'synthetic': nothing generated.\n")
    if params.data.source == "synthetic":
        candidates = read_metadata(SYNTHETIC_DIR / "metadata.csv", params.data)
    else:
        candidates = find_candidates(params.data.source, params.data)
        if params.data.negatives == "synthetic":
            candidates += read_metadata(SYNTHETIC_DIR / "metadata.csv", DataParams())  # our columns, not the source's
    if params.data.negatives not in (None, "synthetic"):
        candidates += scan_negatives(Path(params.data.negatives).expanduser())
    manifest, report = ingest(candidates, params.data)
    report = {"source": params.data.source, **report}
    write_table(manifest, "data/manifest.csv")
    write_json(report, "data/ingest_report.json")
    print(
        f"ingest: {report['recordings'] - report['negatives']} recordings of {report['species']} species "
        f"and {report['negatives']} no-bird recordings "
        f"({report['total_hours']:.2f} h); {report['skipped_count']} skipped (see data/ingest_report.json)"
    )


if __name__ == "__main__":
    run_stage("ingest", main)
