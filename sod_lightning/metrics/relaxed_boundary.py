"""RelaxedBoundaryFMeasure: the torchmetrics class of :mod:`sod_lightning.metrics.functional.relaxed_boundary` (definitions there)."""

from __future__ import annotations

from torch import Tensor

from ._base import FamilyMetric
from .functional.relaxed_boundary import RELAXFB_FAMILY


class RelaxedBoundaryFMeasure(FamilyMetric):
    """Relaxed boundary F-measure (BASNet; beta^2 = 0.3, rho = 3) averaged over images.

    ``update(preds, target)`` as :class:`~sod_lightning.metrics._base.FamilyMetric`; ``compute()`` returns a
    0-d float64 tensor. States: ``n_images`` and the sum of the per-image values (float64, summed under DDP).

    Example:
    >>> import torch
    >>> m = RelaxedBoundaryFMeasure(); gt = torch.zeros(1, 1, 16, 16); gt[..., 4:12, 4:12] = 1
    >>> m.update(gt.clone(), gt); m.compute()
    tensor(1., dtype=torch.float64)
    """

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__([RELAXFB_FAMILY], **kwargs)

    def compute(self) -> Tensor:
        """The dataset value (0-d float64)."""
        return super().compute()["relaxfb"]
