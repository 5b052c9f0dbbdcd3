"""WeightedFMeasure: the torchmetrics class of :mod:`sod_lightning.metrics.functional.weighted_fmeasure` (definitions there)."""

from __future__ import annotations

from torch import Tensor

from ._base import FamilyMetric
from .functional.weighted_fmeasure import WFMEASURE_FAMILY


class WeightedFMeasure(FamilyMetric):
    """Weighted F-measure (beta = 1) averaged over images; computed by a compiled CPU kernel (any input device).

    ``update(preds, target)`` as :class:`~sod_lightning.metrics._base.FamilyMetric`; ``compute()`` returns a
    0-d float64 tensor. States: ``n_images`` and the sum of the per-image values (float64, summed under DDP).

    Example:
    >>> import torch
    >>> m = WeightedFMeasure(); gt = torch.zeros(1, 1, 8, 8); gt[..., 2:6, 2:6] = 1
    >>> m.update(gt.clone(), gt); m.compute()
    tensor(1., dtype=torch.float64)
    """

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__([WFMEASURE_FAMILY], **kwargs)

    def compute(self) -> Tensor:
        """The dataset value (0-d float64)."""
        return super().compute()["wfm"]
