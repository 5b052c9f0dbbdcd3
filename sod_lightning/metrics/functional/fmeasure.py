"""F-measure family (Achanta et al., CVPR 2009), as pysodmetrics 1.6 ``Fmeasure`` and its recorder compute it.

* beta^2 = 0.3 (pysodmetrics calls the argument ``beta`` but it is beta^2).
* Per image and per threshold ``t`` (``bin >= t``, ascending): ``P = TP / max(TP + FP, 1)``,
  ``R = TP / max(|GT|, 1)``, ``F = 1.3 P R / (0.3 P + R)`` with ``F = 0`` where the numerator is 0.
  An all-background ground truth therefore gives ``F = 0`` at every threshold.
* ``f_curve`` = per-threshold mean over images of the per-image F; **maxf = max of that mean curve**,
  **meanf = its mean** over the 256 thresholds (not the mean of per-image maxima, not F of the mean P/R).
* ``pr_precision`` / ``pr_recall`` = per-threshold means over images of the per-image P and R.
* ``adpf``: threshold ``min(2 mean(x), 1)`` on the float normalised prediction, ``x >= thr``; 0 when TP = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._prepare import NUM_THRESHOLDS, PreparedBatch
from ._base import MetricFamily, evaluate_family

BETA2 = 0.3


def _f_from_pr(precision: Tensor, recall: Tensor) -> Tensor:
    """``(1 + b2) P R / (b2 P + R)``, 0 where the numerator is 0 (pysodmetrics' convention)."""
    numerator = (1 + BETA2) * precision * recall
    denominator = torch.where(numerator == 0, torch.ones_like(numerator), BETA2 * precision + recall)
    return numerator / denominator


def _fmeasure_update(prep: PreparedBatch) -> dict[str, Tensor]:
    """Per-image P, R, F curves (ascending thresholds) and adaptive F.

    The adaptive F is the same formula at the adaptive threshold (column 256 of ``prep.fg_counts``): with
    TP = 0 the numerator is 0 and F = 0, as pysodmetrics' explicit ``area_intersection == 0`` branch gives.

    Returns:
        ``{"sum_precision", "sum_recall", "sum_f": (B, 256), "sum_adpf": (B,)}`` float64.
    """
    counts = prep.fg_counts  # (B, 2, 257)
    tp = counts[:, 1]
    precision = tp / (counts[:, 0] + tp).clamp(min=1)
    recall = tp / prep.num_fg.double().clamp(min=1)[:, None]
    f = _f_from_pr(precision, recall)
    return {
        "sum_precision": precision[:, :NUM_THRESHOLDS],
        "sum_recall": recall[:, :NUM_THRESHOLDS],
        "sum_f": f[:, :NUM_THRESHOLDS],
        "sum_adpf": f[:, NUM_THRESHOLDS],
    }


def _fmeasure_compute(sums: dict[str, Tensor], n: Tensor) -> dict[str, Tensor]:
    f_curve = sums["sum_f"] / n
    return {
        "maxf": f_curve.max(),
        "meanf": f_curve.mean(),
        "adpf": sums["sum_adpf"] / n,
        "pr_precision": sums["sum_precision"] / n,
        "pr_recall": sums["sum_recall"] / n,
        "f_curve": f_curve,
    }


FMEASURE_FAMILY = MetricFamily(
    "fmeasure",
    ("maxf", "meanf", "adpf", "pr_precision", "pr_recall", "f_curve"),
    {"sum_precision": (NUM_THRESHOLDS,), "sum_recall": (NUM_THRESHOLDS,), "sum_f": (NUM_THRESHOLDS,), "sum_adpf": ()},
    _fmeasure_update,
    _fmeasure_compute,
)


def f_measure(preds: Tensor, target: Tensor) -> dict[str, Tensor]:
    """F-measure family over a batch (pysodmetrics ``Fmeasure`` + ``metric_recorder`` aggregation).

    Args:
        preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (or uint8 0..255).
        target: same shape; float in [0, 1], uint8 or bool.

    Returns:
        ``maxf``, ``meanf``, ``adpf`` (0-d) and ``pr_precision``, ``pr_recall``, ``f_curve`` (``(256,)``,
        thresholds ascending: index ``t`` is ``trunc(255 x) >= t``), all float64.

    Example:
        >>> import torch
        >>> gt = torch.zeros(1, 1, 8, 8); gt[..., 2:6, 2:6] = 1
        >>> f_measure(gt.clone(), gt)["maxf"]
        tensor(1., dtype=torch.float64)
    """
    return evaluate_family(FMEASURE_FAMILY, preds, target)
