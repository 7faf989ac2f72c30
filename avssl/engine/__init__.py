"""Training engine: optimisers and schedules (:mod:`.optim`), Lightning's Trainer with avssl's checkpoints, stop
signals and DDP strategy (:mod:`.trainer`), training runs from a config (:mod:`.runs`: ``fit``, ``load_method``),
what a run shows while it trains (:mod:`.telemetry`: throughput, data wait, online kNN), channels-last and
``torch.compile`` (:mod:`.speed`), and passes over a dataset split across ranks (:mod:`.sharding`)."""
from avssl.engine.optim import LARS, build_optimizer, build_scheduler, param_groups, warmup_cosine
from avssl.engine.runs import (CONFIG_FILE, RESUMABLE_CHANGES, RUN_ENTRIES, fit, incompatible_keys, load_method,
                               with_overrides)
from avssl.engine.sharding import gather_shares, run_sharded
from avssl.engine.speed import apply_speed_options, compile_encoders, to_channels_last
from avssl.engine.telemetry import KnnMonitor, RunProgressBar, Throughput
from avssl.engine.trainer import (STOP_SIGNALS, AtomicCheckpointIO, LastCheckpoint, TrainingInterrupted,
                                  build_loggers, build_strategy, build_trainer)
from avssl.errors import NonFiniteLossError

__all__ = ["LARS", "build_optimizer", "build_scheduler", "param_groups", "warmup_cosine", "CONFIG_FILE",
           "RESUMABLE_CHANGES", "RUN_ENTRIES", "fit", "incompatible_keys", "load_method", "with_overrides",
           "gather_shares", "run_sharded", "apply_speed_options", "compile_encoders", "to_channels_last",
           "KnnMonitor", "RunProgressBar", "Throughput",
           "STOP_SIGNALS", "AtomicCheckpointIO", "LastCheckpoint", "TrainingInterrupted", "build_loggers",
           "build_strategy", "build_trainer", "NonFiniteLossError"]
