"""Structure measure (Fan et al., ICCV 2017), as pysodmetrics 1.6 ``Smeasure`` computes it (alpha = 0.5).

* ``y = mean(gt)``; ``y == 0``: ``S = 1 - mean(x)``; ``y == 1``: ``S = mean(x)``; otherwise
  ``S = max(0, 0.5 S_object + 0.5 S_region)``.
* ``S_object = s(x[gt]) y + s((1 - x)[~gt]) (1 - y)`` with ``s(v) = 2 mean / (mean^2 + 1 + std + eps)``,
  **std with ddof = 1** (0 for a single pixel).
* ``S_region``: split at ``cy, cx = round(centroid) + 1`` (numpy/torch round = half to even; pysodmetrics'
  MATLAB-compatibility ``+1``), four quadrants weighted by area; quadrant SSIM with means ``x, y``,
  ``sigma = sum(...) / (N - 1 + eps)``, ``alpha = 4 x y sigma_xy``, ``beta = (x^2 + y^2)(sigma_x + sigma_y)``:
  ``alpha / (beta + eps)`` if ``alpha != 0``, 1 if ``alpha == beta == 0``, else 0.

Every sum is taken over byte histograms (per quadrant and gt class), which is exact up to float64 rounding.
Two places where rounding decides a branch are reproduced exactly (see ``_degenerate_quadrant_scores``).

Known divergence: when the ground-truth centroid rounds to the last row or column, one or two quadrants are
empty; pysodmetrics then returns NaN (mean of an empty slice times a zero weight). Here an empty quadrant has
weight 0 and contributes 0, so S stays finite.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._prepare import EPS, PreparedBatch
from ._base import MetricFamily, evaluate_family

ALPHA = 0.5


def _s_object(counts: Tensor, values: Tensor) -> Tensor:
    """``s(v)`` of the pixels described by histograms: ``counts`` and ``values`` (..., 256) -> (...)."""
    n = counts.sum(-1)
    mean = (counts * values).sum(-1) / n.clamp(min=1)
    # Two-pass variance (mean first) like numpy's std, ddof = 1; std = 0 for a single pixel.
    var = (counts * (values - mean[..., None]) ** 2).sum(-1) / (n - 1).clamp(min=1)
    std = torch.where(n > 1, var.sqrt(), torch.zeros_like(var))
    return 2 * mean / (mean**2 + 1 + std + EPS)


def _degenerate_quadrant_scores(prep: PreparedBatch, score: Tensor, needs_numpy: Tensor, value: Tensor) -> Tensor:
    """Reproduce pysodmetrics' SSIM of a quadrant whose prediction and ground truth are both constant.

    There ``alpha = 0`` and ``beta = (x^2 + y^2) sigma_x``. Mathematically ``sigma_x = 0`` (score 1), but numpy's
    pairwise mean of ``N`` copies of a value ``c`` is often ``c`` plus a rounding error, making ``sigma_x`` a
    tiny positive number and the score 0. Which of the two happens depends on numpy's summation order over
    that exact slice shape, so it is recomputed with numpy on a constant array of the same layout (rare:
    constant predictions, or flat plateaux of a value other than 0 and 1).
    """
    h, w = prep.height, prep.width
    score = score.clone()
    cy_all, cx_all = prep.centroid[:, 0].tolist(), prep.centroid[:, 1].tolist()
    for b, quad in needs_numpy.nonzero().tolist():
        cy, cx = cy_all[b], cx_all[b]
        rows = slice(0, cy) if quad < 2 else slice(cy, h)
        cols = slice(0, cx) if quad % 2 == 0 else slice(cx, w)
        region = np.full((h, w), float(value[b, quad]))[rows, cols]
        x = np.mean(region)
        sigma_x = np.sum((region - x) ** 2) / (region.size - 1 + EPS)
        y = float(prep.quadrant_hist[b, quad, 1].sum() > 0)  # constant ground truth: all 0 or all 1
        beta = (x**2 + y**2) * sigma_x
        score[b, quad] = 1.0 if beta == 0 else 0.0
    return score


def _region(prep: PreparedBatch) -> Tensor:
    """``(B,)`` S_region from the quadrant histograms."""
    qh = prep.quadrant_hist.double()  # (B, 4, 2, 256)
    values = prep.values[:, None, :]  # (B, 1, 256)
    bg, fg = qh[:, :, 0], qh[:, :, 1]  # (B, 4, 256)
    counts = bg + fg
    n = counts.sum(2)  # (B, 4)
    n_fg = fg.sum(2)
    safe_n = n.clamp(min=1)
    x = (counts * values).sum(2) / safe_n
    y = n_fg / safe_n
    denom = n - 1 + EPS
    dx = values - x[..., None]  # (B, 4, 256)
    sigma_x = (counts * dx**2).sum(2) / denom
    sigma_y = (n_fg * (1 - y) ** 2 + (n - n_fg) * y**2) / denom
    sigma_xy = ((fg * dx).sum(2) * (1 - y) + (bg * dx).sum(2) * (0 - y)) / denom
    alpha = 4 * x * y * sigma_xy
    beta = (x**2 + y**2) * (sigma_x + sigma_y)
    score = torch.where(
        alpha != 0, alpha / (beta + EPS), torch.where(beta == 0, torch.ones_like(beta), torch.zeros_like(beta))
    )
    score = torch.where(n > 0, score, torch.zeros_like(score))

    present = counts > 0
    pred_constant = present.sum(2) == 1
    gt_constant = (n_fg == 0) | (n_fg == n)
    value = (present * values).sum(2)  # the single value when constant
    needs_numpy = (n > 0) & pred_constant & gt_constant & (value != 0) & (value != 1)
    if bool(needs_numpy.any()):
        score = _degenerate_quadrant_scores(prep, score, needs_numpy, value)

    h, w = prep.height, prep.width
    area = h * w
    cy, cx = prep.centroid[:, 0].double(), prep.centroid[:, 1].double()
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    weights = torch.stack([w_lt, w_rt, w_lb, w_rb], 1)
    return (score * weights).sum(1)


def _smeasure_update(prep: PreparedBatch) -> dict[str, Tensor]:
    """Per-image S-measure.

    Returns:
        ``{"sum_sm": (B,)}`` float64.
    """
    hist = prep.hist.double()  # (B, 2, 256): reuses the quadrant histograms
    values = prep.values
    y = hist[:, 1].sum(1) / prep.num_pixels
    mean_pred = (hist.sum(1) * values).sum(1) / prep.num_pixels
    # s(x[gt]) and s((1 - x)[~gt]) in one call: row 0 = foreground pixels, row 1 = background pixels.
    s_obj = _s_object(hist.flip(1), torch.stack([values, 1 - values], 1))
    obj = s_obj[:, 0] * y + s_obj[:, 1] * (1 - y)
    sm = (obj * ALPHA + _region(prep) * (1 - ALPHA)).clamp(min=0)
    sm = torch.where(y == 0, 1 - mean_pred, torch.where(y == 1, mean_pred, sm))
    return {"sum_sm": sm}


def _smeasure_compute(sums: dict[str, Tensor], n: Tensor) -> dict[str, Tensor]:
    return {"sm": sums["sum_sm"] / n}


SMEASURE_FAMILY = MetricFamily("smeasure", ("sm",), {"sum_sm": ()}, _smeasure_update, _smeasure_compute)


def s_measure(preds: Tensor, target: Tensor) -> Tensor:
    """S-measure of a batch, averaged over its images (pysodmetrics ``Smeasure``, alpha = 0.5).

    Args:
        preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (or uint8 0..255).
        target: same shape; float in [0, 1], uint8 or bool.

    Returns:
        0-d float64 tensor.

    Example:
        >>> import torch
        >>> gt = torch.zeros(1, 1, 8, 8); gt[..., 2:6, 2:6] = 1
        >>> round(float(s_measure(gt.clone(), gt)), 6)
        1.0
    """
    return evaluate_family(SMEASURE_FAMILY, preds, target)["sm"]
