"""The contract every method keeps, checked over ``available_methods()``: it builds from a config, takes a
training step on a batch of its layout, survives a checkpoint round trip, and names its encoders."""
from __future__ import annotations

import pytest
import torch
from tiny import SHAPES, tiny_batch, tiny_config

from avssl.checkpoint import load_checkpoint
from avssl.engine import load_method
from avssl.methods import available_methods, build_method, method_class
from avssl.methods.audiovisual import AudioVisualMethod


def _expected_encoders(method) -> set:
    # Audio-visual methods have a video and an audio encoder; every other method the one it trains.
    return {"video", "audio"} if isinstance(method, AudioVisualMethod) else {method.cfg.method.modality}


def _trained(method) -> torch.nn.Module:
    return method.encoder_for("video" if isinstance(method, AudioVisualMethod) else method.cfg.method.modality)


@pytest.mark.parametrize("name", available_methods())
def test_every_method_builds_steps_round_trips_and_names_its_encoders(name, tmp_path):
    cfg = tiny_config(name, **({"num_data": 4} if name == "avid_cma" else {}))
    torch.manual_seed(0)
    method = build_method(name, cfg).train()
    assert isinstance(method, method_class(name)) and method.cfg.method.name == name
    if name == "audio_clusters":  # its targets come from clustering the training set's sound, up front
        method.pseudo_labels = torch.tensor([0, 1, 2, 0])

    # One training step on a tiny batch of the layout the method reads: a finite loss that moves the encoder.
    batch = tiny_batch(method)
    trained = _trained(method)
    before = [p.detach().clone() for p in trained.parameters()]
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    out = method.compute_loss(batch)
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"]), out
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trained.parameters())), f"{name} left its encoder as it was"

    # Checkpoint round trip through the one checkpoint reader (weights_only): the same state, the same method.
    ckpt = {"state_dict": method.state_dict(), "hyper_parameters": dict(method.hparams)}
    method.on_save_checkpoint(ckpt)
    path = tmp_path / "method.ckpt"
    torch.save(ckpt, path)
    stored = load_checkpoint(str(path))["state_dict"]
    back = load_method(str(path))
    assert type(back) is type(method)
    state = back.state_dict()
    assert set(state) == set(method.state_dict()) == set(stored)
    assert all(torch.equal(state[k], v) for k, v in method.state_dict().items())

    # encoder_for: the encoders it has give B×out_dim features; any other modality is an error.
    has = _expected_encoders(method)
    for modality in ("video", "audio", "image"):
        if modality in has:
            enc = back.encoder_for(modality)
            assert enc(torch.randn(2, *SHAPES[modality])).shape == (2, enc.out_dim)
        else:
            with pytest.raises(ValueError, match=f"no {modality} encoder"):
                back.encoder_for(modality)
