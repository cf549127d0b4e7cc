import json
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf

from birdpipe.common.params import DataParams
from birdpipe.data.ingest import IngestError, find_candidates, ingest, read_metadata
from tests.conftest import chirp, write_bad_files, write_mp2_tone, write_signal_problems


def run(source, **overrides):
    params = DataParams(source=str(source), **overrides)
    return ingest(find_candidates(params.source, params), params, workers=1, progress=False)


def test_species_folders_in_every_format(species_folder):
    manifest, report = run(species_folder)
    assert report["recordings"] == 12 and report["species"] == 3 and report["skipped_count"] == 0
    assert set(manifest["label"]) == {"Alpha_one", "Beta_two", "Gamma_three"}
    assert set(manifest["sample_rate"]) == {16000, 22050, 32000}
    assert {p.rsplit(".", 1)[1] for p in manifest["path"]} == {"wav", "flac", "mp3", "ogg"}
    assert manifest["id"].is_unique
    assert report["imbalance_ratio"] == pytest.approx(5 / 3, abs=1e-3)


def test_bad_files_are_reported_by_path_and_skipped(species_folder):
    expected = write_bad_files(species_folder / "Beta_two")
    _manifest, report = run(species_folder)
    assert report["recordings"] == 12
    skipped = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in report["skipped"]}
    assert set(skipped) == set(expected)
    for name, reason in expected.items():
        assert reason in skipped[name]
    json.dumps(report)  # the report is plain JSON


def test_every_decodable_format_is_ingested_and_other_audio_is_reported(species_folder):
    folder = species_folder / "Gamma_three"
    for ext, fmt, subtype, rate in (
        (".aiff", "AIFF", None, 44100), (".opus", "OGG", "OPUS", 48000), (".caf", "CAF", None, 22050),
        (".au", "AU", None, 16000), (".sd2", "SD2", None, 22050), (".W64", "W64", None, 22050),
    ):  # fmt: skip
        sf.write(folder / f"new{ext}", chirp(2.0, rate, 2500, 4500, seed=len(ext)), rate, format=fmt, subtype=subtype)
    write_mp2_tone(folder / "new.mp2", 2.0)
    unsupported = ["Gamma_three/deep/new.m4a", "Gamma_three/new.AAC", "Gamma_three/new.wma", "Gamma_three/new.webm"]
    for name in unsupported:
        (species_folder / name).parent.mkdir(exist_ok=True)
        (species_folder / name).write_bytes(b"\x00\x00\x00\x20ftypM4A " + bytes(64))
    (folder / ".DS_Store").write_bytes(b"Bud1" + bytes(60))
    (folder / "._new.aiff").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # macOS resource fork: not audio
    (folder / ".trash").mkdir()
    (folder / ".trash" / "old.wav").write_bytes(b"deleted")
    (folder / "notes.txt").write_text("not audio, not reported")
    manifest, report = run(species_folder)
    assert report["recordings"] == 12 + 7 and report["files_found"] == 12 + 7 + 4
    new = {p.rsplit(".", 1)[1] for p in manifest["path"] if "/new." in p}
    assert new == {"aiff", "opus", "caf", "au", "sd2", "W64", "mp2"}  # sd2's ._new.sd2 fork is read, not listed
    skipped = {item["path"].split("recordings/", 1)[1]: item["reason"] for item in report["skipped"]}
    assert sorted(skipped) == sorted(unsupported)  # hidden files and notes.txt: not a word
    for name, reason in skipped.items():
        suffix = Path(name).suffix.lower()
        assert reason.startswith(f"unsupported format ({suffix}; convert to one of: .wav .flac .ogg .mp3 ")
    assert report["skipped_by_reason"] == {"unsupported format": 4}


def test_a_folder_of_unsupported_audio_only_says_why_nothing_is_usable(tmp_path):
    (tmp_path / "Alpha_one").mkdir()
    (tmp_path / "Alpha_one" / "a.m4a").write_bytes(b"m4a")
    with pytest.raises(IngestError, match=r"no usable recordings .* \(skipped: 1 unsupported format\)"):
        run(tmp_path)


