"""The synthetic corpus's settings and data model: syllables, song types, species, recordists, sites, recording
tasks and the whole design; keyed random streams. See :mod:`birdpipe.data.synthetic.corpus` for the generator."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
NEGATIVES_FOLDER = "_negatives"  # audio/<this>/ holds the no-bird clips (no species label starts with _)
NEGATIVE_DISTRACTORS = (0.3, 0.35, 0.2, 0.15)  # odds of 0, 1, 2, 3 distractors in a no-bird clip
DISTRACTOR_DB = (0.0, 30.0)  # a distractor's mean power over its length re the background's (full band)

# independent random streams: default_rng([seed, STREAM, ...keys])
_NAMES, _SPECIES, _PLAN, _RECORDIST, _SITE, _INDIVIDUAL, _RECORDING = range(1, 8)
# no-bird clips and soundscapes; their keys start with a non-zero purpose and have a fixed length per purpose,
# since numpy's SeedSequence takes [..., k] and [..., k, 0] for the same seed
_NEGATIVE, _SOUNDSCAPE = range(8, 10)
_LENGTHS, _SETTING, _SCENE, _BED, _BOUT, _DISTRACTOR = range(1, 7)  # their purposes
_SOUNDSCAPE_BIRD = 2  # first individual key of a soundscape bird (0: a recording's focal bird, 1: a passer-by)

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
class Negative:
    """Everything needed to render one no-bird clip besides its number and length."""

    recordist: int
    site: int
    date: str
    peak_dbfs: float
    distractors: tuple[tuple[str, float, float, float], ...]  # kind, onset (share of the free room), dB re bed, m


@dataclass(frozen=True)
class Design:
    seed: int
    sample_rate: int
    species: tuple[Species, ...]
    recordists: tuple[Recordist, ...]
    sites: tuple[Site, ...]
    recordings: tuple[int, ...] = ()  # recordings per species in the corpus (soundscapes draw species by them)


def _rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream, *(int(k) for k in keys)])


def _band(sample_rate: int) -> tuple[float, float]:
    """Frequency range of bird song at this sample rate."""
    return 1000.0, min(9000.0, 0.42 * sample_rate)
