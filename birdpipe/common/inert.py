"""Params whose value cannot matter under the other current choices, named so a changed metric-less run is explained.

``dvc exp run -S loss.gamma=3`` on the default ``loss.name: ce`` retrains and gives identical metrics, because
gamma is read only by the focal loss. :func:`inert_params` returns one line per such key, and only for keys
whose value differs from the schema default (the user changed them), so the defaults warn about nothing.
:func:`warn_inert` prints them to stderr; :func:`birdpipe.common.params.load_params`, which every stage calls
first, runs it, as does ``python -m birdpipe params``.

Adding a rule: append one ``Rule(keys, used, why)`` to :data:`RULES`:

- ``keys``: space-separated dotted keys or fnmatch patterns (``model.vit.*``); a pattern starting with ``-``
  excludes keys (``augment.noise.* -augment.noise.p``);
- ``used(params)``: True when those keys can matter; the rule fires when it is False;
- ``why``: the rest of the line after "<key> has no effect: ", formatted with ``p`` = the params
  (``"it is used only with features.kind: birdnet (now {p.features.kind})"``).

Each key gets the first rule that fires for it, so put the broader reason (the model that reads the
section is not chosen) before the narrower one (a checkpoint fixes those sizes).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

from pydantic import BaseModel

Params = Any  # birdpipe.common.params.Params; not imported: params calls this module (no import cycle)


class Rule(NamedTuple):
    keys: str
    used: Callable[[Params], bool]
    why: str


FOCAL = ("focal", "focal_bce")
WEIGHTED = ("weighted_ce", "weighted_bce")


def _class_weights_used(p: Params) -> bool:
    return p.loss.name in WEIGHTED or (p.loss.name in FOCAL and isinstance(p.loss.alpha, str))


def _weight_method(p: Params) -> str | None:
    if p.loss.name in WEIGHTED:
        return p.loss.weights
    return p.loss.alpha if p.loss.name in FOCAL and isinstance(p.loss.alpha, str) else None


_VIT_SIZES = "hidden_size layers heads intermediate_size patch_size"
_CHECKPOINT = "the checkpoint in model.pretrained fixes it"

RULES: list[Rule] = [
    # data
    Rule("data.synthetic.*", lambda p: p.data.source == "synthetic" or p.data.negatives == "synthetic",
         "it is used only with data.source: synthetic or data.negatives: synthetic (now {p.data.source})"),
    Rule("data.synthetic.* -data.synthetic.negatives -data.synthetic.sample_rate -data.synthetic.min_seconds "
         "-data.synthetic.max_seconds -data.synthetic.median_seconds -data.synthetic.recordists",
         lambda p: p.data.source == "synthetic",
         "beside a real source only the no-bird clips are generated (data.negatives: synthetic)"),
    Rule("data.label_column data.path_column", lambda p: p.data.source.lower().endswith(".csv"),
         "it is read only from a metadata CSV data.source (now {p.data.source})"),
    # split
    Rule("split.* -split.column -split.val_fold -split.test_fold", lambda p: p.split.column is None,
         "split.column {p.split.column} fixes the split"),
    Rule("split.val_fold split.test_fold", lambda p: p.split.column is not None,
         "it is used only with a fold split.column (now null)"),
    # features
    Rule("features.n_mfcc", lambda p: p.features.kind == "mfcc",
         "it is used only with features.kind: mfcc (now {p.features.kind})"),
    Rule("features.activity.seconds", lambda p: p.features.activity.windows > 0,
         "it is used only with features.activity.windows > 0 (now 0: the whole recording is kept)"),
    # weights: the weights stage always writes data/class_weights.json, but the loss may not read it
    Rule("weights.*", _class_weights_used,
         "the loss reads class weights only with loss.name: weighted_ce / weighted_bce, or a focal loss with a "
         "weight method as "
         "loss.alpha (now {p.loss.name}); only data/class_weights.json changes"),
    Rule("weights.effective_beta", lambda p: _weight_method(p) == "effective_number",
         "it is used only by the effective_number weight method (loss.weights / loss.alpha)"),
    Rule("features.birdnet.*", lambda p: p.features.kind == "birdnet",
         "it is used only with features.kind: birdnet (now {p.features.kind})"),
    Rule("features.n_fft features.hop_length features.n_mels features.fmin features.fmax features.highpass_hz "
         "features.sample_rate", lambda p: p.features.kind != "birdnet",
         "BirdNET embeddings fix their own input (3 s at 48 kHz); features.kind is birdnet"),
    # model
    Rule("model.head.*", lambda p: p.model.name.startswith("birdnet_"),
         "it is used only with model.name: birdnet_linear or birdnet_mlp (now {p.model.name})"),
    Rule("model.head.hidden_size", lambda p: p.model.name == "birdnet_mlp",
         "it is used only with model.name: birdnet_mlp (now {p.model.name})"),
    Rule("model.dropout", lambda p: not p.model.name.startswith("birdnet_"),
         "embedding heads take model.head.dropout (model.name: {p.model.name})"),
    Rule("model.fusion.* -model.fusion.method", lambda p: p.model.fusion.method != "none",
         "it is used only with model.fusion.method: birdnet (now none)"),
    Rule("model.pretrained", lambda p: p.model.name in ("audio_vit", "ast"),
         "it is used only with model.name: audio_vit or ast (now {p.model.name})"),
    Rule("model.vit.*", lambda p: p.model.name == "audio_vit",
         "it is used only with model.name: audio_vit (now {p.model.name})"),
    Rule("model.ast.*", lambda p: p.model.name == "ast", "it is used only with model.name: ast (now {p.model.name})"),
    Rule(" ".join(f"model.vit.{k}" for k in _VIT_SIZES.split()), lambda p: not p.model.pretrained, _CHECKPOINT),
    Rule(" ".join(f"model.ast.{k}" for k in f"{_VIT_SIZES} frequency_stride time_stride".split()),
         lambda p: not p.model.pretrained, _CHECKPOINT),
    # loss
    Rule("loss.gamma loss.alpha", lambda p: p.loss.name in FOCAL,
         "it is used only with loss.name: focal or focal_bce (now {p.loss.name})"),
    Rule("loss.name", lambda p: not (p.loss.name in ("logit_adjusted", "balanced_softmax")
                                     and p.train.sampler == "class_balanced"),
         "{p.loss.name} adds the log of the species prior the model trains on, and train.sampler: class_balanced "
         "makes that prior uniform, so the loss is plain cross-entropy (use another sampler, or loss.name: ce)"),
    Rule("loss.tau", lambda p: p.loss.name == "logit_adjusted",
         "it is used only with loss.name: logit_adjusted (now {p.loss.name}; balanced_softmax is tau 1)"),
    Rule("loss.weights", lambda p: p.loss.name in WEIGHTED,
         "it is used only with loss.name: weighted_ce or weighted_bce (now {p.loss.name}; focal weighs by loss.alpha)"),
    Rule("loss.label_smoothing", lambda p: p.train.objective == "multiclass",
         "it smooths softmax targets only (train.objective: multilabel takes loss.background_target)"),
    # augment
    Rule("augment.specaugment.* -augment.specaugment.p", lambda p: p.augment.specaugment.p > 0,
         "SpecAugment is off (augment.specaugment.p: 0)"),
    Rule("augment.mixup.alpha", lambda p: p.augment.mixup.p > 0, "MixUp is off (augment.mixup.p: 0)"),
    Rule("augment.noise.* -augment.noise.p", lambda p: p.augment.noise.p > 0,
         "noise mixing is off (augment.noise.p: 0)"),
    Rule("augment.noise.folder", lambda p: p.augment.noise.source == "folder",
         "it is used only with augment.noise.source: folder (now {p.augment.noise.source})"),
    # train, evaluate
    Rule("train.strategy", lambda p: p.train.devices * p.train.num_nodes > 1,
         "one process trains (train.devices x train.num_nodes = 1): there is nothing to distribute"),
    Rule("train.step_size train.step_gamma", lambda p: p.train.scheduler == "step",
         "it is used only with train.scheduler: step (now {p.train.scheduler})"),
    Rule("train.pooling train.bag_windows train.lse_sharpness loss.background_target loss.softmax_weight",
         lambda p: p.train.objective == "multilabel", "it is used only with train.objective: multilabel"),
    Rule("train.bag_windows", lambda p: p.train.pooling != "none",
         "it is used only with train.pooling other than none (now none: every window gets its recording's labels)"),
    Rule("train.lse_sharpness", lambda p: p.train.pooling == "lse",
         "it is used only with train.pooling: lse (now {p.train.pooling})"),
    Rule("soundscapes.* -soundscapes.source", lambda p: p.soundscapes.source != "none",
         "soundscapes.source is none: no soundscape is scored"),
    Rule("soundscapes.synthetic.*", lambda p: p.soundscapes.source == "synthetic",
         "it is used only with soundscapes.source: synthetic (now {p.soundscapes.source})"),
    Rule("soundscapes.mix.*", lambda p: p.soundscapes.source == "mix",
         "it is used only with soundscapes.source: mix (now {p.soundscapes.source})"),
    Rule("soundscapes.val_share soundscapes.species_column",
         lambda p: p.soundscapes.source not in ("synthetic", "mix", "none"),
         "generated soundscapes come split into val/ and test/ with their own annotations"),
    Rule("evaluate.topk", lambda p: p.evaluate.aggregate == "topk_mean",
         "it is used only with evaluate.aggregate: topk_mean (now {p.evaluate.aggregate})"),
]  # fmt: skip


def _leaves(section: BaseModel, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf of a params section."""
    leaves: dict[str, Any] = {}
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            leaves.update(_leaves(value, f"{prefix}{name}."))
        else:
            leaves[f"{prefix}{name}"] = value
    return leaves


def _matches(key: str, patterns: str) -> bool:
    words = patterns.split()
    if any(fnmatchcase(key, w[1:]) for w in words if w.startswith("-")):
        return False
    return any(fnmatchcase(key, w) for w in words if not w.startswith("-"))


def inert_params(params: Params) -> list[str]:
    """One line per key that differs from the schema default but cannot matter under the current params."""
    defaults = _leaves(type(params)())  # the schema's defaults
    missing = object()
    changed = [key for key, value in _leaves(params).items() if defaults.get(key, missing) != value]
    lines: dict[str, str] = {}
    for rule in RULES:
        keys = [k for k in changed if k not in lines and _matches(k, rule.keys)]
        if keys and not rule.used(params):
            lines.update({k: f"{k} has no effect: {rule.why.format(p=params)}" for k in keys})
    return [lines[k] for k in changed if k in lines]


def warn_inert(params: Params) -> Params:
    """Print a ``warning:`` line to stderr for every inert key; return ``params`` unchanged."""
    for line in inert_params(params):
        print(f"warning: {line}", file=sys.stderr)
    return params
