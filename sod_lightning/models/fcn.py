"""FCN (Long, Shelhamer and Darrell, CVPR 2015) from torchvision, for binary SOD.

Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015 (arXiv 1411.4038), in
torchvision's form (``torchvision.models.segmentation.fcn_resnet50/101``): a dilated ResNet (output stride 8), an
``FCNHead`` (3x3 conv-BN-ReLU, dropout, 1x1 classifier) and bilinear upsampling to the input size; optionally the
auxiliary head on ``layer3``.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, ResNet101_Weights
from torchvision.models.segmentation import fcn_resnet50, fcn_resnet101

from sod_lightning.models.weights import load_state_dict_file, load_weights

_BUILDERS = {
    "resnet50": (fcn_resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (fcn_resnet101, ResNet101_Weights.IMAGENET1K_V1),
}


class FCN(nn.Module):
    """torchvision's FCN with one output channel; returns ``[logits]`` or ``[logits, aux_logits]``.

    Input size: any ``H, W >= 8`` (torchvision upsamples by size).

    Args:
        encoder: ``resnet50`` (default) or ``resnet101`` (``backbone.name``), the two torchvision provides.
        pretrained: torchvision's ImageNet backbone weights (a download).
        encoder_weights: a local torchvision ResNet state-dict file for the backbone (``backbone.weights``; its
            ``fc.*`` keys are ignored).
        weights: a state-dict file for the whole network.
        aux_loss: add torchvision's auxiliary FCN head on ``layer3`` as a second output (for deep supervision).

    Shapes: ``(B, 3, H, W) -> [(B, 1, H, W)]`` (or two such maps, final first).

    Example:
        >>> import torch
        >>> [tuple(o.shape) for o in FCN(aux_loss=True).eval()(torch.zeros(1, 3, 64, 48))]
        [(1, 1, 64, 48), (1, 1, 64, 48)]
    """

    def __init__(
        self,
        encoder: str = "resnet50",
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
        aux_loss: bool = False,
    ) -> None:
        super().__init__()
        if encoder not in _BUILDERS:
            raise ValueError(
                f"model=fcn cannot use backbone={encoder}: torchvision's FCN is built on resnet50 or resnet101. "
                "Use backbone=resnet50 (default) or backbone=resnet101, or another model for this encoder."
            )
        if pretrained and encoder_weights:
            raise ValueError(
                f"backbone.pretrained=true and backbone.weights='{encoder_weights}' both ask for encoder weights; "
                "set one."
            )
        builder, imagenet = _BUILDERS[encoder]
        self.model = builder(
            weights=None, weights_backbone=imagenet if pretrained else None, num_classes=1, aux_loss=aux_loss
        )
        if encoder_weights:
            state = {k: v for k, v in load_state_dict_file(Path(encoder_weights)).items() if not k.startswith("fc.")}
            load_weights(self.model.backbone, state)
        if weights:
            load_weights(self, Path(weights))

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` when H or W is below 8 (the backbone's stride).

        Example:
            >>> FCN().check_input_size(50, 70)
        """
        if height < 8 or width < 8:
            raise ValueError(
                f"Input size {height}x{width} does not fit model=fcn: H and W must be at least 8 (output stride 8)."
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        out = self.model(x)
        return [out["out"], out["aux"]] if "aux" in out else [out["out"]]
