"""Split recordings into train/val/test, stratified by species, optionally grouped.

- Plain: each species' recordings are shuffled with a generator seeded by (seed, species) and cut
  70/15/15 (``split.train/val/test``), with at least one recording in each split.
- ``split.group_by: [recordist, date]``: recordings sharing those values form a group (a recording with
  a missing value is a group of its own); whole groups are assigned, greedily, largest first, to the split
  whose per-species targets they fill best, so no group spans two splits.
- ``split.column``: a predefined split (train/val/test, with common synonyms) or a fold column, where
  ``split.val_fold`` and ``split.test_fold`` name the held-out folds.

Species that cannot appear in every split (fewer than ``split.min_recordings`` recordings, or fewer than
three groups under group_by) follow ``split.small_classes``: ``drop`` (left out, listed in the report),
``train_only``, or ``negative``: their recordings become no-bird negatives of the label set (label
``no_bird``, the species kept in ``original_label``; background species still give their targets), split
like any negatives. A multi-label model then learns that the region's other species are not the label
set's, and the val/test ones are heard as distractors in mixed soundscapes. Nothing is silent: the report
lists every decision.

The split is seeded by ``split.seed``, or by the global ``seed`` when that is null (see :func:`split_seed`),
so the split can vary while the training seed stays put, and the other way round.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import Params, SplitParams
from birdpipe.data.labels import NO_BIRD

SPLITS = ("train", "val", "test")
SYNONYMS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "eval": "test", "evaluation": "test",
}  # fmt: skip


class SplitError(PipelineError, ValueError):
    """The manifest cannot be split as the params ask."""


def split_seed(params: Params) -> int:
    """The seed of the split: ``split.seed``, or the global ``seed`` when it is null."""
    return params.seed if params.split.seed is None else params.split.seed


def _species_rng(seed: int, label: str) -> np.random.Generator:
    """One generator per species, so adding a species never reshuffles another."""
    return np.random.default_rng([seed, zlib.crc32(label.encode())])


def _counts_for(n: int, params: SplitParams) -> tuple[int, int, int]:
    """Recordings of a species per split: proportional, at least one in each."""
    n_val = max(1, round(n * params.val))
    n_test = max(1, round(n * params.test))
    while n - n_val - n_test < 1:
        if n_val >= n_test and n_val > 1:
            n_val -= 1
        elif n_test > 1:
            n_test -= 1
        else:
            raise SplitError(f"cannot split {n} recordings three ways")
    return n - n_val - n_test, n_val, n_test


def _group_keys(manifest: pd.DataFrame, columns: list[str]) -> pd.Series:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise SplitError(
            f"split.group_by names {missing}, not columns of the manifest; available: {sorted(manifest.columns)}"
        )
    keys = manifest[columns].astype("string")
    has_missing = keys.isna().any(axis=1) | (keys == "").any(axis=1)
    joined = keys.fillna("").agg("\x1f".join, axis=1)
    # A recording with an unknown recordist or date cannot be tied to others: it is its own group.
    return joined.where(~has_missing, "\x00" + manifest["id"].astype(str))


def _plain_split(manifest: pd.DataFrame, params: SplitParams, seed: int) -> pd.Series:
    assignment = pd.Series(index=manifest.index, dtype=object)
    for label, rows in manifest.groupby("label", sort=True):
        order = rows.index.to_numpy()[_species_rng(seed, str(label)).permutation(len(rows))]
        n_train, n_val, _ = _counts_for(len(rows), params)
        assignment[order[:n_train]] = "train"
        assignment[order[n_train : n_train + n_val]] = "val"
        assignment[order[n_train + n_val :]] = "test"
    return assignment


MISSING_PENALTY = 4.0  # cost of a species absent from a split it could be in, vs at most 1 for a bad ratio
MISSING_WEIGHT = np.array([2.0, 1.0, 1.0])  # missing from train is worse: the species cannot be learned
SIZE_WEIGHT = 4.0  # per species, on the squared deviation of the split fractions from train/val/test
MAX_PASSES = 100


def _species_cost(counts: np.ndarray, targets: np.ndarray, totals: np.ndarray, can_cover: np.ndarray) -> np.ndarray:
    """Cost per species of split counts (species x 3): squared relative deviation from the targets, plus
    a penalty for each split a species is missing from although it has the groups to be there."""
    deviation = np.square((counts - targets) / totals[:, None]).sum(axis=1)
    missing = (((counts == 0) & (targets > 0)) * MISSING_WEIGHT).sum(axis=1) * can_cover
    return deviation + MISSING_PENALTY * missing


def _grouped_split(manifest: pd.DataFrame, groups: pd.Series, params: SplitParams, seed: int) -> pd.Series:
    """Assign whole groups to splits: greedy by size, then a seeded local search that moves one group at a
    time while that lowers the per-species cost (every species weighs the same) plus the deviation of
    the split sizes from 70/15/15."""
    fractions = np.array([params.train, params.val, params.test])
    species, label_codes = np.unique(manifest["label"].to_numpy(), return_inverse=True)
    names, group_codes = np.unique(groups.to_numpy().astype(str), return_inverse=True)
    counts = np.zeros((len(names), len(species)))
    np.add.at(counts, (group_codes, label_codes), 1)
    totals = counts.sum(axis=0)
    targets = totals[:, None] * fractions[None, :]
    can_cover = ((counts > 0).sum(axis=0) >= 3).astype(float)
    sizes = counts.sum(axis=1)
    n_total = sizes.sum()
    size_weight = SIZE_WEIGHT * len(species)

    def size_cost(split_sizes: np.ndarray) -> float:
        return size_weight * float(np.square(split_sizes / n_total - fractions).sum())

    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(len(names)), -sizes))  # largest first, seeded tie-break
    assignment = np.zeros(len(names), dtype=int)
    split_counts = np.zeros((len(species), 3))
    for g in order:  # greedy: the split whose species are most behind their targets
        present = counts[g] > 0
        need = (targets[present] - split_counts[present]) / totals[present, None]
        best = int(np.argmax(need.sum(axis=0) + 1e-9 * fractions))
        assignment[g] = best
        split_counts[:, best] += counts[g]
    split_sizes = split_counts.sum(axis=0)
    for _ in range(MAX_PASSES):
        improved = False
        for g in rng.permutation(len(names)):
            present = np.flatnonzero(counts[g])
            here = assignment[g]
            before = _species_cost(split_counts[present], targets[present], totals[present], can_cover[present])
            base = before.sum() + size_cost(split_sizes)
            best_gain, best_split = 1e-12, None
            for there in range(3):
                if there == here:
                    continue
                moved = split_counts[present].copy()
                moved[:, here] -= counts[g, present]
                moved[:, there] += counts[g, present]
                sizes_after = split_sizes.copy()
                sizes_after[here] -= sizes[g]
                sizes_after[there] += sizes[g]
                after = _species_cost(moved, targets[present], totals[present], can_cover[present]).sum()
                gain = base - after - size_cost(sizes_after)
                if gain > best_gain:
                    best_gain, best_split = gain, there
            if best_split is not None:
                split_counts[:, here] -= counts[g]
                split_counts[:, best_split] += counts[g]
                split_sizes[here] -= sizes[g]
                split_sizes[best_split] += sizes[g]
                assignment[g] = best_split
                improved = True
        if not improved:
            break
    return pd.Series(np.array(SPLITS, dtype=object)[assignment[group_codes]], index=manifest.index)


def _column_split(manifest: pd.DataFrame, params: SplitParams) -> pd.Series:
    column = params.column
    if column not in manifest.columns:
        raise SplitError(f"split.column {column!r} is not a manifest column; available: {sorted(manifest.columns)}")
    values = manifest[column].astype("string").str.strip()
    if params.val_fold is not None or params.test_fold is not None:
        if params.val_fold is None or params.test_fold is None:
            raise SplitError("a fold column needs both split.val_fold and split.test_fold")
        folds = values.fillna("")
        val, test = str(params.val_fold), str(params.test_fold)
        for name, fold in (("val_fold", val), ("test_fold", test)):
            if not (folds == fold).any():
                raise SplitError(f"split.{name} {fold!r} does not occur in column {column!r}")
        return folds.map(lambda v: "val" if v == val else "test" if v == test else "train").astype(object)
    mapped = values.str.lower().map(SYNONYMS)
    unknown = sorted(set(values[mapped.isna()].fillna("<empty>")))
    if unknown:
        raise SplitError(
            f"split.column {column!r} holds {unknown[:5]}; expected train/val/test (or synonyms "
            f"{sorted(SYNONYMS)}), or set split.val_fold and split.test_fold for a fold column"
        )
    return mapped.astype(object)


def split_recordings(manifest: pd.DataFrame, params: SplitParams, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return the manifest with a ``split`` column (dropped recordings removed) and a report.

    No-bird negatives are split after the birds and apart from them, so adding or removing negatives never moves
    a bird recording to another split: a negative of a group (``split.group_by``) that holds birds follows them,
    the others are split on their own.
    """
    reasons: dict[str, str] = {}
    if params.small_classes == "negative" and not params.column:
        birds = manifest[manifest["label"] != NO_BIRD]
        reasons = _small_species(birds.reset_index(drop=True), params)
        relabel = manifest["label"].isin(reasons)
        manifest = manifest.copy()
        manifest["original_label"] = manifest["label"].where(relabel, "")
        manifest.loc[relabel, "label"] = NO_BIRD
    negative = (manifest["label"] == NO_BIRD).to_numpy()
    if not negative.any() or params.column:
        return _split_birds(manifest, params, seed)
    result, report = _split_birds(manifest[~negative], params, seed)
    if params.small_classes == "negative":
        report["small_classes"]["species"] = {
            label: f"{reasons[label]}: made no-bird negatives" for label in sorted(reasons)
        }
    negatives = manifest[negative].reset_index(drop=True).copy()
    negatives["split"] = _negative_splits(negatives, result, params, seed)
    report["negatives"] = {split: int((negatives["split"] == split).sum()) for split in SPLITS}
    return pd.concat([result, negatives], ignore_index=True), report


