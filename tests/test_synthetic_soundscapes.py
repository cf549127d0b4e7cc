"""The synthetic corpus's no-bird clips, distractors and soundscapes: determinism, exact event times, the
scheduling promises (overlap, bird-free share, new sites and birds) and the corpus's negative rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import birdpipe.data.synthetic.render as render_module
import birdpipe.data.synthetic.soundscape as soundscape
from birdpipe.common.params import SyntheticParams, SyntheticSoundscapeParams
from birdpipe.data.synthetic.corpus import build_design, generate_corpus
from birdpipe.data.synthetic.distractors import DISTRACTOR_KINDS, KINDS, render_distractor
from birdpipe.data.synthetic.model import _RECORDING, PCM_SCALE, _rng
from birdpipe.data.synthetic.plan import _negative
from birdpipe.data.synthetic.render import _individual, _perform
from birdpipe.data.synthetic.soundscape import (
    _covered,
    _soundscape_bird,
    _soundscape_scene,
    generate_soundscapes,
    render_negative,
    render_soundscape,
)

REPO = Path(__file__).resolve().parents[1]
SR = 16000
TINY = SyntheticParams(
    species=4,
    max_recordings=6,
    imbalance=3.0,
    min_seconds=1.0,
    median_seconds=1.5,
    max_seconds=2.5,
    snr_db=(0.0, 20.0),
    similar_pairs=1,
    recordists=3,
    sample_rate=SR,
)
SMALL = SyntheticSoundscapeParams(files=2, seconds=20.0, max_simultaneous=2, distractors_per_minute=6.0)
CLEAN = SyntheticSoundscapeParams(seconds=40.0, snr_db=(40.0, 40.0), distractors_per_minute=0.0, max_simultaneous=2)
TAIL_S = 1.0  # reverberation tails last at most 1 s (render's tail)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def design():
    return build_design(TINY, 7)


@pytest.fixture(scope="module")
def written(design, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("soundscapes")
    return root, generate_soundscapes(design, SMALL, root, workers=1, progress=False)


def _max_overlap(events: pd.DataFrame) -> int:
    points = sorted([(a, 1) for a in events["start_s"]] + [(b, -1) for b in events["end_s"]])  # ends first at ties
    running = most = 0
    for _, step in points:
        running += step
        most = max(most, running)
    return most


# ------------------------------------------------------------------------------------------ soundscapes
def test_soundscapes_are_byte_identical_whatever_the_workers_and_differ_by_seed(written, tmp_path: Path) -> None:
    root, table = written
    again = generate_soundscapes(build_design(TINY, 7), SMALL, tmp_path / "again", workers=2, progress=False)
    pd.testing.assert_frame_equal(table, again)
    assert _files(root) == _files(tmp_path / "again")
    generate_soundscapes(build_design(TINY, 8), SMALL, tmp_path / "other", workers=1, progress=False)
    ours, theirs = _files(root), _files(tmp_path / "other")
    assert ours.keys() == theirs.keys()
    assert not {v for k, v in ours.items() if k.endswith(".flac")} & set(theirs.values())


def test_files_and_annotations_csv_follow_the_layout(written, design) -> None:
    """The layout the soundscape reader relies on: val/ and test/ FLACs, sorted relative paths, 3 decimals."""
    root, _ = written
    files = [f"{split}/soundscape_{k:03d}.flac" for split in ("val", "test") for k in range(SMALL.files)]
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.flac")) == sorted(files)
    csv = pd.read_csv(root / "annotations.csv", keep_default_na=False, dtype=str)
    assert list(csv.columns) == ["file", "start_s", "end_s", "label", "split"]
    assert set(csv["file"]) == set(files)
    assert all(file.startswith(split + "/") for file, split in zip(csv["file"], csv["split"], strict=True))
    assert all(len(v.split(".")[1]) == 3 for v in [*csv["start_s"], *csv["end_s"]] if v)
    assert set(csv["label"]) - {""} <= {s.label for s in design.species}  # "": a file without birds
    keyed = list(zip(csv["file"], pd.to_numeric(csv["start_s"]).fillna(-1.0), strict=True))
    assert keyed == sorted(keyed)
    for file in files:
        info = sf.info(root / file)
        assert (info.samplerate, info.frames, info.format) == (SR, round(SMALL.seconds * SR), "FLAC")


def test_a_file_without_birds_gets_one_empty_row(design, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unannotated file would not count as bird-free in scoring, so a file without events keeps one row."""
    empty = pd.DataFrame({"start_s": [], "end_s": [], "label": []})
    monkeypatch.setattr(soundscape, "render_soundscape", lambda *args: (np.zeros(SR * 10, np.float32), empty))
    table = generate_soundscapes(design, SMALL, tmp_path, workers=1, progress=False)
    csv = pd.read_csv(tmp_path / "annotations.csv", keep_default_na=False, dtype=str)
    assert len(csv) == len(table) == 2 * SMALL.files
    assert (csv[["start_s", "end_s", "label"]] == "").all().all()


