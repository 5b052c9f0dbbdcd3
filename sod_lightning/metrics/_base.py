"""The thin torchmetrics ``Metric`` shared by every SOD metric class: summed float64 sufficient statistics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from ._prepare import PreparedBatch
from .functional._base import MetricFamily, per_image_statistics


class FamilyMetric(Metric):
    """Accumulates the per-image statistics of some metric families and reduces them at ``compute``.

    States (all float64, ``dist_reduce_fx="sum"``): ``n_images`` and, per family, the sums over images of its
    per-image statistics (scalars, or 256-value curves). Summation is exact under DDP synchronisation (up to
    float64 rounding of the additions) and memory does not grow with the number of images: no list states.

    float64 states need a device with float64 support: CPU and CUDA have it, Apple MPS does not. On MPS,
    predictions are evaluated on the CPU (see ``update``); keep the metric itself on the CPU there (torchmetrics
    cannot move float64 states to MPS).

    Args:
        families: the families to accumulate.
        keys: result keys ``compute`` returns (default: every key of the families).
        **kwargs: torchmetrics ``Metric`` options (``sync_on_compute``, ``dist_sync_fn``, ...).
    """

    is_differentiable = False
    higher_is_better: bool | None = None
    full_state_update = False

    def __init__(self, families: Sequence[MetricFamily], keys: Sequence[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._families = tuple(families)
        self._keys = tuple(keys) if keys is not None else tuple(k for f in self._families for k in f.keys)
        self.add_state("n_images", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        for family in self._families:
            for name, shape in family.states.items():
                self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add one batch of images of the same size.

        Args:
            preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (float; quantised to bytes as an
                8-bit PNG would be), or uint8 bytes 0..255.
            target: same shape; float mask in [0, 1], uint8 0..255 or bool (binarised as ``gt255 > 128``).
        """
        if preds.device.type == "mps":  # no float64 on MPS: evaluate on the CPU
            preds, target = preds.cpu(), target.cpu()
        prep = PreparedBatch(preds, target)
        state_device = self.n_images.device
        self.n_images += prep.batch_size
        for name, per_image in per_image_statistics(self._families, prep).items():
            state = getattr(self, name)
            state += per_image.sum(0).to(state_device)

    def _sums(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for family in self._families for name in family.states}

    def compute(self) -> dict[str, Tensor]:
        """Dataset-level results: a flat dict of 0-d tensors and ``(256,)`` curves (thresholds ascending)."""
        if float(self.n_images) == 0:
            raise RuntimeError(
                f"{type(self).__name__}.compute() was called before any image was added: call "
                f"`update(preds, target)` at least once (an empty validation set gives no metrics)."
            )
        sums = self._sums()
        result: dict[str, Tensor] = {}
        for family in self._families:
            result.update(family.compute({k: sums[k] for k in family.states}, self.n_images))
        return {k: result[k] for k in self._keys}
