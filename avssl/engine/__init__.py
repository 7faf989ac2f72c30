"""Training engine: optimisers and schedules (:mod:`.optim`), Lightning's Trainer with avssl's checkpoints and
stop signals (:mod:`.trainer`), and training runs from a config (:mod:`.runs`: ``fit``, ``load_method``)."""
from avssl.engine.optim import LARS, build_optimizer, build_scheduler, param_groups, warmup_cosine
from avssl.engine.runs import (CONFIG_FILE, RESUMABLE_CHANGES, RUN_ENTRIES, fit, incompatible_keys, load_method,
                               with_overrides)
from avssl.engine.trainer import (STOP_SIGNALS, AtomicCheckpointIO, LastCheckpoint, TrainingInterrupted,
                                  build_trainer)
from avssl.errors import NonFiniteLossError

__all__ = ["LARS", "build_optimizer", "build_scheduler", "param_groups", "warmup_cosine", "CONFIG_FILE",
           "RESUMABLE_CHANGES", "RUN_ENTRIES", "fit", "incompatible_keys", "load_method", "with_overrides",
           "STOP_SIGNALS", "AtomicCheckpointIO", "LastCheckpoint", "TrainingInterrupted", "build_trainer",
           "NonFiniteLossError"]