def test_events_are_inside_the_file_of_corpus_species_and_never_too_many_at_once(written, design) -> None:
    _, table = written
    events = table[table["label"] != ""]
    assert len(events) > 10
    assert ((events["start_s"] >= 0) & (events["start_s"] < events["end_s"]) & (events["end_s"] <= SMALL.seconds)).all()
    assert set(events["label"]) <= {s.label for s in design.species}
    overlaps = [_max_overlap(group) for _, group in events.groupby("file")]
    assert max(overlaps) == SMALL.max_simultaneous  # reached, never exceeded
    for _, group in events.groupby(["file", "label"]):  # one species' events never overlap: they are merged
        assert (group["start_s"].to_numpy()[1:] >= group["end_s"].to_numpy()[:-1] + 0.5 - 1e-3).all()


@pytest.mark.parametrize(("share", "tolerance"), [(0.5, 0.1), (0.8, 0.15)])
def test_the_bird_free_share_is_about_the_asked_one(design, share: float, tolerance: float) -> None:
    """The mean over 6 files of 60 s is within ``tolerance`` of the target (measured on tiny designs: 0.45-0.50 for
    0.5, 0.66-0.73 for 0.8, since a long bird-free stretch is cut at the file's end; 120-s files: 0.49, 0.76)."""
    params = SyntheticSoundscapeParams(seconds=60.0, bird_free_share=share, distractors_per_minute=0.0)
    free = []
    for split in ("val", "test"):
        for number in range(3):
            _, events = render_soundscape(design, params, split, number)
            free.append(1 - _covered(list(zip(events["start_s"], events["end_s"], strict=True))) / params.seconds)
    assert abs(np.mean(free) - share) <= tolerance


def test_val_and_test_have_their_own_sites_recorders_and_birds(design) -> None:
    val, test = _soundscape_scene(design, "val", 0), _soundscape_scene(design, "test", 0)
    corpus_sites = {site.name for site in design.sites}
    assert val.site != test.site and val.recorder != test.recorder
    assert val.site != _soundscape_scene(design, "val", 1).site
    assert not {val.site.name, test.site.name} & corpus_sites
    species = design.species[0]
    corpus_birds = [_individual(design, species, 0, site, i) for site in range(len(design.sites)) for i in range(6)]
    ours = [_soundscape_bird(design, species, split, 0, b) for split in ("val", "test") for b in range(3)]
    pitches = [bird["pitch"] for bird in corpus_birds + ours]
    assert len(set(pitches)) == len(pitches)
    with pytest.raises(ValueError, match="split"):
        _soundscape_scene(design, "train", 0)


def test_perform_reports_every_syllable_it_adds_without_changing_a_draw(design) -> None:
    """Events are built from these spans: the buffer is silent outside them and sounds at each one's ends."""
    species, n = design.species[1], 12 * SR
    bird = _individual(design, species, 0, 0, 0)
    plain, spanned = np.zeros(n), np.zeros(n)
    rng_a, rng_b = _rng(7, _RECORDING, 1, 0), _rng(7, _RECORDING, 1, 0)
    spans: list[tuple[float, float]] = []
    assert _perform(design, species, bird, False, n, rng_a, plain) == _perform(
        design, species, bird, False, n, rng_b, spanned, spans=spans
    )
    assert np.array_equal(plain, spanned) and rng_a.random() == rng_b.random()
    inside = np.zeros(n, dtype=bool)
    for a, b in spans:
        i, j = round(a * SR), round(b * SR)
        inside[i:j] = True
        assert spanned[i] != 0 and spanned[j - 1] != 0
    assert len(spans) > 5 and not np.any(spanned[~inside])


