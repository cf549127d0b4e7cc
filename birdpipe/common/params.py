"""The one typed schema for ``params.yaml``.

Every stage calls :func:`load_params`, so a typo (``dvc exp run -S loss.gama=3`` silently adds a key to
params.yaml), a wrong type or an out-of-range value stops the stage before any work, with a message that
names the key and what is allowed. ``python -m birdpipe params`` prints the documented schema.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from birdpipe.common.errors import PipelineError

PARAMS_FILE = "params.yaml"
WEIGHT_METHODS = ("inverse_frequency", "balanced", "sqrt", "effective_number")
WeightMethod = Literal["inverse_frequency", "balanced", "sqrt", "effective_number"]


class ParamsError(PipelineError, ValueError):
    """A params file that does not match the schema; the message names every offending key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------------------------- data
class SyntheticParams(Section):
    species: int = Field(24, ge=2, le=500, description="number of synthetic species")
    max_recordings: int = Field(150, ge=2, le=100_000, description="recordings of the commonest species")
    imbalance: float = Field(50.0, ge=1.0, le=10_000.0, description="max:min recordings ratio over species")
    recordings: int | None = Field(
        None,
        ge=2,
        le=1_000_000,
        description="total recordings: bends the count curve to reach it (null: geometric from max to min)",
    )
    min_seconds: float = Field(3.0, gt=0.5, le=600.0, description="shortest recording (s)")
    median_seconds: float = Field(8.0, gt=0.5, le=600.0, description="median recording length (s)")
    max_seconds: float = Field(60.0, gt=0.5, le=3600.0, description="longest recording (s)")
    snr_db: tuple[float, float] = Field((-3.0, 25.0), description="range of song-to-background SNR (dB)")
    similar_pairs: int = Field(4, ge=0, le=250, description="species pairs built to sound alike")
    recordists: int = Field(12, ge=1, le=10_000, description="recordists (groups for split.group_by)")
    sample_rate: int = Field(22050, ge=8000, le=96000, description="sample rate of the generated audio (Hz)")
    negatives: int = Field(
        0, ge=0, le=100_000, description="no-bird clips (weather, insects, engines, distractor calls): targets all 0"
    )

    @model_validator(mode="after")
    def _ordered(self) -> SyntheticParams:
        if not self.min_seconds <= self.median_seconds <= self.max_seconds:
            raise ValueError("need min_seconds <= median_seconds <= max_seconds")
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError("snr_db must be [low, high] with low <= high")
        if 2 * self.similar_pairs > self.species:
            raise ValueError("similar_pairs can be at most species / 2")
        if self.recordings is not None:
            bottom = max(1, round(self.max_recordings / self.imbalance))
            low, high = self.max_recordings + bottom * (self.species - 1), self.max_recordings * self.species
            if not low <= self.recordings <= high:
                raise ValueError(
                    f"recordings must lie in [{low}, {high}] for {self.species} species with max_recordings "
                    f"{self.max_recordings} and imbalance {self.imbalance:g}"
                )
        return self


class DataParams(Section):
    source: str = Field(
        "synthetic",
        description="'synthetic', a folder with one sub-folder per species, or a metadata CSV "
        "(Xeno-canto, BirdCLEF or path,label columns)",
    )
    on_bad_file: Literal["skip", "error"] = Field(
        "skip", description="an unreadable, empty, silent or too short recording is skipped or stops ingest"
    )
    min_seconds: float = Field(0.5, ge=0.0, le=600.0, description="recordings shorter than this are skipped")
    silence_dbfs: float = Field(-70.0, ge=-200.0, le=0.0, description="peak level below which a file is silent")
    label_column: str | None = Field(None, description="CSV column holding the label (auto-detected if null)")
    path_column: str | None = Field(None, description="CSV column holding the file path (auto-detected if null)")
    negatives: str | None = Field(
        None,
        description="a folder of recordings with none of the label set's species (targets all 0, split like the "
        "rest), or 'synthetic' for the generator's no-bird clips (data.synthetic.negatives of them); null = none",
    )
    synthetic: SyntheticParams = SyntheticParams()


