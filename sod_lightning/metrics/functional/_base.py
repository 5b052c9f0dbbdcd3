"""The shape every metric family shares: per-image sufficient statistics, then a dataset-level reduction.

A family's ``update`` maps a :class:`~sod_lightning.metrics._prepare.PreparedBatch` to per-image statistics
``{state_name: (B, *shape) float64}``; the Metric classes sum them over images (``dist_reduce_fx="sum"``),
and ``compute(sums, n_images)`` turns the sums into the published numbers. Keeping per-image statistics
additive is what makes DDP synchronisation exact and memory constant in the number of images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._prepare import PreparedBatch


class MetricFamily(NamedTuple):
    """A group of metrics computed from the same per-image statistics.

    Attributes:
        name: family name (``"fmeasure"``).
        keys: result keys it produces (``("maxf", "meanf", ...)``).
        states: state name -> per-image shape (``()`` for a scalar, ``(256,)`` for a curve).
        update: ``PreparedBatch -> {state: (B, *shape) float64}`` per-image statistics.
        compute: ``(sums, n_images) -> {key: Tensor}`` dataset-level results.
    """

    name: str
    keys: tuple[str, ...]
    states: dict[str, tuple[int, ...]]
    update: Callable[[PreparedBatch], dict[str, Tensor]]
    compute: Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]]


def per_image_statistics(families: Sequence[MetricFamily], prep: PreparedBatch) -> dict[str, Tensor]:
    """Every family's per-image statistics of one batch: ``{state: (B, *shape) float64}``."""
    result: dict[str, Tensor] = {}
    for family in families:
        result.update(family.update(prep))
    return result


def evaluate_family(family: MetricFamily, preds: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Run one family over a batch and reduce over its images (the functional twins use this)."""
    prep = PreparedBatch(preds, target)
    sums = {name: value.sum(0) for name, value in family.update(prep).items()}
    return family.compute(sums, sums_count(prep))


def sums_count(prep: PreparedBatch) -> Tensor:
    """Number of images of a batch as a float64 0-d tensor."""
    return torch.tensor(float(prep.batch_size), dtype=torch.float64, device=prep.device)
