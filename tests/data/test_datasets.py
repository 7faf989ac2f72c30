"""VideoDataset: item layout, views, skipping of unreadable files, reproducibility, loaders."""
from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

import media
from avssl.data import TooManyDecodeErrors, VideoDataset, load_rows
from avssl.data.datamodule import ShardedIterable


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """{class}/*.mp4: classes a (3 videos) and b (3 videos, one without audio)."""
    root = tmp_path_factory.mktemp("tree")
    for c in ("a", "b"):
        for i in range(3):
            media.write_video(str(root / c / f"{c}{i}.mp4"), num_frames=30, fps=10, width=80, height=64,
                              audio=not (c == "b" and i == 2))
    return root


def small(source, **kw):
    kw.setdefault("num_frames", 4)
    kw.setdefault("clip_duration", 1.0)
    kw.setdefault("crop_size", 48)
    return VideoDataset(str(source), **kw)


def test_item_layout(tree):
    ds = small(tree, audio=True, audio_duration=1.0)
    assert len(ds) == 6 and ds.classes == ["a", "b"]
    item = ds[0]
    assert item["video"].shape == (3, 4, 48, 48) and item["video"].dtype == torch.float32
    assert item["audio"].dim() == 3 and item["audio"].shape[0] == 1  # 1×F×T'
    assert item["label"] == 0 and item["index"] == 0 and item["has_audio"] is True
    assert 0.0 <= item["start"] <= 2.0
    labels = [ds[i]["label"] for i in range(len(ds))]
    assert labels == [0, 0, 0, 1, 1, 1]


def test_video_without_audio_gives_silent_features_and_flag(tree):
    ds = small(tree, audio=True, audio_duration=1.0)
    idx = [i for i, r in enumerate(ds.rows) if r.path.endswith("b2.mp4")][0]
    item = ds[idx]
    assert item["has_audio"] is False
    assert item["audio"].shape == ds[0]["audio"].shape  # batches still collate
    assert torch.isfinite(item["audio"]).all()


def test_no_audio_key_when_audio_is_off(tree):
    item = small(tree, audio=False)[0]
    assert "audio" not in item and "has_audio" not in item


def test_several_views(tree):
    ds = small(tree, audio=True, audio_duration=1.0, num_clips=2)
    item = ds[1]
    assert item["video"].shape == (2, 3, 4, 48, 48)
    assert item["audio"].shape[0] == 2
    test = small(tree, audio=False, sampling="uniform", num_clips=3,
                 video_transform=__import__("avssl.data.transforms", fromlist=["x"]).build_video_transform(
                     train=False, crop_size=48, test_crops=3))
    assert test[0]["video"].shape == (9, 3, 4, 48, 48)  # 3 clips × 3 crops, clip-major


def test_uniform_views_are_deterministic_and_cover_the_video(tree):
    ds = small(tree, audio=False, sampling="uniform", num_clips=3)
    a, b = ds[0], ds[0]
    assert torch.equal(a["video"], b["video"])
    # the first view starts at 0 and the last ends at the end (3 s video, 1 s clips)
    assert a["start"].tolist() == pytest.approx([0.0, 1.0, 2.0])


def test_random_views_reproducible_per_seed_and_epoch(tree):
    ds = small(tree, audio=True, audio_duration=1.0, seed=3)
    first = ds[2]
    again = ds[2]
    assert torch.equal(first["video"], again["video"]) and torch.equal(first["audio"], again["audio"])
    other_seed = small(tree, audio=False, seed=4)
    ds.set_epoch(1)
    starts = {round(ds[2]["start"], 4)}
    for e in range(2, 8):
        ds.set_epoch(e)
        starts.add(round(ds[2]["start"], 4))
    assert len(starts) > 1  # the window moves between epochs
    assert any(other_seed[i]["start"] != small(tree, audio=False, seed=3)[i]["start"] for i in range(6))


def test_unreadable_file_is_skipped_logged_once_and_counted(tree, tmp_path, caplog):
    root = tmp_path / "tree"
    shutil.copytree(tree, root)
    with open(root / "a" / "broken.mp4", "w") as f:
        f.write("not a video")
    ds = small(root, audio=False, max_failure_fraction=0.9)
    bad = [i for i, r in enumerate(ds.rows) if r.path.endswith("broken.mp4")][0]
    with caplog.at_level(logging.WARNING, logger="avssl.data.datasets"):
        item = ds[bad]
        item2 = ds[bad]
    assert item["index"] != bad and item2["index"] != bad  # replaced by another video
    assert item["video"].shape == (3, 4, 48, 48)
    assert ds.num_failures == 2
    warnings = [r for r in caplog.records if "broken.mp4" in r.getMessage()]
    assert len(warnings) == 1  # logged once, with its path


def test_too_many_failures_stop_with_a_clear_message(tmp_path):
    root = tmp_path / "bad"
    os.makedirs(root / "x")
    media.write_video(str(root / "x" / "good.mp4"), num_frames=20, fps=10)
    for i in range(6):
        with open(root / "x" / f"bad{i}.mp4", "w") as f:
            f.write("junk")
    ds = small(root, audio=False, max_failure_fraction=0.1, min_failures_before_stop=3)
    with pytest.raises(TooManyDecodeErrors, match="max_failure_fraction=0.1"):
        for i in range(len(ds)):
            ds[i]


def test_all_files_bad_stops(tmp_path):
    root = tmp_path / "allbad"
    os.makedirs(root / "x")
    for i in range(2):
        with open(root / "x" / f"bad{i}.mp4", "w") as f:
            f.write("junk")
    with pytest.raises(TooManyDecodeErrors, match="unreadable"):
        small(root, audio=False, max_failure_fraction=1.0)[0]


def test_sources_recognised_by_load_rows(tree, tmp_path):
    rows = load_rows(str(tree))
    assert len(rows) == 6
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n" +
                   "".join(f"{c},{c}{i},0,3,train\n" for c in "ab" for i in range(3)))
    krows = load_rows(str(csv), video_root=str(tree))
    assert sorted(os.path.basename(r.path) for r in krows) == sorted(os.path.basename(r.path) for r in rows)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_rows(str(tmp_path / "nowhere.csv"))
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="cannot tell"):
        load_rows(str(tmp_path / "x.json"))


def test_split_filter(tree, tmp_path):
    csv = tmp_path / "k.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n" +
                   "a,a0,0,3,train\na,a1,0,3,val\nb,b0,0,3,train\nb,b1,0,3,val\n")
    ds = VideoDataset(str(csv), video_root=str(tree), split="val", num_frames=2, clip_duration=0.5, crop_size=32, audio=False)
    assert len(ds) == 2
    with pytest.raises(ValueError, match="no videos"):
        VideoDataset(str(csv), video_root=str(tree), split="test", audio=False)


def test_dataloader_with_workers_returns_every_index(tree):
    ds = small(tree, audio=True, audio_duration=1.0)
    loader = DataLoader(ds, batch_size=3, num_workers=2)
    seen = []
    for batch in loader:
        assert batch["video"].shape == (3, 3, 4, 48, 48)
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(6))


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (2, 3), (3, 2)])
def test_sharded_iterable_yields_each_item_once_across_ranks_and_workers(world, workers):
    data = list(range(23))
    seen = []
    for rank in range(world):
        it = ShardedIterable(data, rank=rank, world_size=world, shuffle=True, seed=1)
        for w in range(workers):
            seen += [data[i] for i in it.shard_indices(w, workers)]
    assert sorted(seen) == data