# -------------------------------------------------------------------------------------------- split
class SplitParams(Section):
    train: float = Field(0.70, gt=0.0, lt=1.0, description="fraction of each species' recordings in train")
    val: float = Field(0.15, gt=0.0, lt=1.0, description="fraction in val")
    test: float = Field(0.15, gt=0.0, lt=1.0, description="fraction in test")
    group_by: list[str] = Field(default_factory=list, description="manifest columns whose groups never span two splits")
    column: str | None = Field(None, description="use this manifest column (train/val/test or folds) instead")
    val_fold: str | int | None = Field(None, description="with a fold column: the fold used as val")
    test_fold: str | int | None = Field(None, description="with a fold column: the fold used as test")
    min_recordings: int = Field(
        3, ge=3, le=1000, description="species with fewer recordings get the small_classes policy"
    )
    small_classes: Literal["drop", "train_only", "negative"] = Field(
        "drop", description="species below min_recordings: drop, train_only, or negative (made no-bird negatives)"
    )
    seed: int | None = Field(
        None, ge=0, le=2**31 - 1, description="seeds the split alone; null = the global seed (as before)"
    )

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitParams:
        if abs(self.train + self.val + self.test - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must be 1 (got {self.train + self.val + self.test:g})")
        return self


# ----------------------------------------------------------------------------------------- features
class ActivityParams(Section):
    windows: int = Field(0, ge=0, le=100, description="keep the N most active windows (0 = whole recording)")
    seconds: float = Field(4.0, gt=0.0, le=600.0, description="length of each activity window (s)")


class BirdNETParams(Section):
    """BirdNET V2.4 inputs (features.kind: birdnet): 3 s windows at 48 kHz, an embedding and/or scores each."""

    hop_seconds: float = Field(
        3.0, ge=0.5, le=3.0, description="hop between 3 s BirdNET windows (s); below 3 the windows overlap"
    )
    inputs: Literal["embedding", "scores", "both"] = Field(
        "embedding",
        description="what each window gives the model: embedding (1024-d), scores (BirdNET's log-confidences "
        "log sigmoid(logit) for all 6,522 of its classes) or both (7,546 values)",
    )


class FeatureParams(Section):
    kind: Literal["mfcc", "logmel", "birdnet"] = Field(
        "mfcc",
        description="mfcc: MFCC+delta+delta2 (3 channels); logmel (1); birdnet: BirdNET V2.4 inputs of 3 s "
        "windows (features.birdnet.inputs) plus BirdNET's own logits for the species it knows",
    )
    sample_rate: int = Field(22050, ge=8000, le=96000, description="audio is resampled to this rate (Hz)")
    n_fft: int = Field(2048, ge=64, le=16384, description="FFT size")
    hop_length: int = Field(512, ge=16, le=8192, description="hop between frames (samples)")
    n_mels: int = Field(128, ge=8, le=512, description="mel bands")
    n_mfcc: int = Field(20, ge=4, le=128, description="MFCC coefficients (kind: mfcc)")
    fmin: float = Field(0.0, ge=0.0, description="lowest mel frequency (Hz)")
    fmax: float | None = Field(None, gt=0.0, description="highest mel frequency (Hz), null = Nyquist")
    highpass_hz: float = Field(500.0, ge=0.0, description="high-pass cut-off (Hz), 0 = off")
    max_seconds: float = Field(60.0, gt=0.0, le=86_400.0, description="seconds kept from each recording")
    activity: ActivityParams = ActivityParams()
    dtype: Literal["float16", "float32"] = Field("float16", description="storage type of the feature cache")
    normalize: bool = Field(True, description="standardise inputs with data/feature_stats.json (train)")
    workers: int = Field(0, ge=0, le=256, description="extraction processes, 0 = all cores")
    store: str | None = Field(
        None,
        description="folder of the per-recording feature store shared by every split, seed and experiment (a cache, "
        "not an output); null = $BIRDPIPE_FEATURE_STORE or ~/.cache/birdpipe/features",
    )
    birdnet: BirdNETParams = BirdNETParams()

    @model_validator(mode="after")
    def _consistent(self) -> FeatureParams:
        nyquist = self.sample_rate / 2
        if self.fmax is not None and self.fmax > nyquist:
            raise ValueError(f"fmax ({self.fmax:g}) is above Nyquist ({nyquist:g}) for sample_rate")
        if self.fmin >= (self.fmax or nyquist):
            raise ValueError("fmin must be below fmax")
        if self.hop_length > self.n_fft:
            raise ValueError("hop_length must not exceed n_fft")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise ValueError("n_mfcc must not exceed n_mels")
        return self


# ------------------------------------------------------------------------------------------ weights
class WeightParams(Section):
    effective_beta: float = Field(0.999, gt=0.0, lt=1.0, description="beta of the effective-number method")
    normalize: bool = Field(True, description="scale every method's weights to mean 1 over species")
    clip: tuple[float, float] | None = Field(None, description="clip weights to [min, max] after normalising")


# -------------------------------------------------------------------------------------------- model
class ViTParams(Section):
    """Sizes of a config-built ViT (ignored when model.pretrained names a checkpoint)."""

    hidden_size: int = Field(192, ge=8, le=4096)
    layers: int = Field(4, ge=1, le=48)
    heads: int = Field(3, ge=1, le=64)
    intermediate_size: int = Field(768, ge=8, le=16384)
    patch_size: int = Field(16, ge=1, le=64)
    image_size: tuple[int, int] | None = Field(
        None, description="resize inputs to [height, width] (224x224 for ImageNet weights); null = native"
    )

    @model_validator(mode="after")
    def _shapes(self) -> ViTParams:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads})")
        if self.image_size and any(side <= 0 or side % self.patch_size for side in self.image_size):
            raise ValueError(f"image_size {list(self.image_size)} must be positive multiples of patch_size")
        return self


