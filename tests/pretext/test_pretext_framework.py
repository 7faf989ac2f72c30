"""Pretext tasks as methods of their own and as weighted extra objectives of any method."""
from __future__ import annotations

import pytest
import torch
from tiny import tiny_config

from avssl.data.batch import first_view
from avssl.methods import available_methods, build_method
from avssl.pretext import available_pretext_tasks, build_pretext_task, encoder_out_dim

TASKS = ["temporal_order", "vcop", "tracking_triplet", "rotation", "jigsaw", "relative_position", "pirl"]


def test_every_task_is_registered_as_task_and_method():
    assert set(TASKS) <= set(available_pretext_tasks())
    assert set(TASKS) <= set(available_methods())


def test_unknown_task_and_key_are_named():
    with pytest.raises(KeyError, match="rotaton.*rotation"):
        build_pretext_task("rotaton", 8)
    with pytest.raises(TypeError, match="rotation"):
        build_pretext_task("rotation", 8, no_such_key=1)


def test_meta_device_out_dim_matches_the_built_encoder():
    from avssl.models import build_encoder

    cfg = tiny_config("supervised")
    assert encoder_out_dim(cfg.model.video) == build_encoder("r3d_tiny", base_channels=4).out_dim


def test_first_view_takes_the_first_view_and_checks_shapes():
    x = torch.randn(2, 3, 3, 4, 8, 8)
    assert torch.equal(first_view(x, "video"), x[:, 0])
    assert first_view(x[:, 0], "video") is not None and first_view(x[:, 0], "video").shape == (2, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="B×C×T×H×W"):
        first_view(torch.randn(2, 3, 8), "video")


def test_task_as_method_trains_its_encoder():
    torch.manual_seed(0)
    m = build_method("rotation", tiny_config("rotation", "video"))
    assert m.encoder_for("video") is m.video_encoder
    with pytest.raises(ValueError, match="no audio encoder"):
        m.encoder_for("audio")
    out = m.compute_loss({"video": torch.randn(2, 3, 4, 16, 16)})
    out["loss"].backward()
    assert all(p.grad is not None for p in m.video_encoder.parameters() if p.requires_grad)


def test_extra_objective_adds_its_weighted_loss_to_the_methods_own():
    torch.manual_seed(0)
    plain = build_method("supervised", tiny_config("supervised"))
    torch.manual_seed(0)
    mixed = build_method("supervised", tiny_config("supervised", extra_objectives={"rotation": {"weight": 0.25}}))
    # The extra task's head is part of the model: in the optimiser (parameters) and the checkpoint.
    names = [n for n, _ in mixed.named_parameters()]
    assert any(n.startswith("extra_objectives.rotation.task.") for n in names)
    assert any(k.startswith("extra_objectives.rotation.") for k in mixed.state_dict())
    mixed.load_state_dict({**mixed.state_dict(), **{k: v for k, v in plain.state_dict().items()}}, strict=True)

    plain.eval(), mixed.eval()  # no dropout: both compute the same own loss
    batch = {"video": torch.randn(4, 3, 4, 16, 16), "label": torch.tensor([0, 1, 2, 0])}
    own = plain.compute_loss(batch)["loss"]
    torch.manual_seed(1)
    task = mixed.extra_objectives["rotation"].task(mixed.video_encoder, batch["video"])
    torch.manual_seed(1)
    got = mixed.add_extra_objectives(batch, mixed.compute_loss(batch))
    assert torch.allclose(got["loss"], own + 0.25 * task["loss"], atol=1e-6)
    assert torch.allclose(got["rotation/loss"], task["loss"], atol=1e-6)


def test_extra_objective_errors_name_the_key():
    with pytest.raises(ValueError, match="extra_objectives.rotation.*model.audio"):
        build_method("supervised", tiny_config("supervised", extra_objectives={"rotation": {"modality": "audio"}}))
    with pytest.raises(KeyError, match="unknown pretext task 'rotaton'"):
        build_method("supervised", tiny_config("supervised", extra_objectives={"rotaton": {}}))
    m = build_method("supervised", tiny_config("supervised", extra_objectives={"rotation": {}}))
    with pytest.raises(KeyError, match="batch\\['video'\\]"):
        m.add_extra_objectives({"audio": torch.zeros(1)}, {"loss": torch.tensor(0.0)})
