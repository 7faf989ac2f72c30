"""Manifests held as columns: every column and odd paths round-trip, the block reader agrees with the csv
module to the bit, errors still name file and line, a row costs tens of bytes, and forked loader workers
read the rows without copying them."""
from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import random

import numpy as np
import pytest

import media
from avssl.data import VideoDataset
from avssl.data import manifest_table
from avssl.data.manifest import COLUMNS, ManifestError, ManifestRow, read_manifest, write_manifest
from avssl.data.manifest_table import MISSING_INT, ManifestTable


def _odd_rows(base) -> list:
    """Every column, set and missing, with paths a CSV must quote, non-ASCII names, no extension, several
    dots, leading dots, folders outside the manifest's, and floats that need 17 digits."""
    names = ["a, b.mp4", 'say "hi".mp4', "ünïcødé clip.mkv", "no extension", "archive.tar.gz", ".hidden.mp4",
             "dots..mp4", "end.", "...", "x y z.webm"]
    rows = []
    for i, name in enumerate(names):
        inside = i % 3 != 2
        folder = base / "videos" / ("cat" if i % 2 else "dög") if inside else base.parent / "elsewhere" / "raw"
        stem = os.path.splitext(name)[0]
        rows.append(ManifestRow(
            path=str(folder / name),
            label=["cat", "dög", ""][i % 3],
            label_index=[0, 1, -1][i % 3],
            split=["train", "val", ""][i % 3],
            duration=[2.0333333333333333, 0.1 + 0.2, None, 1e-300, 10.0][i % 5],
            fps=[29.97002997002997, 25.0, None][i % 3],
            width=[42, None, 2147483646][i % 3],
            height=[32, 1, None][i % 3],
            num_frames=[61, None][i % 2],
            has_audio=[True, False, None][i % 3],
            audio_rate=[16000, None, 44100][i % 3],
            audio_path=str(base / "audio" / (stem + ".wav")) if i % 4 else None,
            source=[f"/raw/{name}", str(folder / name), None][i % 3],
            start=[1.5, None, 0.0][i % 3],
            end=[3.5, None, 12.25][i % 3],
        ))
    return rows


def test_round_trip_with_every_column_and_odd_paths(tmp_path):
    base = tmp_path / "corpus"
    rows = _odd_rows(base)
    write_manifest(rows, base / "manifest.csv")
    table = ManifestTable.read_csv(base / "manifest.csv")
    assert len(table) == len(rows) and table.to_rows() == rows
    assert [table[i] for i in range(len(rows))] == rows and table[-1] == rows[-1]
    assert ManifestTable.from_rows(rows).to_rows() == rows
    assert pickle.loads(pickle.dumps(table)).to_rows() == rows
    # The same rows, read from the same place, after the corpus moved.
    os.rename(base, tmp_path / "moved")
    moved = ManifestTable.read_csv(tmp_path / "moved" / "manifest.csv")
    assert moved[0].path == str(tmp_path / "moved" / "videos" / "dög" / "a, b.mp4")
    assert moved[2].path == rows[2].path  # outside the manifest's folder: absolute


def test_columns_selections_and_missing_values(tmp_path):
    rows = _odd_rows(tmp_path / "c")
    table = ManifestTable.from_rows(rows)
    assert table.column("label_index").tolist() == [r.label_index for r in rows]
    assert table.column("width").tolist() == [MISSING_INT if r.width is None else r.width for r in rows]
    assert np.array_equal(np.isnan(table.column("fps")), [r.fps is None for r in rows])
    assert table.column("has_audio").tolist() == [-1 if r.has_audio is None else int(r.has_audio) for r in rows]
    assert table.column("split").tolist() == [r.split for r in rows]
    assert table.column("audio_path").tolist() == [r.audio_path for r in rows]
    val = table.take(table.where("split", "val"))
    assert val.to_rows() == [r for r in rows if r.split == "val"]
    assert table[2:7].to_rows() == rows[2:7] and table[[4, 0]].to_rows() == [rows[4], rows[0]]
    assert table.distinct("label") == ["", "cat", "dög"]
    assert not table.where("split", "test").any()
    with pytest.raises(IndexError):
        table[len(rows)]
    with pytest.raises(KeyError, match="no column 'colour'"):
        table.column("colour")