class ASTParams(Section):
    """Sizes of a config-built AST (ignored when model.pretrained names a checkpoint)."""

    hidden_size: int = Field(192, ge=8, le=4096)
    layers: int = Field(4, ge=1, le=48)
    heads: int = Field(3, ge=1, le=64)
    intermediate_size: int = Field(768, ge=8, le=16384)
    patch_size: int = Field(16, ge=2, le=64)
    frequency_stride: int = Field(10, ge=1, le=64)
    time_stride: int = Field(10, ge=1, le=64)
    max_length: int | None = Field(
        None,
        ge=16,
        le=4096,
        description="frames the input is padded/cut to (the study: 1024); null = the window, also for a "
        "pretrained checkpoint, whose position embeddings are then cropped or interpolated",
    )
    norm_mean: float | None = Field(None, description="AST input mean; null = from data/feature_stats.json")
    norm_std: float | None = Field(None, gt=0.0, description="AST input std; null = from feature_stats")

    @model_validator(mode="after")
    def _shapes(self) -> ASTParams:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of heads ({self.heads})")
        if self.max_length is not None and self.max_length < self.patch_size:
            raise ValueError(f"max_length ({self.max_length}) must be at least patch_size ({self.patch_size})")
        return self


class BirdNETHeadParams(Section):
    """Heads on BirdNET's window inputs, embedding and/or scores (model.name: birdnet_linear | birdnet_mlp)."""

    hidden_size: int = Field(512, ge=8, le=8192, description="hidden units of birdnet_mlp")
    dropout: float = Field(0.3, ge=0.0, lt=1.0, description="dropout on the inputs (both heads) and hidden layer")


class FusionParams(Section):
    """Late fusion of the trained model with BirdNET's own classifier, chosen on validation only."""

    method: Literal["none", "birdnet"] = Field(
        "none",
        description="birdnet: BirdNET speaks for the species it knows, the model for the others; a weighted "
        "geometric mean of the two, weight and pooling chosen on val (birdpipe/evaluation/fusion.py)",
    )
    weights: list[float] = Field(
        [0.0, 0.25, 0.5, 0.75, 1.0], description="weights of the trained model tried on val (1 = the model alone)"
    )
    poolings: list[Literal["mean", "max", "top3_mean"]] = Field(
        ["mean"], description="poolings of BirdNET's window logits per recording tried on val"
    )
    unknown_species: Literal["absent", "head"] = Field(
        "absent",
        description="multi-label window fusion, species BirdNET lacks: absent = fused like the others with "
        "BirdNET's median logit (on val windows) as its vote, so all species share one scale (T1); head = the "
        "model's score alone",
    )

    @field_validator("weights")
    @classmethod
    def _unit(cls, value: list[float]) -> list[float]:
        if not value or min(value) < 0 or max(value) > 1:
            raise ValueError("weights must be a non-empty list of numbers in [0, 1]")
        return value


RENAMED_HEADS = {"embedding_linear": "birdnet_linear", "embedding_mlp": "birdnet_mlp"}