def test_event_times_are_exact(design, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a clean soundscape (SNR 40 dB, no distractors) the band of each event's species is loud inside it, and
    what is not bird (the same soundscape rendered with silent birds) is all there is outside events and their
    reverberation tails, up to the 16-bit rounding, up to the first sample of each event."""
    audio, events = render_soundscape(design, CLEAN, "val", 0)
    real = soundscape._place

    def silent(*args: object) -> tuple[np.ndarray, float, float]:  # the same draws, nothing heard
        wet, band, full = real(*args)
        return 0.0 * wet, band, full

    monkeypatch.setattr(soundscape, "_place", silent)
    bed, silent_events = render_soundscape(design, CLEAN, "val", 0)
    pd.testing.assert_frame_equal(events, silent_events)
    audio, bed = audio.astype(np.float64), bed.astype(np.float64)
    t = np.arange(audio.size) / SR
    near = np.zeros(audio.size, dtype=bool)
    for event in events.itertuples():
        near |= (t >= event.start_s - 0.05) & (t < event.end_s + TAIL_S)
    assert 0.1 < (~near).mean() < 0.6 and len(events) > 5
    scale = (audio[~near] @ bed[~near]) / (bed[~near] @ bed[~near])  # the two files' peak normalisations differ
    bird = audio - scale * bed
    floor = np.mean(bird[~near] ** 2)
    assert floor < (0.5 / PCM_SCALE) ** 2  # rounding noise only: no bird outside events and tails

    frames = audio[: audio.size // 512 * 512].reshape(-1, 512) * np.hanning(512)
    spectra = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(512, 1 / SR)
    free_frames = ~near[: frames.shape[0] * 512].reshape(-1, 512).any(axis=1)
    species = {s.label: s for s in design.species}
    for event in events.itertuples():
        syllables = [*species[event.label].syllables, species[event.label].call]
        lows = [min(s.f_start, s.f_end) for s in syllables if s is not None]
        highs = [max(s.f_start, s.f_end) for s in syllables if s is not None]
        band = (freqs >= 0.8 * min(lows)) & (freqs <= 1.25 * max(highs))
        power = spectra[:, band].sum(axis=1)
        during = power[int(event.start_s * SR) // 512 : int(event.end_s * SR) // 512 + 1].mean()
        assert during > 10 * np.median(power[free_frames])  # clearly louder in its band

        i, j = round(event.start_s * SR), round(event.end_s * SR)
        onset = np.mean(bird[i : i + round(0.03 * SR)] ** 2)
        assert np.mean(bird[i:j] ** 2) > 1000 * floor and onset > 10 * floor
        if not near[max(0, i - round(0.05 * SR)) - 1] and i > 0.1 * SR:  # nothing else just before: silence
            before = np.mean(bird[i - round(0.05 * SR) : i - round(0.005 * SR)] ** 2)
            assert before < 2 * floor


def test_soundscape_levels_are_on_the_16_bit_grid_and_not_clipped(written) -> None:
    root, _ = written
    for path in sorted(root.rglob("*.flac")):
        audio, _ = sf.read(path, dtype="float64")
        assert 0.05 < np.max(np.abs(audio)) <= 10 ** (-3 / 20) + 1e-4
        assert np.array_equal(audio * PCM_SCALE, np.rint(audio * PCM_SCALE))


# ------------------------------------------------------------------------------------------ distractors
@pytest.mark.parametrize("kind", DISTRACTOR_KINDS)
def test_every_distractor_kind_renders_plausibly(kind: str) -> None:
    """Finite, not silent, no flat top (clipping), of its stated length, and deterministic in its rng."""
    low, high = KINDS[kind].seconds
    assert 0.5 <= low < high <= 20.0
    for seed in range(3):
        x = render_distractor(kind, SR, np.random.default_rng([5, seed]))
        assert x.dtype == np.float64 and np.isfinite(x).all()
        assert low * SR - 1 <= x.size <= high * SR + 1
        assert np.max(np.abs(x)) == pytest.approx(1.0) and np.sqrt(np.mean(x**2)) > 0.01
        assert np.sum(np.abs(x) >= 1 - 1e-9) <= 2  # an unclipped signal has one peak sample, a clipped one many
        assert np.array_equal(x, render_distractor(kind, SR, np.random.default_rng([5, seed])))
    with pytest.raises(ValueError, match="unknown distractor"):
        render_distractor("bird", SR, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kinds", "low_hz", "high_hz"),
    [(("engine", "aircraft", "generator"), 0.0, 1200.0), (("frog", "treefrog", "toad"), 500.0, 3100.0)],
)
def test_machines_rumble_low_and_frogs_call_in_their_band(
    kinds: tuple[str, ...], low_hz: float, high_hz: float
) -> None:
    """Engines below the birds' band; frogs and toads inside it (0.5-3 kHz), where they must not pass for birds."""
    for kind in kinds:
        x = render_distractor(kind, SR, np.random.default_rng([6, len(kind)]))
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1 / SR)
        median = freqs[np.searchsorted(np.cumsum(power) / power.sum(), 0.5)]
        assert low_hz <= median <= high_hz, kind


