"""The synthetic corpus generator: files, metadata, counts, determinism, names and levels."""

from __future__ import annotations

import hashlib
import itertools
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdpipe.common.params import SyntheticParams
from birdpipe.data.synthetic.corpus import generate_corpus, species_counts

REPO = Path(__file__).resolve().parents[1]

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
    sample_rate=16000,
)
COLUMNS = (
    "path", "label", "scientific_name", "english_name", "recordist", "site", "date", "individual", "snr_db",
    "duration_s", "background_species",
)  # fmt: skip


def _generate(root: Path, seed: int = 7, workers: int = 1, params: SyntheticParams = TINY) -> pd.DataFrame:
    root.mkdir(parents=True, exist_ok=True)
    return generate_corpus(params, root, seed=seed, workers=workers, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("corpus")
    return root, _generate(root)


def test_files_decode_at_the_rate_and_lengths(corpus: tuple[Path, pd.DataFrame]) -> None:
    root, table = corpus
    for row in table.itertuples():
        path = root / row.path
        assert path.is_file() and path.suffix == ".mp3"
        assert path.parent == root / "audio" / row.label
        audio, rate = sf.read(path, dtype="float32")
        assert rate == TINY.sample_rate
        assert audio.ndim == 1
        seconds = audio.size / rate
        assert TINY.min_seconds <= seconds <= TINY.max_seconds
        assert seconds == pytest.approx(row.duration_s, abs=1e-3)


def test_metadata_csv_matches_files_and_table(corpus: tuple[Path, pd.DataFrame]) -> None:
    root, table = corpus
    csv = pd.read_csv(root / "metadata.csv", keep_default_na=False, dtype=str)
    assert set(COLUMNS) <= set(csv.columns)
    assert list(csv["path"]) == list(table["path"])
    assert list(csv["label"]) == list(table["label"])
    on_disk = {str(p.relative_to(root)) for p in (root / "audio").rglob("*.mp3")}
    assert on_disk == set(csv["path"])
    assert all(not Path(p).is_absolute() for p in csv["path"])
    assert csv["path"].is_unique and csv["id"].is_unique
    assert (table["label"] == table["scientific_name"].str.replace(" ", "_")).all()
    assert set(table["sound_type"]) <= {"song", "call"}


def test_counts_follow_the_configured_ratio(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, table = corpus
    counts = table["label"].value_counts()
    assert counts.max() == TINY.max_recordings
    assert counts.min() == max(1, round(TINY.max_recordings / TINY.imbalance))
    assert len(counts) == TINY.species

    params = SyntheticParams(species=24, max_recordings=150, imbalance=50)
    expected = species_counts(params)
    assert expected[0] == 150 and expected[-1] == 3
    assert all(a >= b for a, b in itertools.pairwise(expected))
    assert species_counts(SyntheticParams(species=3, max_recordings=5, imbalance=100, similar_pairs=1))[-1] == 1


def test_the_study_size_is_reached_exactly_and_impossible_totals_are_refused() -> None:
    study = SyntheticParams(species=89, max_recordings=1216, imbalance=1216, recordings=11075)
    counts = species_counts(study)
    assert (len(counts), sum(counts), counts[0], counts[-1]) == (89, 11075, 1216, 1)
    assert all(a >= b for a, b in itertools.pairwise(counts))
    assert sum(species_counts(study.model_copy(update={"recordings": None}))) == 15665  # plain geometric
    fuller = species_counts(SyntheticParams(species=24, max_recordings=150, imbalance=50, recordings=2000))
    assert sum(fuller) == 2000 and fuller[0] == 150 and fuller[-1] == 3
    with pytest.raises(ValueError, match=r"recordings must lie in \[219, 3600\]"):
        SyntheticParams(species=24, max_recordings=150, imbalance=50, recordings=5000)


def test_labels_are_safe_unique_and_pairs_share_a_genus(corpus: tuple[Path, pd.DataFrame]) -> None:
    root, table = corpus
    species = pd.read_csv(root / "species.csv", keep_default_na=False)
    assert species["label"].is_unique and species["english_name"].is_unique
    assert all(re.fullmatch(r"[A-Z][a-z]+_[a-z]+", label) for label in species["label"])
    pairs = species[species["similar_to"] != ""]
    assert len(pairs) == 2 * TINY.similar_pairs
    genus = dict(zip(species["label"], species["genus"], strict=True))
    for label, partner in zip(pairs["label"], pairs["similar_to"], strict=True):
        assert genus[label] == genus[partner]
        assert label.split("_")[0] == partner.split("_")[0]
    assert set(table["label"]) == set(species["label"])


def test_background_species_are_other_known_species(corpus: tuple[Path, pd.DataFrame]) -> None:
    _, table = corpus
    labels = set(table["label"])
    for own, background in zip(table["label"], table["background_species"], strict=True):
        others = [b for b in background.split(";") if b]
        assert own not in others
        assert set(others) <= labels
        assert len(others) == len(set(others))


def test_recordings_are_not_silent_or_clipped(corpus: tuple[Path, pd.DataFrame]) -> None:
    root, table = corpus
    for path in table["path"]:
        audio, _ = sf.read(root / path, dtype="float32")
        peak = float(np.max(np.abs(audio)))
        assert 0.05 < peak <= 1.0
        assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 1e-3


def test_same_seed_is_byte_identical_whatever_the_workers(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, table = corpus
    again = _generate(tmp_path / "again", workers=2)
    pd.testing.assert_frame_equal(table, again)
    assert _files(root) == _files(tmp_path / "again")


def test_a_different_seed_gives_different_audio(corpus: tuple[Path, pd.DataFrame], tmp_path: Path) -> None:
    root, table = corpus
    other = _generate(tmp_path / "other", seed=8)
    assert list(other["label"].value_counts()) == list(table["label"].value_counts())
    ours = {(root / p).read_bytes() for p in table["path"]}
    theirs = {(tmp_path / "other" / p).read_bytes() for p in other["path"]}
    assert not ours & theirs


def test_other_sample_rates_and_odd_shapes_work(tmp_path: Path) -> None:
    params = SyntheticParams(
        species=2,
        max_recordings=2,
        imbalance=1.0,
        min_seconds=0.6,
        median_seconds=0.6,
        max_seconds=0.6,
        snr_db=(10.0, 10.0),
        similar_pairs=1,
        recordists=1,
        sample_rate=8000,
    )
    table = _generate(tmp_path, params=params)
    assert len(table) == 4
    for path in table["path"]:
        audio, rate = sf.read(tmp_path / path, dtype="float32")
        assert rate == 8000 and audio.size == round(0.6 * 8000)
        assert 0 < float(np.max(np.abs(audio))) <= 1.0


# ----------------------------------------------------------------------------- bytes pinned across machines
GOLDEN = SyntheticParams(
    species=3,
    max_recordings=3,
    imbalance=3.0,
    min_seconds=1.0,
    median_seconds=1.2,
    max_seconds=1.5,
    snr_db=(0.0, 20.0),
    similar_pairs=1,
    recordists=2,
    sample_rate=16000,
)
GOLDEN_SEED = 3
# sha256 of every file of the GOLDEN corpus, made on x86-64 Linux with the versions pinned in requirements.txt
GOLDEN_SHA256 = {
    "audio/Algorocichla_elegans/SYN000003.mp3": "ba8684f389ce9997d31549c2b749c067f4c5d63d2d696127f274fe6ae50a807a",
    "audio/Algorocichla_elegans/SYN000004.mp3": "da3597449c7f070e744254f5353b9bf881dc2338769235895b8c48b0584002ef",
    "audio/Algorocichla_elegans/SYN000005.mp3": "d5ee3025fddcf1fde63dac7f1a960245a6e298ddee320a036dffb709fc01a653",
    "audio/Algorocichla_fuscus/SYN000001.mp3": "a06776d70e000d4bc8ea8b9264c5cd702b1ab6a3ca78302ba90365ac7123d6a0",
    "audio/Stochura_leucurus/SYN000002.mp3": "9164d8f041ee8793645fc1071240e83a2519b921805fdc3f96966356f76e9ce6",
    "audio/Stochura_leucurus/SYN000006.mp3": "ebc6a1b7e2d8bd7527fb7a08172d747021c9cc3360b65e992cc6ce5cbd63474e",
    "metadata.csv": "896fcf6093ed0d5cd4cd4eee08ce63716aff5cce0c8de755734348e27f141c07",
    "species.csv": "28f40cb8452763bfbca40e178471ca99e3e892f8ee56e313fed532aa246e2302",
}
X86_64_LINUX = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64",
    reason="the stored hashes are for x86-64 Linux, where the README claims bit-identical outputs",
)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@X86_64_LINUX
def test_a_tiny_corpus_has_the_stored_bytes(tmp_path: Path) -> None:
    _generate(tmp_path, seed=GOLDEN_SEED, params=GOLDEN)
    digests = _digests(tmp_path)
    versions = f"numpy {np.__version__}, soundfile {sf.__version__} (libsndfile {sf.__libsndfile_version__})"
    assert digests == GOLDEN_SHA256, (
        "The synthetic corpus is no longer what it was. If you changed birdpipe/data/synthetic/ or a version pinned "
        "in requirements.txt on purpose, paste the dict below as GOLDEN_SHA256 (tests/test_synthetic.py) and "
        "rerun the pipeline: data/synthetic in dvc.lock changes with it. If not, the generator's bytes now depend "
        f"on something they should not (CPU, library version: {versions}).\nGOLDEN_SHA256 = {digests!r}"
    )


def test_bytes_do_not_depend_on_numpys_cpu_specific_kernels(tmp_path: Path) -> None:
    """numpy picks its exp/log/sin/power kernels by CPU (AVX-512, AVX2...); its baseline kernels give the same files."""
    from numpy._core import _multiarray_umath as umath

    targets = [t for t in umath.__cpu_dispatch__ if umath.__cpu_features__.get(t)]
    if not targets:
        pytest.skip("this CPU runs numpy's baseline kernels only")
    _generate(tmp_path / "native", seed=GOLDEN_SEED, params=GOLDEN)
    code = (
        "from pathlib import Path; from tests.test_synthetic import GOLDEN, GOLDEN_SEED, _generate; "
        f"_generate(Path({str(tmp_path / 'baseline')!r}), seed=GOLDEN_SEED, params=GOLDEN)"
    )
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(targets)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)
    assert _digests(tmp_path / "baseline") == _digests(tmp_path / "native")
