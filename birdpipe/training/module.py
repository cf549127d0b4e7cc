"""The LightningModule: one training step (windows or bags of windows, augmentation, the loss), validation on
every window of the val recordings aggregated per recording, the optimiser with discriminative learning rates, and
the per-step learning-rate schedule (warmup, then none, step or cosine).

Every random draw of epoch e (dropout, augmentation, MixUp) comes from generators seeded by (seed, e) alone
(:func:`seed_epoch`), so a resumed run gives the same model as an uninterrupted one."""

from __future__ import annotations

import math
import random
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import Params, TrainParams
from birdpipe.evaluation.metrics import classification_metrics, recording_probabilities
from birdpipe.models import Classifier
from birdpipe.training.augment import Augmenter
from birdpipe.training.losses import ClassificationLoss, MultilabelLoss
from birdpipe.training.targets import BagPooling

MONITOR = "val/f1_macro"


class NonFiniteLossError(PipelineError):
    """The training loss became NaN or infinite."""


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
