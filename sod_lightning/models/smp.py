"""Every segmentation-models-pytorch architecture as a binary SOD network (U-Net, FPN, PSPNet, DeepLabV3+, ...)."""

from __future__ import annotations

from pathlib import Path

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.encoders import get_encoder_names
import torch
from torch import Tensor, nn

from sod_lightning.models.weights import load_weights


class SMPModel(nn.Module):
    """A segmentation-models-pytorch model with one output channel, returning ``[logits]``.

    The encoder / decoder / head split is smp's; this class only fixes the SOD contract (one logit map at the
    input size, in a list) and the weight sources.

    Args:
        arch: smp architecture name (``Unet``, ``UnetPlusPlus``, ``FPN``, ``PSPNet``, ``DeepLabV3``,
            ``DeepLabV3Plus``, ``PAN``, ``Linknet``, ``MAnet``, ...), as in ``smp.create_model``.
        encoder: smp encoder name (``resnet50``, ``vgg16``, ``mobilenet_v2``, ``tu-<timm name>``...).
        pretrained: load the encoder's ImageNet weights through smp (downloads once into the Hugging Face cache).
        encoder_weights: a local state-dict file for the encoder alone (smp encoder key names), used instead of
            ``pretrained``.
        weights: a local state-dict file (or one of this suite's checkpoints) for the whole network.
        **arch_kwargs: passed to the smp architecture (``decoder_channels``, ``encoder_depth``, ...).

    Example:
        >>> import torch
        >>> net = SMPModel("Unet", "resnet18", decoder_channels=(32, 16, 8, 8, 8))
        >>> [tuple(o.shape) for o in net(torch.randn(1, 3, 64, 64))]
        [(1, 1, 64, 64)]
    """

    def __init__(
        self,
        arch: str,
        encoder: str,
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
        **arch_kwargs,
    ) -> None:
        super().__init__()
        if not encoder.startswith("tu-") and encoder not in get_encoder_names():
            raise ValueError(
                f"model arch '{arch}' cannot use backbone '{encoder}': segmentation-models-pytorch has no encoder of "
                f"that name. Choose backbone=<name> from conf/backbone (e.g. resnet34, resnet50, vgg16, "
                "mobilenet_v2) or any smp encoder name, or 'tu-<timm model>' for a timm encoder."
            )
        if pretrained and encoder_weights:
            raise ValueError(
                f"backbone.pretrained=true and backbone.weights='{encoder_weights}' both ask for encoder weights; "
                "set one of them (pretrained downloads ImageNet weights, weights reads a local file)."
            )
        try:
            self.model = smp.create_model(
                arch,
                encoder_name=encoder,
                encoder_weights=("imagenet" if not encoder.startswith("tu-") else True) if pretrained else None,
                in_channels=3,
                classes=1,
                **arch_kwargs,
            )
        except (KeyError, ValueError, AttributeError, TypeError) as err:
            raise ValueError(
                f"segmentation-models-pytorch could not build model arch '{arch}' with backbone '{encoder}' "
                f"and options {arch_kwargs}: {err}. Some architectures need a particular encoder (e.g. "
                "DeepLabV3+ needs an encoder that supports output stride 16); pick another backbone=<name> or "
                "another model=<name>."
            ) from err
        self._freeze_unused()
        if encoder_weights:
            load_weights(self.model.encoder, Path(encoder_weights))
        if weights:
            load_weights(self, Path(weights))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Args: x: ``(B, 3, H, W)``. Returns: ``[logits (B, 1, H, W)]``."""
        return [self.model(x)]

    def _freeze_unused(self) -> None:
        """Freeze parameters the forward pass never uses (e.g. ResNet layer3/4 under PSPNet's depth-3 encoder).

        smp keeps the whole encoder even when ``encoder_depth`` stops early; under DDP, parameters without gradients
        make the gradient reduction fail unless unused-parameter search is on (slow). A forward hook on every
        module, one tiny forward pass without gradients, and every leaf module that did not run is frozen.
        """
        ran: set[nn.Module] = set()
        hooks = [m.register_forward_hook(lambda mod, inp, out: ran.add(mod)) for m in self.model.modules()]
        was_training = self.model.training
        size = max(128, self.model.encoder.output_stride * 8)
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(torch.zeros(1, 3, size, size))
        finally:
            self.model.train(was_training)
            for h in hooks:
                h.remove()
        for module in self.model.modules():
            if module not in ran and next(module.children(), None) is None:
                for p in module.parameters(recurse=False):
                    p.requires_grad_(False)

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless H and W are multiples of the encoder's output stride (smp's own rule)."""
        stride = self.model.encoder.output_stride
        if isinstance(self.model, smp.PAN) and min(height, width) < 8 * stride:
            # PAN's feature pyramid attention pools the stride-16 features three more times (to 1/8 of them).
            raise ValueError(
                f"Input size {height}x{width} is too small for PAN: height and width must be at least {8 * stride} "
                f"(8x the encoder's output stride {stride}). Set data.image_size (and data.crop_size) to at least "
                f"{8 * stride}."
            )
        if getattr(self.model, "requires_divisible_input_shape", True) and (height % stride or width % stride):
            raise ValueError(
                f"Input size {height}x{width} does not fit this {type(self.model).__name__}: height and width must "
                f"be multiples of {stride} (the encoder's output stride). Set data.image_size (and data.crop_size) "
                f"to multiples of {stride}, e.g. {(-(-height // stride)) * stride}x{(-(-width // stride)) * stride}."
            )
