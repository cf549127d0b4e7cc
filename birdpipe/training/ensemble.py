"""An ensemble of linear heads (``train.ensemble``): members trained alike but for their seed, weights averaged.

On soundscapes a head trained on focal recordings extrapolates, and how it does depends on the luck of its
seed: on xc_puerto_rico (split seed 0) five training seeds of the default head gave val cmAP of the head alone
from 0.45 to 0.58. Averaging members cancels much of that. For ``birdnet_linear`` (standardisation, dropout,
one linear layer) the logits are linear in the weights, so the mean of the members' weights gives exactly the
mean of their logits: the bundle stays one model of the same size and speed, and evaluate, fuse and predict
read it as before. Member k trains with ``seed + k`` (member 0 is the single model of ``train.ensemble: 1``),
in its own checkpoint folder so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from birdpipe.common.params import Params
from birdpipe.training.loop import CHECKPOINT_DIR, TrainingResult, fit


def average_states(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts of one architecture (in float32, cast back to each tensor's dtype)."""
    return {
        key: torch.stack([state[key].float() for state in states]).mean(dim=0).to(states[0][key].dtype)
        for key in states[0]
    }


def fit_ensemble(params: Params, *args: Any, **kwargs: Any) -> TrainingResult | None:
    """:func:`birdpipe.training.loop.fit` (same arguments) for each of ``train.ensemble`` members; the first
    member's result with the members' mean weights (None in a DDP process other than rank 0). Member k > 0
    checkpoints under ``<checkpoint_dir>/member_k`` and logs no dvclive curves (pass ``checkpoint_dir`` and
    ``live_dir`` by keyword)."""
    members = params.train.ensemble
    first = fit(params, *args, **kwargs)
    if members == 1 or first is None:
        return first
    states, runs = [first.model.state_dict()], [first.metrics["train"]]
    for k in range(1, members):
        member = params.model_copy(update={"seed": params.seed + k})
        folder = Path(kwargs.get("checkpoint_dir", CHECKPOINT_DIR)) / f"member_{k}"
        result = fit(member, *args, **{**kwargs, "checkpoint_dir": folder, "live_dir": None})
        if result is None:
            return None
        states.append(result.model.state_dict())
        runs.append(result.metrics["train"])
    first.model.load_state_dict(average_states(states))
    train = first.metrics["train"]
    train["seconds"] = round(sum(run["seconds"] for run in runs), 1)
    train["ensemble"] = {
        "members": members,
        "best_epoch": [run["best_epoch"] for run in runs],
        "best_val_f1_macro": [run["best_val_f1_macro"] for run in runs],
    }
    first.info["ensemble"] = {
        "members": members,
        "seeds": [params.seed + k for k in range(members)],
        "combined": "mean of the members' weights (a linear head: the mean of their logits)",
    }
    return first