def _negative_splits(negatives: pd.DataFrame, birds: pd.DataFrame, params: SplitParams, seed: int) -> pd.Series:
    assignment = pd.Series(index=negatives.index, dtype=object)
    if params.group_by:
        groups = _group_keys(negatives, params.group_by)
        known = dict(zip(_group_keys(birds, params.group_by), birds["split"], strict=True))
        assignment[groups.isin(known)] = groups[groups.isin(known)].map(known)
    rest = assignment.isna()
    if rest.sum() < 3:  # too few to share: they teach "no bird", so train
        assignment[rest] = "train"
    elif params.group_by and _group_keys(negatives[rest], params.group_by).nunique() >= 3:
        assignment[rest] = _grouped_split(negatives[rest], _group_keys(negatives[rest], params.group_by), params, seed)
    else:
        assignment[rest] = _plain_split(negatives[rest], params, seed)
    return assignment.astype(str)


def _small_species(manifest: pd.DataFrame, params: SplitParams) -> dict[str, str]:
    """Species that cannot be in every split, each with the reason: too few recordings or too few groups."""
    counts = Counter(manifest["label"])
    reasons = {
        label: f"{n} recording(s) < split.min_recordings {params.min_recordings}"
        for label, n in counts.items()
        if n < params.min_recordings
    }
    if params.group_by:
        n_groups = _group_keys(manifest, params.group_by).groupby(manifest["label"]).nunique()
        for label, n in n_groups.items():
            if n < 3 and label not in reasons:
                reasons[label] = f"only {n} group(s) of {params.group_by}: cannot be in all three splits"
    return reasons