class ModelParams(Section):
    name: Literal["audio_cnn", "audio_cnn_v2", "audio_vit", "ast", "birdnet_linear", "birdnet_mlp"] = Field(
        "audio_cnn", description="CNNs and transformers on spectrograms; birdnet_* heads on features.kind birdnet"
    )
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="dropout before the classifier")
    pretrained: str | None = Field(
        None, description="hub id or local save_pretrained folder for audio_vit/ast; null = config-built"
    )
    vit: ViTParams = ViTParams()
    ast: ASTParams = ASTParams()
    head: BirdNETHeadParams = BirdNETHeadParams()
    fusion: FusionParams = FusionParams()

    @model_validator(mode="before")
    @classmethod
    def _former_names(cls, data: Any) -> Any:
        """Bundles and params files written before the heads were renamed (embedding_linear, embedding_mlp and the
        section model.embedding) still load: their heads read BirdNET's scores as often as its embedding."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if data.get("name") in RENAMED_HEADS:
            data["name"] = RENAMED_HEADS[data["name"]]
        if "embedding" in data and "head" not in data:
            data["head"] = data.pop("embedding")
        return data


# --------------------------------------------------------------------------------------------- loss
SOFTMAX_LOSSES = ("ce", "weighted_ce", "focal", "logit_adjusted", "balanced_softmax")
SIGMOID_LOSSES = ("bce", "weighted_bce", "focal_bce")


class LossParams(Section):
    name: Literal["ce", "weighted_ce", "focal", "logit_adjusted", "balanced_softmax", "bce", "weighted_bce",
                  "focal_bce"] = Field(
        "ce",
        description="softmax losses (train.objective multiclass): ce, weighted_ce, focal, logit_adjusted, "
        "balanced_softmax; sigmoid losses (multilabel): bce, weighted_bce, focal_bce",
    )  # fmt: skip
    weights: WeightMethod = Field("sqrt", description="class-weight method for weighted_ce")
    gamma: float = Field(2.0, ge=0.0, le=10.0, description="focal loss focusing parameter")
    alpha: float | WeightMethod | None = Field(
        None, description="focal alpha: null, a scalar in (0, 1], or a per-class weight method"
    )
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    tau: float = Field(1.0, ge=0.0, le=10.0, description="logit adjustment strength (logit_adjusted)")
    softmax_weight: float = Field(
        0.0,
        ge=0.0,
        le=10.0,
        description="multilabel: weight of a cross-entropy over the same logits for examples "
        "that name a species (ranks species against each other for whole-recording summaries); 0 = off",
    )
    background_target: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="multilabel: target of a species named in a recording's background_species (the focal is 1)",
    )

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, value: Any) -> Any:
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError("a scalar alpha must be in (0, 1]")
        return value


# ---------------------------------------------------------------------------------------- augment
class SpecAugmentParams(Section):
    p: float = Field(0.0, ge=0.0, le=1.0, description="probability per example (0 = off; study 0.8)")
    freq_mask: int = Field(15, ge=0, le=512, description="max width of a frequency mask (bins)")
    time_mask: int = Field(35, ge=0, le=4096, description="max width of a time mask (frames)")
    n_freq_masks: int = Field(1, ge=0, le=10)
    n_time_masks: int = Field(1, ge=0, le=10)


class MixupParams(Section):
    p: float = Field(0.0, ge=0.0, le=1.0, description="probability per batch (0 = off; study 0.6)")
    alpha: float = Field(0.4, gt=0.0, le=10.0, description="Beta(alpha, alpha) mixing coefficient")


class NoiseParams(Section):
    p: float = Field(0.0, ge=0.0, le=1.0, description="probability per example (0 = off); log-mel only")
    source: Literal["recordings", "folder"] = Field(
        "recordings", description="mix windows of other training recordings, or clips from folder"
    )
    folder: str | None = Field(None, description="folder of noise clips (source: folder)")
    snr_db: tuple[float, float] = Field((3.0, 20.0), description="range of signal-to-noise ratio (dB)")


class AugmentParams(Section):
    specaugment: SpecAugmentParams = SpecAugmentParams()
    mixup: MixupParams = MixupParams()
    gain_db: float = Field(0.0, ge=0.0, le=40.0, description="random gain in [-gain_db, +gain_db] (0 = off)")
    noise: NoiseParams = NoiseParams()


# -------------------------------------------------------------------------------------------- train
class TrainParams(Section):
    objective: Literal["multiclass", "multilabel"] = Field(
        "multiclass",
        description="multiclass: one species per window, softmax; multilabel: a sigmoid per species, so a window "
        "may hold none or several (background species and no-bird negatives as targets)",
    )
    pooling: Literal["none", "max", "lse", "attention"] = Field(
        "none",
        description="multilabel: none gives every window its recording's labels; max, lse (log-sum-exp) and "
        "attention pool the window logits of a bag of bag_windows windows and the loss reads the pooled score "
        "(multiple-instance learning: a recording's label is true of some window, not of every one)",
    )
    bag_windows: int = Field(8, ge=1, le=256, description="windows per bag (pooling other than none)")
    ensemble: int = Field(
        1,
        ge=1,
        le=20,
        description="birdnet_linear heads trained with seeds seed, seed+1, ...; their weights averaged (equal to "
        "averaging their logits for a linear head)",
    )
    window_selection: Literal["all", "birdnet"] = Field(
        "all",
        description="training crops of a focal recording: all windows, or (features.kind birdnet, pooling none) "
        "only the windows where BirdNET hears the focal species at audible_confidence or more (every window of "
        "a recording where it hears none, or of a species it lacks)",
    )
    audible_confidence: float = Field(
        0.1, gt=0.0, lt=1.0, description="window_selection birdnet: BirdNET's sigmoid for the focal species"
    )
    silent_target: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="window_selection birdnet: null never draws a window where BirdNET does not hear the focal "
        "species; a number draws it with this target for that species (multilabel; 0: a negative of it)",
    )
    lse_sharpness: float = Field(
        5.0, gt=0.0, le=100.0, description="r of log-sum-exp pooling, (1/r) log mean exp(r z): 0 mean, inf max"
    )
    window_seconds: float = Field(4.0, gt=0.0, le=120.0, description="length of a model input window (s)")
    hop_seconds: float = Field(2.0, gt=0.0, le=120.0, description="hop of evaluation windows (s)")
    windows_per_recording: float = Field(
        2.0, gt=0.0, le=1000.0, description="random crops per training recording per epoch (epoch size)"
    )
    sampler: Literal["recording", "uniform", "sqrt", "class_balanced"] = Field(
        "recording",
        description="recording: every recording equally; uniform: over windows; sqrt / class_balanced: species "
        "drawn in proportion to the square root of their windows / equally",
    )
    batch_size: int = Field(
        32, ge=1, le=4096, description="windows per optimiser step over all devices (split evenly between them)"
    )
    epochs: int = Field(30, ge=1, le=10_000, description="maximum epochs")
    optimizer: Literal["adam", "adamw"] = Field("adam")
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    backbone_lr: float | None = Field(None, gt=0.0, le=10.0, description="pretrained backbone lr (null = lr)")
    head_lr: float | None = Field(None, gt=0.0, le=10.0, description="classifier head lr (null = lr)")
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0)
    scheduler: Literal["none", "step", "cosine"] = Field("cosine")
    step_size: int = Field(10, ge=1, le=10_000, description="epochs between lr steps (scheduler: step)")
    step_gamma: float = Field(0.5, gt=0.0, le=1.0, description="lr factor per step (scheduler: step)")
    warmup_epochs: float = Field(0.0, ge=0.0, le=1000.0, description="linear lr warmup")
    grad_clip: float | None = Field(1.0, gt=0.0, description="max gradient norm, null = off")
    accumulate: int = Field(1, ge=1, le=1024, description="gradient accumulation steps")
    patience: int = Field(7, ge=1, le=10_000, description="early stopping on val F1-macro")
    precision: Literal["auto", "32", "bf16", "16"] = Field(
        "auto", description="auto = bf16/fp16 mixed on CUDA, 32 on CPU"
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto")
    devices: int = Field(
        1, ge=1, le=1024, description="processes per machine: GPUs, or CPU processes (Lightning DDP when above 1)"
    )
    num_nodes: int = Field(1, ge=1, le=4096, description="machines (DDP; launched by torchrun or SLURM)")
    strategy: Literal["auto", "ddp"] = Field(
        "auto", description="auto = DDP when devices x num_nodes > 1; ddp forces it (gloo on CPU, nccl on CUDA)"
    )
    num_workers: int = Field(0, ge=0, le=64, description="DataLoader workers (per process)")
    threads: int = Field(0, ge=0, le=256, description="torch CPU threads over all processes, 0 = all cores")

    @model_validator(mode="after")
    def _batch_splits(self) -> TrainParams:
        world = self.devices * self.num_nodes
        if self.batch_size % world:
            raise ValueError(
                f"batch_size {self.batch_size} must split evenly over devices x num_nodes = {world} processes "
                f"(e.g. {max(world, self.batch_size // world * world)})"
            )
        return self


# ----------------------------------------------------------------------------------------- evaluate
class EvaluateParams(Section):
    aggregate: Literal["mean", "max", "topk_mean"] = Field(
        "mean", description="how window probabilities make a recording's prediction"
    )
    topk: int = Field(3, ge=1, le=1000, description="windows averaged by topk_mean")
    rare_threshold: int = Field(50, ge=1, le=1_000_000, description="rare = fewer training recordings")
    batch_size: int = Field(64, ge=1, le=4096)


class SyntheticSoundscapeParams(Section):
    """The generator's val and test soundscapes (soundscapes.source: synthetic), rendered from the corpus's
    species as other individuals at other sites than the training recordings."""

    files: int = Field(6, ge=1, le=1000, description="soundscapes per split (val and test)")
    seconds: float = Field(120.0, ge=10.0, le=7200.0, description="length of each soundscape (s)")
    bird_free_share: float = Field(
        0.8,
        ge=0.0,
        le=0.95,
        description="about this share of each soundscape's time lies outside every bird event (the pauses "
        "between songs count, so low values are not reached)",
    )
    max_simultaneous: int = Field(3, ge=1, le=10, description="most species singing at once")
    snr_db: tuple[float, float] = Field((-5.0, 20.0), description="range of event-to-noise SNR (dB)")
    distractors_per_minute: float = Field(
        2.0, ge=0.0, le=60.0, description="loud non-bird sounds (engines, dogs, frogs, rain bursts) per minute"
    )

    @model_validator(mode="after")
    def _ordered(self) -> SyntheticSoundscapeParams:
        if self.snr_db[0] > self.snr_db[1]:
            raise ValueError("snr_db must be [low, high] with low <= high")
        return self


class MixSoundscapeParams(Section):
    """Soundscapes mixed from the split's own val and test recordings (soundscapes.source: mix): excerpts with
    exact times over non-bird sound; val soundscapes from val recordings, test ones from test recordings."""

    files: int = Field(4, ge=1, le=1000, description="soundscapes per split (val and test)")
    seconds: float = Field(300.0, ge=10.0, le=7200.0, description="length of each soundscape (s)")
    bird_free_share: float = Field(0.75, ge=0.0, le=0.95, description="share of time kept free of any bird")
    max_simultaneous: int = Field(2, ge=1, le=10, description="most species at once")
    excerpt_seconds: tuple[float, float] = Field((3.0, 10.0), description="range of excerpt lengths (s)")
    snr_db: tuple[float, float] = Field((0.0, 20.0), description="range of excerpt-to-bed SNR (dB)")
    distractors_per_minute: float = Field(2.0, ge=0.0, le=60.0, description="loud non-bird sounds per minute")


class SoundscapeParams(Section):
    """Long field recordings scored per segment (BirdSet's cmAP, AUROC, T1) and per-species thresholds."""

    source: str = Field(
        "synthetic",
        description="synthetic (the generator's soundscapes), mix (excerpts of the split's val/test recordings "
        "over non-bird sound), none, or a folder of long recordings with Raven selection tables "
        "(*.selections.txt) or an annotations.csv (file,start_s,end_s,label)",
    )
    segment_seconds: float = Field(5.0, ge=1.0, le=60.0, description="scoring segment (s)")
    hop_seconds: float = Field(
        2.5,
        ge=0.5,
        le=30.0,
        description="hop of the model's windows over a soundscape (s); a segment's score is "
        "the highest of the windows whose centre lies in it",
    )
    min_overlap_seconds: float = Field(
        0.25, ge=0.0, le=10.0, description="an event marks a segment when they overlap at least this long (s)"
    )
    val_share: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="files of a folder source given to val (thresholds, fusion); the rest test "
        "(unless the folder has val/ and test/ sub-folders or the CSV a split column)",
    )
    species_column: str = Field("Species", description="the species column of Raven selection tables")
    target_precision: float = Field(
        0.9, gt=0.0, lt=1.0, description="per-species thresholds are chosen on val soundscapes for this precision"
    )
    threshold_rule: Literal["calibration", "precision"] = Field(
        "calibration",
        description="calibration: the score where a per-species logistic fit of presence reaches target_precision "
        "(Wood & Kahl 2024); precision: the lowest threshold whose val precision reaches it",
    )
    min_positives: int = Field(
        5,
        ge=1,
        le=10_000,
        description="val segments with the species needed for its own threshold; below, the "
        "threshold comes from a logistic calibration of scores pooled over species (Wood & Kahl 2024)",
    )
    synthetic: SyntheticSoundscapeParams = SyntheticSoundscapeParams()
    mix: MixSoundscapeParams = MixSoundscapeParams()


