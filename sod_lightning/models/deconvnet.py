"""DeconvNet (Noh, Hong and Han, ICCV 2015) for binary SOD.

Noh et al., "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015 (arXiv 1505.04366). The
convolution network is VGG-16 (here with BatchNorm, torchvision's ``vgg16_bn().features``) followed by ``fc6`` (7x7
convolution) and ``fc7`` (1x1); the deconvolution network mirrors it: ``deconv-fc6`` (7x7 transposed convolution),
then per stage a max-**unpooling** at the encoder's switch positions and a stack of 3x3 **transposed convolutions**
with BatchNorm and ReLU (the paper's "deconvolution layers"), and a final 1x1 score layer (one logit for binary SOD).

Deviations, to keep it small and usable at any input size:

* ``fc6``/``fc7``/``deconv-fc6`` have ``fc_channels`` channels (default 512; the paper's 4096 makes the network
  252 M parameters, almost all in these three layers);
* ``fc6`` uses "same" padding and ``deconv-fc6`` maps back at the same resolution, where the paper reduces a
  224x224 input's 7x7 pool-5 map to 1x1 and back; this keeps every input size >= 32 valid.

No well-kept library ships DeconvNet, hence this hand-written version.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from sod_lightning.models.segnet import VGG16_STAGES, build_vgg16_features, check_min_size, split_vgg_stages
from sod_lightning.models.weights import load_weights


def _dbr(in_ch: int, out_ch: int) -> list[nn.Module]:
    # A "deconvolution layer": 3x3 transposed convolution, stride 1 (the same map size), BN, ReLU.
    return [nn.ConvTranspose2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True)]


class DeconvNet(nn.Module):
    """DeconvNet with a VGG-16(-BN) encoder, unpooling and transposed-convolution decoder; returns ``[logits]``.

    Input size: any ``H, W >= 32`` (unpooling restores each pre-pool size exactly).

    Args:
        encoder: ``vgg16_bn`` (default) or ``vgg16`` (``backbone.name``).
        pretrained: torchvision's ImageNet encoder weights (a download).
        encoder_weights: a local torchvision VGG state-dict file for the encoder (``backbone.weights``).
        weights: a state-dict file for the whole network.
        fc_channels: width of ``fc6``, ``fc7`` and ``deconv-fc6`` (paper: 4096).

    Shapes: ``(B, 3, H, W) -> [(B, 1, H, W)]``.

    Example:
        >>> import torch
        >>> [tuple(o.shape) for o in DeconvNet(fc_channels=64)(torch.zeros(1, 3, 64, 48))]
        [(1, 1, 64, 48)]
    """

    def __init__(
        self,
        encoder: str = "vgg16_bn",
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
        fc_channels: int = 512,
    ) -> None:
        super().__init__()
        self.encoder = split_vgg_stages(build_vgg16_features("deconvnet", encoder, pretrained, encoder_weights))
        top = VGG16_STAGES[-1][-1]
        self.fc = nn.Sequential(
            nn.Conv2d(top, fc_channels, 7, padding=3, bias=False),  # fc6
            nn.BatchNorm2d(fc_channels),
            nn.ReLU(True),
            nn.Conv2d(fc_channels, fc_channels, 1, bias=False),  # fc7
            nn.BatchNorm2d(fc_channels),
            nn.ReLU(True),
            *_dbr_k(fc_channels, top, 7),  # deconv-fc6
        )
        decoder = []
        for k in reversed(range(5)):
            chans = VGG16_STAGES[k]
            out_last = VGG16_STAGES[k - 1][-1] if k > 0 else chans[0]
            layers: list[nn.Module] = []
            for i in range(len(chans)):
                layers += _dbr(chans[i], chans[i] if i < len(chans) - 1 else out_last)
            decoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(decoder)
        self.score = nn.Conv2d(VGG16_STAGES[0][0], 1, 1)
        if weights:
            load_weights(self, Path(weights))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` when H or W is below 32.

        Example:
            >>> DeconvNet(fc_channels=8).check_input_size(64, 64)
        """
        check_min_size("deconvnet", height, width)

    def forward(self, x: Tensor) -> list[Tensor]:
        switches = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            switches.append((idx, size))
        x = self.fc(x)
        for stage, (idx, size) in zip(self.decoder, reversed(switches)):
            x = stage(F.max_unpool2d(x, idx, 2, 2, output_size=size))
        return [self.score(x)]


def _dbr_k(in_ch: int, out_ch: int, kernel: int) -> list[nn.Module]:
    return [
        nn.ConvTranspose2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(True),
    ]