def test_metadata_pointing_at_unsupported_audio_says_so(tmp_path):
    sf.write(tmp_path / "100.flac", chirp(2, 22050, 1000, 3000), 22050)
    (tmp_path / "a.m4a").write_bytes(b"m4a")
    (tmp_path / "XC300.wma").write_bytes(b"wma")
    pd.DataFrame({"path": ["100.flac", "a.m4a"], "label": ["x", "x"]}).to_csv(tmp_path / "m.csv", index=False)
    xeno_canto = {"id": ["100", "300"], "gen": ["Vireo"] * 2, "sp": ["latimeri"] * 2}  # files found by id
    pd.DataFrame(xeno_canto).to_csv(tmp_path / "xc.csv", index=False)
    for source, name in (("m.csv", "a.m4a"), ("xc.csv", "XC300.wma")):
        _manifest, report = run(tmp_path / source)
        assert report["recordings"] == 1
        (item,) = report["skipped"]
        assert item["path"].endswith(name) and item["reason"].startswith("unsupported format")


def test_non_finite_dc_and_clipped_recordings_are_reported(species_folder):
    expected = write_signal_problems(species_folder / "Beta_two")
    _manifest, report = run(species_folder)
    assert report["recordings"] == 13  # the clipped one is kept
    skipped = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in report["skipped"]}
    assert set(skipped) == set(expected)
    for name, reason in expected.items():
        assert skipped[name].startswith(reason)
    assert report["skipped_by_reason"] == {"constant signal": 1, "non-finite samples": 2}
    (warning,) = report["warnings"]
    assert warning["path"].endswith("Beta_two/clipped.wav") and report["warning_count"] == 1
    assert 0.05 < warning["clipped_fraction"] < 0.5
    assert warning["warning"].startswith(f"clipped: {warning['clipped_fraction']:.2%} of samples at or above 0.999")
    json.dumps(report)


def test_a_clipping_warning_does_not_stop_ingest(species_folder):
    write_signal_problems(species_folder / "Beta_two")
    for name in ("inf.wav", "nan.wav", "dc.wav"):
        (species_folder / "Beta_two" / name).unlink()
    _manifest, report = run(species_folder, on_bad_file="error")
    assert report["recordings"] == 13 and report["warning_count"] == 1 and report["skipped_count"] == 0


def test_on_bad_file_error_stops_with_the_whole_list(species_folder):
    write_bad_files(species_folder / "Beta_two")
    with pytest.raises(IngestError) as error:
        run(species_folder, on_bad_file="error")
    message = str(error.value)
    assert "4 recording(s) cannot be used" in message
    for name in ("truncated.mp3", "empty.wav", "notes.wav", "silence.flac"):
        assert name in message


def test_byte_identical_duplicates_are_skipped(species_folder):
    first = species_folder / "Alpha_one" / "Alpha_one_0.wav"
    (species_folder / "Alpha_one" / "copy.wav").write_bytes(first.read_bytes())
    _manifest, report = run(species_folder)
    assert report["recordings"] == 12
    assert any("byte-identical duplicate" in item["reason"] for item in report["skipped"])


def test_explicit_csv_relative_paths_and_extra_columns(xc_clips):
    manifest, report = run(xc_clips / "metadata.csv")
    assert report["recordings"] == 12 and report["species"] == 4
    for column in ("recordist", "date", "license", "quality", "xc_id", "english_name"):
        assert column in manifest.columns
    assert manifest["id"].str.startswith("XC").all()
    assert manifest.loc[manifest["id"] == "XC171401", "duration_s"].item() == pytest.approx(1.42, abs=0.01)


def test_a_folder_holding_metadata_csv_is_read_as_that_csv_and_a_bare_csv_warns(xc_clips, capsys):
    from_folder, _ = run(xc_clips)  # the folder: DVC hashes the table and every recording under it
    assert capsys.readouterr().err == ""
    from_table, _ = run(xc_clips / "metadata.csv")
    assert "tracks its bytes but not the recordings" in capsys.readouterr().err
    assert from_folder["label"].tolist() == from_table["label"].tolist()
    assert from_folder["recordist"].tolist() == from_table["recordist"].tolist()  # the CSV's columns, not folders


