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

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.fft as sfft
import soundfile as sf
from scipy.special import ndtr, ndtri
from tqdm import tqdm

from birdpipe.common.params import SyntheticParams
from birdpipe.common.workers import cpu_workers

# ------------------------------------------------------------------------------------------ settings
DURATION_SIGMA = 0.45  # log-normal sigma of recording lengths (before truncation)
SNR_BAND_HZ = 1000.0  # SNR compares powers above this frequency
PEAK_DBFS = (-20.0, -3.0)  # range of the final peak level (MP3 overshoot stays below 0 dBFS)
DISTANCE_M = (5.0, 100.0)  # log-uniform distance of the focal bird
BACKGROUND_SHARE = 0.4  # recordings with other species in the background
BACKGROUND_DB = (-25.0, -8.0)  # their level relative to the focal bird
REPERTOIRE_DROP = 0.5  # share of individuals that never sing one of their species' syllable types
POPULATION = (2, 6)  # birds of a species at a site: integers in [low, high)
SESSION_CONTINUE = 0.35  # probability that a session goes on with one more recording (max 4)
INDIVIDUAL_SD = {"pitch": 0.05, "tempo": 0.08, "syllable_pitch": 0.03, "syllable_duration": 0.08}
MP3 = {"format": "MP3", "subtype": "MPEG_LAYER_III"}
PCM_SCALE = 32768.0  # the rendered samples are rounded to the 16-bit grid (see render)

# independent random streams: default_rng([seed, STREAM, ...keys])
_NAMES, _SPECIES, _PLAN, _RECORDIST, _SITE, _INDIVIDUAL, _RECORDING = range(1, 8)

_SYLLABLE_KINDS = ("sweep", "arch", "trill", "stack", "click", "whistle", "buzz")
_SYLLABLE_WEIGHTS = (0.22, 0.16, 0.16, 0.12, 0.09, 0.15, 0.10)
_CALL_KINDS = ("sweep", "arch", "stack", "click", "buzz")
_HABITATS = {  # RT60 range (s), direct-to-reverberant ratio at 10 m (dB)
    "forest": ((0.4, 1.0), (0.0, 5.0)),
    "scrub": ((0.2, 0.5), (4.0, 9.0)),
    "wetland": ((0.1, 0.3), (7.0, 12.0)),
    "open": ((0.05, 0.2), (10.0, 18.0)),
}

_GENUS_STEMS = (  # signal-processing stems, so no invented genus is a real one
    "Synth", "Fict", "Simul", "Phant", "Mim", "Digit", "Algor", "Quas", "Pixel", "Vect", "Spectr", "Numer",
    "Modul", "Tensor", "Matric", "Sampl", "Spline", "Kernel", "Stoch", "Aleat", "Sinus", "Chirp", "Harmon",
    "Phasor", "Wavel", "Cepstr", "Filtr", "Alias", "Nyquist", "Dither",
)  # fmt: skip
_GENUS_ENDINGS = (  # ending, English group name
    ("ornis", "Songbird"), ("ospiza", "Finch"), ("ocichla", "Thrush"), ("othraupis", "Tanager"),
    ("ophila", "Chat"), ("orhynchus", "Flycatcher"), ("icola", "Bushlark"), ("ura", "Wren"),
    ("optila", "Gnatcatcher"), ("odytes", "Babbler"), ("ocantor", "Warbler"), ("oscopus", "Vireo"),
)  # fmt: skip
_EPITHETS = (  # epithet, English modifier
    ("velox", "Swift"), ("minor", "Lesser"), ("major", "Greater"), ("cantans", "Singing"),
    ("obscurus", "Dusky"), ("ruficollis", "Rufous-necked"), ("albigularis", "White-throated"),
    ("nigriceps", "Black-headed"), ("flavipes", "Yellow-legged"), ("montanus", "Mountain"),
    ("sylvestris", "Woodland"), ("palustris", "Marsh"), ("borealis", "Northern"), ("australis", "Southern"),
    ("occidentalis", "Western"), ("orientalis", "Eastern"), ("elegans", "Elegant"), ("modestus", "Modest"),
    ("garrulus", "Chattering"), ("tristis", "Mournful"), ("melodius", "Melodious"), ("striatus", "Striped"),
    ("maculatus", "Spotted"), ("cinereus", "Ashy"), ("olivaceus", "Olive"), ("fuscus", "Brown"),
    ("aurantius", "Orange"), ("caeruleus", "Azure"), ("viridis", "Green"), ("rubiginosus", "Rusty"),
    ("pallidus", "Pale"), ("gracilis", "Slender"), ("robustus", "Stout"), ("longicauda", "Long-tailed"),
    ("brevirostris", "Short-billed"), ("crassirostris", "Thick-billed"), ("tenuirostris", "Thin-billed"),
    ("leucurus", "White-tailed"), ("melanotis", "Black-eared"), ("xanthogaster", "Yellow-bellied"),
    ("rufiventris", "Rufous-bellied"), ("plumbeus", "Leaden"), ("sordidus", "Drab"),
    ("vociferus", "Vociferous"), ("tinnulus", "Tinkling"), ("sibilans", "Whistling"),
    ("trillans", "Trilling"), ("clamosus", "Noisy"), ("solitarius", "Solitary"), ("riparius", "Riverside"),
    ("collinus", "Hill"), ("campestris", "Field"), ("insularis", "Island"), ("dumetorum", "Thicket"),
    ("nemoralis", "Grove"), ("alticola", "Highland"), ("littoralis", "Shore"),
    ("crepuscularis", "Twilight"), ("lucidus", "Bright"), ("pulcher", "Handsome"),
)  # fmt: skip
_FIRST_NAMES = (
    "Ana", "Ben", "Chloe", "Dario", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kavya", "Lars",
    "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tove", "Umar", "Vera", "Wen", "Ximena",
    "Yusuf", "Zofia", "Aiko", "Bruno", "Carmen", "Dmitri", "Esther", "Felix", "Gita", "Hugo", "Ivy", "Joao",
)  # fmt: skip
_LAST_NAMES = (
    "Almeida", "Berg", "Castro", "Dahl", "Eriksen", "Fontaine", "Garcia", "Holm", "Ibarra", "Jensen",
    "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi", "Santos",
    "Tanaka", "Urban", "Varga", "Weber", "Yilmaz", "Zeller", "Abbott", "Brandt", "Cole", "Duarte", "Engel",
    "Fischer", "Gomez", "Hale", "Iversen", "Jakobsen", "Keller", "Lopes", "Mendes", "Novak", "Ortega",
)  # fmt: skip
_PLACES = (
    "Alder", "Birch", "Cedar", "Dune", "Elm", "Fern", "Gorse", "Heath", "Iris", "Juniper", "Kestrel",
    "Larch", "Maple", "Nettle", "Oak", "Pine", "Quarry", "Reed", "Sedge", "Thorn", "Upland", "Valley",
    "Willow", "Yew", "Ash", "Beacon", "Clover", "Dale", "Ember", "Falcon",
)  # fmt: skip
_FEATURES = (
    "Marsh", "Ridge", "Wood", "Creek", "Meadow", "Hollow", "Lake", "Fen", "Point", "Hill", "Glen", "Moor",
    "Springs", "Bog", "Bluff", "Grove", "Heights", "Flats", "Pond", "Trail",
)  # fmt: skip


