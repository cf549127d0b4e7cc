"""Training with Lightning: the study's recipe knobs, dvclive logging, resume after an interruption.

- Optimiser Adam or AdamW with weight decay; with ``train.backbone_lr``/``train.head_lr`` the classifier
  head and the backbone get their own learning rates (the study's phase 3: 5e-5 and 1e-3).
- Learning-rate schedule per optimiser step: linear warmup over ``warmup_epochs``, then none, step
  (x ``step_gamma`` every ``step_size`` epochs) or cosine to zero at ``epochs``.
- Gradient clipping by norm, gradient accumulation, mixed precision on CUDA (bf16 where supported,
  else fp16; 32-bit on CPU, where bf16 autocast runs about 10x slower on CPUs without bf16 units).
- Validation every epoch on fixed sliding windows aggregated per recording; early stopping and the best
  checkpoint follow validation F1-macro.
- Per-epoch dvclive metrics: train/val loss, accuracy, F1-macro, learning rate, gradient norm.
- Checkpoints go to ``checkpoints/`` with a fingerprint of the params and inputs; a rerun with the same
  fingerprint resumes from ``last.ckpt`` instead of starting over, so an interrupted ``dvc repro`` or
  ``dvc exp run`` continues where it stopped. The folder is deliberately not a DVC output: DVC leaves
  undeclared files alone, and a ``persist`` output would switch off the run-cache for the stage.
  Queued and ``--temp`` experiments run in their own temporary copy of the repo, so each has its own
  ``checkpoints/`` (git-ignored, so never copied in): parallel runs never share one.
- A resumed run gives the same model as an uninterrupted one (bit for bit on CPU): ``last.ckpt`` is written at
  the end of an epoch, and every random draw of epoch e (sampler, dropout, augmentation, MixUp, noise bank)
  comes from a generator seeded by (seed, e) alone, so nothing depends on what ran before the interruption.
- A loss that becomes NaN or infinite stops training with the epoch and step.
- Several GPUs or machines: Lightning DDP with ``train.devices`` x ``train.num_nodes`` processes. ``batch_size``
  stays the global batch (each process takes its share of the same draws), BatchNorm is synchronised, each process
  validates its share of the windows and the shares are gathered, so every process computes the metrics, early
  stopping and model selection over the whole validation set, as one process would. Rank 0 writes the outputs.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from torch.utils.data import DataLoader

from birdpipe.common.errors import PipelineError, is_launch_main
from birdpipe.common.params import Params
from birdpipe.common.workers import cpu_workers, resolve_device, resolve_precision
from birdpipe.data.windows import (
    EvalWindows,
    NumberedWindows,
    ShardSampler,
    TrainSampler,
    TrainWindows,
    expected_class_frequencies,
)
from birdpipe.features.cache import FeatureCache
from birdpipe.features.spectral import FeatureConfig
from birdpipe.models import Classifier, InputShape, build_model, count_parameters
from birdpipe.training.audible import audible_starts, kept_share
from birdpipe.training.augment import Augmenter, noise_bank
from birdpipe.training.losses import build_loss
from birdpipe.training.module import MONITOR, LitClassifier
from birdpipe.training.resume import (
    AtomicCheckpointIO,
    prepare_checkpoints,
    read_history,
    repair_live,
    training_fingerprint,
    training_params,
)
from birdpipe.training.targets import TrainBags, recording_targets


class _HideTips(logging.Filter):
    """Lightning advertises a cloud logger at every start; a researcher offline needs no such tip."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_HideTips())


CHECKPOINT_DIR = "checkpoints"  # fit's default: the train stage's checkpoints, resumed after an interruption


@dataclass
class TrainingResult:
    model: Classifier
    info: dict[str, Any]
    metrics: dict[str, Any]
    history: list[dict[str, float]]


