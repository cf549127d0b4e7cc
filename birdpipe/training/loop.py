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

import hashlib
import json
import logging
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, Timer
from lightning.pytorch.plugins import TorchCheckpointIO
from torch.utils.data import DataLoader

from birdpipe.common.errors import PipelineError, is_launch_main
from birdpipe.common.outputs import atomic_path
from birdpipe.common.params import Params, TrainParams
from birdpipe.common.workers import cpu_workers, resolve_device, resolve_precision
from birdpipe.data.windows import (
    EvalWindows,
    NumberedWindows,
    ShardSampler,
    TrainSampler,
    TrainWindows,
    expected_class_frequencies,
)
from birdpipe.evaluation.metrics import classification_metrics, recording_probabilities
from birdpipe.features.cache import FeatureCache
from birdpipe.features.spectral import FeatureConfig
from birdpipe.models import Classifier, InputShape, build_model, count_parameters
from birdpipe.training.augment import Augmenter, NoiseBank
from birdpipe.training.losses import ClassificationLoss, MultilabelLoss, build_loss
from birdpipe.training.targets import BagPooling, TrainBags, recording_targets

MONITOR = "val/f1_macro"


class _HideTips(logging.Filter):
    """Lightning advertises a cloud logger at every start; a researcher offline needs no such tip."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_HideTips())


class NonFiniteLossError(PipelineError):
    """The training loss became NaN or infinite."""


# ------------------------------------------------------------------------------------------ devices
# ------------------------------------------------------------------------------------------ schedule
def lr_factor(epoch: float, params: TrainParams) -> float:
    """Multiplier of the base learning rate at a (fractional) epoch."""
    warmup = params.warmup_epochs
    if warmup > 0 and epoch < warmup:
        return (epoch + 1e-3) / warmup
    if params.scheduler == "step":
        return params.step_gamma ** math.floor(epoch / params.step_size)
    if params.scheduler == "cosine":
        span = max(params.epochs - warmup, 1e-9)
        progress = min(max((epoch - warmup) / span, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed every global generator from (seed, epoch) alone (and the DDP rank, so processes draw apart).

    Lightning's checkpoints hold no random state: without this, a run resumed at epoch e would draw its dropout
    masks, augmentations and MixUp partners from the state ``seed_everything`` left, not from where the
    interrupted run's stream had got to by epoch e.
    """
    entropy = [seed, epoch] if rank == 0 else [seed, epoch, rank]
    derived = int(np.random.SeedSequence(entropy).generate_state(1)[0])
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)  # CPU and every CUDA device


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their target and renamed into place, as every stage output is.

    Lightning stages a checkpoint in the system temp folder and moves it over: a copy, not a rename, when that
    folder is on another device, so a kill could leave a cut ``last.ckpt``; and its full-disk error names no file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as temporary:
            torch.save(checkpoint, temporary)


