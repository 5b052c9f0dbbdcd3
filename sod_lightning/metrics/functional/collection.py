"""All SOD metric families together: selection by result key and the functional ``sod_metrics``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor

from .._prepare import PreparedBatch
from ._base import MetricFamily, per_image_statistics, sums_count
from .emeasure import EMEASURE_FAMILY
from .fmeasure import FMEASURE_FAMILY
from .mean_absolute_error import MAE_FAMILY
from .relaxed_boundary import RELAXFB_FAMILY
from .smeasure import SMEASURE_FAMILY
from .weighted_fmeasure import WFMEASURE_FAMILY

#: Every family, in the order their keys are reported.
FAMILIES: tuple[MetricFamily, ...] = (
    MAE_FAMILY,
    FMEASURE_FAMILY,
    SMEASURE_FAMILY,
    EMEASURE_FAMILY,
    WFMEASURE_FAMILY,
    RELAXFB_FAMILY,
)

#: Scalar result keys, then the 256-value curves (thresholds ascending).
SCALAR_KEYS = ("mae", "maxf", "meanf", "adpf", "sm", "maxem", "meanem", "adpem", "wfm", "relaxfb")
CURVE_KEYS = ("pr_precision", "pr_recall", "f_curve", "em_curve")
ALL_KEYS = SCALAR_KEYS + CURVE_KEYS


def select_families(metrics: Iterable[str] | None) -> tuple[tuple[MetricFamily, ...], tuple[str, ...]]:
    """Families needed for the requested result keys (``None`` = all), and the keys in report order.

    Raises:
        ValueError: for an unknown key, listing the valid ones.

    Example:
        >>> [f.name for f in select_families(["sm", "maxf"])[0]]
        ['fmeasure', 'smeasure']
    """
    if metrics is None:
        wanted = set(ALL_KEYS)
    else:
        if isinstance(metrics, str):
            metrics = [metrics]
        wanted = set(metrics)
        unknown = sorted(wanted - set(ALL_KEYS))
        if unknown or not wanted:
            raise ValueError(
                f"SODMetrics: unknown metric key(s) {unknown or '(empty list)'}. Choose among "
                f"{list(ALL_KEYS)} or pass metrics=None for all of them (e.g. "
                f"`SODMetrics(metrics=['mae', 'maxf', 'sm'])` skips the slower weighted F)."
            )
    families = tuple(f for f in FAMILIES if wanted & set(f.keys))
    keys = tuple(k for k in ALL_KEYS if k in wanted)
    return families, keys


def sod_metrics(preds: Tensor, target: Tensor, metrics: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Every SOD metric over the images of one batch, as :class:`~sod_lightning.metrics.SODMetrics` reports.

    Args:
        preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (or uint8 0..255).
        target: same shape; float in [0, 1], uint8 or bool.
        metrics: result keys to compute (default: all of ``ALL_KEYS``).

    Returns:
        Flat dict: scalars as 0-d float64 tensors, curves as ``(256,)`` float64 (thresholds ascending).

    Example:
        >>> import torch
        >>> gt = torch.zeros(2, 1, 16, 16); gt[..., 4:12, 4:12] = 1
        >>> out = sod_metrics(gt.clone(), gt)
        >>> float(out["maxf"]), round(float(out["sm"]), 6), out["f_curve"].shape
        (1.0, 1.0, torch.Size([256]))
    """
    families, keys = select_families(metrics)
    prep = PreparedBatch(preds, target)
    n = sums_count(prep)
    sums = {name: value.sum(0) for name, value in per_image_statistics(families, prep).items()}
    result: dict[str, Tensor] = {}
    for family in families:
        result.update(family.compute({k: sums[k] for k in family.states}, n))
    return {k: result[k] for k in keys}
