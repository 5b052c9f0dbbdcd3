"""Boundary-aware loss: a differentiable boundary F1 (Bokhovkin and Burnaev, ISNN 2019).

Bokhovkin, A. and Burnaev, E., "Boundary Loss for Remote Sensing Imagery Semantic Segmentation", ISNN 2019
(arXiv 1905.07852). For each class map ``y`` (the mask) and ``p`` (the prediction):

* boundaries: ``y_b = maxpool_{theta0}(1 - y) - (1 - y)`` and ``p_b = maxpool_{theta0}(1 - p) - (1 - p)``
  (one-pixel-wide inner borders for ``theta0 = 3``);
* extended boundaries: ``y_b_ext = maxpool_{theta}(y_b)``, ``p_b_ext = maxpool_{theta}(p_b)``;
* ``P = sum(p_b * y_b_ext) / sum(p_b)``, ``R = sum(p_b_ext * y_b) / sum(y_b)``, ``BF1 = 2 P R / (P + R)``;
* ``loss = mean over images and classes of (1 - BF1)``.

Pooling is stride 1 with ``(k - 1) // 2`` padding (max-pool pads with -inf, so borders are not invented at the image
edge). We use ``F.max_pool2d`` rather than ``kornia.morphology.dilation``: with a flat square kernel the two are the
same grey dilation, and max-pool is the single fused kernel (kornia unfolds the neighbourhood).

For binary SOD the two classes are foreground ``sigmoid(logits)`` and background ``1 - sigmoid(logits)``, exactly the
2-class softmax of the paper's multi-class form (``classes="both"``, default); ``classes="foreground"`` keeps only
the salient class. A boundary F1 alone ignores region interiors, so :class:`BoundaryAwareLoss` adds it to a region
loss (BCE by default), as the paper trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sod_lightning.losses.functional import _check_pair
from sod_lightning.losses.modules import BCELoss

_EPS = 1e-7  # the paper's code: keeps P, R and BF1 finite when a map has no boundary


def _boundary(x: Tensor, kernel: int) -> Tensor:
    """Inner boundary of a soft map in [0, 1]: ``maxpool(1 - x) - (1 - x)``."""
    inv = 1.0 - x
    return F.max_pool2d(inv, kernel_size=kernel, stride=1, padding=(kernel - 1) // 2) - inv


def boundary_f1(prob: Tensor, target: Tensor, theta0: int = 3, theta: int = 5) -> Tensor:
    """Per-image, per-channel soft boundary F1 of a probability map against a mask.

    Args:
        prob: ``(B, C, H, W)`` probabilities.
        target: ``(B, C, H, W)`` mask in [0, 1].
        theta0: boundary width kernel (odd).
        theta: tolerance kernel for matching boundaries (odd).

    Returns:
        ``(B, C)`` BF1 in [0, 1].

    Example:
        >>> t = torch.zeros(1, 1, 16, 16); t[..., 4:12, 4:12] = 1
        >>> boundary_f1(t, t).item() > 0.999
        True
    """
    gt_b = _boundary(target, theta0)
    pred_b = _boundary(prob, theta0)
    pad = (theta - 1) // 2
    gt_b_ext = F.max_pool2d(gt_b, kernel_size=theta, stride=1, padding=pad)
    pred_b_ext = F.max_pool2d(pred_b, kernel_size=theta, stride=1, padding=pad)
    precision = (pred_b * gt_b_ext).sum(dim=(2, 3)) / (pred_b.sum(dim=(2, 3)) + _EPS)
    recall = (pred_b_ext * gt_b).sum(dim=(2, 3)) / (gt_b.sum(dim=(2, 3)) + _EPS)
    return 2.0 * precision * recall / (precision + recall + _EPS)


def boundary_loss(
    logits: Tensor, target: Tensor, theta0: int = 3, theta: int = 5, classes: str = "both"
) -> Tensor:
    """Bokhovkin and Burnaev's boundary loss ``mean(1 - BF1)`` for a binary logit map.

    Args:
        logits: ``(B, 1, H, W)`` logits.
        target: ``(B, 1, H, W)`` mask in [0, 1].
        theta0: boundary width kernel (odd, paper: 3).
        theta: boundary matching tolerance kernel (odd, paper: 5).
        classes: ``"both"`` averages the foreground and background BF1 (the paper's 2-class softmax form);
            ``"foreground"`` uses the salient class only.

    Returns:
        Scalar loss in [0, 1]. An image whose mask has no boundary at all (empty or full) scores BF1 = 0 for that
        class, as in the paper's code; the region loss it is paired with carries such images.

    Example:
        >>> t = torch.zeros(1, 1, 16, 16); t[..., 4:12, 4:12] = 1
        >>> boundary_loss(torch.where(t > 0, 30.0, -30.0), t).item() < 1e-5
        True
    """
    _check_pair(logits, target)
    for name, k in (("theta0", theta0), ("theta", theta)):
        if k < 1 or k % 2 == 0:
            raise ValueError(f"boundary loss {name}={k}: expected an odd kernel size >= 1 (paper: theta0=3, theta=5).")
    if classes not in ("both", "foreground"):
        raise ValueError(f"boundary loss classes='{classes}': expected 'both' or 'foreground'.")
    # Half precision is promoted to float32 (max-pool differences of probabilities); float64 stays float64.
    dtype = torch.promote_types(logits.dtype, torch.float32)
    prob, target = torch.sigmoid(logits.to(dtype)), target.to(dtype)
    if classes == "both":
        prob = torch.cat([prob, 1.0 - prob], dim=1)
        target = torch.cat([target, 1.0 - target], dim=1)
    return (1.0 - boundary_f1(prob, target, theta0, theta)).mean()


class BoundaryLoss(nn.Module):
    """Per-map module of :func:`boundary_loss`: ``loss(logits, target) -> scalar``.

    Example:
        >>> t = torch.zeros(2, 1, 16, 16); t[..., 4:12, 4:12] = 1
        >>> float(BoundaryLoss()(torch.zeros(2, 1, 16, 16), t)) > 0.5
        True
    """

    def __init__(self, theta0: int = 3, theta: int = 5, classes: str = "both") -> None:
        super().__init__()
        self.theta0, self.theta, self.classes = int(theta0), int(theta), classes

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return boundary_loss(logits, target, self.theta0, self.theta, self.classes)


class BoundaryAwareLoss(nn.Module):
    """A region loss plus a weighted boundary loss on one map: ``region(l, t) + boundary_weight * BF1-loss(l, t)``.

    Wrap it in :class:`~sod_lightning.losses.DeepSupervision` to supervise every output (``conf/loss/boundary.yaml``).

    Args:
        region: any per-map loss ``region(logits, target) -> scalar`` (``BCELoss`` default, ``HybridLoss``, ...).
        boundary_weight: weight of the boundary term (the paper adds it with weight 1 to the region loss).
        theta0: boundary width kernel.
        theta: boundary matching tolerance kernel.
        classes: see :func:`boundary_loss`.

    Example:
        >>> from sod_lightning.losses import BCELoss
        >>> t = torch.zeros(1, 1, 16, 16); t[..., 4:12, 4:12] = 1
        >>> crit = BoundaryAwareLoss(BCELoss(), boundary_weight=0.5)
        >>> float(crit(torch.where(t > 0, 30.0, -30.0), t)) < 1e-5
        True
    """

    def __init__(
        self,
        region: nn.Module | None = None,
        boundary_weight: float = 1.0,
        theta0: int = 3,
        theta: int = 5,
        classes: str = "both",
    ) -> None:
        super().__init__()
        self.region = region if region is not None else BCELoss()
        self.boundary = BoundaryLoss(theta0, theta, classes)
        self.boundary_weight = float(boundary_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.region(logits, target) + self.boundary_weight * self.boundary(logits, target)
