import numpy as np
import pytest

from birdpipe.common.params import WeightParams
from birdpipe.training.weights import class_weights, feature_stats, raw_weights, weight_vector

COUNTS = np.array([100, 10, 1])


def test_methods_follow_their_formulas():
    np.testing.assert_allclose(raw_weights(COUNTS, "inverse_frequency", 0.9), [1.11, 11.1, 111.0])
    np.testing.assert_allclose(raw_weights(COUNTS, "balanced", 0.9), [0.37, 3.7, 37.0])
    np.testing.assert_allclose(raw_weights(COUNTS, "sqrt", 0.9), [0.1, 1 / np.sqrt(10), 1.0])
    beta = 0.9
    np.testing.assert_allclose(raw_weights(COUNTS, "effective_number", beta), (1 - beta) / (1 - beta**COUNTS))


def test_balanced_matches_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.repeat(np.arange(3), COUNTS)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(raw_weights(COUNTS, "balanced", 0.9), expected)


def test_normalised_weights_have_mean_one_and_ranges_are_recorded():
    result = class_weights(["a", "b", "c"], list(COUNTS), WeightParams())
    for method, entry in result["methods"].items():
        values = np.array(list(entry["weights"].values()))
        assert values.mean() == pytest.approx(1.0, abs=1e-5), method
        assert entry["min"] == pytest.approx(values.min(), abs=1e-6)
        assert entry["max"] == pytest.approx(values.max(), abs=1e-6)
    assert result["methods"]["balanced"]["ratio"] == pytest.approx(100.0, rel=1e-4)
    assert result["imbalance_ratio"] == 100.0


def test_clipping_and_lookup_in_model_order():
    result = class_weights(["a", "b", "c"], list(COUNTS), WeightParams(normalize=False, clip=(0.5, 2.0)))
    vector = weight_vector(result, "sqrt", ["c", "a"])
    np.testing.assert_allclose(vector, [1.0, 0.5])
    with pytest.raises(KeyError, match="lack species"):
        weight_vector(result, "sqrt", ["z"])


def test_feature_stats_are_per_channel_over_frames_and_bins():
    rng = np.random.default_rng(0)
    train = np.stack([rng.normal(5, 2, (1000, 8)), rng.normal(-1, 0.5, (1000, 8))], axis=1).astype(np.float16)
    stats = feature_stats(train, chunk_frames=97)
    np.testing.assert_allclose(stats["mean"], train.astype(np.float64).mean(axis=(0, 2)), atol=1e-5)
    np.testing.assert_allclose(stats["std"], train.astype(np.float64).std(axis=(0, 2)), atol=1e-5)
