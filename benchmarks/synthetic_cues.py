"""Is the synthetic corpus free of trivial cues? ``python -m benchmarks.synthetic_cues`` after ``dvc repro split``.

Trains a standardised logistic regression on the training split with one cheap cue at a time (duration,
loudness, spectral centroid, bandwidth, recordist) and with all of them together, and prints test accuracy and
F1-macro beside the majority class. A corpus a model could solve by one of these would show it here; the
species must be told apart by their songs. Reads data/split.csv (and the audio it points to).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from tqdm import tqdm

from birdpipe.data.audio import load_audio

RATE = 22050


def cues(path: str) -> dict[str, float]:
    signal, _ = load_audio(path, RATE, max_seconds=60.0)
    spectrum = torch.stft(torch.from_numpy(signal), 2048, 512, window=torch.hann_window(2048), return_complex=True)
    power = spectrum.abs().square().mean(dim=1).numpy()
    freqs = np.linspace(0, RATE / 2, power.size)
    centroid = float((freqs * power).sum() / power.sum())
    return {
        "loudness_db": float(10 * np.log10(np.mean(signal.astype(np.float64) ** 2) + 1e-12)),
        "centroid_hz": centroid,
        "bandwidth_hz": float(np.sqrt(((freqs - centroid) ** 2 * power).sum() / power.sum())),
    }


def main() -> None:
    table = pd.read_csv("data/split.csv", dtype={"id": str})
    rows = [cues(p) for p in tqdm(table["path"], desc="cues", unit="rec")]
    table = pd.concat([table, pd.DataFrame(rows)], axis=1)
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    majority = train["label"].mode()[0]
    print(f"{'cue':28s} test accuracy  F1-macro")
    truth = test["label"]
    print(f"{'majority class':28s} {accuracy_score(truth, [majority] * len(test)):13.3f}  "
          f"{f1_score(truth, [majority] * len(test), average='macro'):8.3f}")  # fmt: skip
    numeric = ["duration_s", "loudness_db", "centroid_hz", "bandwidth_hz"]
    for columns in [[c] for c in numeric] + [numeric]:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(train[columns], train["label"])
        predicted = model.predict(test[columns])
        name = "all four together" if len(columns) > 1 else columns[0]
        print(
            f"{name:28s} {accuracy_score(truth, predicted):13.3f}  {f1_score(truth, predicted, average='macro'):8.3f}"
        )
    if "recordist" in table:
        model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=2000))
        model.fit(train[["recordist"]], train["label"])
        predicted = model.predict(test[["recordist"]])
        f1 = f1_score(truth, predicted, average="macro")
        print(f"{'recordist':28s} {accuracy_score(truth, predicted):13.3f}  {f1:8.3f}")


if __name__ == "__main__":
    main()