# ---------------------------------------------------------------------------------------- the module
class LitClassifier(L.LightningModule):
    def __init__(
        self,
        model: Classifier,
        loss: ClassificationLoss | MultilabelLoss,
        params: Params,
        augmenter: Augmenter,
        val_recordings: pd.DataFrame,
        train_counts: np.ndarray,
        steps_per_epoch: int,
        val_targets: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.params = params
        self.augmenter = augmenter
        self.multilabel = params.train.objective == "multilabel"
        pooling = params.train.pooling
        n_classes = len(train_counts)
        self.pool = BagPooling(pooling, n_classes, params.train.lse_sharpness) if pooling != "none" else None
        self.val_labels = val_recordings["label_index"].to_numpy()
        self.val_targets = None if val_targets is None else torch.from_numpy(val_targets)
        self.n_val = len(val_recordings)
        self.train_counts = train_counts
        self.steps_per_epoch = max(1, steps_per_epoch)
        self._reset_epoch_state()
        self.history: list[dict[str, float]] = []

    def _reset_epoch_state(self) -> None:
        self._train_loss, self._train_correct, self._train_seen, self._train_batches = 0.0, 0.0, 0, 0
        self._grad_norms: list[float] = []
        self._val_probs: list[torch.Tensor] = []
        self._val_positions: list[torch.Tensor] = []
        self._val_losses: list[torch.Tensor] = []
        self._val_indices: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def on_train_epoch_start(self) -> None:
        self._reset_epoch_state()
        # before the epoch's first draw, on resume as on a fresh run
        seed_epoch(self.params.seed, self.current_epoch, self.global_rank)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, labels = batch
        x, target = self.augmenter(x, labels) if self.augmenter.active else (x, labels)
        if self.pool is not None:  # a bag of windows per example: the loss reads the pooled window logits
            logits = self.pool(self.model(x.flatten(0, 1)).unflatten(0, x.shape[:2]))
        else:
            logits = self.model(x)
        loss = self.loss(logits, target)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch + 1}, step "
                f"{self.global_step} (batch {batch_idx}); try a lower train.lr, train.grad_clip, milder "
                "class weights (loss.weights) or train.precision: 32"
            )
        hard = target.argmax(dim=1) if target.dim() == 2 else target
        named = target.amax(dim=1) > 0 if target.dim() == 2 else torch.ones_like(hard, dtype=torch.bool)
        self._train_loss += float(loss.detach())
        self._train_correct += float(((logits.argmax(dim=1) == hard) & named).sum())  # negatives name no species
        self._train_seen += int(named.sum())
        self._train_batches += 1
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        norms = [p.grad.detach().float().norm(2) for p in self.model.parameters() if p.grad is not None]
        if norms:
            self._grad_norms.append(float(torch.linalg.vector_norm(torch.stack(norms))))

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, positions, labels, indices = batch
        logits = self.model(x).float()
        if self.multilabel:  # a window against its recording's targets
            target = self.val_targets.to(logits.device)[positions]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1)
            self._val_losses.append(loss.detach())
            self._val_probs.append(torch.sigmoid(logits))
        else:
            self._val_losses.append(torch.nn.functional.cross_entropy(logits, labels, reduction="none").detach())
            self._val_probs.append(torch.softmax(logits, dim=1))
        self._val_positions.append(positions)
        self._val_indices.append(indices)

    def _gathered_validation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(window probabilities, recording positions, losses) of every val window once, in dataset order:
        each DDP process holds its share, padded to equal length."""
        parts = [torch.cat(items) for items in (self._val_probs, self._val_positions, self._val_losses,
                                                self._val_indices)]  # fmt: skip
        if self.trainer.world_size > 1:
            parts = [self.all_gather(part).flatten(0, 1) for part in parts]
        probs, positions, losses, indices = (part.cpu().numpy() for part in parts)
        first = np.unique(indices, return_index=True)[1]  # sorted window indices, padding and overlaps dropped
        return probs[first], positions[first], losses[first]

    def _train_totals(self) -> tuple[float, float, float, float]:
        totals = torch.tensor([self._train_loss, self._train_correct, self._train_seen, self._train_batches],
                              dtype=torch.float64, device=self.device)  # fmt: skip
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        loss, correct, seen, batches = (float(v) for v in totals.cpu())
        return loss, correct, seen, batches

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val_probs:
            return
        window_probs, positions, losses = self._gathered_validation()
        train_loss, train_correct, train_seen, train_batches = self._train_totals()
        evaluate = self.params.evaluate
        probs = recording_probabilities(window_probs, positions, self.n_val, evaluate.aggregate, evaluate.topk,
                                        self.multilabel)  # fmt: skip
        scores = classification_metrics(self.val_labels, probs, self.train_counts, evaluate.rare_threshold)
        optimizer = self.optimizers()
        lrs = [group["lr"] for group in optimizer.param_groups] if optimizer is not None else [0.0]
        row = {
            "train/loss": train_loss / max(train_batches, 1),
            "train/accuracy": train_correct / max(train_seen, 1),
            "train/lr": float(lrs[-1]),
            "train/grad_norm": float(np.mean(self._grad_norms)) if self._grad_norms else 0.0,
            "val/loss": float(losses.sum()) / len(window_probs),
            "val/accuracy": scores["accuracy"],
            "val/f1_macro": scores["f1_macro"],
        }
        if len(lrs) > 1 and (self.params.train.backbone_lr or self.params.train.head_lr):
            row["train/backbone_lr"] = float(lrs[0])
        self.log(MONITOR, row[MONITOR], prog_bar=True, logger=False)
        self.log("val/accuracy", row["val/accuracy"], prog_bar=True, logger=False)
        self.log("train/loss", row["train/loss"], prog_bar=True, logger=False)
        if self.logger is not None:
            self.logger.log_metrics(row, step=self.current_epoch + 1)
        self.history.append({"epoch": self.current_epoch + 1, **row})
        self._val_probs, self._val_positions, self._val_losses, self._val_indices = [], [], [], []

    def configure_optimizers(self) -> dict[str, Any]:
        train = self.params.train
        head = list(self.model.head.parameters()) + (list(self.pool.parameters()) if self.pool is not None else [])
        head_ids = {id(p) for p in head}
        backbone = [p for p in self.parameters() if id(p) not in head_ids and p.requires_grad]
        groups = [
            {"params": backbone, "lr": train.backbone_lr or train.lr},
            {"params": head, "lr": train.head_lr or train.lr},
        ]
        groups = [g for g in groups if g["params"]]
        optimizer_class = torch.optim.AdamW if train.optimizer == "adamw" else torch.optim.Adam
        optimizer = optimizer_class(groups, weight_decay=train.weight_decay)
        steps = self.steps_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step / steps, train))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


# ------------------------------------------------------------------------------------------ helpers
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

    relevant = {
        "code": code_digest(TRAINING_CODE),
        "seed": params.seed,
        "model": params.model.model_dump(mode="json"),
        "loss": params.loss.model_dump(mode="json"),
        "augment": params.augment.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json", exclude={"num_workers", "threads", "device"}),
        "normalize": params.features.normalize,
        "evaluate": params.evaluate.model_dump(mode="json", include={"aggregate", "topk", "rare_threshold"}),
    }
    return _digest(inputs, relevant)


def noise_bank(params: Params, cache: FeatureCache, train: pd.DataFrame) -> NoiseBank | None:
    noise = params.augment.noise
    if noise.p <= 0:
        return None
    if noise.source == "recordings":
        return NoiseBank(cache.arrays["train"], list(zip(train["start"], train["stop"], strict=True)))
    from birdpipe.data.audio import AUDIO_EXTENSIONS, AudioError
    from birdpipe.features.spectral import extract_recording

    folder = Path(noise.folder)
    clips = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS) if folder.is_dir() else []
    if not clips:
        raise PipelineError(f"augment.noise.folder {folder} holds no audio clips ({', '.join(AUDIO_EXTENSIONS)})")
    arrays, spans, offset = [], [], 0
    for clip in clips:
        try:
            features, _ = extract_recording(str(clip), cache.config, max_seconds=600.0)
        except AudioError as exc:
            print(f"noise clip skipped: {exc}")
            continue
        arrays.append(features.astype(np.float32))
        spans.append((offset, offset + features.shape[0]))
        offset += features.shape[0]
    if not arrays:
        raise PipelineError(f"no clip in augment.noise.folder {folder} could be decoded")
    return NoiseBank(np.concatenate(arrays), spans)


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
    checkpoint_dir: str | Path = "checkpoints",
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
    if bag is not None:
        train_windows = TrainBags(cache.arrays["train"], train, window, bag, targets)
    else:
        train_windows = TrainWindows(cache.arrays["train"], train, window, targets)
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
    resume = _prepare_checkpoints(checkpoint_dir, fingerprint, clean=main)
    resume_from = resume[0] if resume is not None else None
    if resume is not None and live_dir is not None and main:
        _repair_live(Path(live_dir), resume[1] + 1)  # dvclive's step of epoch index e is e + 1
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
    history = _read_history(module, live_dir)
    epochs_run = int(trainer.current_epoch)
    seconds = float(timer.time_elapsed("train")) or elapsed_now
    metrics = {
        "train": {
            "best_epoch": best_epoch,
            "epochs": max(epochs_run, best_epoch),
            "seconds": round(seconds, 1),
            "best_val_f1_macro": round(float(checkpoint.best_model_score or float("nan")), 6),
        },
        "model": {"params": count_parameters(module.model)},
    }
    (checkpoint_dir / "complete").write_text(fingerprint + "\n")
    info = {
        "species": species,
        "names": names or {},
        "feature_config": config.to_dict(),
        "window_seconds": train_params.window_seconds,
        "hop_seconds": train_params.hop_seconds,
        "aggregate": params.evaluate.aggregate,
        "topk": params.evaluate.topk,
        "objective": train_params.objective,
        "model": params.model.model_dump(mode="json"),
        "input_shape": {"channels": shape.channels, "bins": shape.bins, "frames": shape.frames},
        "normalization": {"mean": mean, "std": std} if mean is not None else None,
        "ast_stats": list(ast_stats) if ast_stats else None,
        "birdnet": {k: v for k, v in cache.info["birdnet"].items() if k != "columns"}
        if "birdnet" in cache.info
        else None,
        "train_counts": {s: int(c) for s, c in zip(species, train_counts, strict=True)},
        "params": params.model_dump(mode="json"),
        "metrics": metrics,
    }
    return TrainingResult(module.model.eval(), info, metrics, history)


def _prepare_checkpoints(checkpoint_dir: Path, fingerprint: str, clean: bool = True) -> tuple[Path, int] | None:
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


def _repair_live(live_dir: Path, last_step: int) -> None:
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


def _read_history(module: LitClassifier, live_dir: str | Path | None) -> list[dict[str, float]]:
    """Per-epoch metrics of the whole run: dvclive's files also cover the epochs before a resume."""
    folder = Path(live_dir) / "plots" / "metrics" if live_dir is not None else None
    if folder is None or not folder.is_dir():
        return module.history
    rows: dict[int, dict[str, float]] = {}
    for path in sorted(folder.rglob("*.tsv")):
        name = path.relative_to(folder).with_suffix("").as_posix()
        frame = pd.read_csv(path, sep="\t")
        value = frame.columns[-1]
        for step, v in zip(frame["step"], frame[value], strict=True):
            rows.setdefault(int(step), {"epoch": int(step)})[name] = float(v)
    return [rows[step] for step in sorted(rows)]
