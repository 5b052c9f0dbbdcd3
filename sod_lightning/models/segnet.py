"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017) for binary SOD.

Badrinarayanan et al., "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation",
IEEE TPAMI 39(12), 2017 (arXiv 1511.00561). The encoder is the 13 convolutions of VGG-16 with BatchNorm
(torchvision's ``vgg16_bn().features``; torchvision/smp VGG state dicts load into it before it is split into
stages, see :func:`build_vgg16_features`). Each
of its five 2x2 max-pools keeps its argmax indices; the decoder mirrors the encoder and upsamples with
**max-unpooling at those indices** (no learned upsampling, no skip concatenation), followed by 3x3 conv-BN-ReLU
layers; a final 3x3 convolution gives one logit channel (the paper's softmax classifier over K classes becomes one
logit for binary SOD).

No well-kept library ships SegNet, hence this hand-written version (about 29.4 M parameters with VGG-16-BN).
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VGG16_BN_Weights, VGG16_Weights, vgg16, vgg16_bn
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers

from sod_lightning.models.weights import load_state_dict_file, load_weights

_VGG = {"vgg16_bn": (vgg16_bn, VGG16_BN_Weights.IMAGENET1K_V1), "vgg16": (vgg16, VGG16_Weights.IMAGENET1K_V1)}
# VGG-16 channels per encoder stage (2, 2, 3, 3, 3 convolutions).
VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
MIN_SIZE = 32  # five 2x2 pools: the deepest map must keep at least one pixel


def build_vgg16_features(model_name: str, encoder: str, pretrained: bool, encoder_weights: str | None) -> nn.Sequential:
    """torchvision's VGG-16(-BN) ``features`` (conv and pool layers), optionally with weights.

    Args:
        model_name: the ``model=`` name, for error messages.
        encoder: ``vgg16_bn`` or ``vgg16`` (the ``backbone`` group name).
        pretrained: load torchvision's ImageNet weights (a download).
        encoder_weights: a local state-dict file of a torchvision VGG (``features.*`` keys; ``classifier.*`` is
            ignored), or of this ``features`` module alone.

    Returns:
        ``nn.Sequential`` with the five ``MaxPool2d`` layers in place.
    """
    if encoder not in _VGG:
        raise ValueError(
            f"model={model_name} cannot use backbone={encoder}: the architecture is defined on the VGG-16 encoder "
            f"(max-pooling indices / a mirrored deconvolution stack). Use backbone=vgg16_bn (default) or "
            "backbone=vgg16."
        )
    if pretrained and encoder_weights:
        raise ValueError(
            f"backbone.pretrained=true and backbone.weights='{encoder_weights}' both ask for encoder weights; set one."
        )
    if pretrained:
        builder, imagenet = _VGG[encoder]
        features = builder(weights=imagenet).features
    else:
        # torchvision's own layer builder: the same modules and names as vgg16_bn().features, without allocating
        # and initialising the 120 M-parameter classifier that would be thrown away.
        features = make_layers(vgg_cfgs["D"], batch_norm=encoder == "vgg16_bn")
        for m in features.modules():  # torchvision VGG's initialisation of the feature layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
    if encoder_weights:
        state = load_state_dict_file(Path(encoder_weights))
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        load_weights(features, state)
    return features


def split_vgg_stages(features: nn.Sequential) -> nn.ModuleList:
    """Split VGG ``features`` at its max-pools into five stages of conv(-BN)-ReLU layers (pools dropped)."""
    stages, current = [], []
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
        else:
            current.append(layer)
    return nn.ModuleList(stages)


def check_min_size(model_name: str, height: int, width: int) -> None:
    """Raise ``ValueError`` when a side is below :data:`MIN_SIZE` (five 2x2 max-pools)."""
    if height < MIN_SIZE or width < MIN_SIZE:
        raise ValueError(
            f"Input size {height}x{width} does not fit model={model_name}: its VGG-16 encoder max-pools five times, "
            f"so H and W must be at least {MIN_SIZE}. Set data.image_size (and data.crop_size) to {MIN_SIZE} or more."
        )


def _cbr(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


class SegNet(nn.Module):
    """SegNet with a VGG-16(-BN) encoder and a max-unpooling decoder; returns ``[logits]``.

    Input size: any ``H, W >= 32``; unpooling restores each pre-pool size exactly (``output_size``), so odd sizes
    work.

    Args:
        encoder: ``vgg16_bn`` (default, the paper's encoder with BatchNorm) or ``vgg16`` (``backbone.name``).
        pretrained: torchvision's ImageNet encoder weights (a download).
        encoder_weights: a local torchvision VGG state-dict file for the encoder (``backbone.weights``).
        weights: a state-dict file for the whole network.

    Shapes: ``(B, 3, H, W) -> [(B, 1, H, W)]``.

    Example:
        >>> import torch
        >>> [tuple(o.shape) for o in SegNet()(torch.zeros(1, 3, 64, 48))]
        [(1, 1, 64, 48)]
    """

    def __init__(
        self,
        encoder: str = "vgg16_bn",
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
    ) -> None:
        super().__init__()
        self.encoder = split_vgg_stages(build_vgg16_features("segnet", encoder, pretrained, encoder_weights))
        decoder = []
        # Decoder stage k mirrors encoder stage k: the same number of convs, ending in the previous stage's width.
        for k in reversed(range(5)):
            chans = VGG16_STAGES[k]
            out_last = VGG16_STAGES[k - 1][-1] if k > 0 else chans[0]
            layers: list[nn.Module] = []
            for i in range(len(chans)):
                layers += _cbr(chans[i], chans[i] if i < len(chans) - 1 else out_last)
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)
        self.classifier = nn.Conv2d(VGG16_STAGES[0][0], 1, 3, padding=1)
        if weights:
            load_weights(self, Path(weights))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` when H or W is below 32.

        Example:
            >>> SegNet().check_input_size(50, 70)
        """
        check_min_size("segnet", height, width)

    def forward(self, x: Tensor) -> list[Tensor]:
        pools = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            pools.append((idx, size))
        for stage, (idx, size) in zip(self.decoder, reversed(pools)):
            x = stage(F.max_unpool2d(x, idx, 2, 2, output_size=size))
        return [self.classifier(x)]
