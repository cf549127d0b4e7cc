"""Species design for the synthetic corpus: invented names, syllable inventories, song grammars and similar pairs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from birdpipe.common.params import SyntheticParams
from birdpipe.data.synthetic.model import (
    _CALL_KINDS,
    _EPITHETS,
    _GENUS_ENDINGS,
    _GENUS_STEMS,
    _NAMES,
    _SPECIES,
    _SYLLABLE_KINDS,
    _SYLLABLE_WEIGHTS,
    SongType,
    Species,
    Syllable,
    _band,
    _rng,
)


def species_counts(params: SyntheticParams) -> list[int]:
    """Recordings per species, from max_recordings down to max(1, round(max / imbalance)).

    Geometric by default: count(r) = max * (min / max) ** r for ranks r evenly spaced in [0, 1]. With
    ``recordings`` set, the ranks are bent to r ** k, k found by bisection so the total comes closest to it
    (k < 1 thins the middle, k > 1 fills it): the study's 89 species, 1216:1 and 11,075 recordings need k = 0.8.
    """
    top = params.max_recordings
    bottom = max(1, round(top / params.imbalance))
    if params.species == 1:
        return [top]
    steps = np.arange(params.species) / (params.species - 1)

    def counts_for(bend: float) -> np.ndarray:
        return np.maximum(1, np.round(top * (bottom / top) ** (steps**bend))).astype(int)

    if params.recordings is None:
        return [int(c) for c in counts_for(1.0)]
    low, high = 1e-3, 1e3  # the total grows with the bend
    for _ in range(100):
        middle = math.sqrt(low * high)
        low, high = (low, middle) if counts_for(middle).sum() > params.recordings else (middle, high)
    counts = min((counts_for(low), counts_for(high)), key=lambda c: abs(int(c.sum()) - params.recordings))
    return [int(c) for c in counts]


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
