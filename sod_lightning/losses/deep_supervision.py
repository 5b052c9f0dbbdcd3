"""Applying a per-map loss to every output of a model (deep supervision)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class DeepSupervision(nn.Module):
    """Weighted sum of a per-map loss over all of a model's outputs.

    ``total = sum_k weights[k] * loss(outputs[k], target)``. BASNet trains with its hybrid loss on 8 outputs and
    U^2-Net with BCE on 7, every weight 1: that is ``weights=None``.

    Args:
        loss: a per-map loss, ``loss(logits, target) -> scalar``.
        weights: one weight per output (final prediction first); ``None`` gives every output weight 1.

    Returns (from ``forward``):
        ``{"loss": total, "final": loss of outputs[0] (detached)}``.

    Example:
        >>> from sod_lightning.losses import BCELoss
        >>> crit = DeepSupervision(BCELoss(), weights=[1.0, 0.5])
        >>> out = crit([torch.zeros(1, 1, 4, 4)] * 2, torch.ones(1, 1, 4, 4))
        >>> round(out["loss"].item(), 4)
        1.0397
    """

    def __init__(self, loss: nn.Module, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.loss = loss
        self.weights = None if weights is None else [float(w) for w in weights]

    def forward(self, outputs: Sequence[Tensor], target: Tensor) -> dict[str, Tensor]:
        if isinstance(outputs, Tensor):
            outputs = [outputs]
        if self.weights is not None and len(self.weights) != len(outputs):
            raise ValueError(
                f"loss.weights has {len(self.weights)} entries but the model returns {len(outputs)} outputs. Give one "
                "weight per output (final prediction first), or loss.weights=null for weight 1 on every output."
            )
        weights = self.weights or [1.0] * len(outputs)
        terms = [self.loss(out, target) for out in outputs]
        total = torch.stack([w * t for w, t in zip(weights, terms)]).sum()
        return {"loss": total, "final": terms[0].detach()}
