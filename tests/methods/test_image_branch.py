"""The image branch wired through configs: digits data, views per method, training and evaluation."""
from __future__ import annotations

import os

import pytest
import torch

from tiny import tiny_config

from avssl.config import load_config
from avssl.data.datamodule import make_dataset

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


# The digits set with small images, a short CPU run and a quick probe (method sizes from tiny_config).
DIGITS = {"model.image.kwargs.base_channels": 8, "data.kind": "image", "data.train": "digits", "data.image_size": 16,
          "data.batch_size": 32, "data.num_workers": 0, "optim": {"name": "adamw", "lr": 0.002},
          "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "progress_bar": False, "tensorboard": False,
                      "limit_train_batches": 3, "log_every_n_steps": 1},
          "eval": {"modality": "image", "linear_epochs": 20}}


def test_digits_views_follow_the_method_recipe(tmp_path):
    ds = make_dataset(tiny_config("byol", "image", {**DIGITS, "output_dir": str(tmp_path)}), "train", train=True,
                      needs_audio=False)
    item = ds[0]
    assert len(ds) == 1347 and item["image"].shape == (2, 3, 16, 16)
    swav = tiny_config("swav", "image", {**DIGITS, "output_dir": str(tmp_path),
                                   "data.augment_kwargs": {"local_size": 8, "num_local": 3}})
    views = make_dataset(swav, "train", train=True, needs_audio=False)[0]["image"]
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)] * 3
    test = make_dataset(swav, "val", train=False, needs_audio=False)
    assert len(test) == 450 and test[0]["image"].shape == (3, 16, 16)


def test_the_view_recipe_is_the_methods_own_unless_the_config_names_one(tmp_path, monkeypatch):
    from avssl.data.datamodule import default_augment
    from avssl.data.image_transforms import available_image_augments
    from avssl.methods import available_methods, method_class
    from avssl.methods.simclr import SimCLR
    from avssl.methods.views import MultiViewMethod

    # Each multi-view method declares its paper's recipe; every other method takes SimCLR's views.
    for name in available_methods():
        recipe = method_class(name).augment
        assert recipe in available_image_augments()
        assert recipe == (name if issubclass(method_class(name), MultiViewMethod) else "simclr"), name

    def recipe_of(cfg):  # BYOL's pair: view 1 always blurred, never solarised; SimCLR's: both views alike
        views = make_dataset(cfg, "train", train=True, needs_audio=False).transform.augments
        return "byol" if (views[0].blur_prob, views[1].solarize_prob) == (1.0, 0.2) else "simclr"

    byol = tiny_config("byol", "image", {**DIGITS, "output_dir": str(tmp_path)})
    assert default_augment(byol) == "byol" and recipe_of(byol) == "byol"
    assert recipe_of(tiny_config("byol", "image", {**DIGITS, "output_dir": str(tmp_path), "data.augment": "simclr"})) \
        == "simclr"  # the config's data.augment wins
    # The default comes from the method's class, not from its name.
    monkeypatch.setattr(SimCLR, "augment", "byol")
    assert recipe_of(tiny_config("simclr", "image", {**DIGITS, "output_dir": str(tmp_path)})) == "byol"


def test_augment_kwargs_that_do_not_fit_the_recipe_name_the_key(tmp_path):
    cfg = tiny_config("swav", "image", {**DIGITS, "output_dir": str(tmp_path), "data.augment_kwargs": {"min_scale": 0.3}})
    with pytest.raises(ValueError, match="data.augment_kwargs"):
        make_dataset(cfg, "train", train=True, needs_audio=False)


def test_image_method_trains_and_its_encoder_is_evaluated(tmp_path):
    from avssl.engine import fit
    from avssl.eval import evaluate

    cfg = tiny_config("simclr", "image", {**DIGITS, "output_dir": str(tmp_path / "simclr")})
    ckpt = fit(cfg, resume=False)
    rows = evaluate(cfg, ckpt, protocols=("knn",), modality="image", progress=False)
    assert rows[0]["modality"] == "image" and 0.0 <= rows[0]["video_top1"] <= 1.0
    # 450 held-out digits, 10 classes: even a briefly trained encoder's kNN is far above chance.
    assert rows[0]["video_top1"] > 0.3


def test_random_init_needs_the_modality_encoder_in_the_config(tmp_path):
    from avssl.eval import encoder_from

    cfg = tiny_config("simclr", "image", {**DIGITS, "output_dir": str(tmp_path / "simclr")})
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
