"""Speed and memory figures: ``python -m benchmarks.run [--only features,train,predict]``.

- features: extraction speed (audio seconds per wall second) on the real recordings of ../shared/data,
  MFCC and log-mel, with 1 and with 2 worker processes;
- train: training throughput (windows per second: forward, backward, optimizer step) of AudioCNN and
  AudioCNNv2 on MFCC windows and of the offline ViT and AST, on the CPU; on CUDA when present also the
  ViT-Base and AST-base sizes, with peak GPU memory (``--only train`` for the GPU figures alone);
- predict: real-time factor of ``python -m birdpipe predict`` on a one-hour recording made of real
  recordings (44.1 kHz, so resampling is included), with non-overlapping windows, and the peak resident
  memory of the predict process for 10 and for 60 minutes of audio.
Figures depend on the machine; run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from birdpipe.data.audio import load_audio, probe
from birdpipe.features.spectral import FeatureConfig, extract_recording

WARMUP_STEPS = 3
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xc_puerto_rico"
ROOT = Path(__file__).resolve().parents[1]


def real_files(limit: int | None = None) -> list[Path]:
    table = pd.read_csv(REAL / "metadata.csv")
    files = [REAL / p for p in table["path"]]
    return files[:limit] if limit else files


def _extract(args: tuple[str, str]) -> float:
    path, kind = args
    torch.set_num_threads(1)
    extract_recording(path, FeatureConfig(kind=kind), max_seconds=60.0)
    return min(probe(path).duration, 60.0)


def bench_features(files: list[Path]) -> None:
    print(f"\n== feature extraction: {len(files)} real recordings from {REAL}")
    for kind in ("mfcc", "logmel"):
        for workers in (1, 2):
            jobs = [(str(f), kind) for f in files]
            started = time.perf_counter()
            with ProcessPoolExecutor(workers) as pool:
                seconds = sum(pool.map(_extract, jobs, chunksize=2))
            wall = time.perf_counter() - started
            print(
                f"{kind:7s} {workers} worker(s): {seconds:7.0f} audio s in {wall:6.1f} s = "
                f"{seconds / wall:6.0f} audio s per s"
            )


def timed_steps(step: Callable[[], None], seconds: float, warmup: int = WARMUP_STEPS) -> tuple[int, float]:
    """Run ``step`` for ``warmup`` untimed calls, then for ``seconds``; return (timed steps, wall seconds)."""
    for _ in range(warmup):
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started <= seconds:
        step()
        steps += 1
    return steps, time.perf_counter() - started


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One forward, backward and optimizer step (bf16 autocast on CUDA, as training uses there)."""
    optimizer.zero_grad()
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=x.device.type == "cuda"):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()


# (name, model params, input shape, batch): the CNNs on MFCC windows, the transformers on what their phases use.
# "small" are the phases' offline sizes (phases.yaml `offline:`); "base" the study's ViT-Base / AST-base sizes,
# config-built and random-initialised (no hub download): the same compute as the pretrained ones. Base sizes run
# on CUDA only (a CPU takes minutes per step).
BASE = {"hidden_size": 768, "layers": 12, "heads": 12, "intermediate_size": 3072}
SMALL = {"hidden_size": 96, "layers": 2, "heads": 3, "intermediate_size": 384}
TRAIN_MODELS = [
    ("audio_cnn", {}, (3, 20, 172), 32, False),
    ("audio_cnn_v2", {}, (3, 20, 172), 32, False),
    ("audio_vit small", {"vit": SMALL}, (3, 20, 172), 16, False),
    ("ast small", {"ast": {**SMALL, "frequency_stride": 16, "time_stride": 16}}, (1, 128, 172), 16, False),
    ("audio_vit base", {"vit": BASE}, (3, 20, 172), 16, True),
    ("ast base", {"ast": {**BASE, "frequency_stride": 10, "time_stride": 10}}, (1, 128, 172), 16, True),
]  # fmt: skip