# ------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class Syllable:
    """One syllable type; frequencies in Hz before the individual's pitch factor."""

    kind: str
    f_start: float
    f_end: float
    duration: float
    contour: float = 1.0  # sweep: warp exponent of the glide; arch: bend (octaves, + inverted U)
    exponential: bool = True  # sweep/trill elements: glide linear in log-frequency
    harmonics: tuple[float, ...] = (1.0,)
    elements: int = 1  # trill/click: number of elements
    element_fill: float = 0.6  # trill/click: element duration / element period
    drift: float = 0.0  # trill/click: pitch drift over the syllable (octaves)
    tilt: float = 0.0  # level trend over the syllable (-1..1)
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0  # fraction of the frequency
    am_hz: float = 0.0  # buzz: amplitude-modulation rate
    attack: float = 0.15  # fraction of the duration
    release: float = 0.3


@dataclass(frozen=True)
class SongType:
    start: tuple[float, ...]  # probability of each inventory syllable opening the song
    transitions: tuple[tuple[float, ...], ...]  # Markov chain over the inventory (phrase to phrase)
    phrases: float  # mean phrases per song


@dataclass(frozen=True)
class Species:
    index: int
    label: str
    scientific_name: str
    english_name: str
    genus: str
    center_hz: float
    syllables: tuple[Syllable, ...]
    levels_db: tuple[float, ...]
    repeats: tuple[tuple[int, int], ...]  # per syllable: min, max repetitions in a phrase
    song_types: tuple[SongType, ...]
    syllable_gap: float  # s, between repetitions in a phrase
    phrase_gap: float  # s, between phrases
    pause: float  # s, mean pause between songs
    call: Syllable | None
    call_gap: float  # s, between calls in a bout
    call_share: float  # share of recordings that are calls only
    similar_to: int | None = None
    differences: str = ""


@dataclass(frozen=True)
class Recordist:
    name: str
    tilt_db: float  # EQ tilt, dB per octave around 1 kHz
    highpass_hz: float
    lowpass_hz: float | None
    peak_hz: float
    peak_db: float
    peak_octaves: float
    level_db: float  # habitual peak level (dBFS)
    years: tuple[int, int]
    sites: tuple[int, ...]  # global site indices
    site_weights: tuple[float, ...]


@dataclass(frozen=True)
class Site:
    name: str
    habitat: str
    rt60: float
    drr_db: float  # direct-to-reverberant ratio at 10 m
    floor_slope_db: float  # dB per octave
    wind_db: float  # relative to the floor
    wind_cutoff_hz: float
    gustiness: float
    rain_share: float
    rain_rate: float  # drops per second when raining
    insects: tuple[tuple[float, float, float, float, float], ...]  # centre Hz, width Hz, dB, pulse Hz, chirp Hz


@dataclass(frozen=True)
class Task:
    """Everything needed to render one recording; rendering depends on nothing else."""

    path: str
    species: int
    number: int  # recording number within the species
    samples: int
    snr_db: float
    distance_m: float
    peak_dbfs: float
    recordist: int
    site: int
    individual: int  # index in the species' local population at the site
    calls: bool
    background: tuple[tuple[int, float], ...]  # species, level (dB re focal)


@dataclass(frozen=True)
class Design:
    seed: int
    sample_rate: int
    species: tuple[Species, ...]
    recordists: tuple[Recordist, ...]
    sites: tuple[Site, ...]


def _rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *(int(k) for k in keys)])


def _band(sample_rate: int) -> tuple[float, float]:
    """Frequency range of bird song at this sample rate."""
    return 1000.0, min(9000.0, 0.42 * sample_rate)


# ----------------------------------------------------------------------------------------- species
def species_counts(params: SyntheticParams) -> list[int]:
    """Recordings per species: geometric from max_recordings down to max(1, round(max / imbalance))."""
    top = params.max_recordings
    bottom = max(1, round(top / params.imbalance))
    if params.species == 1:
        return [top]
    steps = np.arange(params.species) / (params.species - 1)
    counts = np.round(top * (bottom / top) ** steps).astype(int)
    return [int(max(1, c)) for c in counts]


def _names(params: SyntheticParams, seed: int, pairs: list[tuple[int, int]]) -> list[tuple[str, str, str]]:
    """(genus, epithet, English name) per species; a similar pair shares a genus, others differ."""
    rng = _rng(seed, _NAMES)
    genera = [(stem + ending, group) for stem in _GENUS_STEMS for ending, group in _GENUS_ENDINGS]
    order = rng.permutation(len(genera))
    partner = {b: a for a, b in pairs}
    result: list[tuple[str, str, str]] = [("", "", "")] * params.species
    used_labels: set[str] = set()
    used_english: set[str] = set()
    next_genus = 0
    for s in sorted(range(params.species), key=lambda i: i in partner):  # pair partners last
        if s in partner:
            genus, group = result[partner[s]][0], _group_of(result[partner[s]][0])
        else:
            genus, group = genera[order[next_genus % len(order)]]
            next_genus += 1
        for attempt in range(10_000):
            epithet, english = _EPITHETS[int(rng.integers(len(_EPITHETS)))]
            label = f"{genus}_{epithet}"
            full_english = f"{english} {group}"
            if attempt > 200:  # English names of this group are nearly used up: qualify with the genus
                full_english = f"{english} {genus} {group}"
            if label not in used_labels and full_english not in used_english:
                break
        used_labels.add(label)
        used_english.add(full_english)
        result[s] = (genus, epithet, full_english)
    return result


def _group_of(genus: str) -> str:
    for ending, group in _GENUS_ENDINGS:
        if genus.endswith(ending):
            return group
    return "Songbird"