def _random_manifest(path, n: int, seed: int = 0) -> None:
    """A manifest in the regular form (no quoting), written by hand: columns in another order, numbers in
    every spelling a person or a program writes, odd names, folders with ``./``, ``..`` and ``//``."""
    rng = random.Random(seed)
    names = ["a.mp4", "b.tar.gz", "noext", ".hidden", ".hidden.mp4", "..x", "...", "x.", ".x.y", "ü.mp4",
             "a b.mp4", "x..mp4", "#1.avi"]
    folders = ["", "v/", "v/w/", "./v/", "../up/", "/abs/dir/", "v//w/", "/", "v/./x/", "x/../y/"]
    numbers = ["", "10.0", "9.877902", "-0.5", "1e-05", "29.97002997002997", "0.30000000000000004", "3", ".5",
               "7.", "-0", "1234567890.12345", "2.5E+3", "inf"]
    lines = ["source,path,audio_path,label,duration,width,has_audio,fps,start,label_index,num_frames,extra"]
    for _ in range(n):
        folder, name = rng.choice(folders), rng.choice(names)
        video = folder + name
        audio = rng.choice(["", folder.replace("v", "a") + os.path.splitext(name)[0] + ".wav", "other/" + name])
        lines.append(",".join([
            rng.choice(["", video, "/raw/" + name]), video, audio, rng.choice(["", "cat", "dog", "Ünï"]),
            rng.choice(numbers), rng.choice(["", "128", "-3", "2147483646", "0"]),
            rng.choice(["", "true", "false", "True", "1", "no"]), rng.choice(["25.0", "30", "29.97002997002997"]),
            rng.choice(numbers), rng.choice(["-1", "0", "3", "17"]), rng.choice(["", "250", "7"]), "ignored"]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize("block", [manifest_table._BLOCK, 97])  # 97 bytes: lines cut across blocks
def test_block_reader_agrees_with_the_csv_module_to_the_bit(tmp_path, monkeypatch, block):
    n = 3000 if block > 97 else 600
    _random_manifest(tmp_path / "m.csv", n)
    monkeypatch.setattr(manifest_table, "_BLOCK", block)
    base = str(tmp_path)
    fast, header = manifest_table._read_blocks(str(tmp_path / "m.csv"), base)
    assert fast is not None, "a regular file is read in blocks"
    slow, _ = manifest_table._read_with_csv_module(str(tmp_path / "m.csv"), base)
    got, want = fast.to_rows(), slow.to_rows()
    assert len(got) == n
    for a, b in zip(got, want):
        assert a == b
        for col in ("duration", "start", "fps"):  # bit for bit, sign of zero included
            x, y = getattr(a, col), getattr(b, col)
            assert (x is None and y is None) or np.float64(x).tobytes() == np.float64(y).tobytes()


def test_read_manifest_is_the_table_as_rows(tmp_path):
    _random_manifest(tmp_path / "m.csv", 300, seed=1)
    assert read_manifest(tmp_path / "m.csv") == ManifestTable.read_csv(tmp_path / "m.csv").to_rows()


@pytest.mark.parametrize("content,match", [
    ("path,fps\na.mp4,25\nb.mp4,30\nc.mp4,fast\nd.mp4,25\n", r"m.csv:4: column 'fps': 'fast' is not a number"),
    ("path,width\na.mp4,64\nb.mp4,99999999999\n", r"m.csv:3: column 'width': '99999999999' is out of range"),
    ("path,label_index\na.mp4,1\nb.mp4,2.0\n", r"m.csv:3: column 'label_index': '2.0' is not an integer"),
    ("path,has_audio\na.mp4,true\nb.mp4,maybe\n", r"m.csv:3: column 'has_audio': 'maybe' is not true/false"),
    ("path,fps\na.mp4,25\n\nb.mp4,x\n", r"m.csv:4: column 'fps': 'x' is not a number"),  # after a blank line
    ("path,fps\na.mp4,25\n,\n", None),  # an all-empty line is skipped, as a blank one
])
def test_errors_name_file_and_line_whichever_reader_reads(tmp_path, content, match):
    (tmp_path / "m.csv").write_text(content)
    if match is None:
        assert [r.fps for r in ManifestTable.read_csv(tmp_path / "m.csv")] == [25.0]
        return
    with pytest.raises(ManifestError, match=match):
        ManifestTable.read_csv(tmp_path / "m.csv")


def _kinetics_like(path, n: int, first: str = "") -> None:
    """An ``avssl prep`` manifest of a Kinetics-like corpus: 400 classes, every column set (and the line
    ``first`` first, when given)."""
    rng = random.Random(0)
    lines = []
    for i in range(n):
        label = f"class_{rng.randrange(400):03d}"
        split = "train" if rng.random() < 0.9 else "val"
        yid = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") for _ in range(11))
        t0 = rng.randrange(300)
        stem = f"{yid}_{t0:06d}_{t0 + 10:06d}"
        lines.append(",".join([f"videos/{split}/{label}/{stem}.mp4", label, label[6:].lstrip("0") or "0", split,
                               repr(round(rng.uniform(9.5, 10.0), 6)), "25.0", str(rng.choice([170, 227, 128])),
                               "128", "250", "true", "44100", f"audio/{split}/{label}/{stem}.wav",
                               f"/data/kinetics/{split}/{label}/{stem}.mp4", f"{t0}.0", f"{t0 + 10}.0"]))
    lines.sort()  # as avssl prep writes them: by path
    path.write_text("\n".join([",".join(COLUMNS)] + ([first] if first else []) + lines) + "\n")


def test_a_row_costs_tens_of_bytes_not_hundreds(tmp_path):
    n = 20_000
    _kinetics_like(tmp_path / "manifest.csv", n)
    table = ManifestTable.read_csv(tmp_path / "manifest.csv")
    assert len(table) == n and table[123].path.startswith(str(tmp_path / "videos"))
    rows = table.to_rows()
    # The three paths of a row share one stem; the numbers are codes into their few distinct values.
    assert table.nbytes < 100 * n
    # What goes to a worker started by spawn: a list of row objects takes about 300 bytes a row.
    assert len(pickle.dumps(table)) < 100 * n < len(pickle.dumps(rows)) / 3


def _private_growth(dataset, conn) -> None:
    """In a forked child: private memory (kB) gained by reading every row of ``dataset``."""
    def private_kb() -> int:
        with open("/proc/self/smaps_rollup") as f:
            return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty")))

    before = private_kb()
    total = 0
    for i in range(len(dataset.rows)):
        total += len(dataset.rows[i].path)
    conn.send((private_kb() - before, total))


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux's smaps_rollup")
def test_forked_workers_read_the_rows_without_copying_them(tmp_path):
    """A loader worker forked from the main process touches every row in an epoch: row objects would be copied
    page by page as their reference counts change; columns are only read."""
    n = 150_000
    media.write_video(str(tmp_path / "videos" / "train" / "one.mp4"), num_frames=4, fps=10)
    _kinetics_like(tmp_path / "manifest.csv", n, first="videos/train/one.mp4,a,0,train,0.4,10.0,64,48,4,true,16000,,,,")
    ds = VideoDataset(str(tmp_path / "manifest.csv"), audio=False)
    assert len(ds) == n + 1
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    child = ctx.Process(target=_private_growth, args=(ds, there))
    child.start()
    growth_kb, total = here.recv()
    child.join(60)
    assert total == sum(len(r.path) for r in ds.rows)
    assert growth_kb < 8 * 1024, f"the worker copied {growth_kb / 1024:.0f} MB of the parent's rows"
