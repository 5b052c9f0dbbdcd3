"""Objects that tests put into configs by ``_target_`` (importable in subprocesses with PYTHONPATH=tests)."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl
import torch
from torch import Tensor

from sod_lightning.losses import BCELoss, DeepSupervision


class KillAtStep(pl.Callback):
    """SIGKILL the process when the global step reaches ``step``: an interruption nothing can clean up after."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class NaNAfter(DeepSupervision):
    """BCE on every output that turns NaN from its ``after``-th call on."""

    def __init__(self, after: int) -> None:
        super().__init__(BCELoss())
        self.after, self.calls = after, 0

    def forward(self, outputs: list[Tensor], target: Tensor) -> dict[str, Tensor]:
        self.calls += 1
        out = super().forward(outputs, target)
        if self.calls >= self.after:
            out["loss"] = out["loss"] * torch.tensor(float("nan"))
        return out


