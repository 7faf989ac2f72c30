"""The method bases: what they build from a config, the audio-visual embedding pass, extra objectives handed
in, pretext tasks as methods without a second registration, and packages that import on their own."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tiny import tiny_config

from avssl.eval.features import extract_features
from avssl.methods import METHODS, build_method, method_class


@pytest.mark.slow
def test_the_method_base_and_the_pretext_package_each_import_alone():
    # An import cycle shows as an ImportError on a partly initialised module, depending on what comes first:
    # each in a fresh interpreter (run side by side).
    runs = [subprocess.Popen([sys.executable, "-c", f"import {m}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for m in ("avssl.methods.base", "avssl.pretext")]
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err


def test_pretext_tasks_are_methods_without_a_registration_of_their_own():
    from avssl.methods.pretext import PretextMethod
    from avssl.pretext import available_pretext_tasks

    tasks = available_pretext_tasks()
    assert set(tasks) <= set(METHODS.names()) and not set(tasks) & set(METHODS._builders)
    assert all(method_class(t) is PretextMethod for t in tasks)
    with pytest.raises(KeyError, match="unknown method 'rotaton'.*rotation"):
        method_class("rotaton")


def test_extra_objectives_are_handed_in_by_build_method():
    from avssl.methods.supervised import Supervised

    cfg = tiny_config("supervised", extra_objectives={"rotation": {"weight": 0.5}})
    assert list(build_method("supervised", cfg).extra_objectives) == ["rotation"]
    with pytest.raises(ValueError, match="method.extra_objectives is set.*build_method"):
        Supervised(cfg)  # built by hand without them: an error, not a silently missing objective
    assert len(Supervised(tiny_config("supervised")).extra_objectives) == 0


def test_multi_view_heads_and_criterion_come_from_the_config_keys():
    m = build_method("simclr", tiny_config("simclr", "image", proj_layers=3, proj_batch_norm=False, proj_last_bn=True,
                                           proj_last_bn_affine=False, temperature=0.3))
    layers = list(m.projector.layers)
    linears = [x for x in layers if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [(m.encoder.out_dim, 32), (32, 32), (32, 16)]
    assert isinstance(layers[-1], nn.BatchNorm1d) and not layers[-1].affine
    assert sum(isinstance(x, nn.BatchNorm1d) for x in layers) == 1  # only the last: proj_batch_norm is off
    assert m.criterion.temperature == 0.3 and not hasattr(m, "predictor")
    byol = build_method("byol", tiny_config("byol", "image"))
    assert (byol.predictor.in_dim, byol.predictor.hidden_dim, byol.predictor.out_dim) == (16, 16, 16)


def _av_items(n: int = 5, views: int = 2):
    g = torch.Generator().manual_seed(0)
    return [{"video": torch.randn(views, 3, 4, 16, 16, generator=g), "audio": torch.randn(views, 1, 16, 16, generator=g),
             "index": i} for i in range(n)]


def test_embed_dataset_gives_the_normalised_view_mean_of_embed_in_index_order():
    torch.manual_seed(0)
    m = build_method("xmodal_nce", tiny_config("xmodal_nce", {"data.num_workers": 0})).train()
    items = _av_items()
    shuffled = [items[i] for i in (3, 0, 4, 1, 2)]
    got = m.embed_dataset(shuffled, batch_size=2)
    assert m.training and m.video_encoder.training  # training flags restored
    assert got["index"].tolist() == [0, 1, 2, 3, 4]
    m.eval()
    with torch.no_grad():
        for i, item in enumerate(items):
            zv, za = m.embed(item["video"], item["audio"])  # the item's two views as a batch of two
            assert torch.allclose(got["video"][i], F.normalize(zv.mean(0), dim=0), atol=1e-5)
            assert torch.allclose(got["audio"][i], F.normalize(za.mean(0), dim=0), atol=1e-5)
    raw = m.embed_dataset(items, ("audio",), project=False, normalize=False, batch_size=5)
    assert set(raw) == {"audio", "index"} and raw["audio"].shape == (5, m.audio_encoder.out_dim)
    with torch.no_grad():
        assert torch.allclose(raw["audio"][2], m.audio_encoder(items[2]["audio"]).mean(0), atol=1e-5)


def test_audio_clusters_features_come_from_the_same_pass(monkeypatch):
    m = build_method("audio_clusters", tiny_config("audio_clusters"))
    items = _av_items(4, views=1)
    from avssl.data import datamodule

    monkeypatch.setattr(datamodule, "make_dataset", lambda cfg, part, train, needs_audio: items)
    feats = m.audio_features()
    with torch.no_grad():
        direct = F.normalize(m.audio_encoder.eval()(torch.cat([it["audio"] for it in items])), dim=1)
    assert torch.allclose(feats, direct, atol=1e-5)


def test_extract_features_runs_several_modalities_in_one_pass():
    class Counting(list):
        passes = 0

        def __iter__(self):
            Counting.passes += 1
            return super().__iter__()

    g = torch.Generator().manual_seed(0)
    batches = Counting({"video": torch.randn(2, 3, 3, 4, 8, 8, generator=g), "audio": torch.randn(2, 3, 1, 8, 8,
                        generator=g), "index": torch.tensor([2 * i, 2 * i + 1])} for i in range(2))
    video, audio = nn.Sequential(nn.Flatten(), nn.LazyLinear(4)), nn.Sequential(nn.Flatten(), nn.LazyLinear(5))
    out = extract_features({"video": video, "audio": audio}, batches, views="mean", progress=False)
    assert Counting.passes == 1 and set(out["features"]) == {"video", "audio"}
    assert out["features"]["video"].shape == (4, 4) and out["features"]["audio"].shape == (4, 5)
    alone = extract_features(audio, batches, modality="audio", views="mean", progress=False)
    assert torch.allclose(alone["features"], out["features"]["audio"]) and out["index"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="views='mean'"):
        extract_features({"video": video, "audio": audio},
                         [{"video": torch.randn(2, 3, 3, 4, 8, 8), "audio": torch.randn(2, 1, 8, 8)}], progress=False)


def test_old_names_keep_working_for_one_release():
    import importlib
    import inspect

    import avssl.engine
    import avssl.eval
    import avssl.eval.plots
    import avssl.pretext

    with pytest.warns(DeprecationWarning, match="avssl.runner is deprecated"):
        runner = importlib.reload(importlib.import_module("avssl.runner"))
    assert (runner.fit, runner.load_method, runner.with_overrides, runner.incompatible_keys) == (
        avssl.engine.fit, avssl.engine.load_method, avssl.engine.with_overrides, avssl.engine.incompatible_keys)
    assert runner.cma_figure is avssl.eval.plots.cma_figure and runner.encoder_from is avssl.eval.encoder_from
    assert inspect.signature(runner.evaluate).parameters["protocols"].default == ("linear", "knn")
    with pytest.warns(DeprecationWarning, match="moved to avssl.pretext.build_pretext_task"):
        from avssl.methods.pretext import build_pretext_task
    assert build_pretext_task is avssl.pretext.build_pretext_task
