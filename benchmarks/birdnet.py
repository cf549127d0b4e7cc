"""BirdNET V2.4 embedding speed and memory: ``python -m benchmarks.birdnet [--files 30] [--batch-size N]``.

- end to end on real recordings of ../shared/data/xc_puerto_rico (decode, resample to 48 kHz, 3 s windows,
  embeddings + logits), in audio seconds per wall second, for 1 process x 1 thread, 1 process x 2 threads and
  2 processes x 1 thread, with each worker's peak resident memory;
- pure inference speed (random windows) for batch sizes 1, 8 and 32 with 1 and 2 threads.
Figures depend on the machine; run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import csv
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from birdpipe.birdnet.runtime import DEFAULT_BATCH_SIZE, SAMPLE_RATE, WINDOW_SAMPLES, BirdNETEmbedder, WindowStream
from birdpipe.data.audio import stream_audio

# The same recordings as benchmarks/run.py (not imported from there: it loads torch, which would inflate memory).
REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xc_puerto_rico"
MAX_SECONDS = 60.0

_embedder: BirdNETEmbedder | None = None


def real_files(count: int) -> list[Path]:
    """``count`` recordings spread evenly over the species-sorted metadata."""
    with (REAL / "metadata.csv").open(newline="") as handle:
        paths = [REAL / row["path"] for row in csv.DictReader(handle)]
    step = max(1, len(paths) // count)
    return paths[::step][:count]


def peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def _init(threads: int, batch_size: int) -> None:
    global _embedder
    _embedder = BirdNETEmbedder(threads=threads, batch_size=batch_size)


def _embed_file(path: str) -> tuple[float, int, float]:
    """Stream one recording through the windows and the model: (audio seconds, windows, worker peak MiB)."""
    assert _embedder is not None
    stream, samples, windows = WindowStream(WINDOW_SAMPLES), 0, 0
    for block in stream_audio(path, SAMPLE_RATE, max_seconds=MAX_SECONDS):
        samples += block.size
        windows += len(_embedder.embed(stream.push(block))[0])
    windows += len(_embedder.embed(stream.finish())[0])
    return samples / SAMPLE_RATE, windows, peak_mib()


def _decode_file(path: str) -> float:
    return sum(block.size for block in stream_audio(path, SAMPLE_RATE, max_seconds=MAX_SECONDS)) / SAMPLE_RATE


def bench_end_to_end(files: list[Path], batch_size: int) -> None:
    print(f"\n== decode + resample + embed: {len(files)} real recordings from {REAL}, batch size {batch_size}")
    jobs = [str(f) for f in files]
    started = time.perf_counter()
    with ProcessPoolExecutor(1) as pool:
        seconds = sum(pool.map(_decode_file, jobs))
    wall = time.perf_counter() - started
    print(f"decode + resample only, 1 process : {seconds:6.0f} audio s in {wall:5.1f} s = {seconds / wall:5.0f}x")
    for processes, threads in ((1, 1), (1, 2), (2, 1)):
        started = time.perf_counter()  # includes starting the workers and loading the model (about 0.3 s each)
        with ProcessPoolExecutor(processes, initializer=_init, initargs=(threads, batch_size)) as pool:
            results = list(pool.map(_embed_file, jobs))
        wall = time.perf_counter() - started
        seconds, windows = sum(r[0] for r in results), sum(r[1] for r in results)
        print(
            f"{processes} process(es) x {threads} thread(s): {seconds:6.0f} audio s ({windows} windows) in "
            f"{wall:5.1f} s = {seconds / wall:5.0f}x real time, worker peak RSS {max(r[2] for r in results):4.0f} MiB"
        )


def bench_inference(seconds: float) -> None:
    print("\n== pure inference (random windows, this process)")
    rng = np.random.default_rng(0)
    for threads in (1, 2):
        for batch_size in (1, 8, 32):
            embedder = BirdNETEmbedder(threads=threads, batch_size=batch_size)
            windows = (0.1 * rng.standard_normal((batch_size, WINDOW_SAMPLES))).astype(np.float32)
            embedder.embed(windows)  # warm-up: the first invoke sets up XNNPACK
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                embedder.embed(windows)
                calls += 1
            wall = time.perf_counter() - started
            rate = calls * batch_size / wall
            print(f"{threads} thread(s), batch {batch_size:2d}: {rate:5.1f} windows/s = {3 * rate:5.0f}x real time")
            del embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per pure-inference setting")
    parser.add_argument("--only", choices=("end-to-end", "inference"))
    args = parser.parse_args()
    if args.only != "inference":
        bench_end_to_end(real_files(args.files), args.batch_size)
        print(f"peak RSS: largest worker {peak_mib(resource.RUSAGE_CHILDREN):.0f} MiB (children included)")
    if args.only != "end-to-end":
        bench_inference(args.seconds)
        print(f"peak RSS of this process (batch 32 included): {peak_mib():.0f} MiB")


if __name__ == "__main__":
    main()
