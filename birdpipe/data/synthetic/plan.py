"""Who records what, where and when: recordists, sites and the per-recording plan (sessions, individuals, SNR,
background species) of the synthetic corpus."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.special import ndtr, ndtri

from birdpipe.common.params import SyntheticParams
from birdpipe.data.synthetic.distractors import DISTRACTOR_KINDS
from birdpipe.data.synthetic.model import (
    _FEATURES,
    _FIRST_NAMES,
    _HABITATS,
    _LAST_NAMES,
    _LENGTHS,
    _NEGATIVE,
    _PLACES,
    _PLAN,
    _RECORDIST,
    _SETTING,
    _SITE,
    BACKGROUND_DB,
    BACKGROUND_SHARE,
    DISTANCE_M,
    DISTRACTOR_DB,
    DURATION_SIGMA,
    NEGATIVE_DISTRACTORS,
    NEGATIVES_FOLDER,
    PEAK_DBFS,
    POPULATION,
    SESSION_CONTINUE,
    Design,
    Negative,
    Recordist,
    Site,
    Task,
    _rng,
)
from birdpipe.data.synthetic.species import species_counts


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


def _activity(rng: np.random.Generator, recordists: int) -> np.ndarray:
    """Zipf-like share of the recordings per recordist, unrelated to the recordist index (the plan's first draw)."""
    weights = 1.0 / (1.0 + np.arange(recordists)) ** 1.1
    weights = weights[rng.permutation(recordists)]
    weights /= weights.sum()
    return weights


def _date(rng: np.random.Generator, recordist: Recordist) -> str:
    year = int(rng.integers(recordist.years[0], recordist.years[1] + 1))
    day = int(np.clip(rng.normal(160, 45), 1, 365))  # mostly the breeding season
    return (pd.Timestamp(year=year, month=1, day=1) + pd.Timedelta(days=day - 1)).strftime("%Y-%m-%d")


def _plan(params: SyntheticParams, seed: int, design: Design) -> tuple[list[Task], pd.DataFrame]:
    rng = _rng(seed, _PLAN)
    sr = params.sample_rate
    counts = species_counts(params)
    weights = _activity(rng, params.recordists)
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
            date = _date(rng, recordist)
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


# ------------------------------------------------------------------------------------- no-bird clips
def _negative(design: Design, number: int) -> Negative:
    """Who recorded no-bird clip ``number``, where, when, at what level, and which distractors it holds.

    Recordists are drawn by their activity in the corpus, so a clip's colouring says nothing of its having no bird;
    some clips hold weather and insects only."""
    rng = _rng(design.seed, _NEGATIVE, _SETTING, number)
    r = int(rng.choice(len(design.recordists), p=_activity(_rng(design.seed, _PLAN), len(design.recordists))))
    recordist = design.recordists[r]
    site = int(recordist.sites[rng.choice(len(recordist.sites), p=recordist.site_weights)])
    date = _date(rng, recordist)
    peak = round(float(np.clip(recordist.level_db + rng.normal(0, 2.5), *PEAK_DBFS)), 1)
    kinds = rng.choice(
        DISTRACTOR_KINDS, size=int(rng.choice(len(NEGATIVE_DISTRACTORS), p=NEGATIVE_DISTRACTORS)), replace=False
    )
    distractors = tuple(
        (
            str(kind),
            round(float(rng.random()), 4),
            round(float(rng.uniform(*DISTRACTOR_DB)), 1),
            round(math.exp(rng.uniform(*map(math.log, DISTANCE_M))), 1),
        )
        for kind in kinds
    )
    return Negative(recordist=r, site=site, date=date, peak_dbfs=peak, distractors=distractors)


class Clip(NamedTuple):
    """A no-bird clip to write: its number (which keys its rendering) and length."""

    path: str
    number: int
    samples: int


def _negatives(params: SyntheticParams, seed: int, design: Design) -> tuple[list[Clip], pd.DataFrame]:
    """The ``params.negatives`` no-bird clips, lengths drawn like the recordings', and their metadata rows (no
    label or species; recordist, site and date like a recording; ``negative`` true; the distractor kinds heard)."""
    sr = params.sample_rate
    lo_n, hi_n = math.ceil(params.min_seconds * sr), math.floor(params.max_seconds * sr)
    durations = _durations(_rng(seed, _NEGATIVE, _LENGTHS), params.negatives, params)
    clips, rows = [], []
    for number, duration in enumerate(durations, start=1):
        samples = int(np.clip(round(duration * sr), lo_n, hi_n))
        negative = _negative(design, number)
        rec_id = f"NEG{number:06d}"
        clips.append(Clip(f"audio/{NEGATIVES_FOLDER}/{rec_id}.mp3", number, samples))
        rows.append(
            {
                "id": rec_id,
                "path": clips[-1].path,
                "label": "",
                "scientific_name": "",
                "english_name": "",
                "recordist": design.recordists[negative.recordist].name,
                "site": design.sites[negative.site].name,
                "habitat": design.sites[negative.site].habitat,
                "date": negative.date,
                "individual": "",
                "sound_type": "",
                "snr_db": np.nan,
                "distance_m": np.nan,
                "duration_s": round(samples / sr, 3),
                "background_species": "",
                "quality": "",
                "negative": True,
                "kinds": ";".join(sorted(kind for kind, *_ in negative.distractors)),
            }
        )
    return clips, pd.DataFrame(rows)
