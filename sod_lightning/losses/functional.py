"""Per-map SOD losses as pure functions of logits.

Every function takes ``logits`` and ``target`` of shape ``(B, 1, H, W)`` (``target`` in [0, 1]) and returns a scalar.
Working from logits keeps BCE numerically stable and safe under mixed precision (the official BASNet and U^2-Net
code apply ``nn.BCELoss`` to probabilities, which overflows in float16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters import filter2d, get_gaussian_kernel2d
from torch import Tensor

_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2
_PADDING = {"zeros": "constant", "reflect": "reflect"}


def _float(x: Tensor) -> Tensor:
    """At least float32: half precision is promoted, float64 (used by the reference tests) is kept."""
    return x if x.dtype == torch.float64 else x.float()


def _check_pair(logits: Tensor, target: Tensor) -> None:
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"logits: expected shape (B, 1, H, W), got {tuple(logits.shape)}.")
    if target.shape != logits.shape:
        raise ValueError(
            f"target: expected the shape of logits {tuple(logits.shape)}, got {tuple(target.shape)}. Resize the "
            "mask to the prediction before computing the loss."
        )


def bce(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy, mean over pixels: ``-[t log p + (1 - t) log(1 - p)]`` with ``p = sigmoid(logits)``.

    Example:
        >>> round(bce(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)).item(), 4)
        0.6931
    """
    _check_pair(logits, target)
    return F.binary_cross_entropy_with_logits(_float(logits), _float(target).to(_float(logits).dtype))


def iou(logits: Tensor, target: Tensor) -> Tensor:
    """BASNet's soft IoU loss: batch mean of ``1 - sum(t p) / (sum(t) + sum(p) - sum(t p))`` per sample.

    Written by hand because the library versions (smp's ``JaccardLoss``) add smoothing terms and pool the batch;
    BASNet's definition has no epsilon (the denominator is at least ``sum(p) > 0``) and averages per sample.

    Example:
        >>> t = torch.zeros(1, 1, 4, 4); t[..., :2, :] = 1
        >>> iou(torch.where(t > 0, 20.0, -20.0), t) < 1e-6
        tensor(True)
    """
    _check_pair(logits, target)
    p = torch.sigmoid(_float(logits))
    t = target.to(p.dtype)
    inter = (p * t).sum(dim=(1, 2, 3))
    union = t.sum(dim=(1, 2, 3)) + p.sum(dim=(1, 2, 3)) - inter
    return (1.0 - inter / union).mean()


def ssim(prob: Tensor, target: Tensor, window_size: int = 11, sigma: float = 1.5, padding: str = "zeros") -> Tensor:
    """Mean structural similarity of two maps in [0, 1] (Wang et al. 2004), Gaussian window.

    ``padding="zeros"`` reproduces the official BASNet/pytorch-ssim value (zero padding of ``window_size // 2`` for
    all five local moments); ``padding="reflect"`` equals ``kornia.metrics.ssim(...).mean()``. Both use kornia's
    ``filter2d``; computed in float32 even under autocast, as the moments cancel catastrophically in half precision.

    Args:
        prob: ``(B, 1, H, W)`` probabilities.
        target: ``(B, 1, H, W)`` in [0, 1].
        window_size: Gaussian window side (odd).
        sigma: Gaussian standard deviation.
        padding: ``"zeros"`` (BASNet) or ``"reflect"`` (kornia).

    Example:
        >>> t = torch.rand(1, 1, 16, 16)
        >>> round(ssim(t, t).item(), 6)
        1.0
    """
    _check_pair(prob, target)
    if padding not in _PADDING:
        raise ValueError(f"ssim padding: expected one of {sorted(_PADDING)}, got '{padding}'.")
    border = _PADDING[padding]
    if padding == "reflect" and min(prob.shape[-2:]) <= window_size // 2:
        raise ValueError(
            f"ssim with reflect padding needs maps larger than {window_size // 2} pixels per side, got "
            f"{tuple(prob.shape[-2:])}; use padding='zeros' or larger inputs."
        )
    with torch.autocast(device_type=prob.device.type, enabled=False):
        x = _float(prob)
        y = target.to(x.dtype)
        kernel = get_gaussian_kernel2d((window_size, window_size), (sigma, sigma), device=x.device, dtype=x.dtype)
        mu_x, mu_y = filter2d(x, kernel, border_type=border), filter2d(y, kernel, border_type=border)
        sxx = filter2d(x * x, kernel, border_type=border) - mu_x**2
        syy = filter2d(y * y, kernel, border_type=border) - mu_y**2
        sxy = filter2d(x * y, kernel, border_type=border) - mu_x * mu_y
        num = (2 * mu_x * mu_y + _SSIM_C1) * (2 * sxy + _SSIM_C2)
        den = (mu_x**2 + mu_y**2 + _SSIM_C1) * (sxx + syy + _SSIM_C2)
        return (num / den).mean()


def ssim_loss(logits: Tensor, target: Tensor, padding: str = "zeros") -> Tensor:
    """``1 - SSIM(sigmoid(logits), target)``: BASNet's scale (kornia's ``ssim_loss`` is half of this)."""
    return 1.0 - ssim(torch.sigmoid(_float(logits)), target, padding=padding)


def hybrid(logits: Tensor, target: Tensor, ssim_padding: str = "zeros") -> Tensor:
    """BASNet's hybrid loss ``BCE + (1 - SSIM) + IoU`` (Qin et al., CVPR 2019, eq. 5), SSIM zero-padded by default.

    Example:
        >>> t = (torch.rand(2, 1, 32, 32) > 0.5).float()
        >>> hybrid(torch.where(t > 0, 30.0, -30.0), t) < 1e-6
        tensor(True)
    """
    return bce(logits, target) + ssim_loss(logits, target, ssim_padding) + iou(logits, target)
