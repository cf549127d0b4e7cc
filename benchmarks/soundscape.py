"""Scoring an hour of soundscape: ``python -m benchmarks.soundscape [--model models] [--minutes 60]``.

Renders ``--minutes`` of the generator's soundscapes (2-minute pieces joined into one FLAC file), then times
``python -m birdpipe predict <file> --scores`` as a whole process (decoding, resampling, BirdNET's features,
the model, the fusion and the outputs; process start and model loading included) at the bundle's hop and at
``--hop`` 2.5 s (the soundscape evaluation's windows), and prints audio seconds per wall second and the
process's peak memory. Run ``dvc repro`` first so that ``models/`` holds the bundle; run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from birdpipe.common.params import SyntheticParams, SyntheticSoundscapeParams
from birdpipe.data.synthetic.corpus import build_design
from birdpipe.data.synthetic.soundscape import generate_soundscapes

PIECE_SECONDS = 120.0


def hour_file(folder: Path, minutes: float, seed: int = 42) -> Path:
    """One FLAC file of ``minutes`` of synthetic soundscape (the default corpus's species and sites)."""
    pieces = max(2, round(minutes * 60 / PIECE_SECONDS))
    params = SyntheticSoundscapeParams(files=pieces // 2, seconds=PIECE_SECONDS)
    design = build_design(SyntheticParams(), seed)
    generate_soundscapes(design, params, folder / "pieces", progress=False)
    target = folder / "soundscape.flac"
    with sf.SoundFile(target, "w", samplerate=design.sample_rate, channels=1, format="FLAC", subtype="PCM_16") as out:
        for piece in sorted((folder / "pieces").rglob("*.flac")):
            out.write(sf.read(piece, dtype="float32")[0])
    return target


def timed_predict(audio: Path, model: str, out: Path, hop: float | None) -> tuple[float, float]:
    """(wall seconds, peak MiB) of one ``predict --scores`` process."""
    command = [sys.executable, "-m", "birdpipe", "predict", str(audio), "--model", model, "--out", str(out),
               "--scores", "--quiet"]  # fmt: skip
    if hop is not None:
        command += ["--hop", str(hop)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    return wall, max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models", help="trained bundle (default: models/)")
    parser.add_argument("--minutes", type=float, default=60.0, help="soundscape length (default 60)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        audio = hour_file(folder, args.minutes)
        seconds = sf.info(audio).duration
        print(f"rendered {seconds / 60:.1f} min of soundscape in {time.perf_counter() - started:.1f} s")
        print("| predict --scores | wall s | x real time | peak memory |")
        print("|---|---|---|---|")
        for hop in (None, 2.5):
            wall, peak = timed_predict(audio, args.model, folder / "out", hop)
            windows = len(np.loadtxt(folder / "out" / "scores.csv", delimiter=",", skiprows=1, usecols=1))
            label = "the bundle's hop" if hop is None else f"--hop {hop:g}"
            print(f"| {label} ({windows} windows) | {wall:.1f} | {seconds / wall:.0f}x | {peak:.0f} MiB |")


if __name__ == "__main__":
    main()
