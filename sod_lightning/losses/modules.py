"""Thin ``nn.Module`` wrappers of the per-map losses in :mod:`sod_lightning.losses.functional`.

Each is called as ``loss(logits, target) -> scalar`` on one ``(B, 1, H, W)`` map; wrap it in
:class:`~sod_lightning.losses.DeepSupervision` to apply it to every output of a model.
"""

from __future__ import annotations

from torch import Tensor, nn

from sod_lightning.losses import functional as LF


class BCELoss(nn.Module):
    """Binary cross-entropy from logits (see :func:`~sod_lightning.losses.functional.bce`)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.bce(logits, target)


class IoULoss(nn.Module):
    """BASNet's soft IoU loss (see :func:`~sod_lightning.losses.functional.iou`)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.iou(logits, target)


class SSIMLoss(nn.Module):
    """``1 - SSIM`` with an 11x11, sigma 1.5 Gaussian window; ``padding`` is ``"reflect"`` (kornia) or ``"zeros"``."""

    def __init__(self, padding: str = "reflect") -> None:
        super().__init__()
        self.padding = padding

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return LF.ssim_loss(logits, target, self.padding)


class HybridLoss(nn.Module):
    """BASNet's ``BCE + (1 - SSIM) + IoU``; ``ssim_padding="zeros"`` (the official borders) by default.

    The term weights (all 1 in BASNet) are exposed so that sweeps can search them.
    """

    def __init__(self, ssim_padding: str = "zeros", bce_weight: float = 1.0, ssim_weight: float = 1.0,
                 iou_weight: float = 1.0) -> None:
        super().__init__()
        self.ssim_padding = ssim_padding
        self.weights = (float(bce_weight), float(ssim_weight), float(iou_weight))

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.weights == (1.0, 1.0, 1.0):
            return LF.hybrid(logits, target, self.ssim_padding)
        wb, ws, wi = self.weights
        return (wb * LF.bce(logits, target) + ws * LF.ssim_loss(logits, target, self.ssim_padding)
                + wi * LF.iou(logits, target))


class DiceLoss(nn.Module):
    """Soft Dice loss from logits: segmentation-models-pytorch's ``DiceLoss(mode="binary")``.

    smp pools the whole batch into one Dice coefficient and adds ``smooth`` to numerator and denominator.
    """

    def __init__(self, smooth: float = 0.0, eps: float = 1e-7) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss as _SMPDiceLoss  # smp is slow to import

        self.dice = _SMPDiceLoss(mode="binary", from_logits=True, smooth=smooth, eps=eps)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        LF._check_pair(logits, target)
        return self.dice(LF._float(logits), LF._float(target))
