"""The whole DAG at the study's size and fractions of it: ``python -m benchmarks.scale [--fractions 0.125 1]``.

The study worked on 89 species, 11,075 recordings, 1216:1 (``benchmarks/study_scale.yaml``). For each fraction f
this clones the committed repository into a temporary folder, scales the synthetic corpus to f of the study's
size (89 species always; the commonest species and the total scaled by f; the rarest keeps 1 recording) and runs
every stage with ``dvc repro --single-item`` in DAG order, with the default recipe otherwise. Per stage it prints
the wall time and the peak memory of the whole process tree (dvc, the stage, its workers; sampled every 0.1 s),
and per size the audio hours, training windows per epoch, epochs run and test F1-macro. Growth should be linear in
audio hours for ingest and features, in windows for an epoch, and memory flat for features (streaming).

``--reseed`` then changes ``split.seed`` (a new split of the same recordings, as a sweep over split seeds does) and
times ``dvc repro`` again, stage by stage: the features stage depends on the manifest, not on the split, so it does
not rerun, and that second pass is what every further seed, phase or queued experiment costs. The feature store is
a fresh folder inside the work folder, so the first pass extracts every recording (what every experiment paid
before the store).

Writes ``reports/scale.md`` (the README's table) and ``reports/scale.json``. Needs the work committed (it
clones HEAD), about 2 GB of disk at full size, and nothing else running for figures you can trust.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDY = yaml.safe_load((Path(__file__).with_name("study_scale.yaml")).read_text())["data"]["synthetic"]


def scaled_synthetic(fraction: float) -> dict[str, Any]:
    """data.synthetic for a fraction of the study's corpus: same species, counts scaled, the rarest at 1."""
    top = max(2, round(STUDY["max_recordings"] * fraction))
    return {
        **STUDY,
        "max_recordings": top,
        "imbalance": float(top),
        "recordings": max(top + STUDY["species"] - 1, round(STUDY["recordings"] * fraction)),
    }


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # a worker that ended between the listing and the reading
            total += member.memory_info().rss
    return total


def run_measured(command: list[str], cwd: Path, log: Path) -> tuple[float, float]:
    """Run ``command``; return (wall seconds, peak MiB of the process tree). Raises on a non-zero exit."""
    started = time.perf_counter()
    with log.open("a") as out:
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "BIRDPIPE_FEATURE_STORE": str(cwd.parent / "feature_store"),
        }  # cold: every recording extracted once
        child = subprocess.Popen(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)  # dvc's `python`
        watched, peak, done = psutil.Process(child.pid), 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.1):
                try:
                    peak = max(peak, _tree_rss(watched))
                except psutil.Error:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = child.wait()
        done.set()
        sampler.join()
    if code != 0:
        raise SystemExit(f"{' '.join(command)} failed in {cwd} (exit {code}); see {log}")
    return time.perf_counter() - started, peak / 2**20


def stage_names() -> list[str]:
    return list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])  # written in DAG order


