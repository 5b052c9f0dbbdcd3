"""Enhanced-alignment measure (Fan et al., IJCAI 2018), as pysodmetrics 1.6 ``Emeasure`` computes it.

For a binarised prediction the enhanced-alignment matrix takes only four values (one per TP/FP/FN/TN region),
so the score is a closed form over the four region counts:
``mu_p = (TP + FP) / N``, ``mu_g = |GT| / N``; for the pairs ``(1-mu_p, 1-mu_g)``, ``(1-mu_p, -mu_g)``,
``(-mu_p, 1-mu_g)``, ``(-mu_p, -mu_g)`` with counts TP, FP, FN, TN: ``a = 2 p g / (p^2 + g^2 + eps)``,
``phi = (a + 1)^2 / 4``, ``E = sum(count * phi) / (N - 1 + eps)``. All-background GT: ``E = #pred-bg / (N - 1)``;
all-foreground GT: ``E = #pred-fg / (N - 1)``. Because of the ``N - 1`` (Fan's MATLAB code) E can exceed 1.

``em_curve``: per-threshold mean over images (thresholds ascending); ``maxem`` / ``meanem`` = max / mean of
that mean curve; ``adpem`` uses ``x >= min(2 mean(x), 1)`` on the float prediction.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._prepare import EPS, NUM_THRESHOLDS, PreparedBatch
from ._base import MetricFamily, evaluate_family


def _enhanced_sum(fg_fg: Tensor, fg_bg: Tensor, num_fg: Tensor, num_pixels: int) -> Tensor:
    """``sum(count * phi)`` over the 4 regions (pysodmetrics' formula), broadcasting over thresholds.

    Args:
        fg_fg: ``(B, T)`` predicted-foreground pixels on the GT foreground (TP) per threshold.
        fg_bg: ``(B, T)`` predicted-foreground pixels on the GT background (FP).
        num_fg: ``(B, 1)`` GT foreground pixels.
        num_pixels: ``N``.
    """
    pred_fg = fg_fg + fg_bg
    pred_bg = num_pixels - pred_fg
    bg_fg = num_fg - fg_fg
    mean_pred = pred_fg / num_pixels
    mean_gt = (num_fg / num_pixels).expand_as(mean_pred)
    counts = torch.stack([fg_fg, fg_bg, bg_fg, pred_bg - bg_fg], -1)  # TP, FP, FN, TN
    p = torch.stack([1 - mean_pred, 1 - mean_pred, 0 - mean_pred, 0 - mean_pred], -1)
    g = torch.stack([1 - mean_gt, 0 - mean_gt, 1 - mean_gt, 0 - mean_gt], -1)
    align = 2 * (p * g) / (p**2 + g**2 + EPS)
    general = ((align + 1) ** 2 / 4 * counts).sum(-1)
    return torch.where(num_fg == 0, pred_bg, torch.where(num_fg == num_pixels, pred_fg, general))


def _emeasure_update(prep: PreparedBatch) -> dict[str, Tensor]:
    """Per-image E curve (ascending thresholds) and adaptive E (column 256 of ``prep.fg_counts``).

    Returns:
        ``{"sum_em": (B, 256), "sum_adpem": (B,)}`` float64.
    """
    n = prep.num_pixels
    counts = prep.fg_counts
    em = _enhanced_sum(counts[:, 1], counts[:, 0], prep.num_fg.double()[:, None], n) / (n - 1 + EPS)
    return {"sum_em": em[:, :NUM_THRESHOLDS], "sum_adpem": em[:, NUM_THRESHOLDS]}


def _emeasure_compute(sums: dict[str, Tensor], n: Tensor) -> dict[str, Tensor]:
    em_curve = sums["sum_em"] / n
    return {"maxem": em_curve.max(), "meanem": em_curve.mean(), "adpem": sums["sum_adpem"] / n, "em_curve": em_curve}


EMEASURE_FAMILY = MetricFamily(
    "emeasure",
    ("maxem", "meanem", "adpem", "em_curve"),
    {"sum_em": (NUM_THRESHOLDS,), "sum_adpem": ()},
    _emeasure_update,
    _emeasure_compute,
)


def e_measure(preds: Tensor, target: Tensor) -> dict[str, Tensor]:
    """E-measure family over a batch (pysodmetrics ``Emeasure``).

    Args:
        preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (or uint8 0..255).
        target: same shape; float in [0, 1], uint8 or bool.

    Returns:
        ``maxem``, ``meanem``, ``adpem`` (0-d) and ``em_curve`` (``(256,)``, thresholds ascending), float64.

    Example:
        >>> import torch
        >>> gt = torch.ones(1, 1, 4, 4)
        >>> e_measure(gt.clone(), gt)["maxem"]  # 16 / 15: the N - 1 denominator
        tensor(1.0667, dtype=torch.float64)
    """
    return evaluate_family(EMEASURE_FAMILY, preds, target)
