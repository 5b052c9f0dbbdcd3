"""Small pieces shared by the official re-implementations (BASNet, U^2-Net).

The official repositories resize with ``F.upsample(..., mode="bilinear")`` / ``nn.Upsample(mode="bilinear")`` and no
``align_corners`` argument, which has meant ``align_corners=False`` since PyTorch 0.4.0. Writing it out here keeps
every model on the same convention (with ``True`` the reference fixtures move by 1e-2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def upsample_like(src: Tensor, ref: Tensor) -> Tensor:
    """Bilinearly resize ``src`` to the spatial size of ``ref`` (``align_corners=False``, the official behaviour).

    Args:
        src: feature map ``(B, C, h, w)``.
        ref: any tensor ``(B, C', H, W)`` whose last two sizes are the target.

    Returns:
        ``(B, C, H, W)``.

    Example:
        >>> upsample_like(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 8, 6)).shape
        torch.Size([1, 2, 8, 6])
    """
    return F.interpolate(src, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def is_tracing() -> bool:
    """True while the module is being traced, scripted or exported (python-side shape checks must stay out)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def check_bottleneck_batchnorm(model_name: str, x: Tensor, stride: int) -> None:
    """Explain, before BatchNorm fails, that a training batch is too small for the model's deepest level.

    In training mode BatchNorm needs more than one value per channel. At the deepest level (stride ``stride``,
    pooled with ``ceil_mode=True``) each channel holds ``B * ceil(H / stride) * ceil(W / stride)`` values.

    Args:
        model_name: the config name, used in the message (``u2net``, ``basnet``).
        x: the network input ``(B, C, H, W)``.
        stride: the total down-sampling of the deepest level.

    Raises:
        ValueError: when that count is 1.
    """
    batch, _, height, width = x.shape
    if batch * math.ceil(height / stride) * math.ceil(width / stride) < 2:
        raise ValueError(
            f"model={model_name} cannot train on a batch of {batch} image(s) of {height}x{width}: its deepest level "
            f"(stride {stride}) is {math.ceil(height / stride)}x{math.ceil(width / stride)}, so BatchNorm sees one "
            f"value per channel. Use an input larger than {stride} px on one side (data.image_size / data.crop_size) "
            "or a batch of at least 2 (data.batch_size)."
        )