def bench_train(device: str, seconds: float = 15.0) -> None:
    """Windows per second of a full training step (bf16 autocast on CUDA) and, on CUDA, peak GPU memory."""
    from birdpipe.common.params import ModelParams
    from birdpipe.models import InputShape, build_model

    cuda = device == "cuda"
    name_of = torch.cuda.get_device_name() if cuda else f"{torch.get_num_threads()} threads"
    print(f"\n== training throughput on {device} ({name_of}), 89 classes")
    for label, extra, (channels, bins, frames), batch, base_only in TRAIN_MODELS:
        if base_only and not cuda:
            continue
        torch.manual_seed(0)
        params = ModelParams(name=label.split()[0], **extra)
        shape = InputShape(channels, bins, frames)
        model = build_model(params, 89, shape, ast_stats=(0.0, 1.0) if params.name == "ast" else None)
        model = model.to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), 1e-4)
        x = torch.randn(batch, channels, bins, frames, device=device)
        y = torch.randint(0, 89, (batch,), device=device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        steps, wall = timed_steps(functools.partial(train_step, model, optimizer, x, y), seconds)
        size = sum(p.numel() for p in model.parameters())
        memory = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB" if cuda else ""
        print(f"{label:15s} {size:>11,} params, {channels}x{bins}x{frames} batch {batch}: "
              f"{steps * batch / wall:7.0f} windows per s ({steps} steps){memory}")  # fmt: skip
        del model, optimizer
        if cuda:
            torch.cuda.empty_cache()


def long_recording(target: Path, minutes: float, rate: int = 44100) -> Path:
    """Real recordings back to back until ``minutes`` of audio, as 16-bit wav at ``rate``."""
    need = int(minutes * 60 * rate)
    with sf.SoundFile(target, "w", rate, 1, "PCM_16") as out:
        written = 0
        while written < need:
            for path in real_files():
                signal, _ = load_audio(path, rate)
                signal = signal[: need - written]
                out.write(signal)
                written += signal.size
                if written >= need:
                    break
    return target


PEAK_SCRIPT = """
import resource, sys
from birdpipe.__main__ import main
code = main(sys.argv[1:])
print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def bench_predict(model: Path) -> None:
    info = json.loads((model / "bundle.json").read_text())
    window = info["window_seconds"]
    print(
        f"\n== predict with {model} ({info['model']['name']}, {info['feature_config']['kind']}), "
        f"non-overlapping {window:g} s windows, 44.1 kHz wav of real recordings"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in (10, 60):
            wav = long_recording(Path(tmp) / f"soundscape_{minutes}min.wav", minutes)
            command = [
                sys.executable,
                "-c",
                PEAK_SCRIPT,
                "predict",
                str(wav),
                "--model",
                str(model),
                "--out",
                str(Path(tmp) / f"out{minutes}"),
                "--hop",
                str(window),
                "--quiet",
                "--format",
                "both",
            ]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(done.stdout + done.stderr)
            peak = int(done.stdout.split("PEAK_KB")[-1]) / 1024
            print(
                f"{minutes:3d} min of audio: {minutes * 60 / wall:6.0f}x real time (wall {wall:5.1f} s, process "
                f"start included), peak memory {peak:6.0f} MiB"
            )
            wav.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="features,train,predict", help="comma-separated subset")
    parser.add_argument("--files", type=int, default=0, help="real recordings for the features (0: all 390)")
    parser.add_argument("--model", default=str(ROOT / "models"), help="bundle for the predict benchmark")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    print(f"machine: {os.cpu_count()} cores, torch {torch.__version__}, CUDA {torch.cuda.is_available()}")
    if "features" in parts:
        bench_features(real_files(args.files))
    if "train" in parts:
        bench_train("cpu")
        if torch.cuda.is_available():
            bench_train("cuda")
    if "predict" in parts:
        if not (Path(args.model) / "bundle.json").exists():
            raise SystemExit(f"no trained model at {args.model}: run `dvc repro` first")
        bench_predict(Path(args.model))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
