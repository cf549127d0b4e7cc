import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_score, roc_auc_score

from birdpipe.evaluation.soundscape_metrics import per_species_table, pr_curves, soundscape_metrics
from birdpipe.evaluation.thresholds import detection_metrics, fit_thresholds

# 4 segments x 3 species: species 1 never present, segment 3 holds no bird.
TRUTH = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=bool)
SCORES = np.array([[0.9, 0.3, 0.2], [0.6, 0.1, 0.6], [0.3, 0.2, 0.7], [0.5, 0.2, 0.1]])


def sklearn_per_species(truth: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ap = [average_precision_score(t, s) if t.any() else np.nan for t, s in zip(truth.T, scores.T, strict=True)]
    auroc = [roc_auc_score(t, s) if 0 < t.sum() < t.size else np.nan for t, s in zip(truth.T, scores.T, strict=True)]
    return np.array(ap), np.array(auroc)


def test_hand_checked_cmap_auroc_t1():
    """Species without positives leave cmAP/AUROC, birdless segments leave T1, and torchmetrics stays quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = soundscape_metrics(TRUTH, SCORES)
    # species 0 ranks P(0.9) N(0.6) N(0.5) P(0.3): AP = (1/1 + 2/4) / 2 = 0.75, AUROC = 2 of 4 pairs = 0.5
    # species 2 ranks P(0.7) P(0.6) N(0.2) N(0.1): AP = 1, AUROC = 1; species 1 has no positive
    assert m["cmap"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["auroc"] == pytest.approx((0.5 + 1.0) / 2)
    # segment 0: top species 0, present; segment 1: species 0 and 2 tie at 0.6, the first (0) is absent;
    # segment 2: top species 2, present; segment 3 has no bird
    assert m["t1"] == pytest.approx(2 / 3)
    assert (m["segments"], m["bird_segments"], m["species"], m["auroc_species"]) == (4, 3, 2, 2)
    ap, auroc = sklearn_per_species(TRUTH, SCORES)
    assert m["cmap"] == pytest.approx(np.nanmean(ap))
    assert m["auroc"] == pytest.approx(np.nanmean(auroc))


def test_species_without_negatives_counts_for_cmap_not_auroc():
    truth = np.array([[1, 1], [1, 0], [1, 0]], dtype=bool)
    scores = np.array([[0.2, 0.6], [0.5, 0.4], [0.7, 0.8]])
    m = soundscape_metrics(truth, scores)
    # species 0 is everywhere: AP 1, no AUROC; species 1 ranks N(0.8) P(0.6) N(0.4): AP 1/2, AUROC 1/2
    assert m["cmap"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["auroc"] == pytest.approx(0.5)
    assert (m["species"], m["auroc_species"]) == (2, 1)
    assert m["t1"] == pytest.approx(2 / 3)  # segment 2's top species (1) is absent


def test_cmap_split_by_the_species_birdnet_knows():
    """The hand-checked case with species 0 known to BirdNET, 1 and 2 not: AP 0.75 alone, and 1.0 for the
    unknown group (species 1 has no positive); all known leaves the unknown group NaN."""
    m = soundscape_metrics(TRUTH, SCORES, np.array([True, False, False]))
    assert {k: m[k] for k in ("cmap_birdnet_known", "cmap_birdnet_unknown")} == pytest.approx(
        {"cmap_birdnet_known": 0.75, "cmap_birdnet_unknown": 1.0}
    )
    assert "cmap_birdnet_known" not in soundscape_metrics(TRUTH, SCORES)  # without known: no groups
    ap, _ = sklearn_per_species(TRUTH, SCORES)
    mixed = soundscape_metrics(TRUTH, SCORES, np.array([True, True, False]))
    assert mixed["cmap_birdnet_known"] == pytest.approx(np.nanmean(ap[:2]))  # species 1 drops out: 0.75
    assert np.isnan(soundscape_metrics(TRUTH, SCORES, np.ones(3, bool))["cmap_birdnet_unknown"])
    with pytest.raises(ValueError, match="known has shape"):
        soundscape_metrics(TRUTH, SCORES, np.ones(2, bool))


def test_no_positive_at_all_gives_nan():
    m = soundscape_metrics(np.zeros((3, 2), dtype=bool), np.full((3, 2), 0.5))
    assert np.isnan([m["cmap"], m["auroc"], m["t1"]]).all()
    assert (m["segments"], m["bird_segments"], m["species"]) == (3, 0, 0)


@pytest.mark.parametrize("n_species", [1, 7])
def test_random_data_with_ties_equals_sklearn_per_species(n_species):
    rng = np.random.default_rng(0)
    truth = rng.random((300, n_species)) < np.linspace(0.02, 0.4, n_species)
    scores = np.round(np.clip(0.3 * truth + rng.random(truth.shape) * 0.7, 0, 1), 1)  # many ties
    ap, auroc = sklearn_per_species(truth, scores)
    table = per_species_table(truth, scores, [f"s{c}" for c in range(n_species)])
    np.testing.assert_allclose(table["ap"], ap, atol=1e-6)
    np.testing.assert_allclose(table["auroc"], auroc, atol=1e-6)


def test_malformed_inputs_are_refused():
    """Scores above 1 would pass torchmetrics as logits; all-present data cannot be calibrated."""
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        soundscape_metrics(TRUTH, SCORES * 2)
    with pytest.raises(ValueError, match="species names"):
        per_species_table(TRUTH, SCORES, ["a", "b"])
    with pytest.raises(ValueError, match="absent segments"):
        fit_thresholds(np.ones((3, 2), dtype=bool), np.full((3, 2), 0.5), ["a", "b"])


def test_precision_rule_takes_the_lowest_threshold_reaching_the_target():
    scores = (np.arange(19, 0, -2) / 20)[:, None]  # 0.95, 0.85, ..., 0.05
    truth = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0], dtype=bool)[:, None]
    # precision of the top k: 1, 1, 1, 1, 4/5, 5/6, 6/7, 6/8, 6/9, 6/10
    fit = fit_thresholds(truth, scores, ["a"], target_precision=0.8, rule="precision").iloc[0]
    assert (fit["method"], fit["threshold"]) == ("precision", pytest.approx(0.35))
    assert (fit["val_precision"], fit["val_recall"]) == (pytest.approx(6 / 7), 1.0)
    exact = fit_thresholds(truth, scores, ["a"], target_precision=6 / 7, rule="precision").iloc[0]  # reaching: >=
    assert exact["threshold"] == pytest.approx(0.35)
    fit = fit_thresholds(truth, scores, ["a"], target_precision=0.9, rule="precision").iloc[0]
    assert (fit["threshold"], fit["val_precision"], fit["val_recall"]) == (pytest.approx(0.65), 1.0, 4 / 6)


def test_pooled_calibration_of_a_species_with_two_positives():
    """Every positive's logit has a negative at minus that logit, so the fit has intercept 0: P = 0.5 at score 0.5."""
    truth = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=bool)
    scores = np.array([[0.9, 0.9, 0.9], [0.6, 0.6, 0.4], [0.1, 0.1, 0.1], [0.4, 0.4, 0.6]])
    half = fit_thresholds(truth, scores, list("abc"), target_precision=0.5)
    assert (half["method"] == "calibration_pooled").all()
    np.testing.assert_allclose(half["threshold"], 0.5, atol=1e-4)
    # species a: scores 0.1 .. 0.9, threshold inside; a higher target needs a higher score
    high = fit_thresholds(truth, scores, list("abc"), target_precision=0.9)["threshold"].iloc[0]
    assert 0.5 + 1e-3 < high < 1.0


