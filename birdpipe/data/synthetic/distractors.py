"""Loud non-bird sounds for no-bird clips and soundscapes: engines, aircraft, generators, chainsaws, hammering,
dogs, frogs and toads, heavy rain and voices, the sounds a detector meets in the field and must not take for birds.

Each kind is a function of (sample_rate, rng) returning float64 samples with a natural envelope (a pass-by's rise
and fall, bouts of barks or calls, a shower's onset and end) of a length drawn from the kind's own range.
:func:`render_distractor` normalises it to a peak of 1; the mix sets its level. As in the bird renderer
(see Determinism in :mod:`birdpipe.data.synthetic.corpus`), a frequency contour summed into a phase is turned
into a waveform with the CPU-independent ``_sin_turns`` and carriers are computed from exact cycles, so what
numpy's CPU-specific kernels leave stays at the last bit of an envelope or a filter gain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from birdpipe.data.synthetic.noise import _smooth_random
from birdpipe.data.synthetic.render import _sin_turns

SOUND_SPEED = 343.0  # m/s, for Doppler shifts


# ------------------------------------------------------------------------------------------ helpers
def _cycles(freq: np.ndarray, sample_rate: int) -> np.ndarray:
    """Phase in turns (fractional part) of a tone following ``freq`` (Hz per sample)."""
    cycles = np.cumsum(freq) * (1.0 / sample_rate)
    return cycles - np.floor(cycles)


def _pulses(cycles: np.ndarray, sharpness: float) -> np.ndarray:
    """A zero-mean train of von Mises pulses, one per cycle: harmonics up to about ``sharpness`` times the rate."""
    pulse = np.exp(sharpness * (_sin_turns(cycles + 0.25) - 1.0))  # cos as a shifted exact sine
    return pulse - pulse.mean()


def _filtered(x: np.ndarray, sample_rate: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``x`` through a zero-phase filter with amplitude response ``gain(freqs)``."""
    length = sfft.next_fast_len(x.size, real=True)
    spectrum = sfft.rfft(x, length)
    spectrum *= gain(np.arange(spectrum.size) * (sample_rate / length))
    return sfft.irfft(spectrum, length)[: x.size]


def _band(centre: float, octaves: float) -> Callable[[np.ndarray], np.ndarray]:
    """A log-Gaussian band-pass response around ``centre`` with an sd of ``octaves``."""
    return lambda f: np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / centre) / octaves) ** 2)


def _lowpass(cutoff: float, order: int = 2) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: 1.0 / np.sqrt(1.0 + (f / cutoff) ** (2 * order))


