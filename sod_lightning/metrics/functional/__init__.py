"""Functional SOD metrics: each returns the dataset-level value(s) over the images of one batch.

See :mod:`sod_lightning.metrics` for the definitions shared by all of them.
"""

from .emeasure import e_measure
from .fmeasure import f_measure
from .mean_absolute_error import mae
from .relaxed_boundary import relaxed_boundary_f_measure
from .smeasure import s_measure
from .weighted_fmeasure import weighted_f_measure
from .collection import sod_metrics

__all__ = [
    "e_measure",
    "f_measure",
    "mae",
    "relaxed_boundary_f_measure",
    "s_measure",
    "sod_metrics",
    "weighted_f_measure",
]
