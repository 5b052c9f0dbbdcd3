"""FMeasure: the torchmetrics class of :mod:`sod_lightning.metrics.functional.fmeasure` (definitions there)."""

from __future__ import annotations

from ._base import FamilyMetric
from .functional.fmeasure import FMEASURE_FAMILY


class FMeasure(FamilyMetric):
    """F-measure family (beta^2 = 0.3): max-F, mean-F, adaptive F and the PR / F curves.

    States: ``n_images``; sums over images of the per-image precision, recall and F curves (256 each) and of
    the adaptive F (float64, summed under DDP). ``compute()`` returns ``maxf``, ``meanf``, ``adpf`` (0-d) and
    ``pr_precision``, ``pr_recall``, ``f_curve`` (``(256,)``, thresholds ascending).

    Example:
        >>> import torch
        >>> m = FMeasure(); gt = torch.zeros(1, 1, 8, 8); gt[..., 2:6, 2:6] = 1
        >>> m.update(gt.clone(), gt); float(m.compute()["maxf"])
        1.0
    """

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__([FMEASURE_FAMILY], **kwargs)
