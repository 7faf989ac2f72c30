"""avid_cma started from another checkpoint: banks kept for the same training set, rebuilt otherwise."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from avssl.checkpoint import load_checkpoint
from avssl.config import load_config
from avssl.data.datamodule import make_dataset
from avssl.methods import build_method
from avssl.methods.avid_cma import dataset_fingerprint
from avssl.engine import fit

AVID = {"data.audio": True, "method.proj_hidden": 16, "method.proj_dim": 8, "method.num_negatives": 8,
        "data.test_clips": 1}


def _cfg(corpus, out, method="avid_cma", **extra):
    from tiny import tiny_overrides

    base = AVID if method == "avid_cma" else {k: v for k, v in AVID.items() if k != "method.num_negatives"}
    return load_config(overrides=tiny_overrides(corpus, out, method=method, **{**base, **extra}))


@pytest.fixture(scope="module")
def avid_ckpt(synth_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("avid_src")
    return fit(_cfg(synth_corpus, out), resume=False)


def _fresh(cfg):
    torch.manual_seed(123)
    m = build_method("avid_cma", cfg)
    train = make_dataset(cfg, "train", train=True, needs_audio=True)
    m._build_criterion(len(train))
    return m, train


def test_same_training_set_keeps_the_banks(synth_corpus, tmp_path, avid_ckpt):
    cfg = _cfg(synth_corpus, tmp_path, **{"method.init_from": avid_ckpt})
    m, train = _fresh(cfg)
    assert m.init_from_checkpoint(avid_ckpt, train, dataset_fingerprint(train)) == "kept"
    sd = load_checkpoint(avid_ckpt)["state_dict"]
    assert torch.equal(m.criterion.video_bank.weight, sd["criterion.video_bank.weight"])
    assert torch.equal(m.criterion.audio_bank.weight, sd["criterion.audio_bank.weight"])
    for k, v in m.state_dict().items():  # encoders and heads come from the checkpoint
        if k.split(".")[0] in ("video_encoder", "audio_encoder", "video_head", "audio_head"):
            assert torch.equal(v, sd[k]), k


def test_other_training_set_rebuilds_banks_from_the_encoders(synth_corpus, tmp_path, avid_ckpt):
    # The val videos as a training set: another corpus as far as the banks are concerned.
    cfg = _cfg(synth_corpus, tmp_path, **{"method.init_from": avid_ckpt, "data.train_split": "val"})
    m, train = _fresh(cfg)
    fp = dataset_fingerprint(train)
    sd = load_checkpoint(avid_ckpt)["state_dict"]
    assert fp != int(sd["bank_fingerprint"])
    assert m.init_from_checkpoint(avid_ckpt, train, fp) == "rebuilt (they index another training set)"
    assert int(m.bank_fingerprint) == fp
    # Independently: each video's centre clip through the loaded encoders and heads, normalised.
    m.eval()
    ds = make_dataset(cfg, "train", train=False, needs_audio=True)
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            v, a = item["video"], item["audio"]
            v = v if v.dim() == 4 else v[0]
            a = a if a.dim() == 3 else a[0]
            zv, za = m.embed(v[None], a[None])
            assert torch.allclose(m.criterion.video_bank.weight[item["index"]], F.normalize(zv, dim=1)[0], atol=1e-5)
            assert torch.allclose(m.criterion.audio_bank.weight[item["index"]], F.normalize(za, dim=1)[0], atol=1e-5)


def test_checkpoint_without_banks_rebuilds_and_errors_are_clear(synth_corpus, tmp_path):
    src = fit(_cfg(synth_corpus, tmp_path / "x", method="xmodal_nce", **{"method.proj_dim": 8}), resume=False)
    cfg = _cfg(synth_corpus, tmp_path / "y", **{"method.init_from": src})
    m, train = _fresh(cfg)
    assert m.init_from_checkpoint(src, train, dataset_fingerprint(train)) == "rebuilt (it has no memory banks)"
    with pytest.raises(FileNotFoundError, match="init_from.*nowhere.ckpt"):
        m.init_from_checkpoint(str(tmp_path / "nowhere.ckpt"), train, 1)
    wide = _cfg(synth_corpus, tmp_path / "z", **{"model.video.kwargs": "{base_channels: 16}"})
    w, _ = _fresh(wide)
    with pytest.raises(ValueError, match="video_encoder of .* does not fit"):
        w.init_from_checkpoint(src, train, 1)


def test_cma_from_epoch_zero_on_a_rebuilt_bank(synth_corpus, tmp_path, avid_ckpt):
    cfg = _cfg(synth_corpus, tmp_path, **{"method.init_from": avid_ckpt, "data.train_split": "val",
                                          "method.cma_start_epoch": 0, "method.cma_k": 2,
                                          "method.cma_num_positive_negatives": 2})
    ckpt = fit(cfg, resume=False)
    sd = load_checkpoint(ckpt)["state_dict"]
    pos = sd["criterion.positives"]
    assert (pos >= 0).all() and int(sd["positives_epoch"]) == 0
    assert (pos != torch.arange(len(pos))[:, None]).all()


def test_checkpoints_without_a_fingerprint_still_load(avid_ckpt, tmp_path):
    from avssl.engine import load_method

    state = load_checkpoint(avid_ckpt)
    del state["state_dict"]["bank_fingerprint"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    assert int(load_method(str(old)).bank_fingerprint) == 0
