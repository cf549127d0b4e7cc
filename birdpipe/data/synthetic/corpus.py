"""A seeded generator of a synthetic bird-song corpus: the project's default data set.

:func:`generate_corpus` writes ``audio/<label>/<id>.mp3`` (mono MP3 at ``sample_rate``), ``metadata.csv``
(one row per recording; ``path`` relative to ``out_dir``, so it is ingested like any user-supplied CSV)
and ``species.csv`` (each invented species: genus, similar partner, syllable types, pitch) under
``out_dir``, which should be new or empty. :func:`build_design` and :func:`render` give the species and
the samples of one recording without writing anything.

Design
------
Species. Every species gets an invented binomial label (``Synthornis_velox``: letters and one underscore),
an English name, a pitch centre (log-uniform, 2.3-4.2 kHz at 22050 Hz, so species' bands overlap) and
an inventory of 3-6 syllable types, each with its own frequency range (about 1-9 kHz), duration,
envelope (attack/release), level, harmonic content and repetition habit, drawn from

- ``sweep``: a linear or exponential (log-frequency) glide, up or down, 40-250 ms;
- ``arch``: a chevron, an inverted-U or U frequency contour, 60-250 ms;
- ``trill``: 3-50 short elements (each a small sweep) at 8-35 Hz, drifting in pitch and level;
- ``stack``: a harmonic stack (fundamental 0.7-2.5 kHz, 3-6 harmonics with species-typical amplitudes,
  vibrato);
- ``click``: a rattle of broadband pulses (2-4 ms chirps spanning 1-2 octaves) at 12-60 Hz;
- ``whistle``: a near-constant pure tone with slow vibrato, 150-700 ms;
- ``buzz``: a tone amplitude-modulated at 40-150 Hz (buzzy sidebands).

Grammar. A song is a sequence of phrases; a phrase repeats one syllable type (1-5 times, per type) at
a species-typical syllable gap, and the next phrase's type follows a Markov chain over the inventory (a
stereotyped successor order blended with random transitions). Song length (phrases), phrase gap and
the pause between songs (0.8-5 s) are species-typical, so a species has its own tempo and rhythm; songs
repeat with pauses through the recording. A third of the species have a second song type (another
chain over part of the inventory); about 60 % have a call (one short syllable repeated in bouts),
heard now and then between songs and making up whole "call" recordings (``sound_type``).

Individuals. Each recording is one individual (``individual`` column) of a local population of 2-5
birds per species and site, so the same bird may be recorded again by the same recordist at one site,
as on Xeno-canto. An individual has its own pitch (sd 5 %), tempo (sd 8 %), per-syllable pitch (sd 3
%) and duration (sd 8 %), re-drawn Markov transitions, song-type preference, repeat habit and
syllable levels, and half of them never sing one of their species' syllable types. Every rendition
adds jitter in pitch (1 %), duration (4 %), level and timing, and each song its own level (the bird
turns and moves).

Recording. Lengths are log-normal (median ``median_seconds``, sigma ``DURATION_SIGMA``) truncated to
[``min_seconds``, ``max_seconds``]; the bird starts singing within the first 0.5 s or is already
singing. It is 5-100 m away: air absorption (more in forest) removes high frequencies and a site's
reverberation (exponentially decaying noise, RT60 0.05-1 s by habitat) is mixed in with a
direct-to-reverberant ratio that falls with distance. The song is mixed with the background at an SNR
drawn uniformly from ``snr_db`` (song power while singing vs noise power above 1 kHz, before the
recorder's colouring), and each recording is normalised to its own peak level (-20 to -3 dBFS, around
the recordist's habit), so loudness says nothing about the species.

Noise. Every recording has a noise floor (slope -6..0 dB/octave, i.e. white to brown), wind (noise below
150-800 Hz with slow random gusts) and, by site, rain (a crackle of random decaying impulses) and insects
(narrow bands at 2.5-9 kHz, stationary hums or pulsed/chirping, cicada- or cricket-like), all with
random levels. 40 % of recordings also hold 1-2 other species (commoner ones more often) at -25 to -8 dB
relative to the focal bird, listed in ``background_species`` (``;``-separated labels, as Xeno-canto).

Recordists and sites. ``recordists`` recordists with Zipf-like activity (the heaviest make most
recordings), each working 1-4 sites in a few active years. A recordist has fixed equipment colouring
(EQ tilt, high-pass, optional low-pass and presence peak) and a level habit; a site has a habitat
(reverberation) and a noise profile (wind, rain, insects, floor colour); each recording adds its own
microphone-handling tilt. Recordings come in sessions (1-4 recordings of one species by one recordist
at one site on one date, mostly of one bird). A session's recordist is drawn independently of the
species, so recordists record many species and species many recordists, the label cannot be inferred
from the recordist, ``split.group_by: [recordist]`` is possible, and a random split leaks
recordist/site/individual cues into the test set as real data does.

No-bird clips. With ``negatives`` > 0, that many clips without any bird (a site's weather and insects as a
recordist records it, plus 0-3 engines, dogs, frogs, rain bursts, voices...: :mod:`.soundscape`,
:mod:`.distractors`) are written as ``audio/_negatives/NEG<n>.mp3``, lengths drawn like the recordings'; their
metadata rows have no label or species names, a recordist, site and date like any recording, ``negative`` true
(false on bird rows; the column exists only then) and the distractor ``kinds`` heard. They draw from their own
streams, so the bird recordings stay byte-identical. :mod:`.soundscape` also renders val/test soundscapes.

Counts. Species ``i`` has ``round(max_recordings * r**i)`` recordings, geometric from ``max_recordings``
down to ``max(1, round(max_recordings / imbalance))``. Species are designed independently of their
index, similar pairs are chosen at random and recording ids are shuffled, so nothing follows the order.

Similar pairs. ``similar_pairs`` random pairs share a genus (and an English group name); the second
species is derived from the first (same syllable types, frequency range and grammar) and differs in one
or two subtler cues: a 10-15 % frequency shift, a 1.4x tempo, reversed sweep directions or one
different syllable type, sometimes also longer repetitions (``species.csv``: ``differences``).

Difficulty. Checked with default params (seeds 42 and 7) by a script outside the repository. A
standardised logistic regression on per-recording MFCC mean+std (20 MFCCs, n_fft 2048, hop 512) on five
stratified 70/30 splits reaches 53-55 % accuracy (macro F1 0.31), with mean per-class recall about 0.6
for the commonest third of the species, 0.27 for the middle third and 0.05 for the rarest third; split
by recordist it falls to 41-45 %. Duration, RMS level and spectral centroid together give 18 % and the
recordist alone 14-18 % (the commonest species is 16 % of the recordings). A small CNN on 4-second
log-mel windows reaches 83 % (macro F1 0.56) where the MFCC statistics reach 50 % (0.27) on the same
split, and spectrograms of medium-SNR recordings show the songs plainly, different in every individual.

Speed. The default corpus (942 recordings, 2.3 h, 54 MB) takes about 47 s on 2 idle cores (92 CPU-s);
about three quarters of that is libsndfile's MP3 encoder (about 115x real time per core). Rendering in float64
with CPU-independent contours (below) made it about 10 % slower (rendering 2.5 -> 4.5 CPU-s per 0.57 h of audio).

Determinism. Every random draw comes from ``np.random.default_rng([seed, stream, *keys])`` keyed by
species, recordist, site, individual or recording, never from shared state; each recording is rendered
from its own key alone and libsndfile's MP3 encoder is deterministic, so the same params and seed give
byte-identical files and CSV whatever ``workers`` is.

Across machines. numpy picks its exp/log/sin/power kernels at run time by CPU (AVX-512, AVX2, baseline) and
they differ in the last bits; rendered in float32, that changed the MP3s from one CPU to another. So the
rendering is float64; frequency contours, which are summed into a phase where a last-bit difference grows
with the syllable, use CPU-independent kernels (``_exp``, ``_pow``, ``_sin_turns``: + - * / only) and
scalar draws the C library's ``math``; and :func:`render` rounds the samples to the 16-bit grid before the
encoder. Measured with numpy's AVX-512 and its baseline kernels on one machine, the float64 samples differ by
at most 4e-16 of full scale, 2e-17 on average, so a 16-bit sample changes with odds of ~1e-12 and the default
corpus (1.8e8 samples) comes out byte-identical with odds of about 0.9999 (tests/test_synthetic.py compares
the two). The MP3 encoder (LAME 3.100 inside soundfile's libsndfile) has no CPU-dependent path on x86-64
(its SSE checks are compiled out). What the bytes still depend on: the versions pinned in requirements.txt
(numpy's random streams and pocketfft, scipy, soundfile's libsndfile/LAME) and the C maths library (glibc's
exp/log/pow/sin/cos, used by LAME and the scalar draws, pick FMA variants on CPUs with FMA, whose results can
differ from the others in the last bit), so the claim is: same pinned wheels, x86-64 Linux, an FMA CPU.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from birdpipe.common.params import SyntheticParams
from birdpipe.common.workers import cpu_workers
from birdpipe.data.synthetic.model import MP3, Design, Task
from birdpipe.data.synthetic.plan import Clip, _negatives, _plan, _recordists
from birdpipe.data.synthetic.render import render
from birdpipe.data.synthetic.soundscape import render_negative
from birdpipe.data.synthetic.species import _design_species, species_counts

# ------------------------------------------------------------------------------------------ driver
_WORKER_DESIGN: Design | None = None


def _init_worker(design: Design) -> None:
    global _WORKER_DESIGN
    _WORKER_DESIGN = design


def _write(job: tuple[Design | None, Task | Clip, str]) -> float:
    design, task, root = job
    design = design or _WORKER_DESIGN
    assert design is not None
    if isinstance(task, Task):
        audio = render(design, task)
    else:
        audio = render_negative(design, task.number, task.samples / design.sample_rate)
    path = Path(root) / task.path
    sf.write(str(path), audio, design.sample_rate, **MP3)
    return float(np.max(np.abs(audio)))


def build_design(params: SyntheticParams, seed: int) -> Design:
    """Species, recordists and sites of a corpus (no audio)."""
    recordists, sites = _recordists(params, seed)
    species = tuple(_design_species(params, seed))
    counts = tuple(species_counts(params))
    return Design(seed, params.sample_rate, species, tuple(recordists), tuple(sites), counts)


def _species_table(design: Design, counts: list[int]) -> pd.DataFrame:
    rows = []
    for species, count in zip(design.species, counts, strict=True):
        rows.append(
            {
                "label": species.label,
                "scientific_name": species.scientific_name,
                "english_name": species.english_name,
                "genus": species.genus,
                "recordings": count,
                "similar_to": "" if species.similar_to is None else design.species[species.similar_to].label,
                "differences": species.differences,
                "syllables": ";".join(s.kind for s in species.syllables),
                "song_types": len(species.song_types),
                "call": "" if species.call is None else species.call.kind,
                "pitch_hz": round(species.center_hz),
            }
        )
    return pd.DataFrame(rows)


def generate_corpus(
    params: SyntheticParams, out_dir: Path, seed: int, workers: int = 0, progress: bool = True
) -> pd.DataFrame:
    """Write the synthetic corpus under ``out_dir`` and return its metadata table (also metadata.csv)."""
    out_dir = Path(out_dir)
    design = build_design(params, seed)
    tasks, table = _plan(params, seed, design)
    clips: list[Clip] = []
    if params.negatives:
        clips, negatives = _negatives(params, seed, design)
        table = table.assign(negative=False, kinds="")
        table = pd.concat([table, negatives], ignore_index=True)
    _render_all(design, [*tasks, *clips], table, out_dir, workers, progress)
    table = table.sort_values("path", kind="stable").reset_index(drop=True)
    table.to_csv(out_dir / "metadata.csv", index=False)
    _species_table(design, species_counts(params)).to_csv(out_dir / "species.csv", index=False)
    return table


def _render_all(
    design: Design, jobs: list[Task | Clip], table: pd.DataFrame, out_dir: Path, workers: int, progress: bool
) -> None:
    """Render and write every recording or clip of ``jobs`` in parallel (deterministic whatever the workers)."""
    for folder in {Path(path).parent for path in table["path"]}:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    workers = min(cpu_workers(workers), max(1, len(jobs)))
    # longest first, for an even load; every task writes its own file, so the order changes nothing
    ordered = sorted(jobs, key=lambda task: -task.samples)
    root = str(out_dir)
    bar = tqdm(total=len(jobs), desc="synthetic: generating recordings", unit="rec", disable=not progress or None)
    with bar:
        if workers == 1:
            for task in ordered:
                _write((design, task, root))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(design,)) as pool:
                for _ in pool.map(_write, [(None, task, root) for task in ordered], chunksize=2):
                    bar.update()


def generate_negatives(params: SyntheticParams, out_dir: Path, seed: int, workers: int = 0, progress: bool = True
                       ) -> pd.DataFrame:  # fmt: skip
    """Only the ``params.negatives`` no-bird clips (``data.negatives: synthetic`` beside a real source), written as
    in the corpus, with their ``metadata.csv``; return that table."""
    out_dir = Path(out_dir)
    design = build_design(params, seed)
    clips, table = _negatives(params, seed, design)
    _render_all(design, list(clips), table, out_dir, workers, progress)
    table = table.sort_values("path", kind="stable").reset_index(drop=True)
    table.to_csv(out_dir / "metadata.csv", index=False)
    return table