def _syllable(rng: np.random.Generator, kind: str, center: float, lo: float, hi: float) -> Syllable:
    """A random syllable type of ``kind`` around the species' pitch centre."""

    def freq(octaves: tuple[float, float], base: float = center) -> float:
        return float(np.clip(base * 2 ** rng.uniform(*octaves), lo, hi))

    u = rng.uniform
    up = rng.random() < 0.5
    if kind == "sweep":
        a = freq((-0.5, 0.4))
        span = u(0.3, 1.2) * (1 if up else -1)
        return Syllable(
            kind,
            a,
            float(np.clip(a * 2**span, lo, hi)),
            u(0.04, 0.25),
            contour=u(0.5, 2.0),
            exponential=bool(rng.random() < 0.6),
            harmonics=(1.0, u(0.0, 0.25)),
            attack=u(0.05, 0.35),
            release=u(0.1, 0.5),
            tilt=u(-0.5, 0.5),
        )
    if kind == "arch":
        a = freq((-0.4, 0.3))
        return Syllable(
            kind,
            a,
            freq((-0.3, 0.3), a),
            u(0.06, 0.25),
            contour=u(0.25, 0.8) * (1 if up else -1),
            harmonics=(1.0, u(0.0, 0.3)),
            attack=u(0.1, 0.4),
            release=u(0.1, 0.4),
        )
    if kind == "trill":
        a = freq((-0.45, 0.45))
        span = u(0.15, 1.0) * (1 if up else -1)
        duration = u(0.3, 1.4)
        rate = u(8.0, 35.0)
        return Syllable(
            kind,
            a,
            float(np.clip(a * 2**span, lo, hi)),
            duration,
            contour=u(0.7, 1.5),
            exponential=True,
            harmonics=(1.0, u(0.0, 0.2)),
            elements=max(3, round(duration * rate)),
            element_fill=u(0.35, 0.8),
            drift=u(-0.45, 0.3),
            tilt=u(-0.7, 0.7),
            attack=u(0.05, 0.3),
            release=u(0.1, 0.4),
        )
    if kind == "stack":
        f0 = float(np.clip(center * 2 ** u(-1.7, -0.8), 0.6 * lo, hi / 3))
        n = int(rng.integers(3, 7))
        harmonics = tuple(float(h) for h in np.exp(-np.arange(n) * u(0.2, 0.9)) * u(0.3, 1.0, n) ** 0.5)
        harmonics = (1.0, *(h / max(harmonics) for h in harmonics[1:]))
        return Syllable(
            kind,
            f0,
            f0 * 2 ** u(-0.3, 0.3),
            u(0.08, 0.4),
            harmonics=harmonics,
            vibrato_hz=u(0, 40),
            vibrato_depth=u(0.0, 0.03),
            attack=u(0.05, 0.3),
            release=u(0.1, 0.4),
        )
    if kind == "click":
        duration = u(0.15, 0.7)
        rate = u(12.0, 60.0)
        top = freq((0.3, 1.0))
        return Syllable(
            kind,
            top,
            float(np.clip(top * 2 ** -u(1.0, 2.0), 0.7 * lo, hi)),
            duration,
            exponential=True,
            elements=max(2, round(duration * rate)),
            element_fill=min(0.8, rate * u(0.002, 0.004)),
            drift=u(-0.2, 0.2),
            tilt=u(-0.5, 0.5),
            attack=0.05,
            release=0.2,
        )
    if kind == "whistle":
        a = freq((-0.3, 0.5))
        return Syllable(
            kind,
            a,
            float(np.clip(a * 2 ** u(-0.1, 0.1), lo, hi)),
            u(0.15, 0.7),
            harmonics=(1.0, u(0.0, 0.1)),
            vibrato_hz=u(0, 12),
            vibrato_depth=u(0.0, 0.015),
            attack=u(0.1, 0.4),
            release=u(0.15, 0.5),
        )
    if kind == "buzz":
        a = freq((-0.5, 0.3))
        return Syllable(
            kind,
            a,
            float(np.clip(a * 2 ** u(-0.25, 0.25), lo, hi)),
            u(0.15, 0.6),
            harmonics=(1.0, u(0.1, 0.5), u(0.0, 0.2)),
            am_hz=u(40, 150),
            attack=u(0.05, 0.3),
            release=u(0.1, 0.4),
        )
    raise ValueError(f"unknown syllable kind {kind!r}")


def _repeats(rng: np.random.Generator, syllable: Syllable) -> tuple[int, int]:
    if syllable.kind in ("trill", "click"):
        return (1, int(rng.integers(1, 3)))
    low = int(rng.integers(1, 4))
    return (low, low + int(rng.integers(0, 3)))


def _chain(rng: np.random.Generator, k: int, active: np.ndarray) -> SongType:
    """A Markov chain over the active syllables: a stereotyped successor order blended with noise."""
    order = rng.permutation(np.flatnonzero(active))
    successor = np.zeros((k, k))
    for i, j in zip(order, np.roll(order, -1), strict=True):
        successor[i, j] = 1.0
    noise = rng.dirichlet(np.full(k, 0.5), size=k) * active
    np.fill_diagonal(noise, noise.diagonal() * 0.2)
    noise /= noise.sum(axis=1, keepdims=True)
    stereotypy = rng.uniform(0.3, 0.9)
    transitions = stereotypy * successor + (1 - stereotypy) * noise
    transitions /= transitions.sum(axis=1, keepdims=True)
    start = np.zeros(k)
    start[order[0]] = 0.6
    start += 0.4 * active / active.sum()
    return SongType(tuple(start / start.sum()), tuple(map(tuple, transitions)), rng.uniform(1.5, 7.0))


def _random_species(rng: np.random.Generator, sample_rate: int) -> dict[str, Any]:
    lo, hi = _band(sample_rate)
    low, high = 2.3 * lo, 0.47 * hi
    if high < 1.2 * low:  # low sample rates: a narrower band
        low, high = 1.2 * lo, hi / 1.2
    center = math.exp(rng.uniform(math.log(low), math.log(high)))
    k = int(rng.choice([3, 4, 4, 5, 5, 6]))
    kinds = list(rng.choice(_SYLLABLE_KINDS, size=k, p=_SYLLABLE_WEIGHTS))
    if all(kind in ("click", "buzz") for kind in kinds):
        kinds[0] = "whistle"
    syllables = tuple(_syllable(rng, str(kind), center, lo, hi) for kind in kinds)
    song_types = [_chain(rng, k, np.ones(k))]
    if rng.random() < 0.33 and k >= 3:
        active = np.ones(k)
        active[rng.choice(k, size=int(rng.integers(1, k - 1)), replace=False)] = 0
        song_types.append(_chain(rng, k, active))
    has_call = rng.random() < 0.6
    return {
        "center_hz": center,
        "syllables": syllables,
        "levels_db": tuple(float(v) for v in rng.uniform(-8.0, 0.0, k)),
        "repeats": tuple(_repeats(rng, s) for s in syllables),
        "song_types": tuple(song_types),
        "syllable_gap": math.exp(rng.uniform(math.log(0.02), math.log(0.15))),
        "phrase_gap": math.exp(rng.uniform(math.log(0.05), math.log(0.35))),
        "pause": math.exp(rng.uniform(math.log(0.8), math.log(5.0))),
        "call": _syllable(rng, str(rng.choice(_CALL_KINDS)), center, lo, hi) if has_call else None,
        "call_gap": float(rng.uniform(0.25, 1.5)),
        "call_share": float(rng.uniform(0.1, 0.35)) if has_call else 0.0,
    }


def _shift(syllable: Syllable, factor: float, lo: float, hi: float) -> Syllable:
    def move(f: float) -> float:
        return float(np.clip(f * factor, 0.6 * lo if syllable.kind in ("stack", "click") else lo, hi))

    return _replace(syllable, f_start=move(syllable.f_start), f_end=move(syllable.f_end))


def _replace(syllable: Syllable, **changes: Any) -> Syllable:
    values = {name: getattr(syllable, name) for name in Syllable.__dataclass_fields__}
    values.update(changes)
    return Syllable(**values)


