"""The ``soundscapes`` stage's work: the val/test soundscapes, their segment truth and their features.

``soundscapes.source`` says where they come from: ``synthetic`` renders the generator's soundscapes from the
default corpus's species (:mod:`birdpipe.data.synthetic.soundscape`), ``mix`` mixes the split's own val and
test recordings over non-bird sound (:mod:`birdpipe.soundscapes.mix`), a folder is read in place (Raven
selection tables or an annotations.csv, :mod:`birdpipe.soundscapes.annotations`), ``none`` skips soundscapes.
Every source is read back through the same reader, so generated files are matched, checked and split exactly
as a user's would be. Output (``data/soundscapes/``): ``audio/`` (generated files), ``files.csv``,
``events.csv``, ``segments.csv`` (+ ``truth.npy``: segments x species), ``report.json`` and ``features/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from birdpipe.common.errors import PipelineError
from birdpipe.common.outputs import atomic_path, write_json, write_table
from birdpipe.common.params import Params
from birdpipe.data.labels import NO_BIRD
from birdpipe.soundscapes.annotations import read_soundscapes, summary_lines
from birdpipe.soundscapes.features import build_soundscape_cache
from birdpipe.soundscapes.segments import segment_table, segment_truth

GENERATED = ("synthetic", "mix")


def label_set(split_table: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """The training species (as the feature cache orders them) and their scientific names when known."""
    train = split_table[(split_table["split"] == "train") & (split_table["label"] != NO_BIRD)]
    species = sorted(train["label"].unique())
    names: dict[str, str] = {}
    if "scientific_name" in train.columns:
        first = train.drop_duplicates("label").set_index("label")["scientific_name"]
        names = {str(k): str(v) for k, v in first.items() if isinstance(v, str) and v.strip()}
    return species, names


def _generate(params: Params, split_table: pd.DataFrame, manifest: pd.DataFrame, audio: Path, progress: bool) -> None:
    sp = params.soundscapes
    if sp.source == "synthetic":
        if params.data.source != "synthetic":
            raise PipelineError(
                "soundscapes.source: synthetic renders the default corpus's species, but data.source is "
                f"{params.data.source}: use soundscapes.source: mix (the split's own val/test recordings mixed "
                "over non-bird sound), a folder of annotated soundscapes, or none"
            )
        from birdpipe.data.synthetic.corpus import build_design
        from birdpipe.data.synthetic.soundscape import generate_soundscapes

        generate_soundscapes(build_design(params.data.synthetic, params.seed), sp.synthetic, audio, progress=progress)
    else:
        from birdpipe.soundscapes.mix import mix_soundscapes

        mix_soundscapes(split_table, manifest, sp.mix, audio, params.seed, progress=progress)


def prepare_soundscapes(
    params: Params, split_table: pd.DataFrame, manifest: pd.DataFrame, out_dir: str | Path, progress: bool = True
) -> dict[str, Any]:
    """Build ``out_dir`` (see the module docstring); return the report."""
    sp = params.soundscapes
    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        if sp.source == "none":
            report = {"source": "none"}
            write_json(report, tmp / "report.json")
            return report
        species, names = label_set(split_table)
        if sp.source in GENERATED:
            _generate(params, split_table, manifest, tmp / "audio", progress)
            root = tmp / "audio"
        else:
            root = Path(sp.source).expanduser()
        found = read_soundscapes(root, species, names, species_column=sp.species_column, val_share=sp.val_share,
                                 seed=params.seed)  # fmt: skip
        files = found.files
        if sp.source in GENERATED:  # where the files will lie once the folder is in place
            files = files.assign(path=[(out_dir / "audio" / f).as_posix() for f in files["file"]])
        for split in ("val", "test"):
            if not (files["split"] == split).any():
                raise PipelineError(f"soundscapes: no {split} soundscape (see {out_dir / 'report.json'})")
        segments = segment_table(files, sp.segment_seconds)
        truth = segment_truth(segments, found.events, species, sp.min_overlap_seconds)
        reading = found.files.assign(path=[str(root / f) for f in found.files["file"]])
        summary = build_soundscape_cache(reading, params.features, sp.hop_seconds, species, names, tmp / "features",
                                         progress=progress)  # fmt: skip
        write_table(files, tmp / "files.csv")
        write_table(found.events, tmp / "events.csv")
        write_table(segments, tmp / "segments.csv")
        np.save(tmp / "truth.npy", truth)
        bird_free = ~truth.any(axis=1)
        report = {
            **found.report,
            "source": sp.source,  # not the reader's path: generated files were read from a temporary folder
            "segments": {s: int((segments["split"] == s).sum()) for s in ("val", "test")},
            "bird_free_segments": {
                s: int(bird_free[(segments["split"] == s).to_numpy()].sum()) for s in ("val", "test")
            },
            "positive_segments_per_species": dict(zip(species, truth.sum(axis=0).astype(int).tolist(), strict=True)),
            "hours": round(float(files["duration_s"].sum()) / 3600, 4),
            "birdnet_known": int(sum(summary["birdnet_known"])),
            "problems": summary_lines(found.report),
        }
        write_json(report, tmp / "report.json")
    return report