def measure(fraction: float, workdir: Path, reseed: bool = False) -> dict[str, Any]:
    clone = workdir / f"f{fraction:g}"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    params_path = clone / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["data"]["synthetic"].update(scaled_synthetic(fraction))
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    log = workdir / f"f{fraction:g}.log"
    stages: dict[str, dict[str, float]] = {}
    for stage in stage_names():
        wall, peak = run_measured([sys.executable, "-m", "dvc", "repro", "--single-item", stage], clone, log)
        stages[stage] = {"seconds": round(wall, 1), "peak_mib": round(peak)}
        print(f"  {fraction:g}: {stage:10s} {wall:7.1f} s  {peak:6.0f} MiB", flush=True)
    manifest = pd.read_csv(clone / "data" / "manifest.csv")
    split = pd.read_csv(clone / "data" / "split.csv")
    train_metrics = json.loads((clone / "metrics" / "train.json").read_text())["train"]
    scores = json.loads((clone / "metrics" / "eval.json").read_text())["test"]
    train_params = params["train"]
    train_seconds = split.loc[split["split"] == "train", "duration_s"].clip(upper=params["features"]["max_seconds"])
    result = {
        "fraction": fraction,
        "recordings": len(manifest),
        "species": int(manifest["label"].nunique()),
        "imbalance": int(manifest["label"].value_counts().max() / manifest["label"].value_counts().min()),
        "audio_hours": round(float(manifest["duration_s"].sum()) / 3600, 2),
        "train_audio_hours": round(float(train_seconds.sum()) / 3600, 2),
        "epochs": train_metrics["epochs"],
        "seconds_per_epoch": round(train_metrics["seconds"] / max(train_metrics["epochs"], 1), 1),
        "windows_per_epoch": round(len(split[split["split"] == "train"]) * train_params["windows_per_recording"]),
        "test_f1_macro": round(float(scores["f1_macro"]), 3),
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
    }
    if reseed:  # a second split seed over the same recordings: what each further experiment of a sweep costs
        params["split"]["seed"] = 1
        params_path.write_text(yaml.safe_dump(params, sort_keys=False))
        again = {}
        for stage in stage_names():
            wall, peak = run_measured([sys.executable, "-m", "dvc", "repro", "--single-item", stage], clone, log)
            again[stage] = {"seconds": round(wall, 1), "peak_mib": round(peak)}
            print(f"  {fraction:g} split.seed=1: {stage:10s} {wall:7.1f} s", flush=True)
        result["reseed"] = {"stages": again, "total_seconds": round(sum(s["seconds"] for s in again.values()), 1)}
    features_seconds = stages.get("features", {}).get("seconds")
    if features_seconds:
        kept = manifest["duration_s"].clip(upper=params["features"]["max_seconds"]).sum()
        result["features_audio_s_per_s"] = round(float(kept) / features_seconds)
    shutil.rmtree(clone, ignore_errors=True)
    return result


def markdown(results: list[dict[str, Any]]) -> str:
    names = list(results[0]["stages"])
    header = ["size", "recordings", "audio h", *[f"{n} s" for n in names], "total", "peak MiB", "epoch s",
              "epochs", "features audio-s/s", "test F1-macro"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        peak = max(s["peak_mib"] for s in r["stages"].values())
        peak_stage = max(r["stages"], key=lambda n: r["stages"][n]["peak_mib"])
        cells = [f"{r['fraction']:g}", str(r["recordings"]), f"{r['audio_hours']:.1f}",
                 *[f"{r['stages'][n]['seconds']:.0f}" for n in names],
                 f"{r['total_seconds'] / 60:.1f} min", f"{peak} ({peak_stage})", f"{r['seconds_per_epoch']:.1f}",
                 str(r["epochs"]), str(r.get("features_audio_s_per_s", "")), f"{r['test_f1_macro']:.3f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    for r in results:
        if "reseed" in r:
            again = r["reseed"]
            lines += [
                "",
                f"Then `split.seed=1` (size {r['fraction']:g}: a new split, the same recordings), `dvc repro` "
                f"again: **{again['total_seconds'] / 60:.1f} min** against {r['total_seconds'] / 60:.1f} min; "
                "per stage (s): " + ", ".join(f"{n} {again['stages'][n]['seconds']:.0f}" for n in names),
            ]
    memory = ["", "Peak memory (MiB) of each stage's process tree:", "",
              "| size | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]  # fmt: skip
    for r in results:
        memory.append(f"| {r['fraction']:g} | " + " | ".join(str(r["stages"][n]["peak_mib"]) for n in names) + " |")
    return "\n".join(lines + memory) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the clones go (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "scale.md")
    parser.add_argument("--reseed", action="store_true", help="then time a rerun with split.seed=1 (a sweep's cost)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="birdpipe-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    print(f"scale benchmark of commit {commit.stdout.strip()} in {workdir} ({psutil.cpu_count()} cores)")
    results = []
    for fraction in sorted(args.fractions):
        print(f"== {fraction:g} of the study's size: {scaled_synthetic(fraction)}", flush=True)
        results.append(measure(fraction, workdir, args.reseed))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        args.out.write_text(
            f"Commit {commit.stdout.strip()}, {psutil.cpu_count()} cores, default recipe; "
            "`python -m benchmarks.scale`.\n\n" + markdown(results)
        )
    print()
    print(markdown(results))


if __name__ == "__main__":
    main()
