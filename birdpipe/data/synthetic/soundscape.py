"""Scenes without a focal bird, rendered from a corpus design: no-bird clips (training negatives) and long
soundscapes with exact event times (val and test), so a model trained on focal recordings can be scored where
most of the time holds no bird and rain, engines, dogs and frogs must not fire.

No-bird clip (:func:`render_negative`). The background of one of the corpus's sites as one of its recordists
records it (floor, wind, rain and insects as the site has them; equipment colouring and handling tilt; the
recordist's habitual peak level), plus 0-3 distractors (:mod:`birdpipe.data.synthetic.distractors`) at 0-30 dB
above the background and 5-100 m away; 30 % hold weather and insects only. No syllable is rendered.
:func:`generate_corpus <birdpipe.data.synthetic.corpus.generate_corpus>` writes ``params.negatives`` of them.

Soundscape (:func:`render_soundscape`). A recorder at a new site (drawn like the corpus's sites but from its own
key, one per split and number, so val and test never share one) with its own colouring, on for ``seconds``. Birds
come in stretches of song: 1 to ``max_simultaneous`` species at once (a second and third species less and less
often), species drawn with probability proportional to the square root of their corpus counts (rare species
appear too), each a bout of 3-20 s of songs (or calls) by one of three birds of its species around this recorder,
none of them a corpus individual, at its own distance (5-100 m) and SNR (uniform in ``snr_db``: song power while
singing above 1 kHz vs the background's, before the colouring, as in the corpus). Between stretches the
recorder hears no bird, for a time drawn so that about ``bird_free_share`` of the file lies outside every event
(the pauses between songs count as bird-free). ``distractors_per_minute`` distractors (Poisson) fall anywhere,
over birds or alone.

Events. An event is a species' run of syllables as rendered (``_perform`` reports each syllable's span, from
its onset to the end of its release, inside the file), syllables less than MERGE_GAP_SECONDS apart joined;
reverberation tails are not part of it. So the times are exact to the sample; no event crosses the file's ends.

Rendering. The background is rendered in overlapping CHUNK_SECONDS chunks, each its own draw of the site's
weather and insects (so rain and insects come and go), joined by equal-power crossfades; each bout and
distractor is reverberated, absorbed and coloured in its own FFT and added. A 120-s soundscape at 22050 Hz thus
needs FFTs of at most ~0.7 M points instead of one of 2.6 M, and memory grows with the file only by its float64
buffer (8 bytes a sample). Everything is float64 and rounded to the 16-bit grid at the end, and every draw comes
from a key (split, number, chunk, bout or distractor), as in the corpus, so the files are the same whatever the
workers and on every CPU (see Determinism in :mod:`birdpipe.data.synthetic.corpus`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft as sfft
import soundfile as sf
from tqdm import tqdm

from birdpipe.common.params import SyntheticSoundscapeParams
from birdpipe.common.workers import cpu_workers
from birdpipe.data.synthetic.distractors import DISTRACTOR_KINDS, render_distractor
from birdpipe.data.synthetic.model import (
    _BED,
    _BOUT,
    _DISTRACTOR,
    _NEGATIVE,
    _SCENE,
    _SETTING,
    _SOUNDSCAPE,
    _SOUNDSCAPE_BIRD,
    DISTANCE_M,
    DISTRACTOR_DB,
    PCM_SCALE,
    PEAK_DBFS,
    SNR_BAND_HZ,
    Design,
    Recordist,
    Site,
    Species,
    _rng,
)
from birdpipe.data.synthetic.noise import _equipment_db, _noise, _power, _upsample
from birdpipe.data.synthetic.plan import _negative, _recordists, _site
from birdpipe.data.synthetic.render import _absorption_db, _impulse, _individual, _perform

SPLITS = ("val", "test")
FLAC = {"format": "FLAC", "subtype": "PCM_16"}
CHUNK_SECONDS = 30.0  # the background is rendered in chunks of about this length
CROSSFADE_SECONDS = 1.0  # between chunks
BOUT_SECONDS = (3.0, 20.0)  # log-uniform window in which a bird starts songs
BOUT_OVERRUN_SECONDS = 30.0  # room for the last song begun in the window (longer songs are cut)
MERGE_GAP_SECONDS = 0.5  # syllables of a species closer than this make one event
BIRDS_PER_SPECIES = 3  # birds of a species around one soundscape's recorder
CALL_BOUTS = 0.25  # share of a calling species' bouts that are calls
SIMULTANEOUS_DECAY = 0.45  # odds of k species at once fall by this factor per extra species
FAR_M = 50.0  # birds farther than this lose their upper harmonics


@dataclass(frozen=True)
class _Scene:
    site: Site
    recorder: Recordist
    slope_db: float  # colour of the noise floor, dB per octave
    tilt_db: float  # microphone handling, dB per octave around 1 kHz


# ------------------------------------------------------------------------------------------ mixing
def _curve(length: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A smooth amplitude response per rfft bin of ``length`` samples, computed every few bins (as render does)."""
    bins = length // 2 + 1
    step = -(-bins // 1024)
    coarse = np.arange(-(-bins // step) + 1) * step * (sr / length)
    return _upsample(gain(coarse), step, bins)


def _colouring(scene: _Scene, sr: int, length: int) -> np.ndarray:
    def gain(f: np.ndarray) -> np.ndarray:
        tilt = scene.tilt_db * np.log2(np.maximum(f, 50.0) / 1000.0)
        return 10 ** ((_equipment_db(scene.recorder, f) + tilt) / 20)

    return _curve(length, sr, gain)


def _energies(spectrum: np.ndarray, length: int, sr: int) -> tuple[float, float]:
    """Sum of squared samples above SNR_BAND_HZ and in all (without DC) of a signal, from its rfft over ``length``."""
    k = math.ceil(SNR_BAND_HZ * length / sr)
    return 2.0 * _power(spectrum[k:]) / length, 2.0 * _power(spectrum[1:]) / length


def _add(out: np.ndarray, piece: np.ndarray, start: int) -> None:
    a, b = max(start, 0), min(start + piece.size, out.size)
    if b > a:
        out[a:b] += piece[a - start : b - start]


def _bed(
    design: Design, scene: _Scene, n: int, chunk_rng: Callable[[int], np.random.Generator]
) -> tuple[np.ndarray, float, float]:
    """The coloured background of ``n`` samples and its power per sample above SNR_BAND_HZ and in all (before the
    colouring), rendered in chunks joined by equal-power crossfades (independent noises keep their power)."""
    sr = design.sample_rate
    length = 64 * sfft.next_fast_len(math.ceil(min(n, round(CHUNK_SECONDS * sr)) / 64), real=True)
    fade = round(CROSSFADE_SECONDS * sr)
    chunks = 1 if length >= n else 1 + -(-(n - length) // (length - fade))
    colour = _curve(length, sr, lambda f: (np.maximum(f, 50.0) / 1000.0) ** (scene.slope_db / 6.0206))
    colouring = _colouring(scene, sr, length)
    ramp = np.sin((0.5 * np.pi / fade) * (np.arange(fade) + 0.5))
    out = np.zeros(n)
    band = full = 0.0
    for c in range(chunks):
        spectrum = _noise(design, scene.site, chunk_rng(c), length, colour)
        energies = _energies(spectrum, length, sr)
        band, full = band + energies[0], full + energies[1]
        spectrum *= colouring
        x = sfft.irfft(spectrum, length)
        if c > 0:
            x[:fade] *= ramp
        if c < chunks - 1:
            x[-fade:] *= ramp[::-1]
        _add(out, x, c * (length - fade))
    return out, band / (chunks * length), full / (chunks * length)


def _place(
    design: Design, scene: _Scene, dry: np.ndarray, distance: float, rng: np.random.Generator
) -> tuple[np.ndarray, float, float]:
    """``dry`` as the recorder hears it from ``distance`` m (reverberation, air absorption, colouring), and its
    energy above SNR_BAND_HZ and in all before the colouring."""
    sr = design.sample_rate
    site = scene.site
    rt60 = site.rt60 * float(rng.uniform(0.8, 1.25))
    tail = min(round(rt60 * sr), sr)
    length = sfft.next_fast_len(dry.size + tail, real=True)
    spectrum = sfft.rfft(dry, length)
    spectrum *= sfft.rfft(_impulse(site, distance, rt60, tail, sr, rng), length)
    spectrum *= _curve(length, sr, lambda f: 10 ** (-_absorption_db(site, distance, f) / 20))
    band, full = _energies(spectrum, length, sr)
    spectrum *= _colouring(scene, sr, length)
    return sfft.irfft(spectrum, length), band, full


def _distractor(
    design: Design,
    scene: _Scene,
    out: np.ndarray,
    spec: tuple[str, float, float, float],
    full_power: float,
    rng: np.random.Generator,
) -> None:
    """Add a distractor (kind, onset as a share of the room left, dB re the background, distance) to ``out``."""
    kind, onset, level_db, distance = spec
    dry = render_distractor(kind, design.sample_rate, rng)
    wet, _, full = _place(design, scene, dry, distance, rng)
    wet *= math.sqrt(full_power * 10 ** (level_db / 10) / max(full / dry.size, 1e-300))
    _add(out, wet, round(onset * max(out.size - dry.size, 0)))


def _finish(out: np.ndarray, peak_dbfs: float) -> np.ndarray:
    """Normalised to ``peak_dbfs`` and rounded to the 16-bit grid (as render; in place, so no copy of a long file)."""
    peak = max(float(out.max()), -float(out.min()), 1e-12)
    out *= float(f"{10 ** (peak_dbfs / 20) / peak:.6g}")
    out *= PCM_SCALE
    np.rint(out, out=out)
    out /= PCM_SCALE
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------ no-bird clips
def render_negative(design: Design, number: int, seconds: float) -> np.ndarray:
    """The samples of no-bird clip ``number`` (float32 on the 16-bit grid, ``seconds`` long): a corpus site's
    background as one of its recordists records it, with the distractors drawn for it (``plan._negative``)."""
    n = round(seconds * design.sample_rate)
    negative = _negative(design, number)
    rng = _rng(design.seed, _NEGATIVE, _SCENE, number)
    site = design.sites[negative.site]
    scene = _Scene(
        site, design.recordists[negative.recordist], site.floor_slope_db + rng.normal(0, 1.0), rng.normal(0, 1.5)
    )
    out, _, full = _bed(design, scene, n, lambda c: _rng(design.seed, _NEGATIVE, _BED, number, c))
    for j, spec in enumerate(negative.distractors):
        _distractor(design, scene, out, spec, full, _rng(design.seed, _NEGATIVE, _DISTRACTOR, number, j))
    return _finish(out, negative.peak_dbfs)


# ------------------------------------------------------------------------------------------ soundscapes
def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return 1 + SPLITS.index(split)


def _soundscape_scene(design: Design, split: str, number: int) -> _Scene:
    """The site (none of the corpus's) and the fixed recorder (its colouring and peak level) of a soundscape."""
    rng = _rng(design.seed, _SOUNDSCAPE, _SCENE, _split_code(split), number)
    sr = design.sample_rate
    site = _site(rng, sr, [s.name for s in design.sites])
    recorder = Recordist(
        name=f"{split} recorder {number}",
        tilt_db=float(rng.uniform(-1.5, 1.5)),
        highpass_hz=math.exp(rng.uniform(math.log(40), math.log(200))),
        lowpass_hz=None,
        peak_hz=math.exp(rng.uniform(math.log(1500), math.log(min(6000, 0.3 * sr)))),
        peak_db=float(rng.uniform(0, 4)),
        peak_octaves=float(rng.uniform(0.7, 1.5)),
        level_db=float(rng.uniform(*PEAK_DBFS)),
        years=(0, 0),
        sites=(),
        site_weights=(),
    )
    return _Scene(site, recorder, site.floor_slope_db + rng.normal(0, 1.0), 0.0)  # mounted: no handling


def _soundscape_bird(design: Design, species: Species, split: str, number: int, bird: int) -> dict[str, Any]:
    """One of the birds of ``species`` around a soundscape's recorder (keys no corpus individual has)."""
    return _individual(design, species, _SOUNDSCAPE_BIRD, _split_code(split), number, bird)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Spans joined where less than MERGE_GAP_SECONDS apart."""
    merged: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if merged and a - merged[-1][1] < MERGE_GAP_SECONDS:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _covered(events: list[tuple[float, float]]) -> float:
    """Time (s) inside at least one of ``events``."""
    total, reach = 0.0, -math.inf
    for a, b in sorted(events):
        total += max(0.0, b - max(a, reach))
        reach = max(reach, b)
    return total


def _events(spans: dict[int, list[tuple[float, float]]], design: Design) -> list[tuple[float, float, str]]:
    """(start, end, label) of each species' merged syllable spans, sorted."""
    events = [(a, b, design.species[s].label) for s, found in spans.items() for a, b in _merge(found)]
    return sorted(events)


def render_soundscape(
    design: Design, params: SyntheticSoundscapeParams, split: str, number: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """Soundscape ``number`` of ``split`` (val or test): float32 samples on the 16-bit grid at the design's rate and
    its events (``start_s``, ``end_s``, ``label``: each species' runs of syllables, exact; sorted by start)."""
    code = _split_code(split)
    seed, sr = design.seed, design.sample_rate
    n = round(params.seconds * sr)
    scene = _soundscape_scene(design, split, number)
    out, band_power, full_power = _bed(design, scene, n, lambda c: _rng(seed, _SOUNDSCAPE, _BED, code, number, c))
    rng = _rng(seed, _SOUNDSCAPE, _SETTING, code, number)
    weights = np.sqrt(np.array(design.recordings, dtype=float))
    sizes = SIMULTANEOUS_DECAY ** np.arange(min(params.max_simultaneous, len(weights)))
    ratio = params.bird_free_share / (1.0 - params.bird_free_share)  # bird-free time per time with birds
    spans: dict[int, list[tuple[float, float]]] = {}
    bouts, singing = 0, 0.0  # bouts so far, time inside events so far
    t = ratio * rng.uniform(0.0, 2 * BOUT_SECONDS[0])  # the file starts inside a bird-free stretch
    while t * sr < n:
        size = 1 + int(rng.choice(sizes.size, p=sizes / sizes.sum()))
        if singing and t - singing > ratio * singing:  # pauses between songs left too much bird-free time: fill
            size = sizes.size
        chosen = rng.choice(len(weights), size=size, replace=False, p=weights / weights.sum())
        stretch: dict[int, list[tuple[float, float]]] = {}
        first = 0.0
        for s in chosen:
            species = design.species[s]
            length = math.exp(rng.uniform(*map(math.log, BOUT_SECONDS)))
            start = t + (rng.uniform(0.0, 0.8 * first) if first else 0.0)  # others join the first singer
            first = first or length
            bird = _soundscape_bird(design, species, split, number, int(rng.integers(BIRDS_PER_SPECIES)))
            calls = species.call is not None and rng.random() < CALL_BOUTS
            distance = math.exp(rng.uniform(*map(math.log, DISTANCE_M)))
            snr_db = float(rng.uniform(*params.snr_db))
            s0 = round(start * sr)
            if s0 >= n:
                continue
            dry, found = np.zeros(min(round((length + BOUT_OVERRUN_SECONDS) * sr), n - s0)), []
            bout_rng = _rng(seed, _SOUNDSCAPE, _BOUT, code, number, bouts)
            bouts += 1
            _, sung = _perform(
                design, species, bird, calls, dry.size, bout_rng, dry, window=(0.0, length), far=distance > FAR_M,
                lead=(0.0, 0.3), spans=found,
            )  # fmt: skip
            if not found:
                continue
            last = round(max(b for _, b in found) * sr)
            wet, band, _ = _place(design, scene, dry[:last], distance, bout_rng)
            wet *= math.sqrt(band_power * 10 ** (snr_db / 10) / max(band / sung, 1e-300))
            _add(out, wet, s0)
            stretch[s] = [((s0 + round(a * sr)) / sr, (s0 + round(b * sr)) / sr) for a, b in found]
            spans.setdefault(s, []).extend(stretch[s])
        events = [(a, b) for a, b, _ in _events(stretch, design)]
        end = max((b for _, b in events), default=t + first)
        singing += _covered(events)
        # a bird-free stretch that tops up the bird-free time so far (pauses included) to `ratio` times the song
        t = end + max(0.0, ratio * singing - (end - singing)) * rng.gamma(4.0, 0.25)
    for j in range(int(rng.poisson(params.distractors_per_minute * n / sr / 60.0))):
        spec = (
            str(rng.choice(DISTRACTOR_KINDS)),
            float(rng.random()),
            float(rng.uniform(*DISTRACTOR_DB)),
            math.exp(rng.uniform(*map(math.log, DISTANCE_M))),
        )
        _distractor(design, scene, out, spec, full_power, _rng(seed, _SOUNDSCAPE, _DISTRACTOR, code, number, j))
    table = pd.DataFrame(_events(spans, design), columns=["start_s", "end_s", "label"])
    return _finish(out, scene.recorder.level_db), table


def _write_soundscape(job: tuple[Design, SyntheticSoundscapeParams, str, int, str]) -> pd.DataFrame:
    design, params, split, number, root = job
    audio, events = render_soundscape(design, params, split, number)
    file = f"{split}/soundscape_{number:03d}.flac"
    sf.write(str(Path(root) / file), audio, design.sample_rate, **FLAC)
    events = events.assign(start_s=events["start_s"].round(3), end_s=events["end_s"].round(3))
    events = events[events["end_s"] > events["start_s"]]
    if events.empty:  # a file without birds still has a row
        events = pd.DataFrame({"start_s": [np.nan], "end_s": [np.nan], "label": [""]})
    return events.assign(file=file, split=split)[["file", "start_s", "end_s", "label", "split"]]


def generate_soundscapes(
    design: Design, params: SyntheticSoundscapeParams, out_dir: Path, workers: int = 0, progress: bool = True
) -> pd.DataFrame:
    """Write ``params.files`` soundscapes per split as ``out_dir/<split>/soundscape_<nnn>.flac`` and
    ``out_dir/annotations.csv`` (file, start_s, end_s, label, split; times to 3 decimals; a file without events
    has one row with empty times and label); return that table."""
    out_dir = Path(out_dir)
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    jobs = [(design, params, split, number, str(out_dir)) for split in SPLITS for number in range(params.files)]
    workers = min(cpu_workers(workers), len(jobs))
    bar = tqdm(total=len(jobs), desc="synthetic: rendering soundscapes", unit="file", disable=not progress or None)
    tables = []
    with bar:
        if workers == 1:
            for job in jobs:
                tables.append(_write_soundscape(job))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for table in pool.map(_write_soundscape, jobs):
                    tables.append(table)
                    bar.update()
    table = pd.concat(tables, ignore_index=True).sort_values(["file", "start_s", "end_s", "label"], kind="stable")
    table = table.reset_index(drop=True)
    table.to_csv(out_dir / "annotations.csv", index=False, float_format="%.3f")
    return table


# ------------------------------------------------------------------------------------------ beds for real mixes
def soundscape_bed(seed: int, sample_rate: int, split: str, number: int, seconds: float) -> np.ndarray:
    """The background alone (float64) of a soundscape recorder at a generated site: what
    :mod:`birdpipe.soundscapes.mix` lays real excerpts over. Keyed like :func:`render_soundscape`'s background,
    from a design of the given rate (no species are needed)."""
    from birdpipe.common.params import SyntheticParams

    settings = SyntheticParams(species=2, similar_pairs=0, recordists=1, sample_rate=sample_rate)
    recordists, sites = _recordists(settings, seed)
    design = Design(seed, sample_rate, (), tuple(recordists), tuple(sites))
    scene = _soundscape_scene(design, split, number)
    code = _split_code(split)
    out, _, _ = _bed(
        design, scene, round(seconds * sample_rate), lambda c: _rng(seed, _SOUNDSCAPE, _BED, code, number, c)
    )
    return out


def synthetic_distractor(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A non-bird sound of a random kind (engines, dogs, frogs, rain, voices...), float64 with peak 1."""
    return render_distractor(str(rng.choice(DISTRACTOR_KINDS)), sample_rate, rng)