def test_slope_not_positive_or_no_positive_means_never_detect():
    scores = np.linspace(0.9, 0.1, 10)
    truth = np.zeros((10, 2), dtype=bool)
    truth[5:, 0] = True  # species a: 5 positives, all at the lowest scores; precision <= 0.5 everywhere
    fit = fit_thresholds(truth, np.column_stack([scores, scores]), ["a", "b"])
    # a falls through to its own fit (negative slope); b (no positive) to the pooled fit (negative slope too)
    assert fit["method"].tolist() == ["none", "none"]
    assert fit["threshold"].tolist() == [1.0, 1.0]
    empty = fit_thresholds(np.zeros((4, 2), dtype=bool), np.full((4, 2), 0.5), ["a", "b"])
    assert empty["method"].tolist() == ["none", "none"]


def test_reported_val_precision_equals_detection_metrics_on_tied_scores():
    rng = np.random.default_rng(1)
    truth = rng.random((400, 6)) < np.array([0.3, 0.2, 0.1, 0.05, 0.005, 0.0])
    scores = np.round(np.clip(0.35 * truth + 0.65 * rng.random(truth.shape), 0, 1) * 20) / 20  # ties
    fit = fit_thresholds(truth, scores, list("abcdef"), target_precision=0.8, rule="precision")
    assert {"precision", "calibration_pooled"} <= set(fit["method"])
    m = detection_metrics(truth, scores, fit["threshold"].to_numpy())
    np.testing.assert_array_equal(m["species_precision"], fit["val_precision"])
    np.testing.assert_array_equal(m["species_recall"], fit["val_recall"])
    for c in np.flatnonzero(fit["method"] == "precision"):
        t = fit["threshold"].iloc[c]
        assert fit["val_precision"].iloc[c] == precision_score(truth[:, c], scores[:, c] >= t) >= 0.8
        lower = np.unique(scores[:, c][scores[:, c] < t])
        assert all(precision_score(truth[:, c], scores[:, c] >= u) < 0.8 for u in lower)


