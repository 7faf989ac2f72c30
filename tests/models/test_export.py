"""``avssl export``: an encoder of a checkpoint as a plain state dict (+ FILE.json) that other code loads, and
fine-tuning (``avssl finetune --checkpoint``, ``method.init_checkpoint``) from exported and published files."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn

from avssl.apps.cli import main
from avssl.config import load_config
from avssl.models import build_encoder, export_weights
from avssl.engine import fit
from tiny import tiny_overrides
from modelcheck import randomise_bn  # noqa: E402

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/: shared helpers and scripts
CONFIG = os.path.join(os.path.dirname(HERE), "configs", "demo", "supervised_tiny.yaml")


def prefixed(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def pretrained(synth_corpus, tmp_path_factory):
    """A real one-epoch audio-visual pretraining checkpoint (video_encoder r3d_tiny, audio_encoder audio_conv_tiny)."""
    out = tmp_path_factory.mktemp("pretrain")
    return str(fit(load_config(overrides=tiny_overrides(synth_corpus, out, method="xmodal_nce"))))


def test_pretrain_export_finetune(pretrained, synth_corpus, tmp_path, capsys):
    out = tmp_path / "video.pth"
    assert main(["export", pretrained, "--out", str(out)]) == 2
    assert error_line(capsys) == (f"avssl: error: {pretrained} holds several encoders (audio_encoder, video_encoder): "
                                  "choose one with --part")
    assert not out.exists()

    assert main(["export", pretrained, "--out", str(out), "--part", "video_encoder"]) == 0
    weights = torch.load(out, weights_only=True)
    ckpt = torch.load(pretrained, weights_only=True)
    assert equal_states(weights, prefixed(ckpt["state_dict"], "video_encoder."))
    meta = json.loads((tmp_path / "video.pth.json").read_text())
    assert meta == {"encoder": "r3d_tiny", "kwargs": {"base_channels": 8}, "format": "avssl", "part": "video_encoder",
                    "out_dim": 64, "tensors": len(weights), "avssl_version": "0.1.0",
                    "source_checkpoint": os.path.abspath(pretrained), "global_step": ckpt["global_step"]}

    # Fine-tune from the exported file; with the encoder frozen for the one (warm-up) epoch its weights are
    # exactly the exported ones at the end.
    run = tmp_path / "finetune"
    overrides = tiny_overrides(synth_corpus, run, **{"method.classifier_warmup_epochs": 1})
    assert main(["finetune", CONFIG, *overrides, "--checkpoint", str(out)]) == 0
    tuned = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert tuned["hyper_parameters"]["config"]["method"]["init_checkpoint"] == str(out)
    assert equal_states(prefixed(tuned["state_dict"], "video_encoder."), weights)

    # The audio encoder has no torchvision counterpart: one line, nothing written.
    assert main(["export", pretrained, "--out", str(tmp_path / "a.pth"), "--part", "audio_encoder",
                 "--format", "torchvision"]) == 2
    assert error_line(capsys) == ("avssl: error: audio_conv_tiny has no torchvision counterpart; it can be written as: "
                                  "avssl, avid_cma")
    assert main(["export", pretrained, "--out", str(tmp_path / "a.pth"), "--part", "key_encoder"]) == 2
    assert error_line(capsys) == (f"avssl: error: {pretrained} has no part 'key_encoder'; its encoders: audio_encoder, "
                                  "video_encoder")
    assert not (tmp_path / "a.pth").exists() and not (tmp_path / "a.pth.json").exists()


def test_torchvision_export_loads_into_torchvision_with_the_same_features(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    enc = build_encoder("r3d_18")
    randomise_bn(enc)
    ckpt = tmp_path / "run.ckpt"  # what avssl pretrain writes, reduced to what export reads
    torch.save({"state_dict": {f"video_encoder.{k}": v for k, v in enc.state_dict().items()}, "global_step": 5,
                "hyper_parameters": {"config": {"method": {"name": "simclr", "modality": "video"},
                                                "model": {"video": {"name": "r3d_18", "kwargs": None}}}}}, ckpt)
    out = tmp_path / "r3d_18-torchvision.pth"
    assert main(["export", str(ckpt), "--out", str(out), "--format", "torchvision"]) == 0
    ref = torchvision.models.video.r3d_18()
    result = ref.load_state_dict(torch.load(out, weights_only=True), strict=False)
    assert result.missing_keys == ["fc.weight", "fc.bias"] and result.unexpected_keys == []
    ref.fc = nn.Identity()
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ref.eval()(x), enc.eval()(x), rtol=1e-5, atol=1e-5)
    assert json.loads((tmp_path / "r3d_18-torchvision.pth.json").read_text())["format"] == "torchvision"

    # A file that is not an avssl training checkpoint.
    assert main(["export", str(out), "--out", str(tmp_path / "again.pth")]) == 2
    assert error_line(capsys) == (f"avssl: error: {out} is not an avssl training checkpoint (it needs a state_dict and "
                                  "the stored config): export reads what avssl pretrain / finetune write")


def test_finetuning_starts_from_published_weights(synth_corpus, tmp_path, capsys):
    from avssl.methods import build_method

    torch.manual_seed(0)
    src = build_encoder("r3d_tiny", base_channels=8)
    randomise_bn(src)
    published = tmp_path / "r3d_tiny-torchvision.pth"
    torch.save({"fc.weight": torch.randn(400, 64), "fc.bias": torch.zeros(400), **export_weights(src, "torchvision")},
               published)
    for spec in (f"torchvision:{published}", str(published)):  # named, and detected
        cfg = load_config(overrides=tiny_overrides(synth_corpus, tmp_path / "run",
                                                   **{"method.init_checkpoint": spec, "num_classes": 4}))
        method = build_method("supervised", cfg)
        assert equal_states(method.video_encoder.state_dict(), src.state_dict())
    # A mistyped format is a one-line usage error of avssl finetune.
    with pytest.raises(SystemExit) as stop:
        main(["finetune", CONFIG, "--checkpoint", f"torchvison:{published}"])
    assert stop.value.code == 2
    assert "argument --checkpoint: unknown weights format 'torchvison'" in capsys.readouterr().err
