"""Manifest files and the corpus readers (folder trees, Kinetics CSVs, UCF-101 / HMDB-51 split files)."""
from __future__ import annotations

import os
import shutil

import pytest

from avssl.data.manifest import (
    COLUMNS,
    ManifestError,
    ManifestRow,
    load_class_index,
    read_kinetics_csv,
    read_manifest,
    read_ucf_hmdb_splits,
    scan_folder,
    write_manifest,
)


def touch(path) -> str:
    """Readers only look at names, so empty files stand in for videos."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return str(path)


def rel_rows(rows, root):
    return [(os.path.relpath(r.path, root).replace(os.sep, "/"), r.label, r.label_index, r.split) for r in rows]


# -- folder trees ---------------------------------------------------------------------------------
def test_scan_folder_class_tree(tmp_path):
    for rel in ["zebra/a.mp4", "apple/b.webm", "apple/c.MKV", "mango/d.avi", "mango/e.mov",
                "mango/notes.txt", "mango/thumb.jpg", "mango/.hidden.mp4", ".cache/x.mp4", "loose.mp4"]:
        touch(tmp_path / rel)
    rows = scan_folder(tmp_path)
    assert rel_rows(rows, tmp_path) == [
        ("apple/b.webm", "apple", 0, ""),
        ("apple/c.MKV", "apple", 0, ""),
        ("loose.mp4", "", -1, ""),  # no class folder: unlabelled
        ("mango/d.avi", "mango", 1, ""),
        ("mango/e.mov", "mango", 1, ""),
        ("zebra/a.mp4", "zebra", 2, ""),
    ]
    assert all(os.path.isabs(r.path) and r.source == r.path and r.duration is None for r in rows)


def test_scan_folder_split_tree_and_class_index(tmp_path):
    for rel in ["train/b_class/1.mp4", "train/a_class/2.mp4", "val/a_class/3.mp4", "val/b_class/4.mp4"]:
        touch(tmp_path / "videos" / rel)
    rows = scan_folder(tmp_path / "videos")
    assert rel_rows(rows, tmp_path / "videos") == [
        ("train/a_class/2.mp4", "a_class", 0, "train"),
        ("train/b_class/1.mp4", "b_class", 1, "train"),
        ("val/a_class/3.mp4", "a_class", 0, "val"),
        ("val/b_class/4.mp4", "b_class", 1, "val"),
    ]
    # A class list given by the user wins over name order; a numbered list is 1-based.
    (tmp_path / "classes.txt").write_text("1 b_class\n2 a_class\n3 c_class\n")
    rows = scan_folder(tmp_path / "videos", class_index=tmp_path / "classes.txt")
    assert {r.label: r.label_index for r in rows} == {"b_class": 0, "a_class": 1}
    assert {r.label: r.label_index for r in scan_folder(tmp_path / "videos", class_index=["x", "b_class", "a_class"])} == {
        "b_class": 1,
        "a_class": 2,
    }
    with pytest.raises(ValueError, match="'b_class'"):
        scan_folder(tmp_path / "videos", class_index={"a_class": 0})


def test_load_class_index_forms(tmp_path):
    (tmp_path / "plain.txt").write_text("air drumming\nabseiling\n\n")
    assert load_class_index(tmp_path / "plain.txt") == {"air drumming": 0, "abseiling": 1}
    (tmp_path / "zero.txt").write_text("0 a\n1 b\n")
    assert load_class_index(tmp_path / "zero.txt") == {"a": 0, "b": 1}
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    with pytest.raises(ManifestError, match=r"dup.txt:3: class 'a' listed twice"):
        load_class_index(tmp_path / "dup.txt")


# -- Kinetics -------------------------------------------------------------------------------------
KINETICS_CSV = """label,youtube_id,time_start,time_end,split
abseiling,aaa,10,20,train
air drumming,bbb,0,10,train
abseiling,ccc,5,15,val
abseiling,ddd,30,40,val
air drumming,eee,2,12,train
air drumming,fff,1,11,test
"""


def test_read_kinetics_csv_layouts(tmp_path):
    root = tmp_path / "k400"
    touch(root / "train/abseiling/aaa_000010_000020.mp4")  # {split}/{label}/ trimmed clip
    touch(root / "air_drumming/bbb_000000_000010.webm")  # {label}/ with spaces as underscores
    touch(root / "ccc_000005_000015.mp4")  # flat
    touch(root / "eee.mp4")  # full video: needs the CSV's window
    touch(root / "other/abseiling/aaa_000010_000020.mp4")  # same name elsewhere: the layout match wins
    touch(root / "test/air drumming/fff_000001_000011.mkv")
    (tmp_path / "k.csv").write_text(KINETICS_CSV)
    rows = read_kinetics_csv(tmp_path / "k.csv", root)
    got = {os.path.relpath(r.path, root): (r.label, r.label_index, r.split, r.start, r.end) for r in rows}
    assert got == {
        "train/abseiling/aaa_000010_000020.mp4": ("abseiling", 0, "train", None, None),
        "air_drumming/bbb_000000_000010.webm": ("air drumming", 1, "train", None, None),
        "ccc_000005_000015.mp4": ("abseiling", 0, "val", None, None),
        "eee.mp4": ("air drumming", 1, "train", 2.0, 12.0),
        "test/air drumming/fff_000001_000011.mkv": ("air drumming", 1, "test", None, None),
    }
    # ddd (line 5) has no file: reported, not fatal, and not among the rows.
    assert [(m.line, m.name) for m in rows.missing] == [(5, "ddd")]
    assert "ddd_000030_000040" in rows.missing[0].reason


def test_read_kinetics_csv_errors(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "nocol.csv").write_text("label,youtube_id,time_start,split\nx,aaa,1,train\n")
    with pytest.raises(ManifestError, match=r"nocol.csv:1: missing column.*time_end"):
        read_kinetics_csv(tmp_path / "nocol.csv", tmp_path / "v")
    (tmp_path / "badtime.csv").write_text("label,youtube_id,time_start,time_end,split\nx,aaa,1,2,train\nx,bbb,one,2,train\n")
    with pytest.raises(ManifestError, match=r"badtime.csv:3: time_start/time_end must be numbers"):
        read_kinetics_csv(tmp_path / "badtime.csv", tmp_path / "v")


# -- UCF-101 / HMDB-51 ----------------------------------------------------------------------------
def test_read_ucf_splits(tmp_path):
    root, lists = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    touch(root / "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")
    touch(root / "Archery/v_Archery_g01_c01.mp4")  # prepared copy: found by its stem
    touch(root / "YoYo/v_YoYo_g01_c01.avi")
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 YoYo\n")
    (lists / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g01_c01.avi 2\nArchery/v_Archery_gone.avi 2\n"
    )
    (lists / "testlist01.txt").write_text("YoYo/v_YoYo_g01_c01.avi\n")
    rows = read_ucf_hmdb_splits(lists / "trainlist01.txt", root)
    assert rel_rows(rows, root) == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup", 0, "train"),
        ("Archery/v_Archery_g01_c01.mp4", "Archery", 1, "train"),
    ]
    assert [(m.line, m.name) for m in rows.missing] == [(3, "Archery/v_Archery_gone.avi")]
    test_rows = read_ucf_hmdb_splits(lists / "testlist01.txt", root)
    assert rel_rows(test_rows, root) == [("YoYo/v_YoYo_g01_c01.avi", "YoYo", 2, "test")]  # index from classInd
    # The folder form reads both lists of the fold.
    both = read_ucf_hmdb_splits(lists, root, fold=1)
    assert sorted(r.split for r in both) == ["test", "train", "train"]
    # Without classInd.txt: sorted names of the classes in the file.
    os.remove(lists / "classInd.txt")
    assert [r.label_index for r in read_ucf_hmdb_splits(lists / "testlist01.txt", root)] == [0]


def test_read_hmdb_splits(tmp_path):
    root, splits = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    for rel in ["brush_hair/a.avi", "brush_hair/b.avi", "brush_hair/c.avi", "wave/d.avi", "wave/e.avi"]:
        touch(root / rel)
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "wave_test_split1.txt").write_text("d.avi 2\ne.avi 1\n")
    (splits / "wave_test_split2.txt").write_text("d.avi 1\ne.avi 2\n")
    one = read_ucf_hmdb_splits(splits / "wave_test_split1.txt", root)
    # "wave" sorts after "brush_hair" among the fold's class files, so its index is 1 even alone.
    assert rel_rows(one, root) == [("wave/d.avi", "wave", 1, "test"), ("wave/e.avi", "wave", 1, "train")]
    rows = read_ucf_hmdb_splits(splits, root, fold=1)
    assert rel_rows(rows, root) == [
        ("brush_hair/a.avi", "brush_hair", 0, "train"),
        ("brush_hair/b.avi", "brush_hair", 0, "test"),  # c.avi (0: unused) is left out
        ("wave/d.avi", "wave", 1, "test"),
        ("wave/e.avi", "wave", 1, "train"),
    ]
    (splits / "bad_test_split1.txt").write_text("x.avi 3\n")
    with pytest.raises(ManifestError, match=r"bad_test_split1.txt:1: expected 'video.avi 0\|1\|2'"):
        read_ucf_hmdb_splits(splits, root, fold=1)


def test_split_file_kind_is_checked(tmp_path):
    (tmp_path / "list.txt").write_text("a.avi 1\n")
    with pytest.raises(ValueError, match="not a UCF-101"):
        read_ucf_hmdb_splits(tmp_path / "list.txt", tmp_path)


# -- manifest files -------------------------------------------------------------------------------
def sample_rows(base):
    return [
        ManifestRow(
            path=str(base / "videos" / "cat" / "a, b.mp4"),  # a comma needs CSV quoting
            label="cat",
            label_index=0,
            split="train",
            duration=2.0333333333333333,
            fps=29.97002997002997,
            width=42,
            height=32,
            num_frames=61,
            has_audio=True,
            audio_rate=16000,
            audio_path=str(base / "audio" / "cat" / "a, b.wav"),
            source="/elsewhere/raw/cat/a, b.avi",
            start=1.5,
            end=3.5,
        ),
        ManifestRow(path=str(base / "videos" / "x.mp4"), has_audio=False, source=str(base / "videos" / "x.mp4")),
    ]


def test_manifest_round_trip_and_relative_paths(tmp_path):
    rows = sample_rows(tmp_path / "corpus")
    write_manifest(rows, tmp_path / "corpus" / "manifest.csv")
    text = (tmp_path / "corpus" / "manifest.csv").read_text().splitlines()
    assert text[0] == ",".join(COLUMNS)
    assert text[1].startswith('"videos/cat/a, b.mp4",cat,0,train,')  # relative to the manifest's folder
    assert '"/elsewhere/raw/cat/a, b.avi"' in text[1]  # outside it: absolute
    assert os.listdir(tmp_path / "corpus") == ["manifest.csv"]  # no temporary file left
    assert read_manifest(tmp_path / "corpus" / "manifest.csv") == rows
    # The corpus moves as a whole: relative paths follow it.
    shutil.move(str(tmp_path / "corpus"), str(tmp_path / "moved"))
    moved = read_manifest(tmp_path / "moved" / "manifest.csv")
    assert moved[0].path == str(tmp_path / "moved" / "videos" / "cat" / "a, b.mp4")
    assert moved[0].source == "/elsewhere/raw/cat/a, b.avi"


def test_read_manifest_minimal_columns(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\nv/1.mp4,dog\nv/2.mp4,cat\nv/3.mp4,\n")
    rows = read_manifest(tmp_path / "m.csv")
    assert [(r.label, r.label_index, r.duration, r.has_audio) for r in rows] == [
        ("dog", 1, None, None),
        ("cat", 0, None, None),
        ("", -1, None, None),
    ]
    assert rows[0].path == str(tmp_path / "v" / "1.mp4")


@pytest.mark.parametrize(
    "content,match",
    [
        ("label,duration\ncat,1.0\n", r"m.csv:1: missing column 'path'"),
        ("path,label,fps\na.mp4,cat,25\nb.mp4,cat\n", r"m.csv:3: expected 3 fields \(as in the header\), found 2"),
        ("path,fps\na.mp4,25\nb.mp4,fast\n", r"m.csv:3: column 'fps': 'fast' is not a number"),
        ("path,width\na.mp4,6.4e1\nb.mp4,x\n", r"m.csv:3: column 'width': 'x' is not an integer"),
        ("path,has_audio\na.mp4,maybe\n", r"m.csv:2: column 'has_audio': 'maybe' is not true/false"),
        ("path,label\n,cat\n", r"m.csv:2: empty 'path'"),
        ("", r"m.csv:1: empty file"),
    ],
)
def test_read_manifest_errors_name_file_and_line(tmp_path, content, match):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_write_manifest_replaces_atomically(tmp_path):
    target = tmp_path / "manifest.csv"
    target.write_text("old content\n")
    write_manifest([ManifestRow(path=str(tmp_path / "a.mp4"))], target)
    assert read_manifest(target)[0].path == str(tmp_path / "a.mp4")
    assert sorted(os.listdir(tmp_path)) == ["manifest.csv"]


def test_window_in_path():
    # Unprepared: the row points into the untrimmed source, so the window applies to ``path``.
    raw = ManifestRow(path="/raw/x.mp4", source="/raw/x.mp4", start=3.0, end=5.0)
    assert raw.window_in_path() == (3.0, 5.0)
    # Prepared: ``path`` already holds just the window of ``source``.
    prepared = ManifestRow(path="/out/videos/x.mp4", source="/raw/x.mp4", start=3.0, end=5.0)
    assert prepared.window_in_path() == (None, None)