def _similar(base: dict[str, Any], rng: np.random.Generator, sample_rate: int) -> dict[str, Any]:
    """A sister species: the same syllable types and grammar, differing in one or two subtler cues."""
    lo, hi = _band(sample_rate)
    model = dict(base)
    options = ["shift", "tempo", "direction", "syllable"]
    if not any(s.kind in ("sweep", "arch", "trill") for s in base["syllables"]):
        options.remove("direction")
    chosen = list(rng.choice(options, size=int(rng.integers(1, 3)), replace=False))
    if rng.random() < 0.3:
        chosen.append("repeats")
    for change in chosen:
        if change == "shift":
            factor = float(1 + rng.uniform(0.10, 0.15) * rng.choice([-1, 1]))
            model["center_hz"] = base["center_hz"] * factor
            model["syllables"] = tuple(_shift(s, factor, lo, hi) for s in model["syllables"])
            if model["call"] is not None:
                model["call"] = _shift(model["call"], factor, lo, hi)
        elif change == "tempo":
            factor = float(rng.choice([1 / 1.4, 1.4]))
            for key in ("syllable_gap", "phrase_gap", "pause"):
                model[key] = base[key] * factor
        elif change == "direction":
            model["syllables"] = tuple(
                _replace(s, f_start=s.f_end, f_end=s.f_start, drift=-s.drift)
                if s.kind in ("sweep", "arch", "trill")
                else s
                for s in model["syllables"]
            )
        elif change == "syllable":
            syllables = list(model["syllables"])
            i = int(rng.integers(len(syllables)))
            syllables[i] = _syllable(
                rng, str(rng.choice(_SYLLABLE_KINDS, p=_SYLLABLE_WEIGHTS)), model["center_hz"], lo, hi
            )
            model["syllables"] = tuple(syllables)
        else:  # repeats
            model["repeats"] = tuple((min(a + 1, 5), min(b + 2, 6)) for a, b in base["repeats"])
    model["differences"] = "+".join(sorted(chosen))
    return model


def _design_species(params: SyntheticParams, seed: int) -> list[Species]:
    """The invented species of a corpus (deterministic in params and seed)."""
    rng = _rng(seed, _SPECIES)
    perm = rng.permutation(params.species)
    pairs = [(int(perm[2 * i]), int(perm[2 * i + 1])) for i in range(params.similar_pairs)]
    names = _names(params, seed, pairs)
    models = [_random_species(_rng(seed, _SPECIES, s), params.sample_rate) for s in range(params.species)]
    similar_to: dict[int, int] = {}
    for a, b in pairs:
        models[b] = _similar(models[a], _rng(seed, _SPECIES, b, 1), params.sample_rate)
        models[a]["differences"] = models[b]["differences"]
        similar_to[a], similar_to[b] = b, a
    species = []
    for s, model in enumerate(models):
        genus, epithet, english = names[s]
        model = {"differences": "", **model}
        species.append(
            Species(
                index=s,
                label=f"{genus}_{epithet}",
                scientific_name=f"{genus} {epithet}",
                english_name=english,
                genus=genus,
                similar_to=similar_to.get(s),
                **model,
            )
        )
    return species


# -------------------------------------------------------------------------------- recordists, sites
def _recordists(params: SyntheticParams, seed: int) -> tuple[list[Recordist], list[Site]]:
    names: list[str] = []
    site_names: list[str] = []
    recordists = []
    sites = []
    for r in range(params.recordists):
        rng = _rng(seed, _RECORDIST, r)
        for attempt in range(1000):
            first, last = rng.integers(len(_FIRST_NAMES)), rng.integers(len(_LAST_NAMES))
            name = f"{_FIRST_NAMES[first]} {_LAST_NAMES[last]}"
            if attempt > 50:
                name = f"{name} {attempt}"
            if name not in names:
                break
        names.append(name)
        n_sites = int(rng.integers(1, 5))
        own = []
        for j in range(n_sites):
            site_rng = _rng(seed, _SITE, r, j)
            sites.append(_site(site_rng, params.sample_rate, site_names))
            own.append(len(sites) - 1)
        start = int(rng.integers(2004, 2021))
        nyquist = params.sample_rate / 2
        recordists.append(
            Recordist(
                name=name,
                tilt_db=float(rng.uniform(-3.0, 2.5)),
                highpass_hz=math.exp(rng.uniform(math.log(80), math.log(500))),
                lowpass_hz=float(rng.uniform(0.6, 0.85) * nyquist) if rng.random() < 0.35 else None,
                peak_hz=math.exp(rng.uniform(math.log(1500), math.log(min(6000, 0.6 * nyquist)))),
                peak_db=float(rng.uniform(2, 8)) if rng.random() < 0.6 else 0.0,
                peak_octaves=float(rng.uniform(0.7, 1.5)),
                level_db=float(rng.uniform(-14.0, -4.0)),
                years=(start, start + int(rng.integers(0, 8))),
                sites=tuple(own),
                site_weights=tuple(float(w) for w in rng.dirichlet(np.ones(n_sites))),
            )
        )
    return recordists, sites


def _site(rng: np.random.Generator, sample_rate: int, taken: list[str]) -> Site:
    name = f"{_PLACES[rng.integers(len(_PLACES))]} {_FEATURES[rng.integers(len(_FEATURES))]}"
    base, n = name, 2
    while name in taken:
        name, n = f"{base} {n}", n + 1
    taken.append(name)
    habitat = str(rng.choice(list(_HABITATS)))
    rt60_range, drr_range = _HABITATS[habitat]
    insects = []
    for _ in range(int(rng.choice([0, 1, 1, 2]))):
        centre = math.exp(rng.uniform(math.log(2500), math.log(min(9000, 0.85 * sample_rate / 2))))
        width = float(rng.uniform(80, min(1500, 0.15 * sample_rate / 2)))
        pulse = float(rng.uniform(3, 40)) if rng.random() < 0.6 else 0.0
        chirp = float(rng.uniform(0.5, 3)) if pulse and rng.random() < 0.5 else 0.0
        insects.append((centre, width, float(rng.uniform(-5, 20)), pulse, chirp))
    return Site(
        name=name,
        habitat=habitat,
        rt60=float(rng.uniform(*rt60_range)),
        drr_db=float(rng.uniform(*drr_range)),
        floor_slope_db=float(rng.uniform(-6.0, 0.0)),
        wind_db=float(rng.uniform(-10.0, 25.0)),
        wind_cutoff_hz=float(rng.uniform(150, 800)),
        gustiness=float(rng.uniform(0.2, 1.2)),
        rain_share=float(rng.uniform(0.0, 0.4)),
        rain_rate=float(rng.uniform(30, 300)),
        insects=tuple(insects),
    )


# -------------------------------------------------------------------------------------------- plan
def _durations(rng: np.random.Generator, n: int, params: SyntheticParams) -> np.ndarray:
    """Truncated log-normal lengths (s) by inverse CDF, so no value piles up at the bounds."""
    median = params.median_seconds
    a = ndtr(math.log(params.min_seconds / median) / DURATION_SIGMA)
    b = ndtr(math.log(params.max_seconds / median) / DURATION_SIGMA)
    u = rng.uniform(a, b, n) if b > a else np.full(n, a)
    return median * np.exp(DURATION_SIGMA * ndtri(np.clip(u, 1e-12, 1 - 1e-12)))


