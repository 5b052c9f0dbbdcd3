"""RefineNet (Lin, Milan, Shen and Reid, CVPR 2017) for binary SOD.

Lin et al., "RefineNet: Multi-Path Refinement Networks for High-Resolution Semantic Segmentation", CVPR 2017
(arXiv 1611.06612). A ResNet encoder gives four feature maps (strides 4, 8, 16, 32). RefineNet-4 refines the
deepest; each RefineNet-k (k = 3, 2, 1) fuses encoder level k with the output of RefineNet-(k+1). One RefineNet
block is (Fig. 3 of the paper):

* adaptive convolution: per input path a 3x3 convolution to the block width, then two residual conv units
  (RCU: ``x + conv3x3(relu(conv3x3(relu(x))))``);
* multi-resolution fusion: a 3x3 convolution per path, upsampled (bilinear) to the largest path, summed;
* chained residual pooling: ``x = relu(x)``, then repeatedly ``p = conv3x3(maxpool5x5_s1(p))``, ``x = x + p``;
* one output RCU.

RefineNet-1's output (stride 4) goes through two RCUs and a 1x1 classifier (one logit), upsampled to the input.
RefineNet has no BatchNorm (the paper's blocks have none; the encoder's BatchNorms remain).

Written by hand (kept small: one width ``channels``, default 128, for every block, where the paper uses 512 for
RefineNet-4 and 256 for the others) because no maintained package ships RefineNet. Encoders come from
``segmentation_models_pytorch`` (the ``backbone`` group names).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder, get_encoder_names
from torch import Tensor, nn

from sod_lightning.models.weights import load_weights


def build_smp_encoder(
    model_name: str, encoder: str, pretrained: bool, encoder_weights: str | None, **kwargs
) -> nn.Module:
    """An smp encoder of depth 5 for a hand-written decoder, with clear errors naming ``model=`` and ``backbone=``.

    Args:
        model_name: the ``model=`` name, for messages.
        encoder: smp encoder name (``backbone.name``).
        pretrained: smp's ImageNet weights (a download).
        encoder_weights: local smp-encoder state-dict file (``backbone.weights``).
        **kwargs: passed to ``get_encoder`` (``output_stride``...).

    Returns:
        The encoder; ``encoder(x)`` returns 6 maps at strides 1, 2, 4, 8, 16, 32 and ``encoder.out_channels``
        their widths.
    """
    if encoder not in get_encoder_names():
        raise ValueError(
            f"model={model_name} cannot use backbone={encoder}: segmentation-models-pytorch has no encoder of that "
            "name. Choose backbone=resnet50, resnet34, mobilenet_v2 or another smp encoder name."
        )
    if pretrained and encoder_weights:
        raise ValueError(
            f"backbone.pretrained=true and backbone.weights='{encoder_weights}' both ask for encoder weights; set one."
        )
    try:
        enc = get_encoder(encoder, in_channels=3, depth=5, weights="imagenet" if pretrained else None, **kwargs)
    except (ValueError, KeyError) as err:
        raise ValueError(f"model={model_name} cannot use backbone={encoder}: {err}") from err
    if encoder_weights:
        load_weights(enc, Path(encoder_weights))
    return enc


def check_multiple_of(model_name: str, height: int, width: int, stride: int) -> None:
    """Raise ``ValueError`` unless H and W are positive multiples of ``stride``."""
    if height < stride or width < stride or height % stride or width % stride:
        raise ValueError(
            f"Input size {height}x{width} does not fit model={model_name}: H and W must be multiples of {stride} "
            f"(the encoder's total stride; the decoder adds maps of successive levels). Set data.image_size (and "
            f"data.crop_size) to multiples of {stride}."
        )


class RCU(nn.Module):
    """Residual conv unit: ``x + conv3x3(relu(conv3x3(relu(x))))``. Shapes: ``(B, C, h, w) -> (B, C, h, w)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ChainedResidualPooling(nn.Module):
    """``x = relu(x)``; ``stages`` times: ``p = conv3x3(maxpool5x5(p))``, ``x = x + p`` (stride 1, same size)."""

    def __init__(self, channels: int, stages: int = 2) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in range(stages))

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        path = x
        for conv in self.convs:
            path = conv(F.max_pool2d(path, 5, stride=1, padding=2))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """One RefineNet block over one or two input paths (the first is the highest resolution).

    Args:
        in_channels: channels of each input path.
        channels: the block width.
        crp_stages: pooling stages of the chained residual pooling (the paper's Fig. 3 shows 2).

    Shapes: paths ``(B, C_k, h_k, w_k)`` -> ``(B, channels, h_0, w_0)``.
    """

    def __init__(self, in_channels: list[int], channels: int, crp_stages: int = 2) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), RCU(channels), RCU(channels)) for c in in_channels
        )
        # Fusion convs only when several paths meet (a single path goes straight to the pooling).
        self.fuse = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in in_channels
        ) if len(in_channels) > 1 else None
        self.crp = ChainedResidualPooling(channels, crp_stages)
        self.out = RCU(channels)

    def forward(self, *paths: Tensor) -> Tensor:
        feats = [adapt(p) for adapt, p in zip(self.adapt, paths)]
        if self.fuse is not None:
            size = feats[0].shape[-2:]
            x = self.fuse[0](feats[0])
            for conv, f in zip(self.fuse[1:], feats[1:]):
                x = x + F.interpolate(conv(f), size=size, mode="bilinear", align_corners=False)
        else:
            x = feats[0]
        return self.out(self.crp(x))