def test_detection_metrics_hand_checked():
    truth = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    scores = np.array([[0.6, 0.7, 0.1], [0.4, 0.9, 0.1], [0.5, 0.1, 0.1], [0.2, 0.8, 0.1], [0.3, 0.2, 0.1]])
    m = detection_metrics(truth, scores, np.array([0.5, 0.7, 0.9]))
    # species 0: TP seg 0, FN seg 1, FP seg 2 (0.5 >= 0.5); species 1: TP segs 1 and 3, FP seg 0 (0.7 >= 0.7)
    assert m["species_precision"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert m["species_recall"][:2] == pytest.approx([1 / 2, 1.0])
    assert m["species_f1"][:2] == pytest.approx([1 / 2, 0.8])
    assert np.isnan(m["species_precision"][2]) and m["species_support"] == [2, 2, 0]
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((3 / 5, 3 / 4, 2 / 3))
    assert m["f1_macro"] == pytest.approx((0.5 + 0.8) / 2)  # species 2 has no positive
    # birdless segments 2 and 4; segment 2 holds a detection
    assert (m["empty_segments"], m["empty_detection_rate"], m["detections"]) == (2, 0.5, 5)


def test_per_species_table_with_thresholds():
    table = per_species_table(TRUTH, SCORES, list("abc"), thresholds=np.array([0.5, 0.5, 0.65]))
    assert table.columns.tolist() == [
        "species", "positives", "ap", "auroc", "threshold", "precision", "recall", "f1", "detections",
    ]  # fmt: skip
    assert table["positives"].tolist() == [2, 0, 2]
    np.testing.assert_allclose(table["ap"], [0.75, np.nan, 1.0])
    np.testing.assert_allclose(table["auroc"], [0.5, np.nan, 1.0])
    # species 0 at 0.5: 0.9 (P), 0.6 (N), 0.5 (N) detected; species 2 at 0.65: only 0.7 (P)
    np.testing.assert_allclose(table["precision"], [1 / 3, np.nan, 1.0])
    np.testing.assert_allclose(table["recall"], [1 / 2, np.nan, 1 / 2])
    assert table["detections"].tolist() == [3, 0, 1]


def test_pr_curves_hand_checked_and_thinned():
    curves = pr_curves(TRUTH, SCORES, list("abc"))
    assert curves["curve"].unique().tolist() == ["a", "c", "micro"]
    a = curves[curves["curve"] == "a"]
    # thresholds 0.9, 0.6, 0.5, 0.3 detect 1, 2, 3, 4 segments holding 1, 1, 1, 2 positives
    np.testing.assert_allclose(a["recall"], [0, 0.5, 0.5, 0.5, 1])
    np.testing.assert_allclose(a["precision"], [1, 1, 1 / 2, 1 / 3, 1 / 2])
    rng = np.random.default_rng(2)
    truth = rng.random((500, 3)) < 0.3
    thin = pr_curves(truth, rng.random((500, 3)), list("xyz"), points=20)
    sizes = thin.groupby("curve").size()
    assert sizes.index.tolist() == ["micro", "x", "y", "z"] and (sizes == 20).all()
    ends = thin.groupby("curve")["recall"].agg(["first", "last"])
    assert (ends["first"] == 0).all() and (ends["last"] == 1).all()
    empty = pr_curves(np.zeros((2, 2), dtype=bool), np.zeros((2, 2)), ["x", "y"])
    assert empty.empty and empty.columns.tolist() == ["curve", "recall", "precision"]


def test_calibration_rule_holds_its_precision_on_new_segments_where_the_precision_rule_falls_short():
    """Species with few val positives: the lowest threshold reaching the target on val is chosen on the
    luck of a handful of segments; the calibrated score generalises. Both rules fitted on the same val draw
    of 60 species, judged on a large new draw of the same species."""
    rng = np.random.default_rng(0)
    n_species, target = 60, 0.9
    separation = rng.uniform(2.0, 4.0, n_species)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        truth = rng.random((n, n_species)) < 0.04
        logits = rng.normal(-2.0, 1.5, truth.shape) + truth * separation
        return truth, 1 / (1 + np.exp(-logits))

    val_truth, val_scores = draw(240)
    new_truth, new_scores = draw(20_000)
    species = [f"s{i}" for i in range(n_species)]
    held_out = {}
    for rule in ("precision", "calibration"):
        fit = fit_thresholds(val_truth, val_scores, species, target, rule=rule)
        held_out[rule] = detection_metrics(new_truth, new_scores, fit["threshold"].to_numpy())["precision"]
    assert held_out["precision"] < target - 0.05
    assert held_out["calibration"] > held_out["precision"] + 0.05
    assert held_out["calibration"] > target - 0.05
    with pytest.raises(ValueError, match="threshold rule"):
        fit_thresholds(val_truth, val_scores, species, rule="best")
