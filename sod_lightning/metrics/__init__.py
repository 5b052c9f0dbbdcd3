"""Salient-object-detection metrics as torchmetrics ``Metric`` classes, identical to pysodmetrics 1.6.

Classes (``update(preds, target)``, ``compute()``) and their functional twins (one batch in, results out):

============================  ===================================  =============================================
class                         functional                           keys
============================  ===================================  =============================================
``MAE``                       ``mae``                              ``mae``
``FMeasure``                  ``f_measure``                        ``maxf meanf adpf pr_precision pr_recall f_curve``
``SMeasure``                  ``s_measure``                        ``sm``
``EMeasure``                  ``e_measure``                        ``maxem meanem adpem em_curve``
``WeightedFMeasure``          ``weighted_f_measure``               ``wfm``
``RelaxedBoundaryFMeasure``   ``relaxed_boundary_f_measure``       ``relaxfb``
``SODMetrics`` (all)          ``sod_metrics``                      all of the above, one flat dict
============================  ===================================  =============================================

Inputs: ``preds`` probabilities in [0, 1] (or uint8 bytes), ``target`` float [0, 1] / uint8 / bool,
``(B, 1, H, W)`` or ``(B, H, W)``, evaluated at the mask's original resolution. A float prediction is first
quantised as an 8-bit PNG would store it (``round(255 p)``); ground truth is ``gt255 > 128``; the prediction
is min-max normalised per image unless constant (:mod:`sod_lightning.metrics._prepare`).

Curves have 256 values at ascending thresholds (:func:`thresholds`). Dataset max-F / max-E are the maxima of
the *mean over images* of the per-image curves, as pysodmetrics' recorder computes them.

States are float64 sums of per-image statistics with ``dist_reduce_fx="sum"``: exact DDP synchronisation, memory
independent of the number of images. float64 is unavailable on Apple MPS (see ``FamilyMetric``).
"""

from ._prepare import EPS, PreparedBatch, thresholds
from .collection import SODMetrics
from .emeasure import EMeasure
from .fmeasure import FMeasure
from .functional import (
    e_measure,
    f_measure,
    mae,
    relaxed_boundary_f_measure,
    s_measure,
    sod_metrics,
    weighted_f_measure,
)
from .mean_absolute_error import MAE
from .relaxed_boundary import RelaxedBoundaryFMeasure
from .smeasure import SMeasure
from .weighted_fmeasure import WeightedFMeasure

__all__ = [
    "EPS",
    "EMeasure",
    "FMeasure",
    "MAE",
    "PreparedBatch",
    "RelaxedBoundaryFMeasure",
    "SMeasure",
    "SODMetrics",
    "WeightedFMeasure",
    "e_measure",
    "f_measure",
    "mae",
    "relaxed_boundary_f_measure",
    "s_measure",
    "sod_metrics",
    "thresholds",
    "weighted_f_measure",
]