def _plan(params: SyntheticParams, seed: int, design: Design) -> tuple[list[Task], pd.DataFrame]:
    rng = _rng(seed, _PLAN)
    sr = params.sample_rate
    counts = species_counts(params)
    weights = 1.0 / (1.0 + np.arange(params.recordists)) ** 1.1
    weights = weights[rng.permutation(params.recordists)]  # activity is unrelated to the recordist index
    weights /= weights.sum()
    commonness = np.array(counts, dtype=float)
    populations: dict[tuple[int, int], int] = {}  # birds of each species at each site
    rows: list[dict[str, Any]] = []
    specs: list[dict[str, Any]] = []
    for s, count in enumerate(counts):
        species = design.species[s]
        number = 0
        while number < count:
            size = 1
            while size < min(4, count - number) and rng.random() < SESSION_CONTINUE:
                size += 1
            r = int(rng.choice(params.recordists, p=weights))
            recordist = design.recordists[r]
            site = int(recordist.sites[rng.choice(len(recordist.sites), p=recordist.site_weights)])
            year = int(rng.integers(recordist.years[0], recordist.years[1] + 1))
            day = int(np.clip(rng.normal(160, 45), 1, 365))  # mostly the breeding season
            date = (pd.Timestamp(year=year, month=1, day=1) + pd.Timedelta(days=day - 1)).strftime("%Y-%m-%d")
            population = populations.setdefault((s, site), int(rng.integers(*POPULATION)))
            individual = int(rng.integers(population))
            for _ in range(size):
                if rng.random() < 0.3:  # now and then another bird of the local population
                    individual = int(rng.integers(population))
                calls = species.call is not None and rng.random() < species.call_share
                background: list[tuple[int, float]] = []
                if params.species > 1 and rng.random() < BACKGROUND_SHARE:
                    others = np.delete(np.arange(params.species), s)
                    p = commonness[others] / commonness[others].sum()
                    n_bg = min(len(others), 1 + int(rng.random() < 0.3))
                    for other in rng.choice(others, size=n_bg, replace=False, p=p):
                        background.append((int(other), round(float(rng.uniform(*BACKGROUND_DB)), 1)))
                specs.append(
                    {
                        "species": s,
                        "number": number,
                        "recordist": r,
                        "site": site,
                        "individual": individual,
                        "date": date,
                        "calls": calls,
                        "background": tuple(sorted(background)),
                        "snr_db": round(float(rng.uniform(*params.snr_db)), 1),
                        "distance_m": round(math.exp(rng.uniform(*map(math.log, DISTANCE_M))), 1),
                        "peak_dbfs": round(float(np.clip(recordist.level_db + rng.normal(0, 2.5), *PEAK_DBFS)), 1),
                    }
                )
                number += 1
    durations = _durations(rng, len(specs), params)
    lo_n, hi_n = math.ceil(params.min_seconds * sr), math.floor(params.max_seconds * sr)
    ids = rng.permutation(len(specs)) + 1
    individual_ids: dict[tuple[int, int, int], str] = {}
    tasks = []
    for spec, duration, number in zip(specs, durations, ids, strict=True):
        species = design.species[spec["species"]]
        samples = int(np.clip(round(duration * sr), lo_n, hi_n))
        rec_id = f"SYN{number:06d}"
        path = f"audio/{species.label}/{rec_id}.mp3"
        key = (spec["species"], spec["site"], spec["individual"])
        individual_ids.setdefault(key, "")
        tasks.append(
            Task(
                path=path,
                species=spec["species"],
                number=spec["number"],
                samples=samples,
                snr_db=spec["snr_db"],
                distance_m=spec["distance_m"],
                peak_dbfs=spec["peak_dbfs"],
                recordist=spec["recordist"],
                site=spec["site"],
                individual=spec["individual"],
                calls=spec["calls"],
                background=spec["background"],
            )
        )
        rows.append(
            {
                "id": rec_id,
                "path": path,
                "label": species.label,
                "scientific_name": species.scientific_name,
                "english_name": species.english_name,
                "recordist": design.recordists[spec["recordist"]].name,
                "site": design.sites[spec["site"]].name,
                "habitat": design.sites[spec["site"]].habitat,
                "date": spec["date"],
                "individual": key,
                "sound_type": "call" if spec["calls"] else "song",
                "snr_db": spec["snr_db"],
                "distance_m": spec["distance_m"],
                "duration_s": round(samples / sr, 3),
                "background_species": ";".join(design.species[o].label for o, _ in spec["background"]),
                "quality": _quality(spec["snr_db"], bool(spec["background"])),
            }
        )
    shuffled = list(individual_ids)
    numbers = rng.permutation(len(shuffled)) + 1
    names = {key: f"IND{n:05d}" for key, n in zip(shuffled, numbers, strict=True)}
    table = pd.DataFrame(rows)
    table["individual"] = [names[key] for key in table["individual"]]
    return tasks, table


def _quality(snr_db: float, background: bool) -> str:
    """A Xeno-canto-like quality grade from the SNR (one grade lower with background species)."""
    grade = sum(snr_db < limit for limit in (16.0, 10.0, 4.0, -1.0)) + int(background)
    return "ABCDE"[min(grade, 4)]


# --------------------------------------------------------------------------------------- rendering
def _individual(design: Design, species: Species, *key: int) -> dict[str, Any]:
    """A bird: its pitch, tempo, per-syllable tweaks, own Markov transitions and habits."""
    rng = _rng(design.seed, _INDIVIDUAL, species.index, *key)
    n = len(species.syllables)
    sd = INDIVIDUAL_SD
    # its own repertoire: now and then one syllable type of the species is never sung
    sung = np.ones(n)
    if n >= 4 and rng.random() < REPERTOIRE_DROP:
        sung[rng.integers(n)] = 0.0
    song_types = []
    for song in species.song_types:
        transitions = np.array(song.transitions)
        redrawn = np.array([rng.dirichlet(25 * row + 0.02) if row.sum() else row for row in transitions])
        redrawn *= transitions > 0
        start = np.array(song.start)
        if (start * sung).sum() > 0:  # (a phrase with no way on ends the song)
            redrawn, start = redrawn * sung, start * sung
        song_types.append((start / start.sum(), redrawn, song.phrases * rng.uniform(0.8, 1.25)))
    return {
        "pitch": math.exp(rng.normal(0, sd["pitch"])),
        "tempo": math.exp(rng.normal(0, sd["tempo"])),
        "syllable_pitch": _exp(rng.normal(0, sd["syllable_pitch"], n)),
        "syllable_duration": _exp(rng.normal(0, sd["syllable_duration"], n)),
        "song_types": song_types,
        "song_type_p": rng.dirichlet(np.full(len(species.song_types), 2.0)),
        "repeat_bias": int(rng.integers(-1, 2)),
        "levels_db": np.array(species.levels_db) + rng.normal(0, 1.5, n),
    }


