"""What a run shows while it trains: throughput and data wait, the loss in the progress bar, an online kNN monitor.

:class:`Throughput` times every training step: the *data wait* is the time from the end of one step to the start of
the next (the loader's next batch, its transfer to the device and the trainer's work between steps), the *compute*
the step itself (forward, backward, optimiser; the step's loss check waits for the GPU, so queued kernels are
counted). Over the last ``log_every_n_steps`` steps it logs, to every logger and the progress bar:

=================== ====================================================================
``perf/clips_per_s`` training clips per second, all ranks together (clips of a batch × world size / step time)
``perf/step_s``      mean wall time of a step (data wait + compute)
``perf/data_wait``   the fraction of that time spent waiting (0: the GPU never waits for data)
=================== ====================================================================

:class:`RunProgressBar` shows the loss and these numbers, not Lightning's ``v_num``. :class:`KnnMonitor`
(``trainer.knn_monitor``) gives self-supervised methods a validation signal without a separate ``avssl eval``.
"""
from __future__ import annotations

import collections
import logging
import time
from typing import Any, Callable, Deque, Dict, Optional, Tuple

import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar

from avssl.data.batch import batch_size

log = logging.getLogger(__name__)


class Throughput(Callback):
    """Clips per second, step time and data-wait fraction over a window of steps (see the module docstring).

    ``clock`` is the time source (seconds; tests pass a fake one).
    """

    def __init__(self, window: int = 10, clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.window = max(1, int(window))
        self.clock = clock
        self._steps: Deque[Tuple[float, float, int]] = collections.deque(maxlen=self.window)  # (wait, compute, clips)
        self._last_end: Optional[float] = None
        self._start: Optional[float] = None

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        # The first batch's wait counts from here: the loader's workers start with the epoch.
        self._last_end = self.clock()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start = self.clock()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        end = self.clock()
        if self._start is None or self._last_end is None:
            self._last_end = end
            return
        wait, compute = max(0.0, self._start - self._last_end), max(0.0, end - self._start)
        self._steps.append((wait, compute, batch_size(batch) if isinstance(batch, dict) else 0))
        self._last_end = end
        for key, value in self.summary(trainer.world_size).items():
            pl_module.log(f"perf/{key}", value, on_step=True, on_epoch=False, prog_bar=True, logger=True,
                          batch_size=1)

    def summary(self, world_size: int = 1) -> Dict[str, float]:
        """``clips_per_s`` (global), ``step_s`` (mean) and ``data_wait`` (fraction) over the window's steps."""
        if not self._steps:
            return {}
        wait = sum(s[0] for s in self._steps)
        total = wait + sum(s[1] for s in self._steps)
        clips = sum(s[2] for s in self._steps) * max(1, int(world_size))
        return {"clips_per_s": clips / total if total > 0 else 0.0, "step_s": total / len(self._steps),
                "data_wait": wait / total if total > 0 else 0.0}


#: Progress-bar labels of logged metrics (the rest keep their names).
BAR_LABELS = {"train/loss_step": "loss", "perf/clips_per_s": "clips/s", "perf/data_wait": "data wait",
              "perf/step_s": "step s", "val/knn_top1": "knn top1"}


class RunProgressBar(RichProgressBar):
    """Lightning's rich progress bar showing the loss, clips/s and the data-wait fraction under short labels,
    without the logger's version number (``v_num``)."""

    def get_metrics(self, trainer: Any, pl_module: Any) -> Dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return {BAR_LABELS.get(k, k): v for k, v in items.items() if k != "train/loss_epoch"}


class KnnMonitor(Callback):
    """Weighted kNN top-1 of the method's encoder at epoch ends, logged as ``val/knn_top1`` (``trainer.knn_monitor``).

    Up to ``max_videos`` labelled training videos (evenly spaced over the train part, one centre clip each, no
    augmentation) form the bank; up to ``max_videos`` held-out videos (the val part) are classified by their
    ``k`` nearest (cosine) bank features, each voting ``exp(sim / temperature)`` (:func:`avssl.eval.knn.knn_predict`).
    Under DDP the embedding is sharded across ranks (:func:`avssl.eval.features.extract_dataset`) and every rank
    computes the same number. The encoder's training flags are restored afterwards.
    """

    def __init__(self, cfg: Any, every_n_epochs: int, max_videos: int = 1000, k: int = 20, temperature: float = 0.07,
                 modality: Optional[str] = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.every_n_epochs, self.max_videos, self.k = int(every_n_epochs), int(max_videos), int(k)
        self.temperature = float(temperature)
        self.modality = modality or cfg.eval.modality
        self._parts: Optional[Dict[str, Any]] = None

    @classmethod
    def from_config(cls, cfg: Any) -> Optional["KnnMonitor"]:
        """The monitor ``cfg.trainer.knn_monitor`` asks for, or None when it is off."""
        m = cfg.trainer.knn_monitor
        if not m.every_n_epochs:
            return None
        return cls(cfg, m.every_n_epochs, m.max_videos, m.k, m.temperature, m.modality)

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage == "fit" and self._parts is None:
            self._parts = {part: self._subset(part) for part in ("train", "val")}

    def _subset(self, part: str) -> Any:
        from omegaconf import OmegaConf
        from torch.utils.data import Subset

        from avssl.data.datamodule import make_dataset
        from avssl.config import ConfigError

        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg, resolve=True))
        cfg.data.test_clips, cfg.data.test_crops = 1, 1  # one centre clip per video: cheap, and enough to rank
        try:
            if part == "val" and not (cfg.data.val or cfg.data.val_split):
                raise ValueError("neither is set, so it would be the training videos themselves")
            ds = make_dataset(cfg, part, train=False, needs_audio=self.modality == "audio")
        except (ValueError, OSError) as e:
            raise ConfigError(f"trainer.knn_monitor needs labelled train and held-out videos (data.val or "
                              f"data.val_split); the {part} part: {e}") from None
        labels = list(getattr(ds, "labels", []) or [])
        if len(ds) < 2 or not labels or min(labels) < 0:
            raise ConfigError(f"trainer.knn_monitor needs labelled videos; the {part} part has "
                              f"{len(ds)} videos{' without labels' if not labels or min(labels) < 0 else ''}")
        n = min(len(ds), self.max_videos)
        keep = torch.linspace(0, len(ds) - 1, n).round().long().unique().tolist()
        return Subset(ds, keep)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        top1 = self.measure(pl_module)
        pl_module.log("val/knn_top1", top1, on_step=False, on_epoch=True, prog_bar=True, logger=True, batch_size=1)

    @torch.no_grad()
    def measure(self, pl_module: Any) -> float:
        """kNN top-1 of ``pl_module``'s encoder on the held-out subset, in [0, 1]."""
        from avssl.eval.features import extract_dataset
        from avssl.eval.knn import knn_predict

        assert self._parts is not None, "KnnMonitor.setup has not run"
        encoder = pl_module.encoder_for(self.modality)
        d = self.cfg.data
        out = {part: extract_dataset(encoder, ds, batch_size=int(self.cfg.eval.batch_size or d.batch_size),
                                     num_workers=int(d.num_workers), device=pl_module.device, modality=self.modality,
                                     views="mean", progress=False)
               for part, ds in self._parts.items()}
        train, val = out["train"], out["val"]
        classes = int(max(int(train["labels"].max()), int(val["labels"].max())) + 1)
        scores = knn_predict(train["features"], train["labels"], val["features"], classes, k=self.k,
                             temperature=self.temperature, device=pl_module.device)
        return float((scores.argmax(1).cpu() == val["labels"]).float().mean())


__all__ = ["BAR_LABELS", "KnnMonitor", "RunProgressBar", "Throughput"]
