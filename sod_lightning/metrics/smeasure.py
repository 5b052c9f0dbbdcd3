"""SMeasure: the torchmetrics class of :mod:`sod_lightning.metrics.functional.smeasure` (definitions there)."""

from __future__ import annotations

from torch import Tensor

from ._base import FamilyMetric
from .functional.smeasure import SMEASURE_FAMILY


class SMeasure(FamilyMetric):
    """S-measure (alpha = 0.5) averaged over images.

    ``update(preds, target)`` as :class:`~sod_lightning.metrics._base.FamilyMetric`; ``compute()`` returns a
    0-d float64 tensor. States: ``n_images`` and the sum of the per-image values (float64, summed under DDP).

    Example:
    >>> import torch
    >>> m = SMeasure(); gt = torch.zeros(1, 1, 8, 8); gt[..., 2:6, 2:6] = 1
    >>> m.update(gt.clone(), gt); round(float(m.compute()), 6)
    1.0
    """

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__([SMEASURE_FAMILY], **kwargs)

    def compute(self) -> Tensor:
        """The dataset value (0-d float64)."""
        return super().compute()["sm"]
