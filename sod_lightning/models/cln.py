"""CLN, the context-aware learning network (seed ``lzylyx/CLN-SOD-``), a Context Prior head on a dilated encoder.

The CLN seed (``net_head/net_head.py``, built for sky replacement) ports the Context Prior head of Yu et al.,
"Context Prior for Scene Segmentation", CVPR 2020 (arXiv 2004.01547; official ``ycszen/ContextPrior``
``decode_head/cp_head.py``) to binary SOD:

1. ``separation`` (CPNet's aggregation module): CBR 3x3 ``Cin -> Ci`` giving ``v0``, then two depthwise separable
   branches ``t2(t1(v0))`` (k x 1 then 1 x k) and ``p2(p1(v0))`` (1 x k then k x 1); ``V = ReLU(BN(sum))``;
2. ``prior_conv``: 1x1 conv ``Ci -> N`` + BN, reshaped to ``(B, N, N)`` and sigmoided: the context map
   ``S`` (row ``i`` is grid pixel ``i``, column ``j`` the prior channel of pixel ``j``), ``N = h * w``;
3. intra-class context ``(S @ V) / N`` and inter-class context ``((1 - S) @ V) / N``, each through a CBR 1x1;
4. ``bottleneck``: ``cat(x, intra, inter)`` -> CBR 3x3 -> CBR 3x3 -> conv 3x3 to one channel.

:class:`ContextPriorHead` is that head with the official parameter names; it matches the reference fixture
``tests/fixtures/reference/cln_vgg_head.*`` (``CALNet_Vgg(64, 32, 8, 5)`` with the backbone replaced by the identity)
with no key map. :class:`CLN` puts it on a ``backbone`` group encoder at output stride 8, as CPNet does.

Differences from the official forward: the head returns **logits** (the official one applies a sigmoid, then
resizes the probability); CLN resizes the logit map with the same ``align_corners=True`` bilinear interpolation,
which agrees with resizing probabilities exactly on the feature grid points and differs between them by the
sigmoid's curvature only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder, get_encoder_names
from torch import Tensor, nn

from sod_lightning.models.blocks import is_tracing
from sod_lightning.models.outputs import SideOutputs
from sod_lightning.models.weights import load_weights

#: The context map has N^2 entries per image (N = h*w); above this N, CLN refuses to build (see CLN's docstring).
DEFAULT_MAX_CONTEXT_SIZE = 4096


def _cbr(in_ch: int, out_ch: int, kernel: int) -> nn.Sequential:
    # nn.Conv2d keeps its bias before BatchNorm, as in the CLN seed (CPNet's ConvModules drop it); the fixture's
    # state dict has these biases, so they stay.
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2), nn.BatchNorm2d(out_ch), nn.ReLU(True))


class SeparationModule(nn.Module):
    """The spatially separable aggregation of Context Prior (the seed's ``SeparationModule``).

    Args:
        in_channels: ``Cin``, channels of the backbone features.
        out_channels: ``Ci``, the inner channels.
        kernel_size: ``k``, the length of the separable kernels (odd; CLN 5, CPNet 11).

    Shapes: ``(B, Cin, h, w) -> (B, Ci, h, w)``.

    Example:
        >>> SeparationModule(8, 4, 5)(torch.zeros(1, 8, 6, 6)).shape
        torch.Size([1, 4, 6, 6])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.reduce_conv = _cbr(in_channels, out_channels, 3)
        # Depthwise (groups = channels) k x 1 / 1 x k convolutions; t* and p* apply them in opposite orders.
        self.t1 = nn.Conv2d(out_channels, out_channels, (kernel_size, 1), padding=(pad, 0), groups=out_channels)
        self.t2 = nn.Conv2d(out_channels, out_channels, (1, kernel_size), padding=(0, pad), groups=out_channels)
        self.p1 = nn.Conv2d(out_channels, out_channels, (1, kernel_size), padding=(0, pad), groups=out_channels)
        self.p2 = nn.Conv2d(out_channels, out_channels, (kernel_size, 1), padding=(pad, 0), groups=out_channels)
        self.norm = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduce_conv(x)
        return self.relu(self.norm(self.t2(self.t1(x)) + self.p2(self.p1(x))))


class ContextPriorHead(nn.Module):
    """The CLN / Context Prior head on one feature map (the seed's ``CALNet_Vgg`` without its backbone).

    Args:
        in_channels: ``Cin``, channels of the feature map.
        inter_channels: ``Ci``, inner channels (seed: 256; fixture: 32).
        prior_size: the feature grid: an int ``P`` for ``N = P * P`` positions (the seed's argument), or ``(h, w)``
            for ``N = h * w`` (non-square inputs).
        am_kernel_size: separable kernel length (seed: 5).
        groups: groups of ``prior_conv`` (seed: 1).

    Shapes:
        ``x (B, Cin, h, w)`` with ``h * w = N`` (only the product is checked, as in the seed) ->
        ``(logits (B, 1, h, w), context_logits (B, N, N))``; the context map is ``sigmoid(context_logits)``.

    Example:
        >>> head = ContextPriorHead(64, 32, 8, 5).eval()
        >>> logits, ctx = head(torch.zeros(1, 64, 4, 16))
        >>> tuple(logits.shape), tuple(ctx.shape)
        ((1, 1, 4, 16), (1, 64, 64))
    """

    def __init__(
        self,
        in_channels: int,
        inter_channels: int,
        prior_size: int | Sequence[int],
        am_kernel_size: int = 5,
        groups: int = 1,
    ) -> None:
        super().__init__()
        if isinstance(prior_size, int):
            self.num_positions = prior_size * prior_size
        else:
            self.num_positions = int(prior_size[0]) * int(prior_size[1])
        self.inter_channels = inter_channels
        self.separation = SeparationModule(in_channels, inter_channels, am_kernel_size)
        self.prior_conv = nn.Sequential(
            nn.Conv2d(inter_channels, self.num_positions, 1, groups=groups), nn.BatchNorm2d(self.num_positions)
        )
        self.intra_conv = _cbr(inter_channels, inter_channels, 1)
        self.inter_conv = _cbr(inter_channels, inter_channels, 1)
        # Indices 0..6 as in the seed; its index 7 (Sigmoid) has no parameters and is left to the caller.
        self.bottleneck = nn.Sequential(
            *_cbr(in_channels + 2 * inter_channels, inter_channels, 3),
            *_cbr(inter_channels, inter_channels, 3),
            nn.Conv2d(inter_channels, 1, 3, padding=1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        batch, _, height, width = x.shape
        n = self.num_positions
        if height * width != n:
            raise ValueError(
                f"ContextPriorHead: a {height}x{width} feature map has {height * width} positions, but the head was "
                f"built for N={n} (prior_conv has N output channels). The feature grid must have h*w = N; choose the "
                "input size accordingly (see CLN.check_input_size)."
            )
        value = self.separation(x)
        context_logits = self.prior_conv(value).view(batch, n, n).permute(0, 2, 1)
        context = torch.sigmoid(context_logits)
        value = value.view(batch, self.inter_channels, n).permute(0, 2, 1)  # (B, N, Ci)
        # The seed divides both aggregations by N (its prior_double_size).
        intra = torch.bmm(context, value).div(n).permute(0, 2, 1).reshape(batch, self.inter_channels, height, width)
        inter = (
            torch.bmm(1.0 - context, value).div(n).permute(0, 2, 1).reshape(batch, self.inter_channels, height, width)
        )
        out = torch.cat([x, self.intra_conv(intra), self.inter_conv(inter)], dim=1)
        return self.bottleneck(out), context_logits


def _pair(size: int | Sequence[int], key: str) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"{key}: expected an int or [height, width], got {list(size)}.")
    return size


class CLN(nn.Module):
    """CLN for binary SOD: an encoder at output stride 8 and the :class:`ContextPriorHead` on its features.

    Outputs: ``SideOutputs([final logits (B, 1, H, W)], aux={"context_map": S, "context_logits": Z})`` with
    ``S = sigmoid(Z)`` of shape ``(B, N, N)``; ``loss=cln`` reads them.

    Input-size rule: the context map has one prior channel per feature-grid pixel, so the grid is fixed when the
    model is built: ``H`` and ``W`` must equal ``input_size`` (``data.image_size``; train without a different
    ``data.crop_size``), and be multiples of the feature stride ``s`` (8 by default), giving
    ``N = (H / s) * (W / s)``. Memory: ``S`` holds ``N^2`` values per image: a 320x320 input at stride 8 gives
    N = 1600 and 2.56 M values (10 MB in float32, plus about as much for the loss); 512x512 gives 16.8 M (67 MB).
    Models with ``N > max_context_size`` are refused; raise the limit deliberately, or use ``output_stride=16``
    (N / 4) or a smaller input.

    The encoder is ``segmentation_models_pytorch``'s (same names as the ``backbone`` group); its stages after
    ``encoder_depth`` are never run and are frozen (``requires_grad=False``, so DDP needs no unused-parameter
    search). The seed's figure takes ResNet-50 ``layer3`` (1024 channels, ``encoder_depth=4``) and 256 inner
    channels: ``1024 + 256 + 256 = 1536`` channels into the bottleneck, the defaults here.

    Args:
        encoder: smp encoder name (``backbone.name``): ``resnet50`` (default), ``resnet34``, ``mobilenet_v2``...
        input_size: the training and evaluation input size, an int or ``[H, W]`` (``data.image_size``).
        pretrained: load the encoder's ImageNet weights through smp (a download).
        encoder_weights: a local smp-encoder state-dict file (``backbone.weights``).
        weights: a state-dict file for the whole network (this suite's checkpoints; keys ``encoder.*``, ``head.*``).
        output_stride: 8 (default, dilated like CPNet), 16, or 32 (no dilation, for encoders that cannot dilate,
            e.g. VGG).
        encoder_depth: which encoder stage feeds the head (4: stride 16 before dilation; 5: the last stage).
        inter_channels: ``Ci`` of the head.
        am_kernel_size: separable kernel length of the head.
        max_context_size: the largest ``N`` allowed (default 4096 = a 512x512 input at stride 8).

    Example:
        >>> net = CLN("resnet34", input_size=64, encoder_depth=3, inter_channels=16)
        >>> out = net(torch.zeros(2, 3, 64, 64))
        >>> tuple(out[0].shape), tuple(out.aux["context_map"].shape)
        ((2, 1, 64, 64), (2, 64, 64))
    """

    def __init__(
        self,
        encoder: str = "resnet50",
        input_size: int | Sequence[int] = 320,
        pretrained: bool = False,
        encoder_weights: str | None = None,
        weights: str | None = None,
        output_stride: int = 8,
        encoder_depth: int = 4,
        inter_channels: int = 256,
        am_kernel_size: int = 5,
        max_context_size: int = DEFAULT_MAX_CONTEXT_SIZE,
    ) -> None:
        super().__init__()
        if encoder not in get_encoder_names():
            raise ValueError(
                f"model=cln cannot use backbone={encoder}: segmentation-models-pytorch has no encoder of that name. "
                "Choose backbone=resnet50 (the default), resnet34, mobilenet_v2 or another smp encoder."
            )
        if pretrained and encoder_weights:
            raise ValueError(
                f"backbone.pretrained=true and backbone.weights='{encoder_weights}' both ask for encoder weights; "
                "set one of them."
            )
        if output_stride not in (8, 16, 32):
            raise ValueError(f"model.output_stride={output_stride}: expected 8, 16 or 32.")
        try:
            self.encoder = get_encoder(
                encoder,
                in_channels=3,
                depth=encoder_depth,
                weights="imagenet" if pretrained else None,
                output_stride=output_stride,
            )
        except ValueError as err:
            raise ValueError(
                f"model=cln cannot use backbone={encoder} with model.output_stride={output_stride} and "
                f"model.encoder_depth={encoder_depth}: {err} Use model.output_stride=32 for encoders that cannot "
                "dilate (their feature stride is then 2**encoder_depth), or another backbone (resnet50)."
            ) from err
        if encoder_weights:
            load_weights(self.encoder, Path(encoder_weights))
        self.stride = int(self.encoder.output_stride)
        self.input_size = _pair(input_size, "model.input_size")
        self.check_input_size(*self.input_size, _at_build=True)
        self.grid_size = (self.input_size[0] // self.stride, self.input_size[1] // self.stride)
        n = self.grid_size[0] * self.grid_size[1]
        if n > max_context_size:
            raise ValueError(
                f"model=cln at input {self.input_size[0]}x{self.input_size[1]} and feature stride {self.stride} has "
                f"N={n} grid positions: the context map would hold N^2 = {n * n / 1e6:.1f} M values per image "
                f"({4 * n * n / 2**20:.0f} MiB in float32) and prior_conv N output channels. That exceeds "
                f"model.max_context_size={max_context_size}. Use a smaller data.image_size, model.output_stride=16, "
                "or raise model.max_context_size knowingly."
            )
        self.head = ContextPriorHead(self.encoder.out_channels[-1], inter_channels, self.grid_size, am_kernel_size)
        self._freeze_unused_encoder_stages()
        if weights:
            load_weights(self, Path(weights))

    def _freeze_unused_encoder_stages(self) -> None:
        # smp keeps every stage even when depth < 5 (e.g. ResNet layer4); find the parameters the forward never
        # reaches with one tiny eval-mode pass (BatchNorm statistics untouched) and freeze them.
        was_training = self.encoder.training
        self.encoder.eval()
        probe = torch.zeros(1, 3, 2 * self.stride, 2 * self.stride)
        with torch.enable_grad():
            sum(f.sum() for f in self.encoder(probe)[1:]).backward()
        for param in self.encoder.parameters():
            if param.grad is None:
                param.requires_grad_(False)
            param.grad = None
        self.encoder.train(was_training)

    def check_input_size(self, height: int, width: int, _at_build: bool = False) -> None:
        """Raise ``ValueError`` unless ``(height, width)`` is the input size this CLN was built for.

        Args:
            height: input height H.
            width: input width W.

        Example:
            >>> CLN("resnet34", input_size=64, encoder_depth=3, inter_channels=16).check_input_size(64, 64)
        """
        rule = (
            f"CLN's context map has one prior channel per feature-grid pixel, so H and W must be multiples of the "
            f"feature stride {self.stride}"
        )
        if height % self.stride or width % self.stride or height < self.stride or width < self.stride:
            raise ValueError(
                f"Input size {height}x{width} does not fit model=cln: {rule}. Set data.image_size (and "
                f"data.crop_size) to multiples of {self.stride}."
            )
        if not _at_build and (height, width) != self.input_size:
            raise ValueError(
                f"Input size {height}x{width} does not fit model=cln built for {self.input_size[0]}x"
                f"{self.input_size[1]}: {rule}, and equal model.input_size (N = {self.grid_size[0]}x"
                f"{self.grid_size[1]} positions). Set model.input_size to the data's size (it defaults to "
                "data.image_size), and train without a different data.crop_size."
            )

    def forward(self, x: Tensor) -> SideOutputs:
        """Args: x: ``(B, 3, H, W)``. Returns: ``SideOutputs([logits (B, 1, H, W)], aux=...)`` (see the class)."""
        height, width = x.shape[-2:]
        if not is_tracing() and (height, width) != self.input_size:
            self.check_input_size(int(height), int(width))
        features = self.encoder(x)[-1]
        logits, context_logits = self.head(features)
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=True)
        aux = {"context_map": torch.sigmoid(context_logits), "context_logits": context_logits}
        return SideOutputs([logits], aux=aux)
