"""The background of a synthetic recording: noise floor, wind, rain and insects by site, the mixing of a
component at a level, and the recordist's equipment colouring."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from birdpipe.data.synthetic.model import (
    Design,
    Recordist,
    Site,
)


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