def test_birdclef_csv(tmp_path):
    (tmp_path / "train_audio" / "amecro").mkdir(parents=True)
    for i in range(2):
        sf.write(tmp_path / "train_audio" / "amecro" / f"XC{i}.ogg", chirp(2, 32000, 1000, 3000, seed=i), 32000)
    pd.DataFrame(
        {"primary_label": ["amecro"] * 2, "filename": ["amecro/XC0.ogg", "amecro/XC1.ogg"], "rating": [4.5, 3.0]}
    ).to_csv(tmp_path / "train_metadata.csv", index=False)
    frame = pd.read_csv(tmp_path / "train_metadata.csv")
    frame["filename"] = "train_audio/" + frame["filename"]
    frame.to_csv(tmp_path / "train_metadata.csv", index=False)
    manifest, _ = run(tmp_path / "train_metadata.csv")
    assert list(manifest["label"]) == ["amecro", "amecro"] and "rating" in manifest.columns


def test_xeno_canto_api_csv(tmp_path):
    (tmp_path / "Vireo_latimeri").mkdir()
    sf.write(tmp_path / "Vireo_latimeri" / "XC100.mp3", chirp(2, 22050, 1000, 3000), 22050)
    sf.write(tmp_path / "200.mp3", chirp(2, 22050, 2000, 4000), 22050)
    table = pd.DataFrame(
        {
            "id": ["100", "200"],
            "gen": ["Vireo", "Vireo"],
            "sp": ["latimeri", "latimeri"],
            "rec": ["A. Recordist", "B. Recordist"],
            "q": ["A", "B"],
            "date": ["2020-01-01", "2021-02-02"],
            "file-name": ["XC100-something.mp3", ""],
        }
    )
    table.to_csv(tmp_path / "xc.csv", index=False)
    candidates = read_metadata(tmp_path / "xc.csv", DataParams(source=str(tmp_path / "xc.csv")))
    assert [c.label for c in candidates] == ["Vireo_latimeri"] * 2
    manifest, report = run(tmp_path / "xc.csv")
    assert report["recordings"] == 2
    assert set(manifest["recordist"]) == {"A. Recordist", "B. Recordist"}
    assert set(manifest["quality"]) == {"A", "B"}


def test_unknown_csv_and_missing_source_give_clear_errors(tmp_path):
    (tmp_path / "odd.csv").write_text("a,b\n1,2\n")
    with pytest.raises(IngestError, match="cannot tell which columns"):
        run(tmp_path / "odd.csv")
    with pytest.raises(IngestError, match="does not exist"):
        run(tmp_path / "nowhere")
    with pytest.raises(IngestError, match=r"data\.label_column 'species_name' is not a column"):
        run(tmp_path / "odd.csv", label_column="species_name", path_column="a")


def test_a_relative_source_in_a_temporary_experiment_copy_asks_for_an_absolute_path(tmp_path, monkeypatch):
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "standalone" / "tmp1234"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    with pytest.raises(IngestError, match=r"temporary copy of the repository.*absolute path"):
        run("../recordings/metadata.csv")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(IngestError, match="does not exist") as error:
        run("../recordings/metadata.csv")
    assert "temporary copy" not in str(error.value)


def test_missing_files_in_a_csv_are_reported(tmp_path):
    pd.DataFrame({"path": ["gone.wav"], "label": ["x"]}).to_csv(tmp_path / "m.csv", index=False)
    sf.write(tmp_path / "here.wav", chirp(2, 22050, 1000, 2000), 22050)
    pd.DataFrame({"path": ["gone.wav", "here.wav"], "label": ["x", "x"]}).to_csv(tmp_path / "m.csv", index=False)
    _manifest, report = run(tmp_path / "m.csv")
    assert report["recordings"] == 1
    assert report["skipped"][0]["reason"] == "file not found"
