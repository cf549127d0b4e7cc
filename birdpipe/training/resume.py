"""Resuming an interrupted training: checkpoints written atomically, a fingerprint of what a resumed run must
share with the interrupted one (training params, input files, the training code's bytes), and dvclive's curves
repaired to the checkpoint's epoch.

Checkpoints go to ``checkpoints/`` with the fingerprint; a rerun with the same fingerprint resumes from
``last.ckpt`` instead of starting over, so an interrupted ``dvc repro`` or ``dvc exp run`` continues where it
stopped. The folder is deliberately not a DVC output: DVC leaves undeclared files alone, and a ``persist`` output
would switch off the run-cache for the stage. Queued and ``--temp`` experiments run in their own temporary copy of
the repo, so each has its own ``checkpoints/`` (git-ignored, so never copied in): parallel runs never share one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch.plugins import TorchCheckpointIO

from birdpipe.common.outputs import atomic_path
from birdpipe.common.params import Params


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their target and renamed into place, as every stage output is.

    Lightning stages a checkpoint in the system temp folder and moves it over: a copy, not a rename, when that
    folder is on another device, so a kill could leave a cut ``last.ckpt``; and its full-disk error names no file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)


def _digest(paths: list[Path], extra: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for path in paths:
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    return digest.hexdigest()


TRAINING_CODE = ("stages.train", "birdpipe.training.loop")  # entry points whose import closure training runs


def training_fingerprint(params: Params, inputs: list[Path]) -> str:
    """What a resumed run must share with the interrupted one: training params, input files and code (the bytes
    of every project module the train stage imports at any depth, lazy imports included: its dvc.yaml code deps)."""
    from birdpipe.common.codedeps import code_digest

    relevant = training_params(params)
    relevant["train"] = {k: v for k, v in relevant["train"].items() if k not in ("num_workers", "threads", "device")}
    return _digest(inputs, {"code": code_digest(TRAINING_CODE), **relevant})


def training_params(params: Params) -> dict[str, Any]:
    """The params the train stage reads (its dvc.yaml params): fusion, soundscapes and the rest belong to other
    stages, so the bundle never records a value its training did not use."""
    return {
        "seed": params.seed,
        "model": params.model.model_dump(mode="json", exclude={"fusion"}),
        "loss": params.loss.model_dump(mode="json"),
        "augment": params.augment.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "normalize": params.features.normalize,
        "evaluate": params.evaluate.model_dump(mode="json", include={"aggregate", "topk", "rare_threshold"}),
    }


def prepare_checkpoints(checkpoint_dir: Path, fingerprint: str, clean: bool = True) -> tuple[Path, int] | None:
    """Resume point (``last.ckpt`` and its epoch index) if an unfinished run with the same fingerprint left one;
    otherwise a clean folder (made by the main process only: ``clean``)."""
    marker = checkpoint_dir / "fingerprint"
    last = checkpoint_dir / "last.ckpt"
    finished = checkpoint_dir / "complete"
    if marker.exists() and marker.read_text().strip() == fingerprint and last.exists() and not finished.exists():
        try:  # mmap: reads the epoch without loading the weights; a truncated file fails here, not in Lightning
            return last, int(torch.load(last, map_location="cpu", weights_only=False, mmap=True)["epoch"])
        except Exception as exc:  # whatever the reason (truncated by a kill, disk full), it means: start over
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            print(f"train: {last} is unreadable ({reason}); starting over")
    if not clean:
        return None
    if checkpoint_dir.exists():
        for item in checkpoint_dir.iterdir():
            if item.is_file():
                item.unlink()
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint + "\n")
    return None


def repair_live(live_dir: Path, last_step: int) -> None:
    """Make dvclive's files agree with a resume from the epoch whose step is ``last_step``.

    A run killed after logging an epoch but before checkpointing it would otherwise show that epoch twice in
    the curves once the resumed run logs it again; a row or summary cut short by the kill would break them.
    """
    summary = live_dir / "metrics.json"
    try:
        if summary.exists():
            json.loads(summary.read_text())
    except ValueError:
        summary.unlink()  # dvclive rewrites it at the next epoch; the steps come from us, not from it
    for path in sorted((live_dir / "plots").rglob("*.tsv")):
        text = path.read_text()
        lines = text.splitlines()[: None if text.endswith("\n") else -1]  # a last row without its line end was cut
        header = lines[0].split("\t") if lines else []
        if "step" not in header:
            path.unlink()  # dvclive writes a new header into a missing file, never into an empty one
            continue
        column = header.index("step")
        kept = lines[:1] + [line for line in lines[1:] if int(line.split("\t")[column]) <= last_step]
        if kept != text.splitlines():
            with atomic_path(path) as temporary:
                temporary.write_text("\n".join(kept) + "\n")


def read_history(history: list[dict[str, float]], live_dir: str | Path | None) -> list[dict[str, float]]:
    """Per-epoch metrics of the whole run: dvclive's files also cover the epochs before a resume."""
    folder = Path(live_dir) / "plots" / "metrics" if live_dir is not None else None
    if folder is None or not folder.is_dir():
        return history
    rows: dict[int, dict[str, float]] = {}
    for path in sorted(folder.rglob("*.tsv")):
        name = path.relative_to(folder).with_suffix("").as_posix()
        frame = pd.read_csv(path, sep="\t")
        value = frame.columns[-1]
        for step, v in zip(frame["step"], frame[value], strict=True):
            rows.setdefault(int(step), {"epoch": int(step)})[name] = float(v)
    return [rows[step] for step in sorted(rows)]