# ------------------------------------------------------------------------------------------ no-bird clips
def test_a_negative_clip_renders_no_syllable(design, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_bird(*args, **kwargs):
        raise AssertionError("a no-bird clip rendered a syllable")

    monkeypatch.setattr(render_module, "_render_syllable", no_bird)
    with_distractors = [k for k in range(1, 30) if _negative(design, k).distractors]
    numbers = [*with_distractors[:2], next(k for k in range(1, 30) if k not in with_distractors)]
    for number in numbers:
        audio = render_negative(design, number, 3.0)
        assert audio.dtype == np.float32 and audio.size == 3 * SR
        assert np.max(np.abs(audio)) == pytest.approx(10 ** (_negative(design, number).peak_dbfs / 20), abs=1e-4)
        assert np.array_equal(render_negative(design, number, 3.0), audio)
    with pytest.raises(AssertionError, match="rendered a syllable"):  # the guard does catch a bird
        render_soundscape(design, CLEAN, "val", 0)


def test_the_corpus_with_negatives_has_their_rows_and_files_and_the_same_birds(tmp_path: Path) -> None:
    plain = generate_corpus(TINY, tmp_path / "plain", seed=7, workers=1, progress=False)
    assert "negative" not in plain.columns and "kinds" not in plain.columns
    table = generate_corpus(
        TINY.model_copy(update={"negatives": 5}), tmp_path / "neg", seed=7, workers=2, progress=False
    )
    csv = pd.read_csv(tmp_path / "neg" / "metadata.csv", keep_default_na=False, dtype=str)
    assert list(csv["path"]) == list(table["path"])
    negatives, birds = csv[csv["negative"] == "True"], csv[csv["negative"] == "False"]
    assert len(negatives) == 5 and len(birds) == len(plain)
    assert (negatives[["label", "scientific_name", "english_name", "background_species"]] == "").all().all()
    assert (birds["kinds"] == "").all() and (birds.drop(columns=["negative", "kinds"]).reset_index(drop=True)
                                             == plain.astype(str).replace("nan", "")).all().all()  # fmt: skip
    assert set(negatives["recordist"]) <= set(birds["recordist"]) and set(negatives["site"]) <= set(birds["site"])
    assert (negatives["date"] != "").all()
    assert {k for kinds in negatives["kinds"] for k in kinds.split(";") if k} <= set(DISTRACTOR_KINDS)
    for row in negatives.itertuples():
        audio, rate = sf.read(tmp_path / "neg" / row.path, dtype="float32")
        assert row.path.startswith("audio/_negatives/") and rate == SR
        assert TINY.min_seconds <= audio.size / SR <= TINY.max_seconds and 0.05 < np.max(np.abs(audio)) <= 1.0
    bird_files = {k: v for k, v in _files(tmp_path / "neg").items() if "_negatives" not in k and k.endswith(".mp3")}
    assert bird_files == {k: v for k, v in _files(tmp_path / "plain").items() if k.endswith(".mp3")}


# ------------------------------------------------------------------------------------------ across CPUs
def _save_new_outputs(path: str) -> None:
    design = build_design(TINY, 7)
    outputs = {"soundscape": render_soundscape(design, SMALL, "test", 1)[0]}
    outputs.update({f"negative{k}": render_negative(design, k, 2.0) for k in (1, 2, 3)})
    outputs.update({kind: render_distractor(kind, SR, np.random.default_rng(1)) for kind in DISTRACTOR_KINDS})
    np.savez(path, **outputs)


def test_new_outputs_do_not_depend_on_numpys_cpu_specific_kernels(tmp_path: Path) -> None:
    """As for the corpus: with numpy's baseline kernels the 16-bit soundscape and negatives are the same, and the
    float64 distractors differ by last bits only (no phase error grows along a tone)."""
    from numpy._core import _multiarray_umath as umath

    targets = [t for t in umath.__cpu_dispatch__ if umath.__cpu_features__.get(t)]
    if not targets:
        pytest.skip("this CPU runs numpy's baseline kernels only")
    _save_new_outputs(str(tmp_path / "native.npz"))
    baseline_path = str(tmp_path / "baseline.npz")
    code = f"from tests.test_synthetic_soundscapes import _save_new_outputs; _save_new_outputs({baseline_path!r})"
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(targets)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)
    native, baseline = np.load(tmp_path / "native.npz"), np.load(tmp_path / "baseline.npz")
    for name in native.files:
        if name in DISTRACTOR_KINDS:
            assert np.max(np.abs(native[name] - baseline[name])) < 1e-14, name
        else:
            assert np.array_equal(native[name], baseline[name]), name
