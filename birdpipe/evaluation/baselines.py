"""Simple baselines on the same split and recordings as the model, with the same metric names.

- ``majority``: always the commonest training species (its probabilities are the training prior).
- ``birdnet_zero_shot`` (features.kind birdnet): BirdNET V2.4's own classifier, restricted to our species,
  window logits averaged per recording; a species BirdNET lacks is never predicted.
- ``birdnet_logreg`` (features.kind birdnet): the mean BirdNET embedding per recording (the mean scores
  when ``features.birdnet.inputs: scores``), standardised, then logistic regression with ``C`` chosen on
  val F1-macro, as for the MFCC baseline.
- ``mfcc_logreg``: per recording, the mean and standard deviation over time of 20 MFCCs (computed by the
  features stage from the same decoded audio, same ``max_seconds`` and activity windows), standardised,
  then multinomial logistic regression; ``C`` is chosen on val F1-macro from ``baselines.c_grid`` and the
  model is fit on train only. At the scale of real collections this is a strong baseline.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from birdpipe.common.params import Params
from birdpipe.evaluation.metrics import classification_metrics
from birdpipe.features.cache import FeatureCache

SPLITS = ("val", "test")
MAX_ITER = 2000  # lbfgs iterations of every logistic regression


def _probabilities(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities in the model's full species order (classes absent from train stay 0)."""
    probs = np.zeros((x.shape[0], n_classes))
    probs[:, model.classes_] = model.predict_proba(x)
    return probs


def _logistic_regression(
    features: dict[str, np.ndarray], labels: dict[str, np.ndarray], n_classes: int, train_counts: np.ndarray,
    params: Params,
) -> dict[str, Any]:  # fmt: skip
    """Standardised multinomial logistic regression fit on train, ``C`` chosen on val F1-macro."""
    rare = params.evaluate.rare_threshold
    best: tuple[float, float, Any] | None = None
    tried = {}
    not_converged = []
    for c in params.baselines.c_grid:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=MAX_ITER))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(features["train"], labels["train"])
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            not_converged.append(c)  # reported, not hidden: its fit (and so its figures) may move between reruns
        val_probs = _probabilities(model[-1], model[:-1].transform(features["val"]), n_classes)
        score = classification_metrics(labels["val"], val_probs, train_counts, rare)["f1_macro"]
        tried[str(c)] = round(score, 6)
        if best is None or score > best[0]:
            best = (score, c, model)
    assert best is not None
    _, chosen_c, model = best
    scores = {
        split: classification_metrics(
            labels[split],
            _probabilities(model[-1], model[:-1].transform(features[split]), n_classes),
            train_counts,
            rare,
        )
        for split in SPLITS
    }
    if not_converged:
        chosen = " (the chosen C)" if chosen_c in not_converged else ""
        listed = ", ".join(f"{c:g}" for c in not_converged)
        print(f"warning: logistic regression did not converge in {MAX_ITER} iterations for C = {listed}{chosen}",
              file=sys.stderr)  # fmt: skip
    return {**scores, "c": chosen_c, "val_f1_macro_by_c": tried, "not_converged_c": not_converged}


def mean_embeddings(cache: FeatureCache, split: str) -> np.ndarray:
    """One vector per recording: the mean of its window embeddings (of its scores if the cache has no embedding)."""
    parts = cache.config.birdnet_parts
    start, stop = parts.get("embedding") or parts["scores"]
    array = cache.arrays[split]
    rows = cache.recordings(split)
    return np.stack(
        [
            np.asarray(array[a:b, :, start:stop], dtype=np.float64).mean(axis=0).ravel()
            for a, b in zip(rows["start"], rows["stop"], strict=True)
        ]
    )


def birdnet_baselines(
    cache: FeatureCache, labels: dict[str, np.ndarray], train_counts: np.ndarray, params: Params
) -> dict[str, Any]:
    """BirdNET's own classifier (window logits averaged) and logistic regression on its mean embeddings."""
    from birdpipe.birdnet.zero_shot import pool_logits, zero_shot_probs

    known = cache.birdnet_known
    n_classes = len(cache.species)
    result: dict[str, Any] = {}
    if known is None or not known.any():
        result["birdnet_zero_shot"] = {"applicable": False, "reason": "BirdNET knows none of the species"}
    else:
        zero_shot: dict[str, Any] = {"known_species": int(known.sum()), "species": n_classes}
        for split in SPLITS:
            bounds = cache.recordings(split)[["start", "stop"]].to_numpy()
            pooled = pool_logits(cache.birdnet_logits[split], bounds, "mean")
            probs = zero_shot_probs(pooled, known)
            zero_shot[split] = classification_metrics(
                labels[split], probs, train_counts, params.evaluate.rare_threshold
            )
        result["birdnet_zero_shot"] = zero_shot
    features = {split: mean_embeddings(cache, split) for split in ("train", *SPLITS)}
    result["birdnet_logreg"] = _logistic_regression(features, labels, n_classes, train_counts, params)
    return result


def run_baselines(cache: FeatureCache, params: Params) -> dict[str, Any]:
    n_classes = len(cache.species)
    stats = cache.stats()
    index = cache.index
    species = (index["label_index"] >= 0).to_numpy()  # the baselines name a species: no-bird negatives left out
    rows = {split: (index["split"] == split).to_numpy() & species for split in ("train", *SPLITS)}
    features = {split: stats[rows[split]] for split in ("train", *SPLITS)}
    labels = {split: index.loc[rows[split], "label_index"].to_numpy() for split in ("train", *SPLITS)}
    train_counts = np.bincount(labels["train"], minlength=n_classes)
    rare = params.evaluate.rare_threshold

    prior = train_counts / train_counts.sum()
    majority = {
        split: classification_metrics(labels[split], np.tile(prior, (len(labels[split]), 1)), train_counts, rare)
        for split in SPLITS
        if len(labels[split])
    }
    result = {
        "majority": majority,
        "mfcc_logreg": _logistic_regression(features, labels, n_classes, train_counts, params),
    }
    if cache.config.kind == "birdnet":
        result.update(birdnet_baselines(cache, labels, train_counts, params))
    return result