def _noise(rng: np.random.Generator, n: int, sample_rate: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Filtered white noise with unit RMS."""
    x = _filtered(rng.standard_normal(n), sample_rate, gain)
    return x / max(math.sqrt(float(np.square(x).mean())), 1e-12)


def _ramps(n: int, sample_rate: int, attack: float, release: float) -> np.ndarray:
    """An envelope of ones with raised-cosine ramps of ``attack`` and ``release`` seconds."""
    env = np.ones(n)
    na, nr = min(n, max(1, round(attack * sample_rate))), min(n, max(1, round(release * sample_rate)))
    env[:na] *= 0.5 - 0.5 * np.cos(np.pi * np.arange(na) / na)
    env[n - nr :] *= 0.5 + 0.5 * np.cos(np.pi * np.arange(1, nr + 1) / nr)
    return env


def _length(rng: np.random.Generator, sample_rate: int, seconds: tuple[float, float]) -> int:
    return round(math.exp(rng.uniform(math.log(seconds[0]), math.log(seconds[1]))) * sample_rate)


def _tone(freq: np.ndarray, sample_rate: int, second: float = 0.0) -> np.ndarray:
    """A sine (with an optional second harmonic) following ``freq``."""
    cycles = _cycles(np.minimum(freq, 0.45 * sample_rate), sample_rate)
    out = _sin_turns(cycles)
    if second and 2 * float(freq.max()) < 0.45 * sample_rate:
        out += second * _sin_turns(2.0 * cycles)
    return out


def _add_at(out: np.ndarray, piece: np.ndarray, start: int) -> None:
    """Add ``piece`` to ``out`` at sample ``start`` (clipped to ``out``)."""
    a, b = max(start, 0), min(start + piece.size, out.size)
    if b > a:
        out[a:b] += piece[a - start : b - start]


# ------------------------------------------------------------------------------------------ machines
def engine(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A car or motorbike passing by: engine hum (25-120 Hz firing rate with harmonics) and tyre noise, rising
    and falling with distance (closest approach 8-60 m at 8-30 m/s) and Doppler-shifted."""
    n = _length(rng, sample_rate, KINDS["engine"].seconds)
    t = np.arange(n) / sample_rate
    speed, closest = rng.uniform(8.0, 30.0), rng.uniform(8.0, 60.0)
    x = speed * (t - rng.uniform(0.35, 0.65) * n / sample_rate)
    r = np.sqrt(closest**2 + x**2)
    doppler = SOUND_SPEED / (SOUND_SPEED + speed * x / r)  # above 1 while approaching
    firing = rng.uniform(25.0, 120.0) * (1.0 + 0.04 * _smooth_random(rng, n, 0.4 / sample_rate))
    hum = _pulses(_cycles(firing * doppler, sample_rate), rng.uniform(1.5, 6.0))
    hum = _filtered(hum, sample_rate, _lowpass(rng.uniform(400.0, 1500.0)))
    hum /= max(math.sqrt(float(np.square(hum).mean())), 1e-12)
    tyres = _noise(rng, n, sample_rate, _band(rng.uniform(600.0, 1400.0), rng.uniform(0.8, 1.4)))
    mix = hum + rng.uniform(0.3, 1.2) * tyres
    return mix * (closest / r) * _ramps(n, sample_rate, 0.2, 0.2)


def aircraft(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """An aircraft overhead: low broadband rumble (below 150-600 Hz) with propeller tones (60-120 Hz), slowly
    rising and falling, with atmospheric flutter."""
    n = _length(rng, sample_rate, KINDS["aircraft"].seconds)
    t = np.arange(n) / sample_rate
    speed, closest = rng.uniform(40.0, 90.0), rng.uniform(300.0, 1200.0)
    x = speed * (t - rng.uniform(0.3, 0.7) * n / sample_rate)
    r = np.sqrt(closest**2 + x**2)
    cutoff = rng.uniform(150.0, 600.0)
    rumble = _noise(rng, n, sample_rate, lambda f: _lowpass(cutoff)(f) * np.minimum(1.0, np.maximum(f, 1.0) / 30.0))
    propeller = _pulses(
        _cycles(rng.uniform(60.0, 120.0) * SOUND_SPEED / (SOUND_SPEED + speed * x / r), sample_rate), 2.0
    )
    propeller /= max(math.sqrt(float(np.square(propeller).mean())), 1e-12)
    flutter = np.exp(0.15 * _smooth_random(rng, n, rng.uniform(0.5, 2.0) / sample_rate))
    mix = (rumble + rng.uniform(0.0, 0.6) * propeller) * flutter
    return mix * (closest / r) ** 2 * _ramps(n, sample_rate, 0.5, 0.5)


def generator(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A generator or pump: a steady engine at 25-60 Hz firing rate with mains-like harmonics and a rattle of
    mechanical noise at 1-4 kHz pulsing with the engine, fading in and out."""
    n = _length(rng, sample_rate, KINDS["generator"].seconds)
    firing = float(rng.choice([25.0, 30.0, 50.0, 60.0])) * rng.uniform(0.97, 1.03)
    cycles = _cycles(firing * (1.0 + 0.005 * _smooth_random(rng, n, 1.0 / sample_rate)), sample_rate)
    hum = _filtered(_pulses(cycles, rng.uniform(3.0, 10.0)), sample_rate, _lowpass(rng.uniform(500.0, 2000.0)))
    hum /= max(math.sqrt(float(np.square(hum).mean())), 1e-12)
    rattle = _noise(rng, n, sample_rate, _band(rng.uniform(1000.0, 4000.0), 0.5))
    rattle *= np.exp(2.0 * (_sin_turns(cycles + 0.25) - 1.0))
    fade = rng.uniform(0.3, 1.5)
    return (hum + rng.uniform(0.2, 0.8) * rattle) * _ramps(n, sample_rate, fade, fade)


def chainsaw(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A chainsaw: a harsh two-stroke engine revved between idle (40-60 Hz) and full throttle (150-220 Hz),
    with broadband cutting noise at full throttle."""
    n = _length(rng, sample_rate, KINDS["chainsaw"].seconds)
    idle, full = rng.uniform(40.0, 60.0), rng.uniform(150.0, 220.0)
    throttle = np.zeros(n)
    position = round(rng.uniform(0.0, 1.5) * sample_rate)
    while position < n:  # bursts of full throttle (1-4 s) between idling (0.5-2 s)
        length = round(rng.uniform(1.0, 4.0) * sample_rate)
        throttle[position : position + length] = 1.0
        position += length + round(rng.uniform(0.5, 2.0) * sample_rate)
    throttle = _filtered(throttle, sample_rate, _lowpass(1.5, order=1))  # the engine takes ~0.2 s to rev
    np.clip(throttle, 0.0, 1.0, out=throttle)
    cycles = _cycles(idle + (full - idle) * throttle, sample_rate)
    motor = _filtered(_pulses(cycles, rng.uniform(8.0, 20.0)), sample_rate, _lowpass(rng.uniform(3000.0, 6000.0)))
    motor /= max(math.sqrt(float(np.square(motor).mean())), 1e-12)
    cutting = _noise(rng, n, sample_rate, _band(rng.uniform(1500.0, 4000.0), 1.0))
    mix = motor * (0.4 + 0.6 * throttle) + rng.uniform(0.2, 0.7) * throttle * cutting
    return mix * _ramps(n, sample_rate, 0.1, 0.3)


def hammer(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Hammering: blows every 0.3-1.2 s in groups, each a short click and ringing modes at 0.4-4 kHz that die
    away in 10-60 ms."""
    n = _length(rng, sample_rate, KINDS["hammer"].seconds)
    out = np.zeros(n)
    size = round(0.25 * sample_rate)
    t = np.arange(size) / sample_rate
    modes = [(rng.uniform(400.0, min(4000.0, 0.4 * sample_rate)), rng.uniform(0.01, 0.06)) for _ in range(4)]
    period = rng.uniform(0.3, 1.2)
    position = rng.uniform(0.05, 0.3)
    while position * sample_rate < n - 1:
        blow = np.zeros(size)
        for freq, decay in modes:
            blow += rng.uniform(0.3, 1.0) * _sin_turns((freq * rng.uniform(0.98, 1.02)) * t) * np.exp(-t / decay)
        click = round(0.004 * sample_rate)
        blow[:click] += 2.0 * rng.standard_normal(click) * np.linspace(1.0, 0.0, click)
        _add_at(out, rng.uniform(0.5, 1.0) * blow, round(position * sample_rate))
        pause = rng.random() < 0.15  # a pause between groups of blows
        position += period * math.exp(rng.normal(0.0, 0.1)) + (rng.uniform(1.0, 3.0) if pause else 0.0)
    return out


# ------------------------------------------------------------------------------------------ animals, rain, voices
def dog(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A dog barking: a bout of 0.1-0.3 s barks, each a noisy burst followed by a harsh harmonic tone (300-900 Hz
    fundamental, rising then falling), 0.15-0.7 s apart."""
    n = _length(rng, sample_rate, KINDS["dog"].seconds)
    out = np.zeros(n)
    base = rng.uniform(300.0, 900.0)
    harshness = rng.uniform(2.0, 5.0)
    position = rng.uniform(0.0, 0.1)
    while True:
        size = round(rng.uniform(0.1, 0.3) * sample_rate)
        if round(position * sample_rate) + size > n:
            break
        u = np.arange(size) / size
        rise = rng.uniform(0.1, 0.35)
        f0 = base * rng.uniform(0.9, 1.1) * (1.0 + rise * _sin_turns(0.5 * u))
        bark = _pulses(_cycles(f0, sample_rate), harshness)
        bark += 0.4 * rng.standard_normal(size)  # rough voice
        onset = np.exp(-np.arange(size) / (rng.uniform(0.01, 0.03) * sample_rate))
        bark += 3.0 * onset * rng.standard_normal(size)  # the noisy onset
        bark *= np.minimum(1.0, np.arange(size) / (0.006 * sample_rate)) * (1.0 - u) ** 1.5
        _add_at(out, rng.uniform(0.6, 1.0) * bark, round(position * sample_rate))
        position += size / sample_rate + rng.uniform(0.15, 0.7)
    return _filtered(out, sample_rate, lambda f: _band(1200.0, 1.5)(f) * _lowpass(4000.0)(f))


def frog(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A chorus of 1-4 coquí-like frogs: a two-note "ko-kee", a near-constant 0.9-1.5 kHz note of about 0.1 s
    and a rising note 1.5-1.9 times higher (up to 3 kHz), every 1-3 s."""
    n = _length(rng, sample_rate, KINDS["frog"].seconds)
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 5))):
        low = rng.uniform(900.0, 1500.0)
        high = min(low * rng.uniform(1.5, 1.9), 3000.0)
        period, level = rng.uniform(1.0, 3.0), rng.uniform(0.3, 1.0)
        position = rng.uniform(0.0, period)
        while position * sample_rate < n:
            ko = round(rng.uniform(0.08, 0.12) * sample_rate)
            kee = round(rng.uniform(0.12, 0.25) * sample_rate)
            gap = round(rng.uniform(0.03, 0.08) * sample_rate)
            call = np.zeros(ko + gap + kee)
            call[:ko] = _tone(low * (1.0 + 0.05 * np.arange(ko) / ko), sample_rate, 0.1) * _ramps(
                ko, sample_rate, 0.01, 0.03
            )
            call[ko + gap :] = _tone(high * (1.0 + 0.1 * np.arange(kee) / kee), sample_rate, 0.05) * _ramps(
                kee, sample_rate, 0.015, 0.04
            )
            _add_at(out, level * call, round(position * sample_rate))
            position += period * math.exp(rng.normal(0.0, 0.12))
    return out


def treefrog(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A pulsed treefrog call (chorus-frog-like): 0.4-1 s trains of 8-30 Hz pulses on a 2-3 kHz carrier,
    repeated every 0.8-2 s."""
    n = _length(rng, sample_rate, KINDS["treefrog"].seconds)
    out = np.zeros(n)
    carrier, rate = min(rng.uniform(2000.0, 3000.0), 0.4 * sample_rate), rng.uniform(8.0, 30.0)
    period = rng.uniform(0.8, 2.0)
    position = rng.uniform(0.0, 0.5)
    while position * sample_rate < n:
        size = round(rng.uniform(0.4, 1.0) * sample_rate)
        t = np.arange(size) / sample_rate
        gate = np.maximum(_sin_turns(rate * (1.0 + 0.3 * t / t[-1]) * t), 0.0) ** 2  # pulses quicken
        call = _tone(np.full(size, carrier * rng.uniform(0.98, 1.02)), sample_rate, 0.15) * gate
        _add_at(out, call * _ramps(size, sample_rate, 0.05, 0.1), round(position * sample_rate))
        position += size / sample_rate + period * math.exp(rng.normal(0.0, 0.15))
    return out


def toad(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A trilling toad (American-toad-like): a long musical trill of 25-45 pulses per second on a 1.2-2.2 kHz
    carrier that sags slightly, swelling in and ending abruptly."""
    n = _length(rng, sample_rate, KINDS["toad"].seconds)
    t = np.arange(n) / sample_rate
    carrier = rng.uniform(1200.0, 2200.0) * (1.0 - 0.04 * t / t[-1])
    pulses = np.maximum(_sin_turns(rng.uniform(25.0, 45.0) * t), 0.0) ** 1.5
    return _tone(carrier, sample_rate, 0.2) * pulses * _ramps(n, sample_rate, rng.uniform(0.3, 1.0), 0.05)


def rain(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A burst of heavy rain: hiss above 0.5 kHz and a dense patter of 300-3000 drops per second (each a decaying
    click), swelling in, gusting and dying away."""
    n = _length(rng, sample_rate, KINDS["rain"].seconds)

    def above_500(f: np.ndarray) -> np.ndarray:
        return np.minimum(1.0, (f / 500.0) ** 2) * _lowpass(8000.0)(f)

    hiss = _noise(rng, n, sample_rate, above_500)
    drops = int(rng.poisson(rng.uniform(300.0, 3000.0) * n / sample_rate))
    size = 96
    kernels = rng.standard_normal((8, size)) * np.exp(-np.arange(size) / rng.uniform(3.0, 15.0, (8, 1)))
    kernels /= np.sqrt((kernels**2).sum(axis=1, keepdims=True))
    index = (rng.integers(0, n - size, drops)[:, None] + np.arange(size)).ravel()
    amplitude = np.exp(rng.normal(0.0, 0.7, drops))
    patter = np.bincount(index, (amplitude[:, None] * kernels[rng.integers(0, 8, drops)]).ravel(), minlength=n)
    patter = _filtered(patter, sample_rate, above_500)  # (a drop's click has a DC offset)
    patter /= max(math.sqrt(float(np.square(patter).mean())), 1e-12)
    gusts = np.exp(0.3 * _smooth_random(rng, n, 0.5 / sample_rate))
    swell = n / sample_rate * rng.uniform(0.15, 0.35)
    return (hiss + rng.uniform(0.5, 1.5) * patter) * gusts * _ramps(n, sample_rate, swell, swell)


def voices(sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """People talking (1-3 voices): syllables at 3-6 per second in phrases, voiced (90-240 Hz pitch with falling
    intonation) through three formants (0.3-0.85, 0.85-2.4, 2.3-3.2 kHz), some opening with a 3-7 kHz fricative."""
    n = _length(rng, sample_rate, KINDS["voices"].seconds)
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        pitch, level = rng.uniform(90.0, 240.0), rng.uniform(0.4, 1.0)
        position = rng.uniform(0.0, 1.0)
        syllables = 0
        while position * sample_rate < n:
            size = round(rng.uniform(0.12, 0.3) * sample_rate)
            u = np.arange(size) / size
            f0 = pitch * (1.0 - 0.15 * syllables / 10.0) * rng.uniform(0.9, 1.15) * (1.0 + 0.08 * (0.5 - u))
            formants = (rng.uniform(300.0, 850.0), rng.uniform(850.0, 2400.0), rng.uniform(2300.0, 3200.0))
            widths = rng.uniform(60.0, 200.0, 3)

            def vowel(f: np.ndarray, formants: tuple[float, ...] = formants, widths: np.ndarray = widths) -> np.ndarray:
                return sum(
                    (0.6**i) / np.sqrt(1.0 + ((f - fc) / bw) ** 2)
                    for i, (fc, bw) in enumerate(zip(formants, widths, strict=True))
                )

            syllable = _filtered(_pulses(_cycles(f0, sample_rate), 40.0), sample_rate, vowel) * np.sin(np.pi * u) ** 2
            if rng.random() < 0.3 and sample_rate > 12000:  # a fricative before the vowel
                hiss = round(rng.uniform(0.05, 0.12) * sample_rate)
                noise = _noise(rng, hiss, sample_rate, _band(rng.uniform(3000.0, 0.4 * sample_rate), 0.4))
                _add_at(
                    out, 0.05 * level * noise * _ramps(hiss, sample_rate, 0.02, 0.02), round(position * sample_rate)
                )
                position += hiss / sample_rate
            _add_at(out, level * syllable, round(position * sample_rate))
            position += size / sample_rate + rng.uniform(0.02, 0.08)
            syllables += 1
            if rng.random() < 0.12:  # the end of a phrase
                position += rng.uniform(0.25, 0.8)
                syllables = 0
    return out


# ------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Distractor:
    render: Callable[[int, np.random.Generator], np.ndarray]
    seconds: tuple[float, float]  # range of lengths (log-uniform)


KINDS = {
    "engine": Distractor(engine, (4.0, 20.0)),
    "aircraft": Distractor(aircraft, (8.0, 20.0)),
    "generator": Distractor(generator, (3.0, 20.0)),
    "chainsaw": Distractor(chainsaw, (3.0, 15.0)),
    "hammer": Distractor(hammer, (2.0, 12.0)),
    "dog": Distractor(dog, (0.5, 6.0)),
    "frog": Distractor(frog, (2.0, 15.0)),
    "treefrog": Distractor(treefrog, (1.5, 12.0)),
    "toad": Distractor(toad, (3.0, 15.0)),
    "rain": Distractor(rain, (3.0, 20.0)),
    "voices": Distractor(voices, (2.0, 12.0)),
}
DISTRACTOR_KINDS = tuple(KINDS)


def render_distractor(kind: str, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One distractor of ``kind`` (float64, peak 1), its length drawn from ``KINDS[kind].seconds``."""
    if kind not in KINDS:
        raise ValueError(f"unknown distractor kind {kind!r}: one of {', '.join(DISTRACTOR_KINDS)}")
    out = KINDS[kind].render(sample_rate, rng)
    return out * (1.0 / max(float(np.max(np.abs(out))), 1e-12))
