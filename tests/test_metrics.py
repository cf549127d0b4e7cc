import numpy as np
import pytest

from birdpipe.evaluation.metrics import aggregate, classification_metrics, confusion_counts, per_class_table


def onehot_probs(predictions, n=3):
    probs = np.full((len(predictions), n), 0.1 / (n - 1))
    probs[np.arange(len(predictions)), predictions] = 0.9
    return probs


def test_hand_checked_small_case():
    # true: a a a b b c ; predicted: a a b b c c
    y_true = np.array([0, 0, 0, 1, 1, 2])
    probs = onehot_probs([0, 0, 1, 1, 2, 2])
    counts = np.array([100, 10, 5])
    m = classification_metrics(y_true, probs, counts, rare_threshold=50)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1: a = 2*1*(2/3)/(1+2/3) = 0.8 ; b: P=1/2 R=1/2 -> 0.5 ; c: P=1/2 R=1 -> 2/3
    assert m["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert m["f1_weighted"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3 * 1) / 6)
    assert m["f1_rare"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["f1_common"] == pytest.approx(0.8)
    assert m["top5_accuracy"] == 1.0
    assert (m["species"], m["rare_species"], m["recordings"]) == (3, 2, 6)


def test_map_is_macro_average_precision_over_present_species():
    y_true = np.array([0, 1, 0])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.4, 0.5, 0.1]])
    m = classification_metrics(y_true, probs, np.array([5, 5, 5]), 50)
    # class 0 scores 0.8, 0.6, 0.4 for labels 1, 0, 1 -> AP = (1 + 2/3) / 2
    # class 1 scores 0.1 (neg), 0.3 (pos), 0.5 (neg) -> the positive ranks 2nd: AP = 1/2
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)


def test_species_without_support_do_not_enter_macro_averages():
    y_true = np.array([0, 0])
    probs = onehot_probs([0, 2])
    m = classification_metrics(y_true, probs, np.array([9, 9, 9]), 50)
    assert m["f1_macro"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert m["species"] == 1


def test_aggregation_mean_max_topk():
    window_probs = np.array([[0.6, 0.4], [0.2, 0.8], [0.3, 0.7], [0.9, 0.1]])
    recording = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(aggregate(window_probs, recording, 2, "mean")[0], [1.1 / 3, 1.9 / 3])
    np.testing.assert_allclose(aggregate(window_probs, recording, 2, "max")[0], np.array([0.6, 0.8]) / 1.4)
    np.testing.assert_allclose(aggregate(window_probs, recording, 2, "topk_mean", topk=2)[0],
                               np.array([0.45, 0.75]) / 1.2)  # fmt: skip
    np.testing.assert_allclose(aggregate(window_probs, recording, 2, "mean")[1], [0.9, 0.1])
    with pytest.raises(ValueError, match="has no windows"):
        aggregate(window_probs, recording, 3)


def test_per_class_table_and_confusion_counts():
    y_true = np.array([0, 0, 1])
    probs = onehot_probs([0, 1, 1])
    rows = per_class_table(y_true, probs, ["a", "b", "c"], np.array([3, 2, 1]))
    # AP of "a": its two recordings score 0.9 and 0.05, tied with a "b" recording at 0.05 -> (1 + 2/3) / 2
    assert rows[0] == {"species": "a", "train_count": 3, "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3,
                       abs=1e-6), "ap": pytest.approx(5 / 6, abs=1e-6), "support": 2}  # fmt: skip
    assert rows[2]["support"] == 0 and rows[2]["ap"] is None
    counts = confusion_counts(y_true, probs.argmax(1), ["a", "b", "c"])
    assert sorted((r["actual"], r["predicted"], r["count"]) for r in counts) == [("a", "a", 1), ("a", "b", 1),
                                                                                ("b", "b", 1)]  # fmt: skip