def _split_birds(manifest: pd.DataFrame, params: SplitParams, seed: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    manifest = manifest.reset_index(drop=True)
    report: dict[str, Any] = {"method": "column" if params.column else "grouped" if params.group_by else "stratified"}
    groups = _group_keys(manifest, params.group_by) if params.group_by and not params.column else None

    reasons = {} if params.column else _small_species(manifest, params)  # a predefined split is taken as it is
    small = set(reasons)

    train_only = manifest["label"].isin(small) if params.small_classes == "train_only" else None
    keep = ~manifest["label"].isin(small) if params.small_classes == "drop" else pd.Series(True, index=manifest.index)
    report["small_classes"] = {
        "policy": params.small_classes,
        "species": {label: reasons[label] for label in sorted(small)},
    }

    if params.column:
        assignment = _column_split(manifest, params)
    elif groups is not None:
        assignment = pd.Series(index=manifest.index, dtype=object)
        forced = set(groups[train_only]) if train_only is not None else set()
        in_forced = groups.isin(forced) & keep
        assignment[in_forced] = "train"
        rest = keep & ~in_forced
        if rest.any():
            assignment[rest] = _grouped_split(manifest[rest], groups[rest], params, seed)
    else:
        assignment = pd.Series(index=manifest.index, dtype=object)
        if train_only is not None:
            assignment[train_only] = "train"
        rest = keep & (~train_only if train_only is not None else True)
        if rest.any():
            assignment[rest] = _plain_split(manifest[rest], params, seed)

    result = manifest[keep].copy()
    result["split"] = assignment[keep].astype(str)
    if result.empty:
        raise SplitError("every species was dropped by the small_classes policy; lower split.min_recordings")
    if groups is not None:
        spans = groups[keep].groupby(result["split"]).unique()
        seen: dict[str, str] = {}
        for split, members in spans.items():
            for member in members:
                if member in seen and seen[member] != split:
                    raise SplitError(f"internal error: group {member!r} spans {seen[member]} and {split}")
                seen[member] = split

    table = pd.crosstab(result["label"], result["split"]).reindex(columns=list(SPLITS), fill_value=0)
    missing = {split: sorted(table.index[table[split] == 0]) for split in SPLITS if (table[split] == 0).any()}
    report.update(
        {
            "recordings": {split: int((result["split"] == split).sum()) for split in SPLITS},
            "species": {split: int((table[split] > 0).sum()) for split in SPLITS},
            "dropped_recordings": int((~keep).sum()),
            "species_missing_from": missing,
            "per_species": {label: {s: int(table.loc[label, s]) for s in SPLITS} for label in table.index},
        }
    )
    if groups is not None:
        report["groups"] = {split: int(groups[keep][result["split"] == split].nunique()) for split in SPLITS}
    return result.reset_index(drop=True), report