def fit(
    params: Params,
    cache: FeatureCache,
    weights_json: dict[str, Any] | None,
    feature_stats: dict[str, Any] | None,
    checkpoint_dir: str | Path = CHECKPOINT_DIR,
    live_dir: str | Path | None = "dvclive",
    names: dict[str, dict[str, str]] | None = None,
    fingerprint_inputs: list[Path] | None = None,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> TrainingResult | None:
    """Train ``model.name`` on the cache; return the best model, the bundle info and training metrics (None in a
    DDP process other than rank 0)."""
    train_params = params.train
    checkpoint_dir = Path(checkpoint_dir)
    L.seed_everything(params.seed, workers=True, verbose=False)
    device = resolve_device(train_params.device)
    precision = resolve_precision(train_params.precision, device)
    world = train_params.devices * train_params.num_nodes
    if device == "cpu":  # the cores are shared by this machine's processes
        torch.set_num_threads(max(1, (train_params.threads or cpu_workers()) // train_params.devices))
    elif torch.cuda.device_count() < train_params.devices:
        raise PipelineError(f"train.devices: {train_params.devices} GPUs asked for, {torch.cuda.device_count()} "
                            "visible on this machine (CUDA_VISIBLE_DEVICES)")  # fmt: skip

    config: FeatureConfig = cache.config
    species = cache.species
    n_classes = len(species)
    window = config.frames(train_params.window_seconds)
    hop = config.frames(train_params.hop_seconds)
    multilabel = train_params.objective == "multilabel"
    train = cache.recordings("train", negatives=multilabel)  # negatives only teach a sigmoid "no species here"
    val = cache.recordings("val")
    if val.empty:
        raise PipelineError("the validation split is empty: early stopping and model selection need val recordings")
    train_counts = np.bincount(train["label_index"][train["label_index"] >= 0], minlength=n_classes)

    shape = InputShape(config.channels, config.bins, window)
    normalize = params.features.normalize and feature_stats is not None
    is_ast = params.model.name == "ast"
    mean = feature_stats["mean"] if normalize and not is_ast else None
    std = feature_stats["std"] if normalize and not is_ast else None
    if normalize and config.kind == "birdnet":  # embeddings: every dimension on its own scale
        if "bin_mean" not in feature_stats:
            raise PipelineError("data/feature_stats.json lacks per-dimension statistics: rerun `dvc repro weights`")
        mean, std = feature_stats["bin_mean"], feature_stats["bin_std"]
    ast_stats = (feature_stats["mean"][0], feature_stats["std"][0]) if is_ast and feature_stats else None
    model = build_model(params.model, n_classes, shape, mean, std, ast_stats=ast_stats)

    frequencies = expected_class_frequencies(train, window, train_params.sampler, n_classes)
    loss = build_loss(params.loss, species, (frequencies * len(train)).tolist(), weights_json)
    channel_mean = feature_stats["mean"] if feature_stats else [0.0] * config.channels
    augmenter = Augmenter(
        params.augment, config.kind, config.n_mels, channel_mean, n_classes, noise_bank(params, cache, train)
    )

    bag = train_params.bag_windows if train_params.pooling != "none" else None
    sampler = TrainSampler(train, window, train_params.sampler, train_params.windows_per_recording, params.seed,
                           batch_size=train_params.batch_size, world=world, span=window * (bag or 1))  # fmt: skip
    targets = recording_targets(train, species, params.loss.background_target) if multilabel else None
    kept = None  # the share of heard windows, with train.window_selection birdnet
    if bag is not None:
        train_windows = TrainBags(cache.arrays["train"], train, window, bag, targets)
    else:
        allowed = None
        if train_params.window_selection == "birdnet":
            allowed = audible_starts(train, cache.birdnet_logits["train"], cache.birdnet_known, window,
                                     train_params.audible_confidence)  # fmt: skip
            kept = kept_share(train, allowed, window)
            if progress:
                print(f"train: BirdNET hears the focal species in {kept:.1%} of the focal recordings' windows "
                      f"(BirdNET sigmoid >= {train_params.audible_confidence:g} for the focal species)")  # fmt: skip
        train_windows = TrainWindows(cache.arrays["train"], train, window, targets, allowed,
                                     train_params.silent_target)  # fmt: skip
    loader_args = {"num_workers": train_params.num_workers, "persistent_workers": train_params.num_workers > 0,
                   "pin_memory": device == "cuda"}  # fmt: skip
    # The loader draws its workers' base seed whenever it starts an epoch's iterator: from a generator of its own,
    # not the global one that dropout and augmentation use (a resumed run starts its first iterator before the
    # epoch's seed_epoch, an uninterrupted one after). Workers draw nothing random: the sampler picks crops.
    train_loader = DataLoader(
        train_windows,
        batch_size=train_params.batch_size // world,
        sampler=sampler,
        generator=torch.Generator().manual_seed(params.seed),
        **loader_args,
    )
    val_windows = EvalWindows(cache.arrays["val"], val, window, hop)
    val_loader = DataLoader(
        NumberedWindows(val_windows),
        batch_size=params.evaluate.batch_size,
        sampler=ShardSampler(len(val_windows), world),
        **loader_args,
    )
    steps_per_epoch = math.ceil(len(train_loader) / train_params.accumulate)
    val_targets = recording_targets(val, species, params.loss.background_target) if multilabel else None
    module = LitClassifier(model, loss, params, augmenter, val, train_counts, steps_per_epoch, val_targets)

    fingerprint = training_fingerprint(params, fingerprint_inputs or [])
    main = is_launch_main()  # DDP: the other processes read the resume point and leave the files alone
    resume = prepare_checkpoints(checkpoint_dir, fingerprint, clean=main)
    resume_from = resume[0] if resume is not None else None
    if resume is not None and live_dir is not None and main:
        repair_live(Path(live_dir), resume[1] + 1)  # dvclive's step of epoch index e is e + 1
    logger = None
    if live_dir is not None:
        from dvclive.lightning import DVCLiveLogger

        logger = DVCLiveLogger(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None,
                               resume=resume_from is not None)  # fmt: skip
    checkpoint = ModelCheckpoint(dirpath=checkpoint_dir, filename="best", monitor=MONITOR, mode="max",
                                 save_last=True, save_top_k=1, enable_version_counter=False)  # fmt: skip
    timer = Timer()
    stopper = EarlyStopping(monitor=MONITOR, mode="max", patience=train_params.patience)
    trainer = L.Trainer(
        max_epochs=train_params.epochs,
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=train_params.devices,
        num_nodes=train_params.num_nodes,
        strategy="ddp" if world > 1 or train_params.strategy == "ddp" else "auto",
        sync_batchnorm=world > 1 and device == "cuda",  # torch has no SyncBatchNorm on CPU
        precision=precision,
        gradient_clip_val=train_params.grad_clip,
        gradient_clip_algorithm="norm",
        accumulate_grad_batches=train_params.accumulate,
        callbacks=[checkpoint, stopper, timer, *(callbacks or [])],
        plugins=[AtomicCheckpointIO()],
        logger=logger if logger is not None else False,
        deterministic=True if device == "cpu" else "warn",
        num_sanity_val_steps=0,
        enable_progress_bar=progress,
        enable_model_summary=progress,
        log_every_n_steps=1,
        use_distributed_sampler=False,
        default_root_dir=str(checkpoint_dir),
    )
    if resume_from is not None:
        print(f"train: resuming from {resume_from} (same params and inputs as the interrupted run)")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", message=".*sync_dist=True.*")  # the values are gathered already
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(resume_from) if resume_from else None)
    elapsed_now = time.perf_counter() - started
    if trainer.global_rank != 0:
        return None  # rank 0 writes the outputs

    best_path = checkpoint.best_model_path
    if not best_path or not Path(best_path).exists():
        raise PipelineError("training produced no checkpoint (was it interrupted before the first epoch ended?)")
    state = torch.load(best_path, map_location="cpu", weights_only=False)
    module.model.load_state_dict({k.removeprefix("model."): v for k, v in state["state_dict"].items()
                                  if k.startswith("model.")})  # fmt: skip
    best_epoch = int(state["epoch"]) + 1
    history = read_history(module.history, live_dir)
    epochs_run = int(trainer.current_epoch)
    seconds = float(timer.time_elapsed("train")) or elapsed_now
    metrics = {
        "train": {
            "best_epoch": best_epoch,
            "epochs": max(epochs_run, best_epoch),
            "seconds": round(seconds, 1),
            "best_val_f1_macro": round(float(checkpoint.best_model_score or float("nan")), 6),
            **({"audible_window_share": round(kept, 4)} if kept is not None else {}),
        },
        "model": {"params": count_parameters(module.model)},
    }
    (checkpoint_dir / "complete").write_text(fingerprint + "\n")
    info = {
        "species": species,
        "names": names or {},
        "feature_config": config.to_dict(),
        "max_seconds": cache.info.get("max_seconds"),  # what evaluate's cache kept of each recording
        "activity": cache.info.get("activity"),
        "window_seconds": train_params.window_seconds,
        "hop_seconds": train_params.hop_seconds,
        "aggregate": params.evaluate.aggregate,
        "topk": params.evaluate.topk,
        "objective": train_params.objective,
        "model": params.model.model_dump(mode="json", exclude={"fusion"}),
        "input_shape": {"channels": shape.channels, "bins": shape.bins, "frames": shape.frames},
        "normalization": {"mean": mean, "std": std} if mean is not None else None,
        "ast_stats": list(ast_stats) if ast_stats else None,
        "birdnet": {k: v for k, v in cache.info["birdnet"].items() if k != "columns"}
        if "birdnet" in cache.info
        else None,
        "train_counts": {s: int(c) for s, c in zip(species, train_counts, strict=True)},
        "params": training_params(params),
        # metrics without the wall-clock seconds: models/ must be the same bytes on every rerun and machine
        "metrics": {**metrics, "train": {k: v for k, v in metrics["train"].items() if k != "seconds"}},
    }
    return TrainingResult(module.model.eval(), info, metrics, history)
