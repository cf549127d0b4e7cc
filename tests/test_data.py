import numpy as np
import pandas as pd
import pytest

from birdpipe.data import windows
from birdpipe.data.windows import (
    EvalWindows,
    ShardSampler,
    TrainSampler,
    TrainWindows,
    crop,
    expected_class_frequencies,
)
from birdpipe.features.spectral import window_starts


def recordings(lengths_per_class: list[list[int]]) -> pd.DataFrame:
    rows, start = [], 0
    for label, lengths in enumerate(lengths_per_class):
        for length in lengths:
            rows.append({"label_index": label, "start": start, "stop": start + length})
            start += length
    return pd.DataFrame(rows)


# class 0: 8 long recordings, class 1: 2 short ones, class 2: one recording
TABLE = recordings([[400] * 8, [100] * 2, [200]])
WINDOW = 100


def drawn_class_shares(sampler: str, per_recording: float = 400.0) -> np.ndarray:
    draws = TrainSampler(TABLE, WINDOW, sampler, per_recording, seed=0)
    chosen, _ = draws.draw(0)
    return np.bincount(TABLE["label_index"].to_numpy()[chosen], minlength=3) / chosen.size


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        ("recording", [8 / 11, 2 / 11, 1 / 11]),
        ("uniform", [32 / 36, 2 / 36, 2 / 36]),
        ("sqrt", np.sqrt([32, 2, 2]) / np.sqrt([32, 2, 2]).sum()),
        ("class_balanced", [1 / 3, 1 / 3, 1 / 3]),
    ],
)
def test_samplers_draw_the_intended_class_frequencies(sampler, expected):
    np.testing.assert_allclose(drawn_class_shares(sampler), expected, atol=0.01)
    np.testing.assert_allclose(expected_class_frequencies(TABLE, WINDOW, sampler, 3), expected, atol=1e-9)


def test_recording_sampler_visits_each_recording_equally():
    chosen, offsets = TrainSampler(TABLE, WINDOW, "recording", 3, seed=1).draw(0)
    assert np.bincount(chosen).tolist() == [3] * len(TABLE)
    lengths = (TABLE["stop"] - TABLE["start"]).to_numpy()[chosen]
    assert ((offsets >= 0) & (offsets <= np.maximum(lengths - WINDOW, 0))).all()


def test_epochs_differ_but_are_reproducible():
    sampler = TrainSampler(TABLE, WINDOW, "uniform", 2, seed=5)
    a, b = sampler.draw(0), sampler.draw(1)
    again = TrainSampler(TABLE, WINDOW, "uniform", 2, seed=5).draw(1)
    assert not np.array_equal(a[1], b[1])
    np.testing.assert_array_equal(b[0], again[0])
    np.testing.assert_array_equal(b[1], again[1])


def test_ddp_processes_split_every_global_batch_and_keep_whole_batches(monkeypatch):
    one = TrainSampler(TABLE, WINDOW, "recording", 3, seed=1, batch_size=8)  # 33 draws: 4 whole batches of 8
    assert len(one) == 32
    single = list(one)
    shares = []
    for rank in (0, 1):
        monkeypatch.setattr(windows, "distributed_rank", lambda rank=rank: (rank, 2))
        sampler = TrainSampler(TABLE, WINDOW, "recording", 3, seed=1, batch_size=8, world=2)
        assert len(sampler) == 16
        shares.append(list(sampler))
    for k in range(4):  # batch k of each process (4 each) is its half of batch k of the one-process run
        assert sorted(shares[0][4 * k : 4 * k + 4] + shares[1][4 * k : 4 * k + 4]) == sorted(single[8 * k : 8 * k + 8])
    few = TrainSampler(TABLE, WINDOW, "recording", 1, seed=1, batch_size=64, world=2)  # 11 draws, one short batch
    assert len(few) == 5
    with pytest.raises(ValueError, match="cannot be shared by 4 processes"):
        TrainSampler(TABLE.iloc[:1], WINDOW, "recording", 3, seed=1, batch_size=8, world=4)


def test_ddp_validation_shares_cover_every_window_in_equal_lengths(monkeypatch):
    seen = []
    for rank in range(3):
        monkeypatch.setattr(windows, "distributed_rank", lambda rank=rank: (rank, 3))
        share = list(ShardSampler(10, 3))
        assert len(share) == 4  # padded with the share's last index, so every process runs as many batches
        seen += share
    assert sorted(set(seen)) == list(range(10))
    monkeypatch.setattr(windows, "distributed_rank", lambda: (0, 1))
    assert list(ShardSampler(5, 1)) == [0, 1, 2, 3, 4]


def test_crops_come_from_the_recording_and_short_ones_are_tiled():
    array = np.arange(30, dtype=np.float32).reshape(30, 1, 1).repeat(2, axis=2)
    x = crop(array, 10, 20, 3, 5)
    assert x.shape == (1, 2, 5) and x[0, 0].tolist() == [13, 14, 15, 16, 17]
    tiled = crop(array, 10, 13, 1, 5)
    assert tiled[0, 0].tolist() == [11, 12, 10, 11, 12]


def test_train_windows_return_label_and_window():
    array = np.random.default_rng(0).standard_normal((TABLE["stop"].max(), 3, 4)).astype(np.float16)
    dataset = TrainWindows(array, TABLE, WINDOW)
    x, label = dataset[(1, 7)]
    assert x.shape == (3, 4, WINDOW) and label == 0
    np.testing.assert_array_equal(x.numpy(), array[407:507].astype(np.float32).transpose(1, 2, 0))
    x, label = dataset[(9, 7)]  # an offset past the end is clamped: windows never cross into the next recording
    assert label == 1
    np.testing.assert_array_equal(x.numpy(), array[3300:3400].astype(np.float32).transpose(1, 2, 0))


def test_evaluation_windows_cover_each_recording_to_its_end():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 2) == [0, 2, 4, 6, 7]
    assert window_starts(3, 4, 2) == [0]
    table = recordings([[250], [50]])
    array = np.zeros((300, 1, 2), dtype=np.float16)
    dataset = EvalWindows(array, table, 100, 50)
    assert dataset.window_recording.tolist() == [0, 0, 0, 0, 1]
    x, position, label = dataset[4]
    assert x.shape == (1, 2, 100) and (position, label) == (1, 1)
