"""Where and how wide to run: CPU worker processes, the torch device and its training precision.

Shared by ingest, the synthetic corpus, feature extraction, training and evaluation; torch is imported only by
the functions that need it, so the CPU stages stay free of it.
"""

from __future__ import annotations

import os
import warnings

from birdpipe.common.errors import PipelineError


def cpu_workers(requested: int = 0) -> int:
    """Worker processes to use: ``requested``, or every core this process may run on when 0."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this process in a running DDP process group; (0, 1) outside one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(requested: str) -> str:
    """``train.device``: auto picks CUDA when available; cuda without a CUDA device is an error."""
    import torch  # late: ingest and features use this module without torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise PipelineError("train.device: cuda was asked for but no CUDA device is available; use auto or cpu")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def resolve_precision(requested: str, device: str) -> str:
    """Lightning precision string: mixed precision on CUDA only."""
    import torch

    if device != "cuda":
        if requested in ("bf16", "16"):
            warnings.warn(
                f"train.precision: {requested} ignored on CPU (bf16 autocast is ~10x slower on CPUs without "
                "bf16 units); training in 32-bit",
                stacklevel=2,
            )
        return "32-true"
    if requested == "auto":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}[requested]
