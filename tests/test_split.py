import numpy as np
import pandas as pd
import pytest

from birdpipe.common.params import Params, SplitParams
from birdpipe.data.labels import NO_BIRD
from birdpipe.data.split import SplitError, split_recordings, split_seed


def manifest(counts: dict[str, int], groups: int | None = None, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for label, n in counts.items():
        for i in range(n):
            rows.append({"id": f"{label}-{i}", "label": label, "recordist": f"r{rng.integers(groups or 1)}",
                         "date": f"2020-01-{rng.integers(1, 4):02d}"})  # fmt: skip
    return pd.DataFrame(rows)


def test_stratified_proportions_and_every_species_everywhere():
    table = manifest({"a": 100, "b": 20, "c": 3})
    result, report = split_recordings(table, SplitParams(), seed=1)
    counts = pd.crosstab(result["label"], result["split"])
    assert counts.loc["a"].to_dict() == {"test": 15, "train": 70, "val": 15}
    assert counts.loc["c"].to_dict() == {"test": 1, "train": 1, "val": 1}
    assert report["species_missing_from"] == {}


def test_same_seed_same_split_other_seed_other_split():
    table = manifest({"a": 40, "b": 30})
    first, _ = split_recordings(table, SplitParams(), seed=7)
    again, _ = split_recordings(table, SplitParams(), seed=7)
    other, _ = split_recordings(table, SplitParams(), seed=8)
    assert first.equals(again)
    assert not first["split"].equals(other["split"])


def test_adding_a_species_does_not_reshuffle_the_others():
    before, _ = split_recordings(manifest({"a": 40}), SplitParams(), seed=3)
    after, _ = split_recordings(manifest({"a": 40, "b": 10}), SplitParams(), seed=3)
    assert before["split"].tolist() == after.loc[after["label"] == "a", "split"].tolist()


@pytest.mark.parametrize("seed", range(5))
def test_groups_never_span_two_splits(seed):
    table = manifest({f"s{i}": n for i, n in enumerate([60, 40, 25, 12, 8, 5])}, groups=15, seed=seed)
    params = SplitParams(group_by=["recordist", "date"])
    result, report = split_recordings(table, params, seed=seed)
    spans = result.groupby(["recordist", "date"])["split"].nunique()
    assert (spans == 1).all()
    assert report["method"] == "grouped"
    fractions = result["split"].value_counts(normalize=True)
    assert fractions["train"] > 0.5


def test_missing_group_values_are_groups_of_their_own():
    table = manifest({"a": 9, "b": 9}, groups=1)
    table["recordist"] = None
    _result, report = split_recordings(table, SplitParams(group_by=["recordist"]), seed=0)
    assert report["species_missing_from"] == {}
    assert report["groups"]["train"] > 1


def test_small_classes_policy_is_reported():
    table = manifest({"a": 30, "rare": 2})
    dropped, report = split_recordings(table, SplitParams(small_classes="drop"), seed=0)
    assert "rare" not in set(dropped["label"])
    assert "2 recording(s) < split.min_recordings 3" in report["small_classes"]["species"]["rare"]
    kept, report = split_recordings(table, SplitParams(small_classes="train_only"), seed=0)
    assert set(kept.loc[kept["label"] == "rare", "split"]) == {"train"}
    assert report["small_classes"]["policy"] == "train_only"


def test_species_with_too_few_groups_follow_the_policy():
    table = manifest({"a": 30, "b": 10}, groups=8)
    table.loc[table["label"] == "b", ["recordist", "date"]] = ["solo", "2020-01-01"]
    result, report = split_recordings(table, SplitParams(group_by=["recordist", "date"]), seed=0)
    assert "b" not in set(result["label"])
    assert "only 1 group(s)" in report["small_classes"]["species"]["b"]


def test_predefined_split_column_and_folds():
    table = manifest({"a": 6})
    table["subset"] = ["train", "Training", "valid", "dev", "test", "eval"]
    result, _report = split_recordings(table, SplitParams(column="subset"), seed=0)
    assert result["split"].tolist() == ["train", "train", "val", "val", "test", "test"]
    table["fold"] = [0, 1, 2, 3, 3, 4]
    result, _ = split_recordings(table, SplitParams(column="fold", val_fold=3, test_fold=4), seed=0)
    assert result["split"].tolist() == ["train", "train", "train", "val", "val", "test"]
    table["subset"] = ["train", "holdout", "val", "val", "test", "test"]
    with pytest.raises(SplitError, match="holdout"):
        split_recordings(table, SplitParams(column="subset"), seed=0)
    with pytest.raises(SplitError, match="not a manifest column"):
        split_recordings(table, SplitParams(column="nope"), seed=0)


def test_unknown_group_column_is_named():
    with pytest.raises(SplitError, match=r"split\.group_by names \['site'\]"):
        split_recordings(manifest({"a": 9}), SplitParams(group_by=["site"]), seed=0)


def _split_with(params: Params, table: pd.DataFrame) -> pd.Series:
    return split_recordings(table, params.split, seed=split_seed(params))[0]["split"]


@pytest.mark.parametrize("group_by", [[], ["recordist"]])
def test_split_seed_null_follows_the_global_seed_and_set_it_does_not(group_by):
    table = manifest({"a": 40, "b": 30, "c": 12}, groups=10)
    follow = SplitParams(group_by=group_by)
    assert _split_with(Params(seed=5, split=follow), table).equals(
        split_recordings(table, follow, seed=5)[0]["split"]
    )  # null: today's split, byte for byte
    fixed = SplitParams(group_by=group_by, seed=9)
    first = _split_with(Params(seed=1, split=fixed), table)
    assert first.equals(_split_with(Params(seed=2, split=fixed), table))
    assert first.equals(_split_with(Params(seed=9, split=follow), table))
    assert not first.equals(_split_with(Params(seed=1, split=SplitParams(group_by=group_by, seed=10)), table))


def test_negatives_never_move_a_bird_to_another_split():
    """Adding no-bird recordings to a grouped split leaves every bird where it was; a negative recorded in a group
    of birds follows them, the others are split on their own."""
    from birdpipe.data.labels import NO_BIRD

    birds = manifest({"a": 30, "b": 20, "c": 12}, groups=9)
    params = SplitParams(group_by=["recordist", "date"])
    before, _ = split_recordings(birds, params, seed=3)
    negatives = manifest({NO_BIRD: 20}, groups=30, seed=1).assign(recordist=lambda t: "n" + t["recordist"])
    negatives.loc[0, ["recordist", "date"]] = birds.loc[0, ["recordist", "date"]].to_numpy()  # one in a bird group
    after, report = split_recordings(pd.concat([birds, negatives], ignore_index=True), params, seed=3)
    merged = before.merge(after, on="id", suffixes=("_before", "_after"))
    assert len(merged) == len(birds) and (merged["split_before"] == merged["split_after"]).all()
    split_of = dict(zip(after["id"], after["split"], strict=True))
    assert split_of[negatives.loc[0, "id"]] == split_of[birds.loc[0, "id"]]
    assert report["negatives"]["train"] > 0 and report["negatives"]["val"] + report["negatives"]["test"] > 0


def test_small_classes_negative_makes_them_no_bird_negatives_split_like_negatives():
    table = manifest({"a": 30, "b": 30, "rare": 2, "scarce": 4}, groups=12)
    result, report = split_recordings(table, SplitParams(small_classes="negative", min_recordings=5), seed=0)
    assert set(result["label"]) == {"a", "b", NO_BIRD}
    moved = result[result["label"] == NO_BIRD]
    assert sorted(moved["original_label"]) == ["rare"] * 2 + ["scarce"] * 4
    assert report["negatives"] == {s: int((moved["split"] == s).sum()) for s in ("train", "val", "test")}
    assert "made no-bird negatives" in report["small_classes"]["species"]["rare"]
    # The birds' split is the one the drop policy gives: adding negatives never moves a bird.
    dropped, _ = split_recordings(table, SplitParams(small_classes="drop", min_recordings=5), seed=0)
    birds = result[result["label"] != NO_BIRD].set_index("id")["split"].sort_index()
    assert birds.equals(dropped.set_index("id")["split"].sort_index())