_LN2 = math.log(2.0)
# ---- CPU-independent math for frequency contours. numpy picks its exp/log/sin/power kernels at run time
# (AVX-512, AVX2 or baseline) and they differ in the last bits; a contour is summed into a phase, so such a
# difference grows with the syllable's length to ~1e-11 of full scale, enough to move a 16-bit sample now and
# then. These use only + - * / rint frexp ldexp, which IEEE 754 rounds exactly, so every CPU gets the same bits.
# (Envelopes, carriers and noise keep numpy's kernels: their last-bit differences stay at ~1e-16.)
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2 = HI + LO, HI has 32 bits
_EXP_COEFFS = tuple(1.0 / math.factorial(k) for k in range(13, -1, -1))  # Taylor, |r| <= ln2/2: < 1 ulp
_LOG_COEFFS = tuple(1.0 / (2 * k + 1) for k in range(10, -1, -1))  # atanh series, |s| <= 0.172
_SIN_COEFFS = tuple((-1) ** k / math.factorial(2 * k + 1) for k in range(9, -1, -1))  # Taylor, |x| <= pi/2


def _horner(x: np.ndarray, coeffs: tuple[float, ...]) -> np.ndarray:
    p = np.full_like(x, coeffs[0])
    for c in coeffs[1:]:
        p *= x
        p += c
    return p


def _exp(x: np.ndarray) -> np.ndarray:
    """exp(x), x = k ln2 + r."""
    k = np.rint(x * (1.0 / _LN2))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return np.ldexp(_horner(r, _EXP_COEFFS), k.astype(np.int64))


def _pow(x: np.ndarray, y: float) -> np.ndarray:
    """x**y for x >= 0: exp(y log x), log x = e ln2 + 2 atanh((m - 1) / (m + 1)) with m in [sqrt(1/2), sqrt(2))."""
    m, e = np.frexp(np.maximum(x, 1e-300))
    low = m < math.sqrt(0.5)
    m[low] *= 2.0
    e -= low
    s = (m - 1.0) / (m + 1.0)
    log = e * _LN2_HI + (e * _LN2_LO + 2.0 * s * _horner(s * s, _LOG_COEFFS))
    return np.where(x > 0, _exp(y * log), 0.0)


def _sin_turns(t: np.ndarray) -> np.ndarray:
    """sin(2 pi t), reduced exactly to a quarter turn."""
    f = t - np.rint(t)  # [-1/2, 1/2]
    f = np.where(f > 0.25, 0.5 - f, np.where(f < -0.25, -0.5 - f, f))  # [-1/4, 1/4], same sine
    x = f * (2 * math.pi)
    return x * _horner(x * x, _SIN_COEFFS)


def _edges(env: np.ndarray, attack: float, release: float) -> np.ndarray:
    """Multiply ``env`` in place by sin^2 ramps over the first ``attack`` and last ``release`` fractions."""
    n = env.size
    na, nr = max(1, int(attack * n)), max(1, int(release * n))
    env[:na] *= np.sin((0.5 * np.pi / na) * np.arange(na, dtype=np.float64)) ** 2
    env[n - nr :] *= np.sin((0.5 * np.pi / nr) * np.arange(nr, 0, -1, dtype=np.float64)) ** 2
    return env


def _render_syllable(
    syllable: Syllable, sample_rate: int, pitch: float = 1.0, stretch: float = 1.0, far: bool = False
) -> np.ndarray:
    """One rendition of a syllable (float64, peak about 1).

    float64 throughout: numpy's exp/sin/cos/power kernels differ in the last bits between CPUs (AVX-512,
    AVX2 and baseline builds), which float32 would carry up to the 16-bit output grid (see :func:`render`).
    """
    n = max(8, round(syllable.duration * stretch * sample_rate))
    index = np.arange(n, dtype=np.float64)
    f0, f1 = syllable.f_start * pitch, syllable.f_end * pitch
    log_ratio = math.log(f1 / f0)
    kind = syllable.kind
    if kind in ("trill", "click"):
        last = max(1, syllable.elements - 1)
        position = index * (syllable.elements / n)
        element = np.floor(position)
        v = (position - element) * (1.0 / syllable.element_fill)
        inside = v < 1.0
        np.minimum(v, 1.0, out=v)
        warped = v if syllable.contour == 1.0 else _pow(v, syllable.contour)
        freq = f0 * _exp(log_ratio * warped + element * (_LN2 * syllable.drift / last))
        if kind == "trill":
            env = np.sin(np.pi * v) ** 2
        else:  # click: a fast chirp under a short Gaussian
            env = np.exp((-0.5 / 0.18**2) * (v - 0.5) ** 2)
        env *= inside
        env *= (1.0 - 0.5 * syllable.tilt) + element * (syllable.tilt / last)
        _edges(env, min(syllable.attack, 0.3), min(syllable.release, 0.3))
    else:
        u = index * (1.0 / n)
        if kind == "sweep":
            w = u if syllable.contour == 1.0 else _pow(u, syllable.contour)
            freq = f0 * _exp(log_ratio * w) if syllable.exponential else f0 + (f1 - f0) * w
        elif kind == "arch":
            freq = f0 * _exp(log_ratio * u + (_LN2 * syllable.contour) * _sin_turns(0.5 * u))
        else:  # whistle, stack, buzz
            freq = f0 * _exp(log_ratio * u)
        if syllable.vibrato_depth:
            freq *= 1.0 + syllable.vibrato_depth * _sin_turns(index * (syllable.vibrato_hz / sample_rate))
        env = (1.0 - 0.5 * syllable.tilt) + syllable.tilt * u
        _edges(env, syllable.attack, syllable.release)
        if kind == "buzz":
            env *= (0.5 + 0.5 * np.cos(index * (2 * np.pi * syllable.am_hz / sample_rate))) ** 2
    np.clip(freq, 450.0, 0.47 * sample_rate, out=freq)
    cycles = np.cumsum(freq)
    cycles *= 1.0 / sample_rate
    cycles -= np.floor(cycles)
    phase = cycles * (2 * np.pi)
    harmonics = syllable.harmonics[:2] if far else syllable.harmonics
    out = np.sin(phase)
    top = float(freq.max())
    for h, amplitude in enumerate(harmonics[1:], start=2):
        if amplitude > 0.01 and h * float(freq.min()) < 0.48 * sample_rate:
            partial = np.sin(phase * h)
            if h * top >= 0.48 * sample_rate:  # fade out a harmonic above Nyquist
                partial *= freq < 0.48 * sample_rate / h
            out += amplitude * partial
    out *= env
    out *= 1.0 / math.sqrt(sum(a * a for a in harmonics))
    return out


