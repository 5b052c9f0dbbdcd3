"""Losses: pure functions of logits (:mod:`.functional`), per-map modules and deep supervision."""

from sod_lightning.losses.deep_supervision import DeepSupervision
from sod_lightning.losses.modules import BCELoss, DiceLoss, HybridLoss, IoULoss, SSIMLoss

__all__ = ["BCELoss", "DeepSupervision", "DiceLoss", "HybridLoss", "IoULoss", "SSIMLoss"]
