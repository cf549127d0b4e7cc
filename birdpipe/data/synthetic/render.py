"""Rendering one synthetic recording: individuals, syllables and songs with CPU-independent contours, noise,
reverberation, equipment colouring and the final mix (see Determinism in :mod:`birdpipe.data.synthetic.corpus`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft as sfft

from birdpipe.data.synthetic.model import (
    _INDIVIDUAL,
    _RECORDING,
    INDIVIDUAL_SD,
    PCM_SCALE,
    REPERTOIRE_DROP,
    SNR_BAND_HZ,
    Design,
    Site,
    Species,
    Syllable,
    Task,
    _rng,
)
from birdpipe.data.synthetic.noise import _equipment_db, _noise, _power, _upsample


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
    spans: list[tuple[float, float]] | None = None,
) -> tuple[float, int]:
    """Add a bird's songs (or calls) to ``buffer``; return the energy added and the samples sung.

    The first song starts ``lead`` seconds (a range) after the start of ``window``: the recordist starts
    recording while the bird sings, or just before. ``spans`` (if given) collects the (onset, end) in seconds
    of every syllable added, from its first to its last sounding sample inside the buffer (soundscape events);
    it draws nothing.
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
            sounding = np.flatnonzero(piece) if spans is not None else ()
            if len(sounding):  # (a trill's last element leaves a silent gap before the syllable's end)
                spans.append(((a + sounding[0]) / sr, (a + sounding[-1] + 1) / sr))
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


def _absorption_db(site: Site, distance: float, freqs: np.ndarray) -> np.ndarray:
    """Air absorption over ``distance`` m (and, in forest, foliage scattering of high frequencies)."""
    absorption_db = distance * 0.0035 * (freqs / 1000.0) ** 1.5
    if site.habitat == "forest":
        absorption_db += distance * 0.02 * np.log2(np.maximum(freqs, 500.0) / 500.0)
    return absorption_db


def _impulse(site: Site, distance: float, rt60: float, tail: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A room response: the direct sound, then exponentially decaying noise at the site's direct-to-reverberant
    ratio, which falls with distance."""
    impulse = rng.standard_normal(tail, dtype=np.float32).astype(np.float64)
    impulse *= np.exp(np.arange(tail) * (-6.91 / (rt60 * sr)))
    impulse[: round(0.002 * sr)] = 0.0
    drr_db = site.drr_db - 12.0 * math.log10(distance / 10.0) + rng.normal(0, 1.5)
    impulse *= 10 ** (-drr_db / 20) / math.sqrt(_power(impulse))
    impulse[0] = 1.0
    return impulse


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
    absorption_db = _absorption_db(site, task.distance_m, coarse)
    impulse = _impulse(site, task.distance_m, rt60, tail, sr, rng)
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
