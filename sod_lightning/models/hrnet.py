"""HRNet (Wang et al., TPAMI 2020) with the HRNetV2 segmentation head, for binary SOD.

Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI 2020 (arXiv 1908.07919).
The encoder is timm's ``hrnet_w18`` (``features_only``, the four parallel branches at strides 4, 8, 16, 32 with 18,
36, 72 and 144 channels, before timm's classification "incre" modules). The light HRNetV2 head upsamples the three
lower-resolution branches bilinearly to stride 4, concatenates all four (270 channels), applies a 1x1
conv-BN-ReLU and a 1x1 classifier (one logit), and upsamples the logit map to the input size.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sod_lightning.models.refinenet import check_multiple_of
from sod_lightning.models.weights import load_state_dict_file, load_weights


class HRNet(nn.Module):
    """HRNet-W18 (timm) + HRNetV2 head; returns ``[logits]``.

    Input size: H and W multiples of 32 (timm's HRNet fuses branches whose sizes must halve exactly).

    Args:
        encoder: ``hrnet_w18`` (default) or another timm HRNet (``hrnet_w18_small_v2``, ``hrnet_w32``...); the smp
            spelling ``tu-hrnet_w18`` of the ``backbone`` group is accepted.
        pretrained: timm's ImageNet weights (a download).
        encoder_weights: a local timm HRNet state-dict file (a full classification checkpoint is fine: the
            classifier and "incre" keys the feature extractor lacks are dropped; every encoder key must be present).
        weights: a state-dict file for the whole network.
        head_channels: width of the head's 1x1 conv; ``None`` keeps the concatenated width (270 for W18).

    Shapes: ``(B, 3, H, W) -> [(B, 1, H, W)]``.

    Example:
        >>> [tuple(o.shape) for o in HRNet("hrnet_w18_small")(torch.zeros(1, 3, 64, 96))]
        [(1, 1, 64, 96)]
    """

    def __init__(
        self,
        encoder: str = "hrnet_w18",
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
        head_channels: int | None = None,
    ) -> None:
        super().__init__()
        name = encoder.removeprefix("tu-")
        if not name.startswith("hrnet"):
            raise ValueError(
                f"model=hrnet cannot use backbone={encoder}: the architecture is timm's HRNet (hrnet_w18 by "
                "default). Use backbone=hrnet_w18, or model=unet/fpn/... for other encoders."
            )
        if pretrained and encoder_weights:
            raise ValueError(
                f"backbone.pretrained=true and backbone.weights='{encoder_weights}' both ask for encoder weights; "
                "set one."
            )
        try:
            # feature_location="" returns the raw branches (18/36/72/144 channels for W18), the HRNetV2 inputs;
            # out_indices skip the stride-2 stem.
            self.encoder = timm.create_model(
                name, pretrained=pretrained, features_only=True, feature_location="", out_indices=(1, 2, 3, 4)
            )
        except RuntimeError as err:  # timm: "Unknown model"
            raise ValueError(f"model=hrnet cannot use backbone={encoder}: {err}") from err
        if encoder_weights:
            own = self.encoder.state_dict()
            state = {k: v for k, v in load_state_dict_file(Path(encoder_weights)).items() if k in own}
            load_weights(self.encoder, state)  # strict: every encoder key must come from the file
        width = sum(self.encoder.feature_info.channels())
        mid = head_channels or width
        self.head = nn.Sequential(
            nn.Conv2d(width, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, 1, 1)
        )
        if weights:
            load_weights(self, Path(weights))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless H and W are multiples of 32.

        Example:
            >>> HRNet("hrnet_w18_small").check_input_size(64, 96)
        """
        check_multiple_of("hrnet", height, width, 32)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = self.encoder(x)
        size = feats[0].shape[-2:]
        up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        logits = self.head(torch.cat(up, dim=1))
        return [F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)]
