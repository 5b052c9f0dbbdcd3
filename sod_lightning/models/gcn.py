"""GCN, "Large Kernel Matters" (Peng, Zhang, Yu, Luo and Sun, CVPR 2017), for binary SOD.

Peng et al., "Large Kernel Matters -- Improve Semantic Segmentation by Global Convolutional Network", CVPR 2017
(arXiv 1703.02719), Fig. 2. A ResNet encoder gives four feature maps (res-2..res-5, strides 4..32). On each:

* GCN module: ``conv(k x 1) -> conv(1 x k)`` plus ``conv(1 x k) -> conv(k x 1)``, summed, with no non-linearity
  in between (a large, dense ``k x k`` receptive field at ``O(k)`` cost; the paper's best ``k = 15``);
* boundary refinement (BR): ``x + conv3x3(relu(conv3x3(x)))``.

The deepest score map is upsampled by a 4x4 stride-2 transposed convolution, added to the next level's, refined
by BR, and so on up to stride 4; two more BR + deconvolution steps bring it to the input size.

The paper's score maps have one channel per class. With a single salient class that would squeeze every level into
one channel, so here the maps have ``channels`` channels (default 32) and a final 1x1 convolution gives the logit.
Written by hand (small, about 0.2 M parameters on top of the encoder) because no maintained package ships GCN.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from sod_lightning.models.refinenet import build_smp_encoder, check_multiple_of
from sod_lightning.models.weights import load_weights


class GlobalConvModule(nn.Module):
    """``conv_l2(conv_l1(x)) + conv_r2(conv_r1(x))`` with ``k x 1`` / ``1 x k`` kernels.

    Shapes: ``(B, Cin, h, w) -> (B, C, h, w)``.

    Example:
        >>> import torch
        >>> GlobalConvModule(8, 4, 15)(torch.zeros(1, 8, 5, 7)).shape
        torch.Size([1, 4, 5, 7])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 15) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv_l1 = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0))
        self.conv_l2 = nn.Conv2d(out_channels, out_channels, (1, kernel_size), padding=(0, pad))
        self.conv_r1 = nn.Conv2d(in_channels, out_channels, (1, kernel_size), padding=(0, pad))
        self.conv_r2 = nn.Conv2d(out_channels, out_channels, (kernel_size, 1), padding=(pad, 0))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_l2(self.conv_l1(x)) + self.conv_r2(self.conv_r1(x))


class BoundaryRefinement(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))``. Shapes: ``(B, C, h, w) -> (B, C, h, w)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


def _deconv(channels: int) -> nn.ConvTranspose2d:
    # 4x4 kernel, stride 2, padding 1: exactly doubles h and w.
    return nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False)


class GCN(nn.Module):
    """Global Convolutional Network with boundary refinement on an smp encoder; returns ``[logits]``.

    Input size: H and W multiples of 32 (the decoder doubles the deepest map five times and adds each level).

    Args:
        encoder: smp encoder name (``backbone.name``): ``resnet50`` (the paper uses ResNet-152 / ResNet-50)...
        pretrained: smp's ImageNet encoder weights (a download).
        encoder_weights: a local smp-encoder state-dict file (``backbone.weights``).
        weights: a state-dict file for the whole network.
        channels: width of the score maps.
        kernel_size: ``k`` of the GCN modules (odd; paper: 15).

    Shapes: ``(B, 3, H, W) -> [(B, 1, H, W)]``.

    Example:
        >>> import torch
        >>> [tuple(o.shape) for o in GCN("resnet18", channels=8)(torch.zeros(1, 3, 64, 96))]
        [(1, 1, 64, 96)]
    """

    def __init__(
        self,
        encoder: str = "resnet50",
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
        channels: int = 32,
        kernel_size: int = 15,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size={kernel_size}: expected an odd kernel length (paper: 15).")
        self.encoder = build_smp_encoder("gcn", encoder, pretrained, encoder_weights)
        levels = self.encoder.out_channels[2:6]  # strides 4, 8, 16, 32
        self.gcn = nn.ModuleList(GlobalConvModule(c, channels, kernel_size) for c in levels)
        self.br_in = nn.ModuleList(BoundaryRefinement(channels) for _ in levels)
        # After each fusion (strides 16, 8, 4) and after the two final deconvolutions (strides 2, 1).
        self.br_out = nn.ModuleList(BoundaryRefinement(channels) for _ in range(5))
        self.deconv = nn.ModuleList(_deconv(channels) for _ in range(5))
        self.classifier = nn.Conv2d(channels, 1, 1)
        if weights:
            load_weights(self, Path(weights))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless H and W are multiples of 32.

        Example:
            >>> GCN("resnet18", channels=4).check_input_size(64, 96)
        """
        check_multiple_of("gcn", height, width, 32)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.encoder(x)[2:6]
        scores = [br(gcn(f)) for gcn, br, f in zip(self.gcn, self.br_in, feats)]
        s = scores[3]
        for level, k in zip((2, 1, 0), range(3)):
            s = self.br_out[k](self.deconv[k](s) + scores[level])
        s = self.br_out[3](self.deconv[3](s))
        s = self.br_out[4](self.deconv[4](s))
        return [self.classifier(s)]
