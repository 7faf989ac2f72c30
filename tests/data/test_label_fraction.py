"""``data.label_fraction``: a class-balanced, seeded, nested subset of the training videos, for low-label
fine-tuning; and ``avssl extract`` over any dataset kind (``--modality image`` on the digits)."""
from __future__ import annotations

from collections import Counter

import pytest
import torch

from avssl.apps.cli import main
from avssl.config import ConfigError, load_config
from avssl.data.datamodule import make_dataset
from avssl.data.datasets import label_subset
from avssl.data.manifest import ManifestRow
from tiny import tiny_overrides


def _rows(counts):
    return [ManifestRow(path=f"/v/{name}_{i}.mp4", label=name, label_index=k, split="train")
            for k, (name, n) in enumerate(counts.items()) for i in range(n)]


def test_each_class_keeps_its_share_chosen_by_the_seed_and_smaller_shares_nest():
    rows = _rows({"a": 10, "b": 20, "c": 1}) + [ManifestRow(path="/v/unlabelled.mp4")]
    tenth = label_subset(rows, 0.1, seed=0)
    assert Counter(r.label for r in tenth) == {"a": 1, "b": 2, "c": 1}  # round(0.1 n), at least one per class
    half = label_subset(rows, 0.5, seed=0)
    assert Counter(r.label for r in half) == {"a": 5, "b": 10, "c": 1}
    assert {r.path for r in tenth} <= {r.path for r in half}
    assert label_subset(rows, 1.0, seed=0) == rows[:-1]  # every labelled video, in order
    assert label_subset(rows, 0.5, seed=0) == half  # the seed decides
    assert [r.path for r in half] == sorted((r.path for r in half), key=[r.path for r in rows].index)
    others = [label_subset(rows, 0.5, seed=s) for s in (1, 2, 3)]
    assert any({r.path for r in o} != {r.path for r in half} for o in others)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        label_subset(rows, 0.0)


def test_label_fraction_subsets_the_training_videos_only(synth_corpus, tmp_path):
    cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{"data.label_fraction": 0.5}))
    train = make_dataset(cfg, "train", train=True, needs_audio=False)
    assert Counter(train.labels) == {0: 3, 1: 3, 2: 3, 3: 3}  # 6 training videos per class, half of each
    assert len(make_dataset(cfg, "val", train=False, needs_audio=False)) == 8  # held-out videos untouched
    assert set(train.classes) == set(make_dataset(load_config(overrides=tiny_overrides(synth_corpus, tmp_path)),
                                                  "train", train=True, needs_audio=False).classes)
    with pytest.raises(ConfigError, match=r"invalid value for 'data.label_fraction': 0.0 \(must be > 0 and <= 1"):
        load_config(overrides=tiny_overrides(synth_corpus, tmp_path, **{"data.label_fraction": 0.0}))


def test_extract_writes_image_features_with_a_name_per_item(tmp_path):
    out = tmp_path / "digits.pt"
    assert main(["extract", "demo/digits_simclr.yaml", "model.image.kwargs.base_channels=4", "data.num_workers=0",
                 "--modality", "image", "--part", "val", "--output", str(out)]) == 0
    feats = torch.load(out, weights_only=True)
    assert feats["features"].shape == (450, 32) and feats["labels"].shape == (450,)  # the 450 held-out digits
    assert sorted(Counter(feats["labels"].tolist())) == list(range(10))
    assert feats["paths"][:2] == ["DigitsDataset[0]", "DigitsDataset[1]"] and len(feats["paths"]) == 450