class BaselineParams(Section):
    c_grid: list[float] = Field([0.01, 0.1, 1.0, 10.0], description="inverse regularisation strengths tried on val")

    @field_validator("c_grid")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if not value or min(value) <= 0:
            raise ValueError("c_grid must be a non-empty list of positive numbers")
        return value


class Params(Section):
    seed: int = Field(42, ge=0, le=2**31 - 1, description="seeds split, synthetic data and training")
    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    features: FeatureParams = FeatureParams()
    weights: WeightParams = WeightParams()
    model: ModelParams = ModelParams()
    loss: LossParams = LossParams()
    augment: AugmentParams = AugmentParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    baselines: BaselineParams = BaselineParams()
    soundscapes: SoundscapeParams = SoundscapeParams()

    @model_validator(mode="after")
    def _cross_section(self) -> Params:
        if self.data.negatives == "synthetic" and self.data.synthetic.negatives == 0:
            raise ValueError(
                "data.negatives: synthetic takes data.synthetic.negatives no-bird clips from the generator: set it "
                "above 0 (e.g. 100)"
            )
        if self.data.negatives == "synthetic" and self.data.source == "synthetic":
            raise ValueError(
                "with data.source: synthetic the corpus holds data.synthetic.negatives no-bird clips itself: leave "
                "data.negatives null (or name a folder of real no-bird recordings)"
            )
        if self.augment.noise.p > 0 and self.features.kind != "logmel":
            raise ValueError(
                "augment.noise mixes power spectra and needs features.kind: logmel "
                "(MFCCs cannot be mixed); set augment.noise.p: 0 or features.kind: logmel"
            )
        if self.augment.noise.p > 0 and self.augment.noise.source == "folder" and not self.augment.noise.folder:
            raise ValueError("augment.noise.source: folder needs augment.noise.folder")
        if self.model.name == "ast" and self.features.kind != "logmel":
            raise ValueError("model.name: ast needs features.kind: logmel (AST reads time x mel spectrograms)")
        embedding_model = self.model.name.startswith("birdnet_")
        if embedding_model != (self.features.kind == "birdnet"):
            raise ValueError(
                "model.name birdnet_linear / birdnet_mlp and features.kind: birdnet go together "
                f"(now model.name: {self.model.name}, features.kind: {self.features.kind}); {_TO_A_CNN}"
            )
        if self.model.fusion.method == "birdnet" and self.features.kind != "birdnet":
            raise ValueError(
                f"model.fusion.method: birdnet needs features.kind: birdnet (BirdNET's logits); {_TO_A_CNN}"
            )
        if self.features.kind == "birdnet":
            spectral = [
                name
                for name, on in (
                    ("augment.specaugment.p", self.augment.specaugment.p > 0),
                    ("augment.gain_db", self.augment.gain_db > 0),
                    ("features.activity.windows", self.features.activity.windows > 0),
                )
                if on
            ]
            if spectral:
                raise ValueError(
                    f"{', '.join(spectral)} act on spectrograms, not on BirdNET embeddings: set them to 0 with "
                    "features.kind: birdnet (augment.mixup and model.head.dropout work on embeddings)"
                )
        if self.train.hop_seconds > self.train.window_seconds:
            raise ValueError("train.hop_seconds must not exceed train.window_seconds")
        multilabel = self.train.objective == "multilabel"
        if multilabel != (self.loss.name in SIGMOID_LOSSES):
            allowed = SIGMOID_LOSSES if multilabel else SOFTMAX_LOSSES
            raise ValueError(
                f"loss.name: {self.loss.name} does not fit train.objective: {self.train.objective}; "
                f"allowed with {self.train.objective}: {', '.join(allowed)}"
            )
        if self.train.window_selection == "birdnet" and (
            self.features.kind != "birdnet" or self.train.pooling != "none"
        ):
            raise ValueError(
                "train.window_selection: birdnet reads BirdNET's confidence per window: it needs features.kind: "
                f"birdnet and train.pooling: none (got {self.features.kind}, {self.train.pooling})"
            )
        if self.train.ensemble > 1 and self.model.name != "birdnet_linear":
            raise ValueError(
                f"train.ensemble: {self.train.ensemble} averages the members' weights, which equals averaging "
                f"their outputs only for model.name: birdnet_linear (got {self.model.name}); set train.ensemble: 1"
            )
        if self.train.silent_target is not None and not multilabel:
            raise ValueError("train.silent_target sets a sigmoid target: it needs train.objective: multilabel")
        if self.train.pooling != "none" and not multilabel:
            raise ValueError(
                f"train.pooling: {self.train.pooling} pools sigmoid window scores: it needs train.objective: "
                "multilabel (with loss.name bce, weighted_bce or focal_bce)"
            )
        return self


