"""``python tests/fault_cli.py STEP SIGNAL avssl-args...``: the avssl CLI, which sends itself SIGNAL (a name:
KILL, TERM, INT, USR1) just before training step STEP, so a test can kill or stop a run at a chosen step."""
from __future__ import annotations

import os
import signal
import sys

from lightning.pytorch.callbacks import Callback

import avssl.engine.runs
from avssl.apps.cli import main


class SignalAtStep(Callback):
    """Sends this process ``signum`` just before training step ``step``."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def _with_fault(build_trainer, fault: Callback):
    def build(cfg, *args, callbacks=None, **kwargs):
        return build_trainer(cfg, *args, callbacks=[*(callbacks or []), fault], **kwargs)

    return build


if __name__ == "__main__":
    step, name, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    fault = SignalAtStep(step, signal.Signals[f"SIG{name}"])
    avssl.engine.runs.build_trainer = _with_fault(avssl.engine.runs.build_trainer, fault)
    sys.exit(main(argv))
