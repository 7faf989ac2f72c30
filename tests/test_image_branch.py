"""The image branch wired through configs: digits data, views per method, training and evaluation."""
from __future__ import annotations

import os

import pytest
import torch

from avssl.config import build_config, load_config
from avssl.data.datamodule import make_dataset

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")


def _digits_cfg(method: str, tmp_path, **data):
    return build_config({
        "method": {"name": method, "modality": "image", "proj_hidden": 32, "proj_dim": 16},
        "model": {"video": None, "image": {"name": "resnet18", "kwargs": {"base_channels": 8}}},
        "data": {"kind": "image", "train": "digits", "image_size": 16, "batch_size": 32, "num_workers": 0, **data},
        "optim": {"name": "adamw", "lr": 0.002},
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                    "tensorboard": False, "limit_train_batches": 3, "log_every_n_steps": 1},
        "eval": {"modality": "image", "linear_epochs": 20},
        "output_dir": str(tmp_path / method),
    })


def test_digits_views_follow_the_method_recipe(tmp_path):
    ds = make_dataset(_digits_cfg("byol", tmp_path), "train", train=True, needs_audio=False)
    item = ds[0]
    assert len(ds) == 1347 and item["image"].shape == (2, 3, 16, 16)
    swav = _digits_cfg("swav", tmp_path, augment_kwargs={"local_size": 8, "num_local": 3})
    views = make_dataset(swav, "train", train=True, needs_audio=False)[0]["image"]
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 3
    test = make_dataset(swav, "val", train=False, needs_audio=False)
    assert len(test) == 450 and test[0]["image"].shape == (3, 16, 16)


def test_augment_kwargs_that_do_not_fit_the_recipe_name_the_key(tmp_path):
    cfg = _digits_cfg("swav", tmp_path, augment_kwargs={"min_scale": 0.3})
    with pytest.raises(ValueError, match="data.augment_kwargs"):
        make_dataset(cfg, "train", train=True, needs_audio=False)


def test_image_method_trains_and_its_encoder_is_evaluated(tmp_path):
    from avssl.engine import fit
    from avssl.eval import evaluate

    cfg = _digits_cfg("simclr", tmp_path)
    ckpt = fit(cfg, resume=False)
    rows = evaluate(cfg, ckpt, protocols=("knn",), modality="image", progress=False)
    assert rows[0]["modality"] == "image" and 0.0 <= rows[0]["video_top1"] <= 1.0
    # 450 held-out digits, 10 classes: even a briefly trained encoder's kNN is far above chance.
    assert rows[0]["video_top1"] > 0.3


def test_random_init_needs_the_modality_encoder_in_the_config(tmp_path):
    from avssl.eval import encoder_from

    cfg = _digits_cfg("simclr", tmp_path)
    assert encoder_from(cfg, None, "image").out_dim == 64
    with pytest.raises(ValueError, match="model.video"):
        encoder_from(cfg, None, "video")


@pytest.mark.parametrize("name", ["simclr", "moco", "byol", "simsiam", "barlow_twins", "vicreg", "swav"])
def test_shipped_recipes_build_their_method(name):
    from avssl.methods import build_method

    for path, modality in ((f"pretrain/{name}_resnet18_image.yaml", "image"), (f"pretrain/{name}_r2plus1d_video.yaml", "video")):
        cfg = load_config(os.path.join(CONFIGS, path))
        assert cfg.method.name == name and cfg.method.modality == modality
        if modality == "video":
            assert cfg.data.views == 2  # positives = two clips of one video
    small = load_config(os.path.join(CONFIGS, "demo", "digits_base.yaml"), [f"method.name={name}"])
    method = build_method(name, small)
    assert method.encoder_for("image").out_dim == 256