_TO_A_CNN = (
    "for a spectrogram model set features.kind (mfcc | logmel), model.name and model.fusion.method: none together, "
    "or start from the study's recipe: python -m birdpipe phases run from_scratch_cnn"
)


# ------------------------------------------------------------------------------------ loading, errors
def _field_model(model: type[BaseModel], name: str) -> type[BaseModel] | None:
    field = model.model_fields.get(name)
    if field is None:
        return None
    annotation = field.annotation
    candidates = [annotation, *get_args(annotation)] if get_origin(annotation) else [annotation]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe(error: dict[str, Any]) -> str:
    """One line per error: the dotted key, the value given and what is allowed."""
    model: type[BaseModel] | None = Params
    keys: list[str] = []
    for part in error["loc"]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            if error["type"] == "extra_forbidden" and part == error["loc"][-1] and model is not None:
                keys.append(str(part))
                allowed = ", ".join(model.model_fields)
                return f"{'.'.join(keys)}: unknown key; allowed here: {allowed}"
            if isinstance(part, int):
                keys[-1] = f"{keys[-1]}[{part}]" if keys else str(part)
            continue
        keys.append(part)
        model = _field_model(model, part)
    key = ".".join(keys) or "(top level)"
    value = error.get("input")
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}{shown}: {message}"


