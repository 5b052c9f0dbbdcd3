"""U^2-Net and U^2-Netp (Qin et al., Pattern Recognition 2020), identical to the official ``model/u2net.py``.

Reference: ``xuebinqin/U-2-Net@ac7e1c8``, classes ``U2NET(3, 1)`` and ``U2NETP(3, 1)``. The parameter names are the
official ones, so the published ``u2net.pth`` / ``u2netp.pth`` load with ``strict=True`` and no key map. The official
file spells out RSU7, RSU6, RSU5, RSU4 and RSU4F as five classes; here one :class:`RSU` builds all of them (the
official ``model/u2net_refactor.py`` does the same, but with different key names, so its layout is not used).

Differences from the official forward, both deliberate and neither changing a number:

* the outputs are **logits**; the official forward applies a sigmoid to all seven (compare ``sigmoid(output)``);
* upsampling passes ``align_corners=False`` explicitly (the official default since PyTorch 0.4.0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sod_lightning.models.blocks import check_bottleneck_batchnorm, is_tracing, upsample_like
from sod_lightning.models.weights import load_weights

# (in, mid, out) of each RSU stage, in the official registration order; "L" is the depth, "F" the dilated variant.
_U2NET_STAGES: dict[str, tuple[int, bool, int, int, int]] = {
    # name: (depth, dilated, in, mid, out)
    "stage1": (7, False, 3, 32, 64),
    "stage2": (6, False, 64, 32, 128),
    "stage3": (5, False, 128, 64, 256),
    "stage4": (4, False, 256, 128, 512),
    "stage5": (4, True, 512, 256, 512),
    "stage6": (4, True, 512, 256, 512),
    "stage5d": (4, True, 1024, 256, 512),
    "stage4d": (4, False, 1024, 128, 256),
    "stage3d": (5, False, 512, 64, 128),
    "stage2d": (6, False, 256, 32, 64),
    "stage1d": (7, False, 128, 16, 64),
}
_U2NETP_STAGES: dict[str, tuple[int, bool, int, int, int]] = {
    "stage1": (7, False, 3, 16, 64),
    "stage2": (6, False, 64, 16, 64),
    "stage3": (5, False, 64, 16, 64),
    "stage4": (4, False, 64, 16, 64),
    "stage5": (4, True, 64, 16, 64),
    "stage6": (4, True, 64, 16, 64),
    "stage5d": (4, True, 128, 16, 64),
    "stage4d": (4, False, 128, 16, 64),
    "stage3d": (5, False, 128, 16, 64),
    "stage2d": (6, False, 128, 16, 64),
    "stage1d": (7, False, 128, 16, 64),
}
# Which feature map feeds each side head: side1..side5 read the decoder stages, side6 the encoder's last stage.
_SIDE_SOURCES = ("stage1d", "stage2d", "stage3d", "stage4d", "stage5d", "stage6")
# The smallest feature map anywhere in the network is at stride 32 (stage 6 and the bottoms of every pooled RSU).
_DEEPEST_STRIDE = 32


class REBNCONV(nn.Module):
    """3x3 convolution (with bias, as in the official code) -> BatchNorm -> ReLU, official names ``*_s1``.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        dirate: dilation; the padding equals it, so the spatial size is kept.

    Example:
        >>> REBNCONV(3, 8, dirate=2)(torch.zeros(1, 3, 5, 7)).shape
        torch.Size([1, 8, 5, 7])
    """

    def __init__(self, in_ch: int, out_ch: int, dirate: int = 1) -> None:
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dirate, dilation=dirate)
        self.bn_s1 = nn.BatchNorm2d(out_ch)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu_s1(self.bn_s1(self.conv_s1(x)))


class RSU(nn.Module):
    """Residual U-block RSU-L (``dilated=False``) or RSU-LF (``dilated=True``), with the official module names.

    RSU-L: ``rebnconvin`` (in -> out), an encoder ``rebnconv1..L-1`` separated by ``L-2`` max-pools
    (``ceil_mode=True``), a bottom ``rebnconvL`` with dilation 2 and no pool before it, and a decoder
    ``rebnconv{L-1}d..rebnconv1d`` that concatenates (upsampled decoder feature, skip) in that order. RSU-LF keeps
    the resolution throughout and uses dilation ``2**(i-1)`` at level ``i`` instead of pooling. Both return
    ``rebnconv1d(...) + rebnconvin(x)``.

    Args:
        depth: L (7, 6, 5 or 4 in U^2-Net; 4 for the dilated variant).
        in_ch: input channels.
        mid_ch: channels inside the block.
        out_ch: output channels.
        dilated: RSU-LF instead of RSU-L.

    Shapes:
        ``(B, in_ch, H, W) -> (B, out_ch, H, W)`` for any H, W >= 1.

    Example:
        >>> RSU(7, 3, 4, 8)(torch.zeros(1, 3, 50, 70)).shape
        torch.Size([1, 8, 50, 70])
    """

    def __init__(self, depth: int, in_ch: int, mid_ch: int, out_ch: int, dilated: bool = False) -> None:
        super().__init__()
        if depth < 3:
            raise ValueError(f"RSU depth must be at least 3, got {depth}.")
        self.depth = depth
        self.dilated = dilated
        self.rebnconvin = REBNCONV(in_ch, out_ch, 1)
        # Registration order follows the official classes so the state_dict lists keys in the published order.
        for i in range(1, depth + 1):
            self.add_module(f"rebnconv{i}", REBNCONV(out_ch if i == 1 else mid_ch, mid_ch, self._dilation(i)))
            if not dilated and i < depth - 1:
                self.add_module(f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        for i in range(depth - 1, 0, -1):
            self.add_module(f"rebnconv{i}d", REBNCONV(2 * mid_ch, out_ch if i == 1 else mid_ch, self._dilation(i)))

    def _dilation(self, level: int) -> int:
        if self.dilated:
            return 2 ** (level - 1)
        return 2 if level == self.depth else 1

    def forward(self, x: Tensor) -> Tensor:
        hxin = self.rebnconvin(x)
        skips = [self.rebnconv1(hxin)]
        for i in range(2, self.depth + 1):
            h = skips[-1]
            if not self.dilated and i < self.depth:  # no pool before the bottom level
                h = getattr(self, f"pool{i - 1}")(h)
            skips.append(getattr(self, f"rebnconv{i}")(h))
        d = skips.pop()
        for i in range(self.depth - 1, 0, -1):
            skip = skips.pop()
            if not self.dilated and i < self.depth - 1:  # the bottom and level L-1 share a resolution
                d = upsample_like(d, skip)
            d = getattr(self, f"rebnconv{i}d")(torch.cat((d, skip), 1))
        return d + hxin


class U2Net(nn.Module):
    """U^2-Net (the official ``U2NET(3, 1)``): 11 RSU stages, six side logits and a 1x1 fusion conv.

    ``forward`` returns seven logit maps ``(B, 1, H, W)`` at the input size, in the official order:

    0. ``d0_fused``: ``outconv`` (1x1, 6 -> 1) over the concatenated side logits; the prediction used at test time;
    1. ``d1_side1`` from decoder stage 1 (native resolution);
    2. - 5. ``d2_side2`` .. ``d5_side5`` from decoder stages 2-5, upsampled (bilinear) after the 1-channel conv;
    6. ``d6_side6`` from **encoder** stage 6, upsampled.

    Input size: any ``H, W >= 1`` in eval mode (``ceil_mode`` pools and size-based upsampling). Training needs more
    than one value per channel at the stride-32 level, i.e. ``B * ceil(H/32) * ceil(W/32) >= 2``;
    :meth:`check_input_size` therefore asks for an input larger than 32 px on at least one side.

    Args:
        in_channels: image channels (3 for RGB; the official model is fixed to 3).
        weights: a state-dict file to load strictly after construction: the published ``u2net.pth`` (official key
            names) or one of this suite's checkpoints (``net.`` prefix removed).
        backbone: the ``backbone`` group's name. U^2-Net has no backbone; ``None`` or ``"none"`` is accepted and
            anything else raises, so that ``model=u2net backbone=resnet50`` is not silently ignored.

    Example:
        >>> net = U2NetP().eval()
        >>> [tuple(o.shape) for o in net(torch.zeros(1, 3, 40, 36))][:2]
        [(1, 1, 40, 36), (1, 1, 40, 36)]
    """

    config_name = "u2net"
    _stages = _U2NET_STAGES
    output_names = ("d0_fused", "d1_side1", "d2_side2", "d3_side3", "d4_side4", "d5_side5", "d6_side6")

    def __init__(self, in_channels: int = 3, weights: str | None = None, backbone: str | None = None) -> None:
        super().__init__()
        if backbone not in (None, "none"):
            raise ValueError(
                f"model={self.config_name} backbone={backbone}: U^2-Net has no backbone (its encoder is made of RSU "
                f"blocks). Drop the backbone override or use backbone=none with model={self.config_name}."
            )
        stages = dict(self._stages)
        depth, dilated, _, mid, out = stages["stage1"]
        stages["stage1"] = (depth, dilated, in_channels, mid, out)
        # Official registration order: stage1, pool12, stage2, ..., stage6, then the decoder, sides, outconv.
        names = list(stages)
        for k, name in enumerate(names):
            depth, dilated, cin, mid, cout = stages[name]
            self.add_module(name, RSU(depth, cin, mid, cout, dilated=dilated))
            if k < 5:
                self.add_module(f"pool{k + 1}{k + 2}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        for k, source in enumerate(_SIDE_SOURCES, start=1):
            self.add_module(f"side{k}", nn.Conv2d(stages[source][4], 1, 3, padding=1))
        self.outconv = nn.Conv2d(6, 1, 1)
        if weights is not None:
            load_weights(self, weights)

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` for a training size whose stride-32 level is 1x1 (BatchNorm fails at batch 1).

        Args:
            height: input height H.
            width: input width W.

        Example:
            >>> U2NetP().check_input_size(288, 288)
        """
        if height < 1 or width < 1 or math.ceil(height / _DEEPEST_STRIDE) * math.ceil(width / _DEEPEST_STRIDE) < 2:
            raise ValueError(
                f"Input size {height}x{width} is too small for model={self.config_name}: U^2-Net trains only when "
                f"H or W is larger than {_DEEPEST_STRIDE} px (its stride-32 level would be 1x1 and BatchNorm fails "
                f"at batch 1). Set data.image_size / data.crop_size larger (the paper: 320 resized, 288 cropped)."
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        """Run the network.

        Args:
            x: normalised images ``(B, in_channels, H, W)``.

        Returns:
            Seven logit maps ``(B, 1, H, W)``: fused first, then side1 .. side6.
        """
        if self.training and not is_tracing():
            check_bottleneck_batchnorm(self.config_name, x, _DEEPEST_STRIDE)
        hx1 = self.stage1(x)
        hx2 = self.stage2(self.pool12(hx1))
        hx3 = self.stage3(self.pool23(hx2))
        hx4 = self.stage4(self.pool34(hx3))
        hx5 = self.stage5(self.pool45(hx4))
        hx6 = self.stage6(self.pool56(hx5))
        # Decoder: the upsampled deeper feature comes first in every concat (it fixes the weight layout).
        hx5d = self.stage5d(torch.cat((upsample_like(hx6, hx5), hx5), 1))
        hx4d = self.stage4d(torch.cat((upsample_like(hx5d, hx4), hx4), 1))
        hx3d = self.stage3d(torch.cat((upsample_like(hx4d, hx3), hx3), 1))
        hx2d = self.stage2d(torch.cat((upsample_like(hx3d, hx2), hx2), 1))
        hx1d = self.stage1d(torch.cat((upsample_like(hx2d, hx1), hx1), 1))
        d1 = self.side1(hx1d)
        # The side convs run before upsampling: a 1-channel map is cheap to resize.
        sides = [d1] + [
            upsample_like(getattr(self, f"side{k}")(h), d1) for k, h in enumerate((hx2d, hx3d, hx4d, hx5d, hx6), 2)
        ]
        d0 = self.outconv(torch.cat(sides, 1))  # fusion of logits, as in the official code
        return [d0, *sides]


class U2NetP(U2Net):
    """U^2-Netp (the official ``U2NETP(3, 1)``, "U^2-Net†", 4.7 MB): the same graph with 16/64 channels everywhere.

    Outputs, input-size rule and arguments are those of :class:`U2Net`.

    Example:
        >>> sum(p.numel() for p in U2NetP().parameters())
        1131181
    """

    config_name = "u2netp"
    _stages = _U2NETP_STAGES
