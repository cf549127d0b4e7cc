"""The trained-model bundle in ``models/``: everything needed to use a model without the repo's data.

Two parts, written by two stages: ``models/network/`` (train) and ``models/fusion/`` (fuse).
``network/model.pt`` holds the weights (normalisation statistics included, as buffers); ``network/bundle.json``
holds the species list (and their names when known), the feature config, the window, hop, objective and
aggregation used by evaluate, the model params, the training counts, the full params and the training
metrics. Transformer models keep their Hugging Face weights and config in ``network/backbone/``
(``save_pretrained`` format, so they rebuild without a network), and ``model.pt`` then holds only the rest,
so no weight is stored twice. ``fusion/fusion.json`` holds what was fitted on validation data after training:
the fusion with BirdNET and the per-species detection thresholds. :func:`load_bundle` reads both (a folder
holding ``bundle.json`` itself, as written before the fuse stage existed, still loads) and needs only this
library.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import ModelParams
from birdpipe.features.spectral import FeatureConfig
from birdpipe.models import Classifier, InputShape, build_model

BUNDLE_FORMAT = 1
REQUIRED = ("bundle.json", "model.pt")
REQUIRED_KEYS = ("species", "feature_config", "window_seconds", "hop_seconds", "aggregate", "model", "input_shape")
# What torch.load raises on a damaged file: a cut zip archive (RuntimeError from the stream reader), a cut
# legacy pickle (EOFError, often without a message), a short read (OSError), a byte flipped in the pickle
# (UnicodeDecodeError, a ValueError) or a global the weights-only unpickler refuses (UnpicklingError).
UNREADABLE = (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError)


class BundleError(PipelineError):
    """A model folder that is incomplete or does not fit the request."""


def _reason(exc: BaseException) -> str:
    """One line for an error message: the first specific line of ``exc``, or its type when it says nothing.

    ``load_state_dict`` opens with a bare "Error(s) in loading state_dict for ...:" and lists the problems
    below it, so the first of those is what the user needs; the rest stay on ``__cause__``.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and lines[0].endswith(":"):
        return lines[1] + (f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")
    return lines[0]


NETWORK = "network"
FUSION = "fusion"


@dataclass
class Bundle:
    model: Classifier
    info: dict[str, Any]
    folder: Path
    fusion: dict[str, Any] | None = None  # fusion/fusion.json: recording and window fusion, thresholds

    @property
    def recording_fusion(self) -> dict[str, Any] | None:
        """The recording-level late fusion of a softmax model (older bundles kept it in bundle.json)."""
        if self.fusion is not None:
            return self.fusion.get("recording")
        return self.info.get("fusion")

    @property
    def window_fusion(self) -> dict[str, Any] | None:
        """The window-level fusion of a multi-label model with BirdNET, when applicable."""
        window = (self.fusion or {}).get("window") or {}
        return window if window.get("applicable") else None

    @property
    def thresholds(self) -> np.ndarray | None:
        """Per-species detection thresholds chosen on val soundscapes, in species order (None if never fitted)."""
        fitted = (self.fusion or {}).get("thresholds")
        if not fitted:
            return None
        return np.array([float(fitted["values"][s]) for s in self.species])

    @property
    def species(self) -> list[str]:
        return list(self.info["species"])

    @property
    def feature_config(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.info["feature_config"])

    @property
    def multilabel(self) -> bool:
        """Independent sigmoid scores per species (``train.objective: multilabel``), else a softmax."""
        return self.info.get("objective", "multiclass") == "multilabel"

    def check_matches(self, species: list[str], config: FeatureConfig, where: str) -> None:
        """Refuse to score ``where`` (a feature cache) with a bundle trained on other species or other features: the
        columns would be misread silently. Raises BundleError naming what differs."""
        problems = []
        if list(species) != self.species:
            missing = sorted(set(self.species) - set(species))
            extra = sorted(set(species) - set(self.species))
            problems.append(
                f"species differ (the bundle has {len(self.species)}, {where} {len(species)}; only in the bundle: "
                f"{', '.join(missing[:5]) or 'none'}; only in {where}: {', '.join(extra[:5]) or 'none'}"
                f"{'; same names in another order' if not missing and not extra else ''})"
            )
        if config.to_dict() != self.feature_config.to_dict():
            ours, theirs = self.feature_config.to_dict(), config.to_dict()
            keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            problems.append(f"feature config differs in {', '.join(keys)}")
        if problems:
            raise BundleError(
                f"the model in {self.folder} does not fit {where}: {'; '.join(problems)}. Rerun train (dvc repro) "
                "so that model and features come from the same params"
            )

    @property
    def window_frames(self) -> int:
        return self.feature_config.frames(self.info["window_seconds"])

    @property
    def hop_frames(self) -> int:
        return self.feature_config.frames(self.info["hop_seconds"])


TRANSFORMERS = ("audio_vit", "ast")
BACKBONE_PREFIX = "network.model."  # the Hugging Face model inside AudioViT / AudioAST


def save_bundle(folder: Path, model: Classifier, info: dict[str, Any]) -> None:
    """Write the bundle into ``folder`` (the caller makes it atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if info["model"]["name"] in TRANSFORMERS:
        from birdpipe.models.hf import save_pretrained

        save_pretrained(model.network, folder / "backbone")
        state = {k: v for k, v in state.items() if not k.startswith(BACKBONE_PREFIX)}
    torch.save({"format": BUNDLE_FORMAT, "state_dict": state}, folder / "model.pt")
    (folder / "bundle.json").write_text(json.dumps({"format": BUNDLE_FORMAT, **info}, indent=2) + "\n")


def save_fusion(folder: Path, fusion: dict[str, Any]) -> None:
    """Write ``fusion.json`` into ``folder`` (the caller makes it atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fusion.json").write_text(json.dumps({"format": BUNDLE_FORMAT, **fusion}, indent=2) + "\n")


def _read_fusion(folder: Path) -> dict[str, Any] | None:
    path = folder / "fusion.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON ({_reason(exc)})") from exc


def load_bundle(folder: str | Path, device: str | torch.device = "cpu") -> Bundle:
    """Rebuild a trained model from its bundle; a missing or broken piece gives a one-line error."""
    top = Path(folder)
    if not top.is_dir():
        raise BundleError(f"model folder {top} does not exist (train one with `dvc repro train`)")
    folder = top if (top / "bundle.json").is_file() or not (top / NETWORK).is_dir() else top / NETWORK
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise BundleError(f"model folder {folder} is incomplete: missing {', '.join(missing)}")
    try:
        info = json.loads((folder / "bundle.json").read_text())
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError for a binary file
        raise BundleError(f"{folder / 'bundle.json'} is not valid JSON ({_reason(exc)})") from exc
    absent = [key for key in REQUIRED_KEYS if key not in info]
    if absent:
        raise BundleError(f"{folder / 'bundle.json'} lacks {', '.join(absent)}")
    try:
        config = FeatureConfig.from_dict(info["feature_config"])
        model_params = ModelParams.model_validate(info["model"])
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise BundleError(f"{folder / 'bundle.json'} has a broken feature or model config ({_reason(exc)})") from exc
    expected = {"channels": config.channels, "bins": config.bins}
    mismatch = [f"{k} {info['input_shape'].get(k)} (features give {v})" for k, v in expected.items()
                if info["input_shape"].get(k) != v]  # fmt: skip
    if mismatch:
        raise BundleError(
            f"{folder / 'bundle.json'}: feature config does not match the model input: {', '.join(mismatch)}"
        )
    if model_params.name in TRANSFORMERS:
        backbone = folder / "backbone"
        if not backbone.is_dir():
            raise BundleError(f"model folder {folder} is incomplete: missing backbone/ (the transformer config)")
        model_params = model_params.model_copy(update={"pretrained": str(backbone)})
    shape = InputShape(**info["input_shape"])
    norm = info.get("normalization") or {}
    model = build_model(
        model_params, len(info["species"]), shape, norm.get("mean"), norm.get("std"), ast_stats=info.get("ast_stats")
    )
    try:
        saved = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
    except UNREADABLE as exc:
        raise BundleError(f"{folder / 'model.pt'} cannot be read, damaged or not a bundle's ({_reason(exc)})") from exc
    if not isinstance(saved, dict) or not isinstance(saved.get("state_dict"), dict):
        raise BundleError(f"{folder / 'model.pt'} holds no state_dict (not written by save_bundle)")
    state = saved["state_dict"]
    if model_params.name in TRANSFORMERS:  # the backbone's weights came from backbone/
        state = {**{k: v for k, v in model.state_dict().items() if k.startswith(BACKBONE_PREFIX)}, **state}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # missing, unexpected or differently shaped weights
        raise BundleError(f"{folder / 'model.pt'} does not match bundle.json ({_reason(exc)})") from exc
    model.to(device).eval()
    return Bundle(model, info, folder, _read_fusion(top / FUSION))
