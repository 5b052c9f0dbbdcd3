"""MAE: the torchmetrics class of :mod:`sod_lightning.metrics.functional.mean_absolute_error` (definitions there)."""

from __future__ import annotations

from torch import Tensor

from ._base import FamilyMetric
from .functional.mean_absolute_error import MAE_FAMILY


class MAE(FamilyMetric):
    """Mean absolute error over images (lower is better).

    ``update(preds, target)`` as :class:`~sod_lightning.metrics._base.FamilyMetric`; ``compute()`` returns a
    0-d float64 tensor. States: ``n_images`` and the sum of the per-image values (float64, summed under DDP).

    Example:
    >>> import torch
    >>> m = MAE(); gt = torch.zeros(1, 1, 4, 4); gt[..., :2] = 1
    >>> m.update(gt.clone(), gt); m.compute()
    tensor(0., dtype=torch.float64)
    """

    higher_is_better = False

    def __init__(self, **kwargs) -> None:
        super().__init__([MAE_FAMILY], **kwargs)

    def compute(self) -> Tensor:
        """The dataset value (0-d float64)."""
        return super().compute()["mae"]
