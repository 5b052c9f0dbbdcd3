"""EMeasure: the torchmetrics class of :mod:`sod_lightning.metrics.functional.emeasure` (definitions there)."""

from __future__ import annotations

from ._base import FamilyMetric
from .functional.emeasure import EMEASURE_FAMILY


class EMeasure(FamilyMetric):
    """E-measure family: max-E, mean-E, adaptive E and the E curve.

    States: ``n_images``; sums over images of the per-image E curve (256) and of the adaptive E (float64,
    summed under DDP). ``compute()`` returns ``maxem``, ``meanem``, ``adpem`` (0-d) and ``em_curve``
    (``(256,)``, thresholds ascending).

    Example:
        >>> import torch
        >>> m = EMeasure(); gt = torch.zeros(1, 1, 8, 8); gt[..., 2:6, 2:6] = 1
        >>> m.update(gt.clone(), gt); round(float(m.compute()["maxem"]), 6)  # 64 / 63 (N - 1 denominator)
        1.015873
    """

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__([EMEASURE_FAMILY], **kwargs)