def _perform(
    design: Design,
    species: Species,
    bird: dict[str, Any],
    calls: bool,
    samples: int,
    rng: np.random.Generator,
    buffer: np.ndarray,
    gain: float = 1.0,
    window: tuple[float, float] | None = None,
    far: bool = False,
    lead: tuple[float, float] = (-1.0, 0.5),
) -> tuple[float, int]:
    """Add a bird's songs (or calls) to ``buffer``; return the energy added and the samples sung.

    The first song starts ``lead`` seconds (a range) after the start of ``window``: the recordist starts
    recording while the bird sings, or just before.
    """
    sr = design.sample_rate
    duration = samples / sr
    start, stop = window or (0.0, duration)
    tempo = bird["tempo"]
    t = start + rng.uniform(*lead) * tempo
    energy, sung = 0.0, 0

    def emit(onset: float, syllable: Syllable, pitch: float, stretch: float, level_db: float) -> float:
        nonlocal energy, sung
        wave = _render_syllable(
            syllable,
            sr,
            pitch * math.exp(rng.normal(0, 0.01)),
            stretch * math.exp(rng.normal(0, 0.04)),
            far,
        )
        wave *= gain * 10 ** ((level_db + rng.normal(0, 1.0)) / 20)
        i = round(onset * sr)
        a, b = max(i, 0), min(i + wave.size, samples)
        if b > a:
            piece = wave[a - i : b - i]
            buffer[a:b] += piece
            energy += _power(piece)
            sung += b - a
        return wave.size / sr

    while t < stop:
        song_level = rng.normal(0, 2.0)  # the bird turns, moves
        if calls or (species.call is not None and rng.random() < 0.15):
            assert species.call is not None
            for _ in range(1 + int(rng.poisson(2.0))):
                length = emit(t, species.call, bird["pitch"], 1.0, song_level)
                t += length + species.call_gap * tempo * math.exp(rng.normal(0, 0.3))
            between = species.call_gap * 3.0 if calls else species.pause
            t += between * tempo * math.exp(rng.normal(0, 0.35))
            continue
        st = int(rng.choice(len(bird["song_types"]), p=bird["song_type_p"]))
        start_p, transitions, phrases = bird["song_types"][st]
        j = int(rng.choice(len(start_p), p=start_p))
        for _ in range(1 + int(rng.poisson(max(phrases - 1, 0.0)))):
            low, high = species.repeats[j]
            reps = max(1, int(rng.integers(low, high + 1)) + bird["repeat_bias"])
            pitch = bird["pitch"] * bird["syllable_pitch"][j]
            stretch = bird["syllable_duration"][j]
            for _ in range(reps):
                length = emit(t, species.syllables[j], pitch, stretch, song_level + bird["levels_db"][j])
                t += length + species.syllable_gap * tempo * math.exp(rng.normal(0, 0.15))
            t += species.phrase_gap * tempo * math.exp(rng.normal(0, 0.2))
            row = transitions[j]
            if row.sum() <= 0:
                break
            j = int(rng.choice(len(row), p=row / row.sum()))
        t += species.pause * tempo * math.exp(rng.normal(0, 0.35))
    return energy, sung


def _smooth_random(rng: np.random.Generator, n: int, rate_per_sample: float) -> np.ndarray:
    """Unit-variance smooth random curve of length n (linear interpolation of random knots)."""
    knots = max(2, math.ceil(n * rate_per_sample) + 2)
    return np.interp(np.arange(n) * rate_per_sample, np.arange(knots), rng.standard_normal(knots))


def _power(x: np.ndarray) -> float:
    """Sum of squared magnitudes (numpy's fixed-order pairwise sum, no BLAS: the same on every CPU)."""
    if np.iscomplexobj(x):
        x = x.view(np.float64)
    return float(np.square(x).sum())


def _upsample(values: np.ndarray, step: int, bins: int) -> np.ndarray:
    """Linear interpolation of a curve given at every ``step``-th bin to ``bins`` bins."""
    v = values.astype(np.float64)
    ramp = np.arange(step, dtype=np.float64) / step
    return (v[:-1, None] + (v[1:] - v[:-1])[:, None] * ramp).ravel()[:bins]


