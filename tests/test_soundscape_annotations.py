"""Soundscape annotations (Raven tables, annotations.csv) become checked events, a val/test split and segment truth.

The soundscapes are real Xeno-canto clips (tests/data/xc_clips) laid on silence, written as wav or flac.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdpipe.common.errors import PipelineError
from birdpipe.soundscapes.annotations import read_soundscapes, summary_lines, write_annotations_csv
from birdpipe.soundscapes.segments import segment_scores, segment_table, segment_truth, window_segments

XC_CLIPS = Path(__file__).parent / "data" / "xc_clips"
RATE = 22050
META = pd.read_csv(XC_CLIPS / "metadata.csv")
SPECIES = sorted(META["label"].unique())  # Crotophaga_ani, Melanerpes_..., Melopyrrha_..., Vireo_latimeri
NAMES = {row.label: {"scientific_name": row.scientific_name, "english_name": row.english_name}
         for row in META.drop_duplicates("label").itertuples()}  # fmt: skip
RAVEN_HEADER = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies"


@functools.cache
def clip(label: str) -> np.ndarray:
    path = sorted((XC_CLIPS / "audio" / label).glob("*.ogg"))[0]
    return sf.read(path, dtype="float32")[0]


def soundscape(path: Path, seconds: float, calls: tuple[tuple[str, float], ...] = ()) -> Path:
    """``seconds`` of near-silence with a real clip of each (label, start) laid in."""
    signal = np.random.default_rng(len(path.name)).normal(0, 1e-3, round(seconds * RATE)).astype(np.float32)
    for label, start in calls:
        piece = clip(label)[: signal.size - round(start * RATE)]
        signal[round(start * RATE) : round(start * RATE) + piece.size] += piece
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, signal, RATE)
    return path


def raven(path: Path, rows: list[tuple], integer_frequencies: bool = False, species_header: str = "Species") -> Path:
    """A Raven selection table as Raven writes it: tab-separated, CRLF line ends; rows are (begin, end, species)."""
    low, high = (1000, 8000) if integer_frequencies else (1000.0, 8000.5)
    lines = [RAVEN_HEADER.replace("Species", species_header)]
    lines += [f"{i}\tSpectrogram 1\t1\t{begin}\t{end}\t{low}\t{high}\t{name}" for i, (begin, end, name) in
              enumerate(rows, 1)]  # fmt: skip
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return path


def annotations_csv(folder: Path, rows: list[str], header: str = "file,start_s,end_s,label") -> None:
    (folder / "annotations.csv").write_text("\n".join([header, *rows]) + "\n")


def events(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["file", "start_s", "end_s", "label"]).astype({"start_s": float, "end_s": float})


def test_raven_tables_beside_their_audio_are_read_with_names_in_any_form(tmp_path):
    soundscape(tmp_path / "site_a.wav", 20.0, (("Vireo_latimeri", 2.0), ("Melanerpes_portoricensis", 10.0)))
    raven(
        tmp_path / "site_a.Table.1.selections.txt",
        [(2.0, 6.5, "Vireo latimeri"), (10.0, 15.7, "Puerto Rican Woodpecker"), (16.25, 17.5, "Crotophaga_ani")],
    )
    soundscape(tmp_path / "day2" / "site_b.flac", 15.0, (("Melopyrrha_portoricensis", 1.0),))
    raven(
        tmp_path / "day2" / "site_b.BirdNET.selection.table.txt",  # integers: crowsetta's schema refuses them
        [(1, 4, "Melopyrrha portoricensis_Puerto Rican Bullfinch")],
        integer_frequencies=True,
    )
    soundscape(tmp_path / "site_c.wav", 12.0)
    raven(tmp_path / "site_c.selections.txt", [])  # header only: a bird-free file

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    expected = events(
        ("day2/site_b.flac", 1, 4, "Melopyrrha_portoricensis"),
        ("site_a.wav", 2.0, 6.5, "Vireo_latimeri"),
        ("site_a.wav", 10.0, 15.7, "Melanerpes_portoricensis"),
        ("site_a.wav", 16.25, 17.5, "Crotophaga_ani"),
    )
    pd.testing.assert_frame_equal(found.events, expected)
    files = found.files.set_index("file")
    assert list(files.index) == ["day2/site_b.flac", "site_a.wav", "site_c.wav"]
    assert files["duration_s"].to_dict() == {"day2/site_b.flac": 15.0, "site_a.wav": 20.0, "site_c.wav": 12.0}
    assert files["events"].to_dict() == {"day2/site_b.flac": 1, "site_a.wav": 3, "site_c.wav": 0}
    assert files.loc["day2/site_b.flac", "path"] == str(tmp_path / "day2" / "site_b.flac")
    report = found.report
    assert report["format"] == "raven" and report["bird_free_files"] == ["site_c.wav"]
    assert report["events"] == 4 and report["events_per_species"] == dict.fromkeys(SPECIES, 1)
    assert not report["unreadable_tables"] and not report["dropped_events"] and summary_lines(report) == []
    json.dumps(report)


def test_the_species_column_is_a_parameter_and_bad_tables_are_reported_not_raised(tmp_path):
    soundscape(tmp_path / "good.wav", 10.0)
    raven(tmp_path / "good.selections.txt", [(1.0, 2.0, "Vireo latimeri")], species_header="Common Name")
    soundscape(tmp_path / "garbage.wav", 10.0)
    (tmp_path / "garbage.selections.txt").write_bytes(b"\x00\x01 not a table\nat all\n")
    soundscape(tmp_path / "nameless.wav", 10.0)  # a selection without a species: dropped and reported
    raven(tmp_path / "nameless.selections.txt", [(1.0, 2.0, "Vireo latimeri"), (3.0, 4.0, "")],
          species_header="Common Name")  # fmt: skip
    soundscape(tmp_path / "other.wav", 10.0)  # the default column, not the one asked for
    raven(tmp_path / "other.selections.txt", [(1.0, 2.0, "Vireo latimeri")])

    found = read_soundscapes(tmp_path, SPECIES, NAMES, species_column="Common Name")

    assert list(found.events["file"]) == ["good.wav", "nameless.wav"]
    columns = "['Selection', 'View', 'Channel', 'Begin Time (s)', 'End Time (s)', 'Low Freq (Hz)', 'High Freq (Hz)', "
    assert found.report["unreadable_tables"] == {
        "garbage.selections.txt": "column 'Begin Time (s)' not in dataframe. Columns in dataframe: "
        "['\\x00\\x01 not a table']",
        "other.selections.txt": f"column 'Common Name' not in dataframe. Columns in dataframe: {columns}'Species']",
    }
    assert found.report["dropped_events"] == {"no species name": {"events": 1, "files": ["nameless.wav"]}}
    assert found.report["audio_without_annotations"] == []  # garbage.wav has a table, an unreadable one
    assert list(found.files["file"]) == ["good.wav", "nameless.wav"]
    assert "2 unreadable selection tables, audio left out: garbage.selections.txt (column" in "".join(
        summary_lines(found.report)
    )


def test_header_only_tables_are_bird_free_unless_they_lack_the_species_column(tmp_path):
    for name in ("quiet", "wrong", "busy"):
        soundscape(tmp_path / f"{name}.wav", 8.0)
    raven(tmp_path / "quiet.selections.txt", [])
    raven(tmp_path / "wrong.selections.txt", [], species_header="Annotation")
    raven(tmp_path / "busy.selections.txt", [(1.0, 2.0, "Crotophaga ani")])

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    assert found.report["bird_free_files"] == ["quiet.wav"]
    assert found.report["unreadable_tables"] == {"wrong.selections.txt": "no column 'Species' (and no rows)"}
    assert list(found.files["file"]) == ["busy.wav", "quiet.wav"]
    assert list(found.files["events"]) == [1, 0]


def test_an_annotations_csv_is_read_with_empty_label_rows_as_bird_free_files(tmp_path):
    soundscape(tmp_path / "a.wav", 20.0, (("Vireo_latimeri", 3.0),))
    soundscape(tmp_path / "sub" / "b.flac", 10.0)
    soundscape(tmp_path / "c.wav", 10.0, (("Crotophaga_ani", 1.0),))
    annotations_csv(tmp_path, ["a.wav,3.0,11.3,Puerto Rican Vireo", "./sub/b.flac,,,", "c.wav,1,2.6,crotophaga ani",
                               "a.wav,0.5,1.25,Smooth-billed Ani"])  # fmt: skip

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    expected = events(("a.wav", 0.5, 1.25, "Crotophaga_ani"), ("a.wav", 3.0, 11.3, "Vireo_latimeri"),
                      ("c.wav", 1.0, 2.6, "Crotophaga_ani"))  # fmt: skip
    pd.testing.assert_frame_equal(found.events, expected)
    assert found.report["format"] == "csv" and found.report["bird_free_files"] == ["sub/b.flac"]
    assert list(found.files["file"]) == ["a.wav", "c.wav", "sub/b.flac"]


def test_unknown_species_are_reported_and_kept_out_of_scoring(tmp_path):
    soundscape(tmp_path / "a.wav", 15.0)
    soundscape(tmp_path / "b.wav", 15.0)
    annotations_csv(tmp_path, ["a.wav,1,4,Todus mexicanus", "a.wav,6,8,Vireo latimeri", "b.wav,0,3,Todus mexicanus",
                               "b.wav,11,13,Vireo altiloquus"])  # fmt: skip

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    assert found.report["unknown_species"] == {
        "Todus mexicanus": {"events": 2, "files": ["a.wav", "b.wav"]},
        "Vireo altiloquus": {"events": 1, "files": ["b.wav"]},
    }
    pd.testing.assert_frame_equal(found.events, events(("a.wav", 6.0, 8.0, "Vireo_latimeri")))
    segments = segment_table(found.files, 5.0)
    truth = segment_truth(segments, found.events, SPECIES, 0.25)
    assert truth.sum() == 1 and truth[1, SPECIES.index("Vireo_latimeri")]  # a.wav 5-10 s only
    assert summary_lines(found.report) == [
        "3 events of 2 names outside the label set left out of scoring: Todus mexicanus (2 events in 2 files), "
        "Vireo altiloquus (1 event in 1 file)"
    ]


def test_events_past_the_end_are_clipped_and_impossible_times_dropped(tmp_path):
    soundscape(tmp_path / "a.wav", 20.0)
    soundscape(tmp_path / "b.wav", 6.0)
    annotations_csv(tmp_path, [
        "a.wav,18,25,Vireo latimeri",  # clipped to 20
        "a.wav,10,20.0004,Crotophaga ani",  # within the 1 ms rounding tolerance: clipped, not reported
        "a.wav,20,22,Vireo latimeri",  # starts at the end
        "a.wav,5,5,Vireo latimeri",  # end not after start
        "a.wav,7,6,Vireo latimeri",
        "a.wav,-1,2,Vireo latimeri",
        "a.wav,,3,Vireo latimeri",
        "a.wav,abc,4,Vireo latimeri",
        "a.wav,1,2,",  # no species
        "b.wav,,,",
    ])  # fmt: skip

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    expected = events(("a.wav", 10.0, 20.0, "Crotophaga_ani"), ("a.wav", 18.0, 20.0, "Vireo_latimeri"))
    pd.testing.assert_frame_equal(found.events, expected)
    report = found.report
    assert report["clipped_events"] == {"events": 1, "files": ["a.wav"]}
    assert report["dropped_events"] == {
        "no species name": {"events": 1, "files": ["a.wav"]},
        "missing or negative time": {"events": 3, "files": ["a.wav"]},
        "end not after start": {"events": 2, "files": ["a.wav"]},
        "starts at or after the end of the file": {"events": 1, "files": ["a.wav"]},
    }
    assert json.loads(json.dumps(report))["dropped_events"] == report["dropped_events"]
    lines = summary_lines(report)
    assert "1 event past the file's end clipped to its duration in a.wav" in lines
    assert "2 events dropped (end not after start) in a.wav" in lines and len(lines) == 5


def test_tables_without_audio_and_audio_without_annotations_are_reported(tmp_path):
    raven_folder, csv_folder = tmp_path / "raven", tmp_path / "csv"
    for folder in (raven_folder, csv_folder):
        soundscape(folder / "a.wav", 8.0)
        soundscape(folder / "b.wav", 8.0)
        soundscape(folder / "lonely.wav", 8.0)  # not annotated: unannotated is not bird-free
    raven(raven_folder / "a.selections.txt", [(1.0, 2.0, "Vireo latimeri")])
    raven(raven_folder / "b.selections.txt", [])
    raven(raven_folder / "gone.Table.1.selections.txt", [(1.0, 2.0, "Vireo latimeri")])
    (raven_folder / "broken.wav").write_text("not audio\n")
    raven(raven_folder / "broken.selections.txt", [(1.0, 2.0, "Vireo latimeri")])
    annotations_csv(csv_folder, ["a.wav,1,2,Vireo latimeri", "b.wav,,,", "gone.wav,1,2,Vireo latimeri"])

    from_raven = read_soundscapes(raven_folder, SPECIES, NAMES)
    from_csv = read_soundscapes(csv_folder, SPECIES, NAMES)

    assert from_raven.report["annotations_without_audio"] == ["gone.Table.1.selections.txt"]
    assert from_csv.report["annotations_without_audio"] == ["gone.wav"]
    for found in (from_raven, from_csv):
        assert found.report["audio_without_annotations"] == ["lonely.wav"]
        assert list(found.files["file"]) == ["a.wav", "b.wav"]
        assert len(found.events) == 1
    assert list(from_raven.report["unreadable_audio"]) == ["broken.wav"]
    assert from_raven.report["unreadable_audio"]["broken.wav"].startswith("cannot be decoded")
    assert any(line.startswith("1 unreadable audio file left out: broken.wav (cannot be decoded")
               for line in summary_lines(from_raven.report))  # fmt: skip


def test_a_table_belongs_to_the_audio_beside_it_with_the_longest_stem(tmp_path):
    soundscape(tmp_path / "dawn.wav", 8.0)
    soundscape(tmp_path / "dawn.2.wav", 8.0)
    soundscape(tmp_path / "dusk.wav", 8.0)
    raven(tmp_path / "dawn.Table.1.selections.txt", [(1.0, 2.0, "Vireo latimeri")])
    raven(tmp_path / "dawn.2.Table.1.selections.txt", [(3.0, 4.0, "Crotophaga ani")])  # not dawn.wav's
    (tmp_path / "tables").mkdir()
    raven(tmp_path / "tables" / "dusk.selections.txt", [(1.0, 2.0, "Vireo latimeri")])  # not beside dusk.wav

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    expected = events(("dawn.2.wav", 3.0, 4.0, "Crotophaga_ani"), ("dawn.wav", 1.0, 2.0, "Vireo_latimeri"))
    pd.testing.assert_frame_equal(found.events, expected)
    assert found.report["annotations_without_audio"] == ["tables/dusk.selections.txt"]
    assert found.report["audio_without_annotations"] == ["dusk.wav"]


def test_duplicates_are_removed_and_overlapping_events_of_a_species_merged(tmp_path):
    soundscape(tmp_path / "a.wav", 30.0, (("Vireo_latimeri", 2.0),))
    soundscape(tmp_path / "b.wav", 10.0)
    raven(tmp_path / "a.Table.1.selections.txt", [
        (2.0, 4.0, "Vireo latimeri"), (2.0, 4.0, "Vireo latimeri"),  # exact duplicate
        (3.0, 6.0, "Puerto Rican Vireo"),  # overlaps: the same species by its English name
        (6.0, 7.0, "Vireo_latimeri"),  # touches
        (8.0, 9.0, "Vireo latimeri"),  # apart
        (3.0, 5.0, "Crotophaga ani"),  # overlaps another species: kept apart
    ])  # fmt: skip
    raven(tmp_path / "a.Table.2.selections.txt", [(8.5, 12.0, "Vireo latimeri")])  # a second table of a.wav
    raven(tmp_path / "b.selections.txt", [(1.0, 2.0, "Vireo latimeri")])

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    expected = events(("a.wav", 2.0, 7.0, "Vireo_latimeri"), ("a.wav", 3.0, 5.0, "Crotophaga_ani"),
                      ("a.wav", 8.0, 12.0, "Vireo_latimeri"), ("b.wav", 1.0, 2.0, "Vireo_latimeri"))  # fmt: skip
    pd.testing.assert_frame_equal(found.events, expected)
    assert found.report["duplicates_removed"] == 1 and found.report["overlaps_merged"] == 3
    assert "1 exact duplicate event removed" in summary_lines(found.report)


def test_val_and_test_sub_folders_give_the_split(tmp_path):
    for name in ("val/a.wav", "val/deep/b.wav", "test/c.wav"):
        soundscape(tmp_path / name, 6.0)
    annotations_csv(tmp_path, ["val/a.wav,1,2,Vireo latimeri", "val/deep/b.wav,,,", "test/c.wav,,,"])

    found = read_soundscapes(tmp_path, SPECIES, NAMES, seed=3)

    assert found.files.set_index("file")["split"].to_dict() == {"test/c.wav": "test", "val/a.wav": "val",
                                                                "val/deep/b.wav": "val"}  # fmt: skip
    assert found.report["split_by"] == "folders" and found.report["files"] == {"val": 2, "test": 1}
    soundscape(tmp_path / "stray.wav", 6.0)
    annotations_csv(tmp_path, ["val/a.wav,1,2,Vireo latimeri", "test/c.wav,,,", "stray.wav,,,"])
    with pytest.raises(PipelineError, match=r"stray\.wav lie outside them"):
        read_soundscapes(tmp_path, SPECIES, NAMES)
    annotations_csv(
        tmp_path, ["val/a.wav,1,2,Vireo latimeri,test", "test/c.wav,,,,test"], "file,start_s,end_s,label,split"
    )
    with pytest.raises(PipelineError, match=r"split column contradicts the val/ and test/ sub-folders for val/a\.wav"):
        read_soundscapes(tmp_path, SPECIES, NAMES)


def test_a_split_column_gives_the_split_and_wrong_values_stop(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        soundscape(tmp_path / name, 6.0)
    header = "file,start_s,end_s,label,split"
    annotations_csv(tmp_path, ["a.wav,1,2,Vireo latimeri,test", "a.wav,3,4,Vireo latimeri,test", "b.wav,,,,val",
                               "c.wav,,,,Test"], header)  # fmt: skip

    found = read_soundscapes(tmp_path, SPECIES, NAMES)

    assert found.files["split"].tolist() == ["test", "val", "test"] and found.report["split_by"] == "column"
    annotations_csv(tmp_path, ["a.wav,1,2,Vireo latimeri,train", "b.wav,,,,val", "c.wav,,,,dev"], header)
    with pytest.raises(PipelineError, match="split must be val or test, not 'dev', 'train'"):
        read_soundscapes(tmp_path, SPECIES, NAMES)
    annotations_csv(tmp_path, ["a.wav,1,2,Vireo latimeri,val", "a.wav,3,4,Vireo latimeri,test", "b.wav,,,,val"],
                    header)  # fmt: skip
    with pytest.raises(PipelineError, match=r"puts a\.wav in both val and test"):
        read_soundscapes(tmp_path, SPECIES, NAMES)


def test_a_random_split_assigns_whole_files_deterministically(tmp_path):
    names = [f"f{i}.wav" for i in range(7)]
    for name in names:
        soundscape(tmp_path / name, 6.0)
    annotations_csv(tmp_path, [f"{name},1,2,Vireo latimeri" for name in names] + ["f0.wav,3,4,Crotophaga ani"])

    splits = {seed: read_soundscapes(tmp_path, SPECIES, NAMES, seed=seed).files.set_index("file")["split"]
              for seed in range(4)}  # fmt: skip

    again = read_soundscapes(tmp_path, SPECIES, NAMES, seed=2)
    pd.testing.assert_series_equal(again.files.set_index("file")["split"], splits[2])
    assert again.report["split_by"] == "random" and again.report["files"] == {"val": 4, "test": 3}  # round(3.5)
    assert len({tuple(split) for split in splits.values()}) > 1  # the seed matters
    for split in splits.values():
        assert sorted(split.index) == names  # every file once, so never in both
    small = read_soundscapes(tmp_path, SPECIES, NAMES, val_share=0.01).report["files"]
    assert small == {"val": 1, "test": 6}  # at least one file in each split
    annotations_csv(tmp_path, ["f0.wav,1,2,Vireo latimeri"])
    with pytest.raises(PipelineError, match="val and test need a soundscape each"):
        read_soundscapes(tmp_path, SPECIES, NAMES)


def test_both_kinds_of_annotation_or_none_stop(tmp_path):
    soundscape(tmp_path / "a.wav", 6.0)
    with pytest.raises(PipelineError, match="no annotations in"):
        read_soundscapes(tmp_path, SPECIES, NAMES)
    raven(tmp_path / "a.selections.txt", [])
    annotations_csv(tmp_path, ["a.wav,,,"])
    with pytest.raises(PipelineError, match=r"holds both annotations.csv and Raven selection tables .*keep one"):
        read_soundscapes(tmp_path, SPECIES, NAMES)


def test_write_annotations_csv_reads_back_identically(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav"):
        soundscape(tmp_path / name, 12.0)
    files = pd.DataFrame({"file": ["a.wav", "b.wav", "c.wav"], "split": ["val", "test", "test"]})
    written = events(("b.wav", 4.0, 12.0, "Vireo_latimeri"), ("a.wav", 7.25, 9.0, "Crotophaga_ani"),
                     ("a.wav", 1.0, 2.5, "Vireo_latimeri"), ("a.wav", 1.0004, 3.0, "Crotophaga_ani"))  # fmt: skip

    write_annotations_csv(files, written, tmp_path / "annotations.csv")

    assert (tmp_path / "annotations.csv").read_text().splitlines() == [
        "file,start_s,end_s,label,split",
        "a.wav,1.000,2.500,Vireo_latimeri,val",
        "a.wav,1.000,3.000,Crotophaga_ani,val",
        "a.wav,7.250,9.000,Crotophaga_ani,val",
        "b.wav,4.000,12.000,Vireo_latimeri,test",
        "c.wav,,,,test",
    ]
    found = read_soundscapes(tmp_path, SPECIES, NAMES)
    expected = written.round(3).sort_values(["file", "start_s", "end_s"])
    pd.testing.assert_frame_equal(found.events, expected.reset_index(drop=True))
    assert found.files[["file", "split"]].equals(files)
    assert found.report["bird_free_files"] == ["c.wav"] and summary_lines(found.report) == []
    write_annotations_csv(files, written.iloc[:0], tmp_path / "annotations.csv")  # no birds at all
    quiet = read_soundscapes(tmp_path, SPECIES, NAMES)
    assert quiet.events.empty and quiet.report["bird_free_files"] == ["a.wav", "b.wav", "c.wav"]
    assert not segment_truth(segment_table(quiet.files, 5.0), quiet.events, SPECIES, 0.25).any()


def test_segments_cover_each_file_keeping_a_last_partial_segment_of_half_a_segment():
    files = pd.DataFrame({"file": ["a", "b", "c"], "split": ["val", "test", "test"],
                          "duration_s": [12.6, 12.4, 2.0]})  # fmt: skip

    segments = segment_table(files, 5.0)

    assert segments.to_dict("list") == {
        "file": ["a", "a", "a", "b", "b", "c"],
        "split": ["val", "val", "val", "test", "test", "test"],
        "start_s": [0.0, 5.0, 10.0, 0.0, 5.0, 0.0],
        "end_s": [5.0, 10.0, 12.6, 5.0, 10.0, 2.0],
    }


def test_segment_truth_of_a_hand_checked_case():
    files = pd.DataFrame({"file": ["a", "b"], "split": ["val", "val"], "duration_s": [12.6, 10.0]})
    segments = segment_table(files, 5.0)  # a: 0-5, 5-10, 10-12.6; b: 0-5, 5-10
    species = ["A", "B", "C"]
    found = events(
        ("a", 4.7, 6.0, "A"),  # 0.3 s in a0, 1 s in a1
        ("a", 9.8, 11.0, "B"),  # 0.2 s in a1 (too little), 1 s in a2
        ("a", 12.2, 12.6, "C"),  # inside the partial last segment
        ("a", 5.5, 5.6, "C"),  # shorter than min_overlap, wholly inside a1
        ("b", 4.9, 5.1, "B"),  # short and straddling: 0.1 s on each side
        ("b", 0.0, 5.0, "A"),  # ends where b1 begins: not in b1
    )

    truth = segment_truth(segments, found, species, min_overlap_s=0.25)

    assert truth.astype(int).tolist() == [
        [1, 0, 0],  # a 0-5
        [1, 0, 1],  # a 5-10
        [0, 1, 1],  # a 10-12.6
        [1, 0, 0],  # b 0-5
        [0, 0, 0],  # b 5-10
    ]
    loose = segment_truth(segments, found, species, min_overlap_s=0.0)
    assert loose[1, 1] and loose[3, 1] and loose[4, 1] and not loose[4, 0]
    with pytest.raises(ValueError, match="outside the species list: D"):
        segment_truth(segments, events(("a", 1.0, 2.0, "D")), species, 0.25)


def test_windows_go_to_the_segment_holding_their_centre_and_segments_take_the_highest_score():
    files = pd.DataFrame({"file": ["a", "b"], "split": ["val", "val"], "duration_s": [12.6, 7.4]})
    segments = segment_table(files, 5.0)  # a: 0-5, 5-10, 10-12.6; b: 0-5 (its last 2.4 s are dropped)
    window_file = ["a", "a", "a", "a", "a", "b", "b", "z"]
    start = np.array([0.0, 2.5, 5.0, 7.5, 8.0, 0.0, 3.4, 0.0])
    end = np.array([4.0, 6.5, 9.0, 11.5, 11.0, 4.0, 7.4, 4.0])  # centres 2, 4.5, 7, 9.5, 9.5, 2, 5.4, 2

    where = window_segments(segments, window_file, start, end)

    assert where.tolist() == [0, 0, 1, 1, 1, 3, -1, -1]  # b's centre 5.4 lies in the dropped tail; z has no segments
    scores = np.array([[0.1, 0.9], [0.3, 0.2], [0.5, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.7], [0.9, 0.9], [1, 1]])
    pooled = segment_scores(scores, where, segments, window_file, start, end)
    # a 10-12.6 holds no centre: it takes the highest of the windows overlapping it, 7.5-11.5 and 8-11
    np.testing.assert_allclose(pooled, [[0.3, 0.9], [0.5, 0.8], [0.4, 0.8], [0.7, 0.7]])
    keep = np.array([True, True, True, False, False, True, True, True])  # now nothing overlaps a 10-12.6
    with pytest.raises(ValueError, match=r"no window of a overlaps its segment 10-12\.6 s"):
        segment_scores(scores[keep], where[keep], segments, np.array(window_file)[keep], start[keep], end[keep])
