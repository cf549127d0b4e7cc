"""Training crops where BirdNET hears the focal species (train.window_selection: birdnet)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from birdpipe.common.params import ParamsError, validate_params
from birdpipe.data.windows import TrainWindows
from birdpipe.training.audible import audible_starts, kept_share


def _recordings() -> tuple[pd.DataFrame, np.ndarray]:
    """Four recordings over 18 frames of 2 species: known focal, unknown focal, a negative, never heard."""
    table = pd.DataFrame({"start": [0, 6, 10, 14], "stop": [6, 10, 14, 18], "label_index": [0, 1, -1, 0]})
    logits = np.full((18, 2), -6.0, dtype=np.float32)
    logits[[1, 4], 0] = 1.0  # recording 0 heard in frames 1 and 4
    logits[7, 1] = 3.0  # species 1 is unknown to BirdNET: its logits say nothing
    return table, logits


def test_audible_starts_by_hand():
    table, logits = _recordings()
    known = np.array([True, False])
    one = audible_starts(table, logits, known, window=1, confidence=0.5)
    assert np.flatnonzero(one[0]).tolist() == [1, 4] and len(one[0]) == 6
    assert one[1] is None and one[2] is None  # unknown species, negative: every window
    assert one[3] is None  # BirdNET hears the species nowhere: it cannot judge, nothing dropped
    two = audible_starts(table, logits, known, window=2, confidence=0.5)
    assert np.flatnonzero(two[0]).tolist() == [0, 1, 3, 4]  # a 2-frame window: either frame heard
    strict = audible_starts(table, logits, known, window=1, confidence=float(1 / (1 + np.exp(-2.0))))
    assert strict[0] is None  # logit 1 < logit(sigmoid(2)): heard nowhere at this confidence
    # focal windows: 6 + 4 + 4 (the negative's are not counted), 2 of recording 0's 6 kept
    assert kept_share(table, one, window=1) == pytest.approx((2 + 4 + 4) / 14)


def test_train_windows_crop_only_allowed_starts():
    table, logits = _recordings()
    frames = np.arange(18, dtype=np.float32).reshape(18, 1, 1)  # a frame's value is its index
    allowed = audible_starts(table, logits, np.array([True, False]), window=1, confidence=0.5)
    windows = TrainWindows(frames, table, 1, heard=allowed)
    seen = {float(windows[(0, offset)][0].squeeze()) for offset in range(6)}
    assert seen == {1.0, 4.0}
    assert {float(windows[(1, offset)][0].squeeze()) for offset in range(4)} == {6.0, 7.0, 8.0, 9.0}


def test_window_selection_needs_birdnet_features_and_no_pooling():
    with pytest.raises(ParamsError, match="window_selection"):
        validate_params({"features": {"kind": "mfcc"}, "model": {"name": "audio_cnn", "fusion": {"method": "none"}},
                         "train": {"window_selection": "birdnet"}})  # fmt: skip
    head = {"features": {"kind": "birdnet"}, "model": {"name": "birdnet_linear"}}
    with pytest.raises(ParamsError, match="window_selection"):
        validate_params({**head, "train": {"window_selection": "birdnet", "pooling": "max", "objective": "multilabel"},
                         "loss": {"name": "bce"}})  # fmt: skip
    assert validate_params({**head, "train": {"window_selection": "birdnet"}}).train.audible_confidence == 0.1
    assert logit(0.1) < 0  # the default admits windows BirdNET is unsure of, not only confident ones
    with pytest.raises(ParamsError, match="silent_target"):
        validate_params({**head, "train": {"window_selection": "birdnet", "silent_target": 0.0}})


def test_silent_windows_are_drawn_with_the_silent_target_for_the_focal_species_only():
    table, logits = _recordings()
    frames = np.arange(18, dtype=np.float32).reshape(18, 1, 1)
    targets = np.array([[1.0, 0.5], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]], dtype=np.float32)  # background 0.5
    heard = audible_starts(table, logits, np.array([True, False]), window=1, confidence=0.5)
    windows = TrainWindows(frames, table, 1, targets, heard=heard, silent_target=0.0)
    crops = {int(windows[(0, offset)][0].squeeze()): windows[(0, offset)][1].tolist() for offset in range(6)}
    assert sorted(crops) == [0, 1, 2, 3, 4, 5]  # every window is drawn
    assert crops[1] == crops[4] == [1.0, 0.5] and crops[0] == crops[5] == [0.0, 0.5]
    assert windows[(3, 0)][1].tolist() == [1.0, 0.0]  # heard nowhere: BirdNET cannot judge, the label stays
    assert targets[0].tolist() == [1.0, 0.5]  # the shared targets are not modified
