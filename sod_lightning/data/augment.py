"""Batch-level augmentation and normalisation on the batch's device (kornia)."""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from torch import Tensor, nn

# name -> (mean, std, scale, bgr): x' = (x * scale - mean) / std on channels in RGB or BGR order.
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...], float, bool]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, False),
    # The official U^2-Net/BASNet test-time preprocessing: divide by the image's maximum, then ImageNet mean/std.
    "imagenet_max": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0, False),
    # VGG/Caffe: BGR order, 0..255 scale, mean pixel subtracted, no std.
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 255.0, True),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0, False),
}


class Normalize(nn.Module):
    """Normalise ``(B, 3, H, W)`` RGB images in [0, 1] by a named convention (see ``NORMALIZATIONS``).

    Example:
        >>> Normalize("imagenet")(torch.ones(1, 3, 2, 2))[0, :, 0, 0]
        tensor([2.2489, 2.4286, 2.6400])
    """

    def __init__(self, mode: str = "imagenet") -> None:
        super().__init__()
        if mode not in NORMALIZATIONS:
            raise ValueError(f"data.normalization='{mode}' is unknown; use one of {', '.join(NORMALIZATIONS)}.")
        mean, std, self.scale, self.bgr = NORMALIZATIONS[mode]
        self.mode = mode
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Normalize: expected (B, 3, H, W) images, got {tuple(x.shape)}.")
        if self.mode == "imagenet_max":
            x = x / x.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        if self.bgr:
            x = x.flip(1)
        return (x * self.scale - self.mean.to(x)) / self.std.to(x)

    def denormalize(self, x: Tensor) -> Tensor:
        """Back to RGB in [0, 1], for showing inputs (``imagenet_max`` inputs come back divided by their maximum)."""
        x = (x * self.std.to(x) + self.mean.to(x)) / self.scale
        return (x.flip(1) if self.bgr else x).clamp(0, 1)


def build_augmentation(
    size: Sequence[int],
    hflip: bool = True,
    vflip: bool = False,
    scale: Sequence[float] | None = (0.6, 1.0),
    ratio: Sequence[float] = (0.75, 1.333),
    rotation: float = 0.0,
    color_jitter: float = 0.2,
) -> K.AugmentationSequential:
    """The training augmentation, applied identically to image and mask (colour jitter to the image only).

    Args:
        size: output ``(H, W)`` (the training crop).
        hflip, vflip: random flips.
        scale: random resized crop's area range; ``None`` for a plain random crop of ``size`` (the image must then
            be at least ``size``).
        ratio: random resized crop's aspect-ratio range.
        rotation: maximum rotation in degrees (0 disables).
        color_jitter: strength of brightness/contrast/saturation jitter (0 disables); hue gets a quarter of it.
    """
    ops: list[nn.Module] = []
    if hflip:
        ops.append(K.RandomHorizontalFlip())
    if vflip:
        ops.append(K.RandomVerticalFlip())
    if rotation:
        ops.append(K.RandomRotation(degrees=rotation, p=0.5))
    if scale is not None:
        ops.append(K.RandomResizedCrop(tuple(size), scale=tuple(scale), ratio=tuple(ratio)))
    else:
        ops.append(K.RandomCrop(tuple(size)))
    if color_jitter:
        c = color_jitter
        ops.append(K.ColorJitter(c, c, c, min(c / 4, 0.5), p=0.8))
    return K.AugmentationSequential(*ops, data_keys=["input", "mask"])
