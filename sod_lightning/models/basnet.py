"""BASNet (Qin et al., CVPR 2019), identical to the official ``model/BASNet.py``.

Reference: ``xuebinqin/BASNet@5639381``, class ``BASNet(3, 1)``: a ResNet-34 predict module (3x3 stride-1 stem, no
max-pool, torchvision's ``layer1..layer4``, two extra pool + 3 BasicBlock stages), a dilated bridge, six decoder
stages with side outputs, and the residual refinement module (``RefUnet``) on the stage-1 logit.

The parameter names are the official ones (``encoder1..4`` included), so the published ``basnet.pth`` loads with
``strict=True`` and no key map. torchvision/timm ResNet-34 state dicts name those stages ``layer1..4``; they are
read into a torchvision ``resnet34`` whose ``layerK`` modules then *become* ``encoderK``, which is the
``encoderK. <-> layerK.`` correspondence of :data:`TORCHVISION_RESNET34_KEY_MAP`.

Differences from the official forward, none changing a number:

* the outputs are **logits** (the official forward applies a sigmoid to all eight);
* upsampling is size-based (``F.interpolate(size=...)``) with ``align_corners=False`` instead of
  ``nn.Upsample(scale_factor=2**k)``; for inputs whose sides are multiples of 32 (the only ones BASNet accepts) the
  two give identical values, and the size-based form exports to ONNX without scale constants;
* ``resnet34(pretrained=True)`` (a download at construction) became an opt-in (``backbone_pretrained``) or a local
  file (``backbone_weights``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import ResNet34_Weights, resnet34
from torchvision.models.resnet import BasicBlock

from sod_lightning.models.blocks import check_bottleneck_batchnorm, is_tracing, upsample_like
from sod_lightning.models.weights import load_weights

# Official encoder stage prefix -> torchvision ResNet-34 prefix (same sub-keys, shapes and order).
TORCHVISION_RESNET34_KEY_MAP: dict[str, str] = {f"encoder{k}.": f"layer{k}." for k in range(1, 5)}
_STRIDE = 32  # h6, the bridge and the 6d decoder stage run at H/32

# Decoder stages: name -> (in, mid, out, dilation of the _m and _2 convs); the _1 conv is never dilated.
_DECODER: dict[str, tuple[int, int, int, int]] = {
    "6d": (1024, 512, 512, 2),
    "5d": (1024, 512, 512, 1),
    "4d": (1024, 512, 256, 1),
    "3d": (512, 256, 128, 1),
    "2d": (256, 128, 64, 1),
    "1d": (128, 64, 64, 1),
}


def _conv3x3(in_ch: int, out_ch: int, dilation: int = 1) -> nn.Conv2d:
    # Every BASNet conv outside the torchvision blocks keeps its bias, even before BatchNorm (official layout).
    return nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)


class RefUnet(nn.Module):
    """BASNet's residual refinement module: a 4-pool U-Net on one logit map that returns ``x + residual``.

    Args:
        in_ch: channels of the map to refine (1).
        inc_ch: channels inside the module (64).

    Shapes:
        ``(B, in_ch, H, W) -> (B, in_ch, H, W)``, H and W multiples of 16.

    Example:
        >>> RefUnet(1, 8)(torch.zeros(2, 1, 32, 48)).shape
        torch.Size([2, 1, 32, 48])
    """

    def __init__(self, in_ch: int = 1, inc_ch: int = 64) -> None:
        super().__init__()
        self.conv0 = _conv3x3(in_ch, inc_ch)  # plain: no BN, no ReLU
        for i in range(1, 6):
            self.add_module(f"conv{i}", _conv3x3(inc_ch, inc_ch))
            self.add_module(f"bn{i}", nn.BatchNorm2d(inc_ch))
            self.add_module(f"relu{i}", nn.ReLU(inplace=True))
            if i < 5:
                self.add_module(f"pool{i}", nn.MaxPool2d(2, 2, ceil_mode=True))
        for i in range(4, 0, -1):
            self.add_module(f"conv_d{i}", _conv3x3(2 * inc_ch, inc_ch))
            self.add_module(f"bn_d{i}", nn.BatchNorm2d(inc_ch))
            self.add_module(f"relu_d{i}", nn.ReLU(inplace=True))
        self.conv_d0 = _conv3x3(inc_ch, in_ch)

    def _cbr(self, name: str, x: Tensor) -> Tensor:
        return getattr(self, f"relu{name}")(getattr(self, f"bn{name}")(getattr(self, f"conv{name}")(x)))

    def forward(self, x: Tensor) -> Tensor:
        hx = self.conv0(x)
        skips = []
        for i in range(1, 5):
            skips.append(self._cbr(str(i), hx))
            hx = getattr(self, f"pool{i}")(skips[-1])
        d = self._cbr("5", hx)
        for i in range(4, 0, -1):
            skip = skips.pop()
            d = self._cbr(f"_d{i}", torch.cat((upsample_like(d, skip), skip), 1))
        return x + self.conv_d0(d)


class BASNet(nn.Module):
    """BASNet with a ResNet-34 encoder (the official ``BASNet(3, 1)``), 87,060,360 parameters.

    ``forward`` returns eight logit maps ``(B, 1, H, W)`` at the input size, in the official order:

    0. ``dout_refined``: the refinement module applied to ``d1`` (the prediction used at test time);
    1. ``d1``: decoder stage 1, native resolution;
    2. - 6. ``d2`` .. ``d6``: decoder stages 2-6, upsampled x2 .. x32 after the 1-channel side conv;
    7. ``db_bridge``: the bridge, upsampled x32.

    Input size: H and W must be multiples of 32 (:meth:`check_input_size`; the decoder concatenates maps that were
    pooled five times). Training additionally needs ``B * H/32 * W/32 >= 2`` for BatchNorm.

    Args:
        in_channels: image channels (3 for RGB).
        weights: a state-dict file to load strictly after construction: the published ``basnet.pth`` (official key
            names) or one of this suite's checkpoints. When given, the backbone is not initialised separately.
        backbone: the ``backbone`` group's name; only ``resnet34`` is possible.
        backbone_pretrained: start ``encoder1..4`` from torchvision's ImageNet ResNet-34 (``IMAGENET1K_V1``, read from
            the torch hub cache and downloaded there if missing), as the paper does.
        backbone_weights: a local torchvision/timm ``resnet34`` state-dict file for ``encoder1..4``; takes precedence
            over ``backbone_pretrained`` and never downloads.

    Example:
        >>> net = BASNet().eval()
        >>> [tuple(o.shape) for o in net(torch.zeros(1, 3, 64, 96))][:2]
        [(1, 1, 64, 96), (1, 1, 64, 96)]
    """

    config_name = "basnet"
    output_names = ("dout_refined", "d1", "d2", "d3", "d4", "d5", "d6", "db_bridge")

    def __init__(
        self,
        in_channels: int = 3,
        weights: str | None = None,
        backbone: str = "resnet34",
        backbone_pretrained: bool = False,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        if backbone != "resnet34":
            raise ValueError(
                f"model=basnet backbone={backbone}: BASNet is defined on ResNet-34 only (its decoder's channel plan "
                "follows resnet34's stages). Use backbone=resnet34, or a model that takes other encoders "
                "(e.g. model=unet)."
            )
        resnet = _resnet34(backbone_pretrained and weights is None, None if weights else backbone_weights)
        # Official registration order (it fixes the published state_dict order).
        self.inconv = nn.Conv2d(in_channels, 64, 3, padding=1)
        self.inbn = nn.BatchNorm2d(64)
        self.inrelu = nn.ReLU(inplace=True)
        self.encoder1, self.encoder2 = resnet.layer1, resnet.layer2
        self.encoder3, self.encoder4 = resnet.layer3, resnet.layer4
        for stage in (5, 6):
            self.add_module(f"pool{stage - 1}", nn.MaxPool2d(2, 2, ceil_mode=True))
            for j in (1, 2, 3):
                self.add_module(f"resb{stage}_{j}", BasicBlock(512, 512))
        for part in ("_1", "_m", "_2"):  # the bridge: three dilation-2 CBRs at H/32
            self._add_cbr(f"bg{part}", 512, 512, 2)
        for stage, (cin, mid, cout, dil) in _DECODER.items():
            self._add_cbr(f"{stage}_1", cin, mid, 1)
            self._add_cbr(f"{stage}_m", mid, mid, dil)
            self._add_cbr(f"{stage}_2", mid, cout, dil)
        for name, ch in (("b", 512), ("6", 512), ("5", 512), ("4", 256), ("3", 128), ("2", 64), ("1", 64)):
            self.add_module(f"outconv{name}", _conv3x3(ch, 1))
        self.refunet = RefUnet(1, 64)
        if weights is not None:
            load_weights(self, weights)

    def _add_cbr(self, name: str, in_ch: int, out_ch: int, dilation: int) -> None:
        self.add_module(f"conv{name}", _conv3x3(in_ch, out_ch, dilation))
        self.add_module(f"bn{name}", nn.BatchNorm2d(out_ch))
        self.add_module(f"relu{name}", nn.ReLU(inplace=True))

    def _cbr(self, name: str, x: Tensor) -> Tensor:
        return getattr(self, f"relu{name}")(getattr(self, f"bn{name}")(getattr(self, f"conv{name}")(x)))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless H and W are positive multiples of 32.

        Args:
            height: input height H.
            width: input width W.

        Example:
            >>> BASNet().check_input_size(224, 256)
        """
        if height < _STRIDE or width < _STRIDE or height % _STRIDE or width % _STRIDE:
            near_h, near_w = (max(_STRIDE, round(side / _STRIDE) * _STRIDE) for side in (height, width))
            raise ValueError(
                f"Input size {height}x{width} does not fit model=basnet: BASNet needs H and W to be multiples of "
                f"{_STRIDE} (its decoder concatenates maps pooled five times). Set data.image_size / data.crop_size "
                f"to e.g. {near_h}x{near_w} "
                "(the paper trains on 224x224 crops of 256x256 images)."
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Run the network.

        Args:
            x: normalised images ``(B, in_channels, H, W)``, H and W multiples of 32.

        Returns:
            Eight logit maps ``(B, 1, H, W)``: refined, d1 .. d6, bridge.
        """
        if not is_tracing():
            self.check_input_size(x.shape[-2], x.shape[-1])
            if self.training:
                check_bottleneck_batchnorm(self.config_name, x, _STRIDE)
        hx = self.inrelu(self.inbn(self.inconv(x)))
        h1 = self.encoder1(hx)
        h2 = self.encoder2(h1)
        h3 = self.encoder3(h2)
        h4 = self.encoder4(h3)
        h5 = self.resb5_3(self.resb5_2(self.resb5_1(self.pool4(h4))))
        h6 = self.resb6_3(self.resb6_2(self.resb6_1(self.pool5(h5))))
        hbg = self._cbr("bg_2", self._cbr("bg_m", self._cbr("bg_1", h6)))
        # Decoder: (decoder feature, skip) in every concat; 6d takes (bridge, h6) at the same resolution.
        decoded = {}
        hx = hbg
        for stage, skip in zip(_DECODER, (h6, h5, h4, h3, h2, h1)):
            if stage != "6d":  # the bridge already runs at h6's resolution
                hx = upsample_like(hx, skip)
            hx = self._cbr(f"{stage}_1", torch.cat((hx, skip), 1))
            hx = self._cbr(f"{stage}_2", self._cbr(f"{stage}_m", hx))
            decoded[stage] = hx
        d1 = self.outconv1(decoded["1d"])
        sides = [upsample_like(getattr(self, f"outconv{k}")(decoded[f"{k}d"]), x) for k in range(2, 7)]
        db = upsample_like(self.outconvb(hbg), x)
        dout = self.refunet(d1)  # the residual is added to the logit d1
        return [dout, d1, *sides, db]


def _resnet34(pretrained: bool, weights_path: str | Path | None) -> nn.Module:
    """A torchvision ResNet-34 whose ``layer1..4`` become BASNet's ``encoder1..4`` (random, ImageNet or a file)."""
    net = resnet34(weights=None)
    if weights_path is not None:
        # A complete torchvision/timm resnet34 state dict (conv1, bn1, layer1..4, fc), checked strictly so a wrong
        # file (resnet50, a BASNet checkpoint) is named rather than half-loaded.
        load_weights(net, weights_path)
    elif pretrained:
        try:
            state = ResNet34_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
        except Exception as err:  # URLError, OSError, hash errors: all mean "not available offline"
            raise RuntimeError(
                "backbone.pretrained=true for model=basnet needs torchvision's ImageNet ResNet-34 "
                f"({ResNet34_Weights.IMAGENET1K_V1.url}), which is neither in the torch hub cache "
                f"({torch.hub.get_dir()}/checkpoints) nor downloadable ({type(err).__name__}: {err}). Put the file "
                "there, or pass a local state dict with backbone.weights=<path>."
            ) from err
        net.load_state_dict(state)
    return net