def _noise(design: Design, site: Site, rng: np.random.Generator, length: int, colour: np.ndarray) -> np.ndarray:
    """The spectrum (rfft of ``length`` samples) of the background noise before the recorder's colouring."""
    sr = design.sample_rate
    # floor plus rain crackle: white in time, then coloured
    floor = rng.standard_normal(length, dtype=np.float32).astype(np.float64)  # float32 draws: the same stream
    if rng.random() < site.rain_share:
        drops = int(rng.poisson(site.rain_rate * rng.uniform(0.3, 1.0) * length / sr))
        if drops:
            size = 64
            kernels = rng.standard_normal((8, size)) * np.exp(-np.arange(size) / rng.uniform(2, 10, (8, 1)))
            kernels /= np.sqrt((kernels**2).sum(axis=1, keepdims=True))
            which = rng.integers(0, 8, drops)
            where = rng.integers(0, length - size, drops)
            amplitude = np.exp(rng.normal(0, 0.8, drops))
            index = (where[:, None] + np.arange(size)).ravel()
            rain = np.bincount(index, (amplitude[:, None] * kernels[which]).ravel(), minlength=length)
            rain *= math.sqrt(length * 10 ** (rng.uniform(-5.0, 15.0) / 10) / max(_power(rain), 1e-12))
            floor += rain
    spectrum = sfft.rfft(floor)
    spectrum *= colour
    power = _power(spectrum)

    # wind: noise below the cut-off with slow gusts, generated at 1/16 of the rate
    down = 16
    short = length // down
    f_low = np.arange(short // 2 + 1) * (sr / length)
    cutoff = site.wind_cutoff_hz * rng.uniform(0.7, 1.4)
    shape = 1.0 / (1.0 + (f_low / cutoff) ** 2) / np.sqrt(1.0 + (30.0 / np.maximum(f_low, 1.0)) ** 2)
    wind = sfft.irfft((rng.standard_normal(f_low.size) + 1j * rng.standard_normal(f_low.size)) * shape, short)
    wind *= np.exp(site.gustiness * _smooth_random(rng, short, rng.uniform(0.3, 1.5) * down / sr))
    _add_component(spectrum, 0, sfft.rfft(wind)[: f_low.size - 1], power, site.wind_db + rng.normal(0, 5.0))

    # insects: narrow bands, stationary or pulsed/chirping, generated as complex baseband at 1/8 rate
    down = 8
    short = length // down
    base_freqs = sfft.fftfreq(short, down / sr)
    for centre, width, level_db, pulse_hz, chirp_hz in site.insects:
        if rng.random() < 0.25:  # not singing today
            continue
        band = np.exp(-0.5 * (base_freqs / (0.5 * width)) ** 2)
        z = sfft.ifft((rng.standard_normal(short) + 1j * rng.standard_normal(short)) * band)
        if pulse_hz:
            t = np.arange(short) * (down / sr)
            gate = (0.5 + 0.5 * np.cos(2 * np.pi * pulse_hz * t + rng.uniform(0, 2 * np.pi))) ** 4
            if chirp_hz:
                gate *= np.cos(2 * np.pi * chirp_hz * t + rng.uniform(0, 2 * np.pi)) > 0.3
            z *= gate
        centre_bin = round(centre * rng.uniform(0.97, 1.03) * length / sr)
        shifted = sfft.fftshift(sfft.fft(z))
        _add_component(spectrum, centre_bin - short // 2, shifted, power, level_db + rng.normal(0, 4.0))
    return spectrum


def _add_component(
    spectrum: np.ndarray, offset: int, component: np.ndarray, floor_power: float, level_db: float
) -> None:
    """Add ``component`` at bins ``offset...`` of ``spectrum`` at ``level_db`` relative to the floor."""
    a, b = max(offset, 1), min(offset + component.size, spectrum.size - 1)
    if b <= a:
        return
    piece = component[a - offset : b - offset]
    power = _power(piece)
    if power > 0:
        spectrum[a:b] += piece * math.sqrt(floor_power * 10 ** (level_db / 10) / power)


def _equipment_db(recordist: Recordist, freqs: np.ndarray) -> np.ndarray:
    f = np.maximum(freqs, 1.0)
    gain_db = recordist.tilt_db * np.log2(f / 1000.0)
    gain_db += recordist.peak_db * np.exp(-0.5 * (np.log2(f / recordist.peak_hz) / recordist.peak_octaves) ** 2)
    gain_db -= 10 * np.log10(1.0 + (recordist.highpass_hz / f) ** 4)
    if recordist.lowpass_hz:
        gain_db -= 10 * np.log10(1.0 + (f / recordist.lowpass_hz) ** 8)
    return gain_db


def render(design: Design, task: Task) -> np.ndarray:
    """The samples of one recording (float32 on the 16-bit grid, peak at ``task.peak_dbfs``).

    Computed in float64 and rounded to multiples of 2**-15 (16-bit PCM) for the MP3 encoder: what numpy's
    CPU-specific kernels leave (at most 4e-16 of full scale) crosses a rounding boundary of the 3e-5 grid with
    odds of ~1e-12 per sample, so the encoder gets the same input on every CPU (module docstring).
    """
    sr = design.sample_rate
    rng = _rng(design.seed, _RECORDING, task.species, task.number)
    species = design.species[task.species]
    site = design.sites[task.site]
    recordist = design.recordists[task.recordist]
    n = task.samples
    rt60 = site.rt60 * float(rng.uniform(0.8, 1.25))
    tail = min(round(rt60 * sr), sr)
    length = 64 * sfft.next_fast_len(math.ceil((n + tail) / 64), real=True)
    bins = length // 2 + 1
    step = -(-bins // 1024)  # smooth filters are computed every `step` bins and interpolated
    coarse = np.arange(-(-bins // step) + 1) * step * (sr / length)

    # the focal bird and the background birds, dry
    dry = np.zeros(length)
    bird = _individual(design, species, 0, task.site, task.individual)  # one of the local population
    focal_energy, sung = _perform(design, species, bird, task.calls, n, rng, dry)
    if sung < 0.25 * sr:  # a short recording that (nearly) missed the song: start it with the song
        energy, more = _perform(design, species, bird, task.calls, n, rng, dry, lead=(0.0, 0.0))
        focal_energy, sung = focal_energy + energy, sung + more
    background_energy = 0.0
    for other, level_db in task.background:
        other_species = design.species[other]
        other_bird = _individual(design, other_species, 1, task.species, task.number, other)  # a passer-by
        begin = rng.uniform(0, max(0.0, n / sr - 2.0))
        window = (begin, begin + rng.uniform(2.0, 10.0))
        calls = other_species.call is not None and rng.random() < 0.4
        energy, _ = _perform(
            design, other_species, other_bird, calls, n, rng, dry, 10 ** (level_db / 20), window, far=True
        )
        background_energy += energy

    # room: direct sound + reverberation (exponentially decaying noise), air absorption over the distance
    distance = task.distance_m
    absorption_db = distance * 0.0035 * (coarse / 1000.0) ** 1.5
    if site.habitat == "forest":  # foliage scatters high frequencies
        absorption_db += distance * 0.02 * np.log2(np.maximum(coarse, 500.0) / 500.0)
    impulse = rng.standard_normal(tail, dtype=np.float32).astype(np.float64)
    impulse *= np.exp(np.arange(tail) * (-6.91 / (rt60 * sr)))
    impulse[: round(0.002 * sr)] = 0.0
    drr_db = site.drr_db - 12.0 * math.log10(distance / 10.0) + rng.normal(0, 1.5)
    impulse *= 10 ** (-drr_db / 20) / math.sqrt(_power(impulse))
    impulse[0] = 1.0
    song = sfft.rfft(dry)
    song *= sfft.rfft(impulse, length)
    song *= _upsample(10 ** (-absorption_db / 20), step, bins)

    slope = site.floor_slope_db + rng.normal(0, 1.0)
    colour = _upsample((np.maximum(coarse, 50.0) / 1000.0) ** (slope / 6.0206), step, bins)
    noise = _noise(design, site, rng, length, colour)

    # SNR: song power while singing vs noise power, both above SNR_BAND_HZ
    k = math.ceil(SNR_BAND_HZ * length / sr)
    song_power = _power(song[k:]) * focal_energy / max(focal_energy + background_energy, 1e-12)
    noise_power = _power(noise[k:])
    if sung > 0 and song_power > 0:
        scale = math.sqrt(10 ** (task.snr_db / 10) * (noise_power / length) / (song_power / sung))
        song *= float(f"{scale:.6g}")
        noise += song
    placement_db = rng.normal(0, 1.5) * np.log2(np.maximum(coarse, 50.0) / 1000.0)  # microphone handling
    noise *= _upsample(10 ** ((_equipment_db(recordist, coarse) + placement_db) / 20), step, bins)
    out = sfft.irfft(noise, length)[:n]
    peak = float(np.max(np.abs(out)))
    out *= float(f"{10 ** (task.peak_dbfs / 20) / max(peak, 1e-12):.6g}")
    return (np.rint(out * PCM_SCALE) / PCM_SCALE).astype(np.float32)  # exact: |out| < 1, 15 bits


# ------------------------------------------------------------------------------------------ driver
_WORKER_DESIGN: Design | None = None


def _init_worker(design: Design) -> None:
    global _WORKER_DESIGN
    _WORKER_DESIGN = design


def _write(job: tuple[Design | None, Task, str]) -> float:
    design, task, root = job
    design = design or _WORKER_DESIGN
    assert design is not None
    audio = render(design, task)
    path = Path(root) / task.path
    sf.write(str(path), audio, design.sample_rate, **MP3)
    return float(np.max(np.abs(audio)))


def build_design(params: SyntheticParams, seed: int) -> Design:
    """Species, recordists and sites of a corpus (no audio)."""
    recordists, sites = _recordists(params, seed)
    return Design(seed, params.sample_rate, tuple(_design_species(params, seed)), tuple(recordists), tuple(sites))


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
    for label in table["label"].unique():
        (out_dir / "audio" / label).mkdir(parents=True, exist_ok=True)
    workers = min(cpu_workers(workers), max(1, len(tasks)))
    # longest first, for an even load; every task writes its own file, so the order changes nothing
    ordered = sorted(tasks, key=lambda task: -task.samples)
    root = str(out_dir)
    bar = tqdm(total=len(tasks), desc="synthetic: generating recordings", unit="rec", disable=not progress or None)
    with bar:
        if workers == 1:
            for task in ordered:
                _write((design, task, root))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(design,)) as pool:
                for _ in pool.map(_write, [(None, task, root) for task in ordered], chunksize=2):
                    bar.update()
    table = table.sort_values("path", kind="stable").reset_index(drop=True)
    table.to_csv(out_dir / "metadata.csv", index=False)
    _species_table(design, species_counts(params)).to_csv(out_dir / "species.csv", index=False)
    return table