def validate_params(raw: dict[str, Any] | None, origin: str = PARAMS_FILE) -> Params:
    """Validate a params mapping; raise :class:`ParamsError` naming every bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = sorted({_describe(err) for err in exc.errors()})
        raise ParamsError(f"{origin} is not valid:\n  " + "\n  ".join(lines)) from None


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml. Stage entry points call this first."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run stages from the project root")
    with path.open() as handle:
        try:
            raw = yaml.safe_load(handle)
        except yaml.YAMLError as exc:
            raise ParamsError(f"{path} is not valid YAML: {exc}") from None
    from birdpipe.common.inert import warn_inert  # late: inert imports this module; warns of keys that cannot matter

    return warn_inert(validate_params(raw, str(path)))


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``raw`` with dotted-key overrides (as ``dvc exp run -S key=value``) applied."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = result
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ParamsError(f"override {dotted}: {part} is not a section")
        node[leaf] = value
    return result


_MISSING = object()


def type_name(annotation: Any) -> str:
    """A short, readable type: ``int``, ``float | None``, ``list[str]``, ``'mean' | 'max'``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None and args:
        if str(origin) in ("typing.Union", "<class 'types.UnionType'>"):
            return " | ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def schema_lines(model: type[BaseModel] = Params, prefix: str = "", values: dict[str, Any] | None = None) -> list[str]:
    """Every key with its type, its value (``values``: params.yaml) and, where that differs, the schema default.

    ``python -m birdpipe params`` prints these: the value is what the stages will run with (the recipe), the
    default what a key left out of params.yaml gets."""
    lines = []
    for name, field in model.model_fields.items():
        sub = _field_model(model, name)
        key = f"{prefix}{name}"
        given = (values or {}).get(name, _MISSING) if isinstance(values, dict) else _MISSING
        if sub is not None and get_origin(field.annotation) is None:
            lines.extend(schema_lines(sub, key + ".", given if isinstance(given, dict) else None))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            default = default.model_dump()
        if isinstance(default, tuple):  # as YAML writes it
            default = list(default)
        shown = f"{key}: {type_name(field.annotation)} = {default if given is _MISSING else given!r}"
        if given is not _MISSING and given != default:
            shown += f"  (default {default!r})"
        lines.append(f"{shown}  # {field.description or ''}".rstrip(" #"))
    return lines
