"""Mean absolute error (Perazzi et al., CVPR 2012), as pysodmetrics 1.6 ``MAE`` computes it."""

from __future__ import annotations

from torch import Tensor

from .._prepare import PreparedBatch
from ._base import MetricFamily, evaluate_family


def _mae_update(prep: PreparedBatch) -> dict[str, Tensor]:
    """Per-image ``mean(|x - gt|)`` on the min-max normalised prediction ``x``.

    Computed from the byte histograms: ``sum_k bg[k] * x_k + fg[k] * (1 - x_k)``, divided by ``H * W``.

    Returns:
        ``{"sum_mae": (B,)}`` float64.
    """
    hist = prep.hist.double()  # (B, 2, 256)
    values = prep.values
    abs_err = (hist[:, 0] * values).sum(1) + (hist[:, 1] * (1 - values)).sum(1)
    return {"sum_mae": abs_err / prep.num_pixels}


def _mae_compute(sums: dict[str, Tensor], n: Tensor) -> dict[str, Tensor]:
    """Dataset MAE = mean over images of the per-image MAE."""
    return {"mae": sums["sum_mae"] / n}


MAE_FAMILY = MetricFamily("mae", ("mae",), {"sum_mae": ()}, _mae_update, _mae_compute)


def mae(preds: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error of a batch, averaged over its images (pysodmetrics ``MAE``).

    Args:
        preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (or uint8 0..255). Quantised to
            bytes and min-max normalised per image first (see :mod:`sod_lightning.metrics._prepare`).
        target: same shape; float in [0, 1], uint8 or bool (binarised as ``gt255 > 128``).

    Returns:
        0-d float64 tensor.

    Example:
        >>> import torch
        >>> gt = torch.zeros(1, 1, 4, 4); gt[..., :2] = 1
        >>> mae(gt.clone(), gt)
        tensor(0., dtype=torch.float64)
    """
    return evaluate_family(MAE_FAMILY, preds, target)["mae"]
