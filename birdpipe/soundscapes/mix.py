"""Soundscapes mixed from a split's own held-out recordings (``soundscapes.source: mix``).

For real collections without annotated soundscapes: val soundscapes are built from the val recordings and
test soundscapes from the test recordings, so thresholds and fusion are chosen on one set of birds and
judged on another, and no recording the model trained on is heard. Each file is ``mix.seconds`` long:

- a background: a synthetic field bed (floor, wind, rain and insects of a generated site, as the default
  corpus's soundscapes have; :func:`birdpipe.data.synthetic.soundscape.soundscape_bed`);
- events: excerpts of ``mix.excerpt_seconds`` cut from the recordings where they are most active (energy
  above each 1-10 kHz mel band's median, the features' activity detector: never BirdNET, whose own
  confidence would favour it in the comparison), faded in and out over 50 ms, at an SNR drawn from
  ``mix.snr_db`` (power above 1 kHz against the background's). An excerpt's event spans it whole, so its
  truth is the recording's label over that span. Species are taken in turn (every species of the split
  appears), a recording of the species at random. Up to ``mix.max_simultaneous`` excerpts overlap, and
  about ``mix.bird_free_share`` of the time holds none;
- distractors (``mix.distractors_per_minute``, at 0-20 dB SNR): real recordings of species outside the
  label set and the split's no-bird recordings when the collection has them (half of these for val, half
  for test, by recording), and the generator's non-bird sounds (engines, dogs, frogs, rain, voices).
  Real out-of-set recordings are annotated with their own label, which the reader reports as a species
  outside the label set and keeps out of scoring: such segments count as free of the label set's species.

Files are 16-bit FLAC at MIX_RATE under ``<out>/val`` and ``<out>/test`` with ``<out>/annotations.csv``,
read back like any annotated folder. Everything is drawn from ``seed``, so a split gives the same files.
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import butter, sosfilt
from tqdm import tqdm

from birdpipe.common.errors import PipelineError
from birdpipe.common.params import MixSoundscapeParams
from birdpipe.data.audio import load_audio
from birdpipe.data.labels import NO_BIRD
from birdpipe.features.spectral import FeatureConfig, _extractor, active_windows
from birdpipe.soundscapes.annotations import write_annotations_csv

MIX_RATE = 32000
SPLITS = ("val", "test")
FADE_SECONDS = 0.05
ACTIVITY = FeatureConfig(kind="logmel", sample_rate=MIX_RATE, n_fft=1024, hop_length=320, n_mels=48, fmin=1000.0,
                         fmax=10000.0, highpass_hz=1000.0, dtype="float32")  # fmt: skip
CANDIDATES = 3  # an excerpt is one of the most active stretches of a recording, drawn among this many
DISTRACTOR_SNR_DB = (0.0, 20.0)
SYNTHETIC_SHARE = 0.5  # share of distractors drawn from the generator when real ones exist
PEAK_DBFS = -3.0


def _band_power(x: np.ndarray) -> float:
    """Mean power above 1 kHz (4th-order Butterworth high-pass): the SNR's band, as the corpus measures it."""
    sos = butter(4, 1000.0, btype="highpass", fs=MIX_RATE, output="sos")
    filtered = sosfilt(sos, x)
    return float(np.mean(np.square(filtered))) if filtered.size else 0.0


