"""SODMetrics: every SOD metric in one torchmetrics ``Metric`` sharing one input preparation per batch."""

from __future__ import annotations

from collections.abc import Sequence

from ._base import FamilyMetric
from .functional.collection import ALL_KEYS, CURVE_KEYS, SCALAR_KEYS, select_families


class SODMetrics(FamilyMetric):
    """All salient-object-detection metrics, identical to pysodmetrics 1.6, exact under DDP.

    ``update(preds, target)`` takes one batch of images at the same resolution (the module calls it once per
    group of images at their original size, often ``B = 1``); ``compute()`` returns a flat dict:

    * scalars (0-d float64): ``mae``, ``maxf``, ``meanf``, ``adpf``, ``sm``, ``maxem``, ``meanem``, ``adpem``,
      ``wfm``, ``relaxfb``;
    * curves (``(256,)`` float64, thresholds **ascending**: index ``t`` binarises ``trunc(255 x) >= t``, see
      :func:`sod_lightning.metrics.thresholds`): ``pr_precision``, ``pr_recall``, ``f_curve``, ``em_curve``.
      pysodmetrics stores them descending; flip before comparing.

    The preparation (quantisation to bytes, ``gt > 128``, min-max) and every definition are documented in
    :mod:`sod_lightning.metrics` and the ``functional`` modules. The inputs are prepared once and shared by all
    families; F- and E-measure share one histogram.

    Args:
        metrics: result keys to compute (default ``None``: all). A family is computed when any of its keys is
            requested and only the requested keys are returned; e.g. ``["mae", "maxf", "sm"]`` for a cheap
            training-time validation that skips weighted F (its distance transform is the slowest step).
        **kwargs: torchmetrics ``Metric`` options.

    Example:
        >>> import torch
        >>> m = SODMetrics(metrics=["mae", "maxf", "sm"])
        >>> gt = torch.zeros(2, 1, 16, 16); gt[..., 4:12, 4:12] = 1
        >>> m.update(gt.clone(), gt)
        >>> {k: round(float(v), 6) for k, v in m.compute().items()}
        {'mae': 0.0, 'maxf': 1.0, 'sm': 1.0}
    """

    higher_is_better = True  # true of every key except mae

    #: Result keys, scalars then curves.
    KEYS = ALL_KEYS
    SCALAR_KEYS = SCALAR_KEYS
    CURVE_KEYS = CURVE_KEYS

    def __init__(self, metrics: Sequence[str] | None = None, **kwargs) -> None:
        families, keys = select_families(metrics)
        super().__init__(families, keys, **kwargs)