class RefineNet(nn.Module):
    """4-cascaded RefineNet on an smp encoder; returns ``[logits]``.

    Input size: H and W multiples of 32.

    Args:
        encoder: smp encoder name (``backbone.name``): ``resnet50`` (the paper's ResNet family), ``resnet34``...
        pretrained: smp's ImageNet encoder weights (a download).
        encoder_weights: a local smp-encoder state-dict file (``backbone.weights``).
        weights: a state-dict file for the whole network.
        channels: width of every RefineNet block (paper: 512 for RefineNet-4, 256 for the others; 128 keeps the
            decoder at about 10 M parameters).
        crp_stages: pooling stages in each chained residual pooling.

    Shapes: ``(B, 3, H, W) -> [(B, 1, H, W)]``.

    Example:
        >>> import torch
        >>> net = RefineNet("resnet18", channels=32)
        >>> [tuple(o.shape) for o in net(torch.zeros(1, 3, 64, 96))]
        [(1, 1, 64, 96)]
    """

    def __init__(
        self,
        encoder: str = "resnet50",
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
        channels: int = 128,
        crp_stages: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = build_smp_encoder("refinenet", encoder, pretrained, encoder_weights)
        c1, c2, c3, c4 = self.encoder.out_channels[2:6]  # strides 4, 8, 16, 32
        self.refine4 = RefineBlock([c4], channels, crp_stages)
        self.refine3 = RefineBlock([c3, channels], channels, crp_stages)
        self.refine2 = RefineBlock([c2, channels], channels, crp_stages)
        self.refine1 = RefineBlock([c1, channels], channels, crp_stages)
        self.head = nn.Sequential(RCU(channels), RCU(channels), nn.Conv2d(channels, 1, 1))
        if weights:
            load_weights(self, Path(weights))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless H and W are multiples of 32.

        Example:
            >>> RefineNet("resnet18", channels=8).check_input_size(64, 96)
        """
        check_multiple_of("refinenet", height, width, 32)

    def forward(self, x: Tensor) -> list[Tensor]:
        f1, f2, f3, f4 = self.encoder(x)[2:6]
        r = self.refine4(f4)
        r = self.refine3(f3, r)
        r = self.refine2(f2, r)
        r = self.refine1(f1, r)
        return [F.interpolate(self.head(r), size=x.shape[-2:], mode="bilinear", align_corners=False)]