def _faded(x: np.ndarray) -> np.ndarray:
    n = min(round(FADE_SECONDS * MIX_RATE), x.size // 2)
    if n > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        x = x.copy()
        x[:n] *= ramp
        x[-n:] *= ramp[::-1]
    return x


class _Recordings:
    """Decoded recordings, each decoded once per process (a recording gives several excerpts)."""

    def __init__(self) -> None:
        self._audio: dict[str, np.ndarray] = {}

    def audio(self, path: str) -> np.ndarray:
        if path not in self._audio:
            signal, _ = load_audio(path, MIX_RATE)
            self._audio[path] = signal.astype(np.float64)
        return self._audio[path]

    def excerpt(self, path: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
        """One of the CANDIDATES most active stretches of ``seconds`` (the whole recording if shorter)."""
        audio = self.audio(path)
        n = round(seconds * MIX_RATE)
        if audio.size <= n:
            return audio
        db = np.concatenate(list(_extractor(ACTIVITY).db_frames(iter([audio.astype(np.float32)]))))
        window = max(1, round(seconds * ACTIVITY.frames_per_second))
        spans = active_windows(db, window, CANDIDATES)
        start, _ = spans[int(rng.integers(len(spans)))]
        first = min(round(start * ACTIVITY.hop_length), audio.size - n)
        return audio[first : first + n]


def _schedule(
    seconds: float, lengths: list[float], params: MixSoundscapeParams, rng: np.random.Generator
) -> list[tuple[float, int]]:
    """(start, index into ``lengths``) of every excerpt placed: bouts of 1..max_simultaneous overlapping
    excerpts separated by bird-free gaps, about ``bird_free_share`` of the file outside every bout."""
    bouts: list[tuple[float, list[tuple[float, int]]]] = []  # (span, [(offset, excerpt)])
    next_excerpt, covered = 0, 0.0
    target = (1.0 - params.bird_free_share) * seconds
    while covered < target and next_excerpt < len(lengths):
        size = 1 + int(rng.integers(params.max_simultaneous)) if rng.random() < 0.4 else 1
        members, span = [], 0.0
        for k in range(size):
            if next_excerpt >= len(lengths):
                break
            offset = 0.0 if k == 0 else float(rng.uniform(0.0, 0.7 * lengths[members[0][1]]))
            members.append((offset, next_excerpt))
            span = max(span, offset + lengths[next_excerpt])
            next_excerpt += 1
        if covered + span > seconds:
            break
        bouts.append((span, members))
        covered += span
    used = sum(span for span, _ in bouts)
    gaps = rng.dirichlet(np.ones(len(bouts) + 1)) * max(seconds - used, 0.0)
    placed, t = [], 0.0
    for (span, members), gap in zip(bouts, gaps, strict=False):
        t += gap
        placed += [(t + offset, index) for offset, index in members]
        t += span
    return placed


def mix_soundscapes(
    split_table: pd.DataFrame,
    manifest: pd.DataFrame,
    params: MixSoundscapeParams,
    out_dir: str | Path,
    seed: int,
    progress: bool = True,
) -> pd.DataFrame:
    """Write the val and test soundscapes and ``annotations.csv`` under ``out_dir``; return the events."""
    from birdpipe.data.synthetic.soundscape import soundscape_bed, synthetic_distractor

    out_dir = Path(out_dir)
    label_set = set(split_table.loc[split_table["split"] == "train", "label"]) - {NO_BIRD}
    # Recordings the split took in (split.small_classes negative) are heard only from their own split.
    outside = manifest[~manifest["label"].isin(label_set) & (manifest["label"] != NO_BIRD)
                       & ~manifest["id"].astype(str).isin(split_table["id"].astype(str))]  # fmt: skip
    recordings = _Recordings()
    files, events = [], []
    bar = tqdm(total=len(SPLITS) * params.files, desc="soundscapes: mixing", unit="file", disable=not progress or None)
    for code, split in enumerate(SPLITS, 1):
        focal = split_table[(split_table["split"] == split) & split_table["label"].isin(label_set)]
        if focal.empty:
            raise PipelineError(f"soundscapes.source mix: the {split} split holds no recording of the label set")
        real = pd.concat([
            outside[[zlib.crc32(str(i).encode()) % 2 == code - 1 for i in outside["id"]]],
            split_table[(split_table["split"] == split) & (split_table["label"] == NO_BIRD)],
        ])  # fmt: skip
        species = sorted(focal["label"].unique())
        for number in range(params.files):
            rng = np.random.default_rng([seed, code, number])
            n = round(params.seconds * MIX_RATE)
            out = soundscape_bed(seed, MIX_RATE, split, number, params.seconds)
            bed_power = _band_power(out)
            order = list(rng.permutation(species))
            lengths = [float(math.exp(rng.uniform(*np.log(params.excerpt_seconds)))) for _ in range(10 * len(order))]
            file = f"{split}/soundscape_{number:03d}.flac"
            for start, index in _schedule(params.seconds, lengths, params, rng):
                label = order[index % len(order)]
                path = str(rng.choice(focal.loc[focal["label"] == label, "path"].to_numpy()))
                piece = _faded(recordings.excerpt(path, lengths[index], rng))
                gain = math.sqrt(bed_power * 10 ** (rng.uniform(*params.snr_db) / 10) / max(_band_power(piece), 1e-20))
                first = round(start * MIX_RATE)
                piece = piece[: max(0, n - first)] * gain
                out[first : first + piece.size] += piece
                if piece.size:
                    events.append({"file": file, "start_s": first / MIX_RATE,
                                   "end_s": (first + piece.size) / MIX_RATE, "label": label})  # fmt: skip
            for _ in range(int(rng.poisson(params.distractors_per_minute * params.seconds / 60.0))):
                label = ""
                if real.empty or rng.random() < SYNTHETIC_SHARE:
                    piece = synthetic_distractor(rng, MIX_RATE)
                else:
                    row = real.iloc[int(rng.integers(len(real)))]
                    piece = recordings.excerpt(str(row["path"]), float(rng.uniform(2.0, 10.0)), rng)
                    label = "" if row["label"] == NO_BIRD else str(row["label"])
                piece = _faded(piece[: n // 2])
                snr = rng.uniform(*DISTRACTOR_SNR_DB)
                piece = piece * math.sqrt(bed_power * 10 ** (snr / 10) / max(_band_power(piece), 1e-20))
                first = int(rng.integers(max(1, n - piece.size)))
                out[first : first + piece.size] += piece
                if label:
                    events.append({"file": file, "start_s": first / MIX_RATE,
                                   "end_s": (first + piece.size) / MIX_RATE, "label": label})  # fmt: skip
            out *= 10 ** (PEAK_DBFS / 20) / max(float(np.max(np.abs(out))), 1e-12)
            (out_dir / split).mkdir(parents=True, exist_ok=True)
            sf.write(out_dir / file, out.astype(np.float32), MIX_RATE, format="FLAC", subtype="PCM_16")
            files.append({"file": file, "split": split})
            bar.update()
    bar.close()
    table = pd.DataFrame(events, columns=["file", "start_s", "end_s", "label"])
    write_annotations_csv(pd.DataFrame(files), table, out_dir / "annotations.csv")
    return table
