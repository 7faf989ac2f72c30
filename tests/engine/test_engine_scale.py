"""The trainer from the config at scale: the DDP strategy (trainer.ddp), loggers, trainer.extra, channels-last and
torch.compile (trainer.channels_last / trainer.compile)."""
from __future__ import annotations

import pytest
import torch
from lightning.pytorch.strategies import DDPStrategy

from avssl.config import ConfigError, load_config
from avssl.engine import build_loggers, build_strategy, build_trainer
from avssl.errors import UserError
from tiny import tiny_config


def _trainer_cfg(**keys):
    return load_config(overrides=[f"trainer.{k}={v}" for k, v in keys.items()]).trainer


@pytest.mark.parametrize("method, broadcast", [("avid_cma", False), ("moco", False), ("swav", False),
                                               ("audio_clusters", False), ("simclr", None), ("supervised", None)])
def test_methods_that_sync_their_buffers_run_ddp_without_buffer_broadcast(method, broadcast):
    from avssl.methods import method_class

    t = _trainer_cfg(strategy="ddp", devices=2, accelerator="cpu")
    strategy = build_strategy(t, method_class(method).syncs_own_buffers)
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs.get("broadcast_buffers") == broadcast  # None: torch's default (on)


def test_ddp_settings_come_from_the_config_and_win_over_the_method():
    t = _trainer_cfg(**{"strategy": "ddp_find_unused_parameters_true", "devices": 2, "accelerator": "cpu",
                        "ddp.broadcast_buffers": True, "ddp.static_graph": True, "ddp.gradient_as_bucket_view": True})
    s = build_strategy(t, syncs_own_buffers=True)
    assert s._ddp_kwargs == {"find_unused_parameters": True, "broadcast_buffers": True, "static_graph": True,
                             "gradient_as_bucket_view": True}
    # "auto" on several devices is DDP too; on one device Lightning picks, as before.
    assert isinstance(build_strategy(_trainer_cfg(devices=2, accelerator="cpu"), True), DDPStrategy)
    assert build_strategy(_trainer_cfg(devices=1, accelerator="cpu"), True) == "auto"
    with pytest.raises(ConfigError, match="trainer.ddp applies to DDP strategies.*'fsdp'"):
        build_strategy(_trainer_cfg(**{"strategy": "fsdp", "ddp.static_graph": True}))


@pytest.mark.parametrize("key, message", [
    ("max_epochs", "trainer.extra.max_epochs: set trainer.max_epochs instead"),
    ("max_epoch", "trainer.extra.max_epoch is not an argument of lightning.Trainer (nearest: max_epochs"),
    ("logger", "trainer.extra.logger is set by avssl; use trainer.loggers"),
])
def test_trainer_extra_refuses_keys_it_cannot_pass(key, message):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[f"trainer.extra.{key}=3"])
    assert message in str(e.value)


def test_trainer_extra_and_loggers_reach_the_trainer(tmp_path):
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    cfg = load_config(overrides=["trainer.extra.num_sanity_val_steps=0", "trainer.extra.max_time=00:00:05:00",
                                 "trainer.loggers=[csv]", f"output_dir={tmp_path}", "trainer.accelerator=cpu"])
    trainer = build_trainer(cfg)
    assert trainer.num_sanity_val_steps == 0
    assert any(type(c).__name__ == "Timer" and c._duration == 300 for c in trainer.callbacks)
    assert [type(lg) for lg in trainer.loggers] == [CSVLogger]
    both = build_loggers(_trainer_cfg(loggers="[csv,tensorboard]"), str(tmp_path))
    assert [type(lg) for lg in both] == [CSVLogger, TensorBoardLogger]
    assert [type(lg) for lg in build_loggers(_trainer_cfg(loggers="[csv,tensorboard]", tensorboard=False),
                                             str(tmp_path))] == [CSVLogger]


def test_wandb_without_the_package_is_a_one_line_user_error(tmp_path):
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed here")
    except ModuleNotFoundError:
        pass
    with pytest.raises(UserError, match=r"trainer.loggers names wandb, which is not installed: pip install 'avssl\[wandb\]'"):
        build_loggers(_trainer_cfg(loggers="[csv,wandb]"), str(tmp_path))


def test_channels_last_and_compiled_encoders_give_the_eager_outputs_with_the_same_keys():
    from avssl.engine import apply_speed_options
    from avssl.methods import build_method

    cfg = tiny_config("xmodal_nce")
    torch.manual_seed(0)
    eager = build_method("xmodal_nce", cfg).eval()
    fast = build_method("xmodal_nce", cfg).eval()
    fast.load_state_dict(eager.state_dict())
    params = list(fast.parameters())
    callbacks = apply_speed_options(fast, load_config(overrides=[
        "trainer.channels_last=true", "trainer.compile=true", "trainer.compile_kwargs={backend: eager}"]).trainer)
    assert [type(c).__name__ for c in callbacks] == ["ChannelsLastInputs"]
    assert list(fast.parameters()) == params  # the same objects: an optimiser built earlier still holds them
    conv = next(m for m in fast.video_encoder.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert fast.video_encoder._compiled_call_impl is not None and fast.audio_encoder._compiled_call_impl is not None
    assert fast.state_dict().keys() == eager.state_dict().keys()
    g = torch.Generator().manual_seed(1)
    video, audio = torch.randn(3, 3, 5, 16, 16, generator=g), torch.randn(3, 1, 16, 16, generator=g)
    batch = {"video": video.clone(), "audio": audio.clone()}
    callbacks[0].convert(batch)
    assert batch["video"].is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        for got, want in zip(fast.embed(batch["video"], batch["audio"]), eager.embed(video, audio)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_the_shipped_audioset_recipe_does_not_broadcast_its_banks():
    from avssl.methods import method_class

    cfg = load_config("pretrain/avid_cma_r2plus1d_audioset.yaml")
    s = build_strategy(cfg.trainer, method_class(cfg.method.name).syncs_own_buffers)
    assert isinstance(s, DDPStrategy) and s._ddp_kwargs["broadcast_buffers"] is False
    assert s._ddp_kwargs["gradient_as_bucket_view"] is True
