"""The cross-correlation (affinity) loss of CLN / Context Prior, and the CLN training objective.

A context-prior network predicts, for every pair of feature-grid pixels ``(i, j)``, the probability ``S_ij`` that
they belong to the same class. The ideal map is built from the ground truth: resize the mask to the grid
``(h, w)`` with nearest neighbour, one-hot encode it as ``L`` of shape ``(B, N, 2)`` with ``N = h * w``, and take
``A = L L^T`` (``A_ij = 1`` exactly when pixels ``i`` and ``j`` share a label; the diagonal is 1).

The loss (Yu et al., "Context Prior for Scene Segmentation", CVPR 2020, eq. 2-6; official code
``ycszen/ContextPrior`` ``loss/affinity_loss.py``; ported by the CLN seed ``lzylyx/CLN-SOD-`` ``loss/loss.py``) is

* ``unary = BCE(S, A)``, the mean over ``B * N * N`` entries;
* with ``Abar = A * (1 - I)`` (diagonal removed) and sums over ``j`` per row ``i``:
  ``recall_i = sum_j S_ij Abar_ij / sum_j Abar_ij``,
  ``spec_i = sum_j (1 - S_ij)(1 - A_ij) / sum_j (1 - A_ij)``,
  ``precision_i = sum_j S_ij Abar_ij / sum_j S_ij`` (a zero denominator is replaced by 1);
  each becomes ``BCE(x, 1) = mean_i(-log x_i)`` (log clamped at -100, as torch's BCE);
* ``total = unary_weight * unary + global_weight * (recall + spec + precision)``, where ``global_weight`` is
  ``1/64`` in the CLN seed (a hard-coded constant, ``variant="cln"``, the default) and ``1`` in the Context Prior
  paper's code (``variant="cpnet"``).

Memory: ``S`` has ``N^2`` entries per image (2.56 M for a 320 input at output stride 8). This implementation never
materialises ``A``: every term that involves it is a matrix-vector product with the label vector ``l`` (``A`` is
``l l^T + (1 - l)(1 - l)^T``), so the loss adds about one ``N^2`` temporary on top of ``S`` itself.
:func:`ideal_affinity` builds ``A`` explicitly for inspection and tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Global-term weight of each published variant (see the module docstring).
GLOBAL_WEIGHTS = {"cln": 1.0 / 64.0, "cpnet": 1.0}

# torch's binary_cross_entropy clamps log(p) at -100; the global terms reproduce it to match the official values.
_LOG_CLAMP = -100.0


def _grid_labels(target: Tensor, grid_size: Sequence[int], threshold: float) -> Tensor:
    """Resize ``target`` to ``grid_size`` with nearest neighbour and binarise: ``(B, N)`` float in {0, 1}."""
    if target.ndim == 3:
        target = target.unsqueeze(1)
    if target.ndim != 4 or target.shape[1] != 1:
        raise ValueError(
            f"target: expected a mask of shape (B, 1, H, W) or (B, H, W), got {tuple(target.shape)}."
        )
    scaled = F.interpolate(target.float(), size=tuple(grid_size), mode="nearest")
    # The official code casts with .long() (truncation: only exact 1.0 counts as foreground); thresholding at 0.5
    # agrees on binary masks and does not silently drop soft foreground pixels.
    return (scaled >= threshold).flatten(1).to(target.dtype if target.is_floating_point() else torch.float32)


def infer_grid_size(num_positions: int, height: int, width: int) -> tuple[int, int]:
    """The feature grid ``(h, w)`` with ``h * w = num_positions`` and the aspect ratio of a ``height x width`` mask.

    Args:
        num_positions: ``N``, the side of the context map ``(B, N, N)``.
        height: mask height ``H``.
        width: mask width ``W``.

    Returns:
        ``(h, w)``.

    Raises:
        ValueError: no integer grid with that aspect ratio has ``N`` cells.

    Example:
        >>> infer_grid_size(2400, 320, 480)
        (40, 60)
    """
    h = round(math.sqrt(num_positions * height / width))
    w = num_positions // max(h, 1)
    if h * w != num_positions or abs(h * width - w * height) > max(height, width) / max(h, w):
        raise ValueError(
            f"Cannot tell the feature grid of a context map with N={num_positions} positions from a {height}x{width} "
            f"mask (no h x w = {num_positions} grid has the mask's aspect ratio). Set the loss's grid_size "
            "(conf/loss/cln.yaml: cross_correlation.grid_size=[h, w]) to the model's feature grid."
        )
    return h, w


def ideal_affinity(target: Tensor, grid_size: Sequence[int], threshold: float = 0.5) -> Tensor:
    """The ideal context map ``A = L L^T`` of a mask on a ``grid_size`` feature grid.

    Args:
        target: ``(B, 1, H, W)`` or ``(B, H, W)`` mask in [0, 1].
        grid_size: ``(h, w)`` of the feature grid; ``N = h * w``.
        threshold: foreground when the nearest-resized mask is ``>= threshold``.

    Returns:
        ``(B, N, N)`` float, 1 where two grid pixels share a label.

    Example:
        >>> t = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
        >>> ideal_affinity(t, (2, 2))[0]
        tensor([[1., 0., 0., 1.],
                [0., 1., 1., 0.],
                [0., 1., 1., 0.],
                [1., 0., 0., 1.]])
    """
    fg = _grid_labels(target, grid_size, threshold).float()
    one_hot = torch.stack([1.0 - fg, fg], dim=-1)  # (B, N, 2): classes background, foreground
    return torch.bmm(one_hot, one_hot.transpose(1, 2))


def _clamped_log(x: Tensor) -> Tensor:
    """``max(log x, -100)`` as torch's BCE computes it, with a zero (not NaN) gradient where ``x = 0``.

    ``torch.log(x).clamp(min=-100)`` has the right value but back-propagates ``0 * inf = NaN`` at ``x = 0``, which
    a saturated sigmoid (``S = 1.0`` in float32 for logits above ~17) reaches in practice.
    """
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, torch.ones_like(x))), _LOG_CLAMP).clamp(
        min=_LOG_CLAMP
    )


def _bce_with_one(x: Tensor, keep: Tensor | None = None) -> Tensor:
    """``BCE(x, 1) = mean(-log x)`` with torch's clamp of the log at -100, over the rows where ``keep`` is true."""
    nll = -_clamped_log(x)
    if keep is None:
        return nll.mean()
    return (nll * keep).sum() / keep.sum().clamp(min=1)


def cross_correlation_loss(
    context_map: Tensor,
    target: Tensor,
    grid_size: Sequence[int] | None = None,
    *,
    context_logits: Tensor | None = None,
    unary_weight: float = 1.0,
    global_weight: float = GLOBAL_WEIGHTS["cln"],
    threshold: float = 0.5,
    skip_empty_rows: bool = False,
) -> dict[str, Tensor]:
    """The cross-correlation (affinity) loss between a context map and the ideal map of a mask.

    Args:
        context_map: ``S``, ``(B, N, N)`` probabilities (the sigmoided prior map; row ``i`` is grid pixel ``i``).
        target: ``(B, 1, H, W)`` or ``(B, H, W)`` mask in [0, 1].
        grid_size: the feature grid ``(h, w)`` with ``h * w = N``; ``None`` infers it from the mask's aspect ratio.
        context_logits: optional ``(B, N, N)`` logits of ``S``; when given, the unary term is computed from them
            (``binary_cross_entropy_with_logits``, numerically stable) instead of from the probabilities.
        unary_weight: weight of the unary term.
        global_weight: weight of the sum of the three global terms (``1/64`` CLN, ``1`` Context Prior).
        threshold: mask binarisation threshold after the nearest resize.
        skip_empty_rows: leave rows whose global-term denominator is 0 out of that term's mean (a pixel alone in its
            class, or a mask that is one class on the whole grid) instead of the official fill-with-1, which scores
            them as the clamped maximum (constant, no gradient).

    Returns:
        ``{"loss", "unary", "recall", "spec", "precision"}``; only ``"loss"`` carries gradients.

    Note:
        As in both official codes, the precision denominator ``sum_j S_ij`` keeps the diagonal while the numerator
        drops it, so at ``S = A`` precision is ``(n_i - 1) / n_i`` (``n_i`` pixels share pixel ``i``'s class) and the
        loss is ``global_weight * mean_i(-log((n_i - 1) / n_i))``, not 0. Lowering ``S_ii`` trades that against the
        unary term: with the CLN weight (1/64) ``S = A`` stays the minimum while every class covers at least
        ``N / 64`` grid cells; with the Context Prior weight (1) lowering the diagonal always pays a little.

    Example:
        >>> t = torch.zeros(1, 1, 8, 8); t[..., :4, :] = 1
        >>> a = ideal_affinity(t, (4, 4))
        >>> out = cross_correlation_loss(a, t, (4, 4))
        >>> abs(round(out["unary"].item(), 6)), round(out["precision"].item(), 4)  # -log(7/8)
        (0.0, 0.1335)
    """
    if context_map.ndim != 3 or context_map.shape[1] != context_map.shape[2]:
        raise ValueError(
            f"context_map: expected shape (B, N, N) (a sigmoided context-prior map), got {tuple(context_map.shape)}."
        )
    batch, n, _ = context_map.shape
    if target.shape[0] != batch:
        raise ValueError(f"target: expected batch size {batch} (the context map's), got {target.shape[0]}.")
    if grid_size is None:
        grid_size = infer_grid_size(n, target.shape[-2], target.shape[-1])
    if int(grid_size[0]) * int(grid_size[1]) != n:
        raise ValueError(
            f"grid_size {tuple(grid_size)} has {int(grid_size[0]) * int(grid_size[1])} cells but the context map has "
            f"N={n} positions; set cross_correlation.grid_size to the model's feature grid (h * w = N)."
        )
    # F.binary_cross_entropy refuses to run under autocast, and N^2 sums want float32: leave autocast here.
    device_type = context_map.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        s = context_map.float() if context_map.dtype in (torch.float16, torch.bfloat16) else context_map
        fg = _grid_labels(target, grid_size, threshold).to(s.dtype)  # (B, N)
        bg = 1.0 - fg
        # S @ l and S @ (1 - l): for row i, the mass of S on foreground / background columns.
        s_fg = torch.bmm(s, fg.unsqueeze(-1)).squeeze(-1)
        s_bg = torch.bmm(s, bg.unsqueeze(-1)).squeeze(-1)
        s_same = fg * s_fg + bg * s_bg  # sum_j S_ij A_ij
        s_other = fg * s_bg + bg * s_fg  # sum_j S_ij (1 - A_ij)
        n_fg = fg.sum(dim=1, keepdim=True)
        n_same = fg * n_fg + bg * (n - n_fg)  # sum_j A_ij (diagonal included)
        n_other = n - n_same  # sum_j (1 - A_ij)
        diag = torch.diagonal(s, dim1=1, dim2=2)  # A_ii = 1, so Abar drops exactly S_ii

        if context_logits is not None:
            z = context_logits.float() if context_logits.dtype in (torch.float16, torch.bfloat16) else context_logits
            # BCE_with_logits(z, a) = softplus(z) - a z; sum_ij A_ij z_ij = l^T Z l + (1 - l)^T Z (1 - l).
            z_same = (fg * torch.bmm(z, fg.unsqueeze(-1)).squeeze(-1)).sum(1) + (
                bg * torch.bmm(z, bg.unsqueeze(-1)).squeeze(-1)
            ).sum(1)
            unary = (F.softplus(z).sum(dim=(1, 2)) - z_same).sum() / (batch * n * n)
        else:
            # BCE(s, a) = -[log(1 - s) + a (log s - log(1 - s))], logs clamped like torch's BCE.
            log_s = _clamped_log(s)
            log_1ms = _clamped_log(1.0 - s)
            diff = log_s - log_1ms
            d_same = (fg * torch.bmm(diff, fg.unsqueeze(-1)).squeeze(-1)).sum(1) + (
                bg * torch.bmm(diff, bg.unsqueeze(-1)).squeeze(-1)
            ).sum(1)
            unary = -(log_1ms.sum(dim=(1, 2)) + d_same).sum() / (batch * n * n)

        def _safe(den: Tensor) -> Tensor:
            return torch.where(den > 0, den, torch.ones_like(den))

        tp = s_same - diag  # sum_j S_ij Abar_ij
        rec_den, spec_den, prec_den = n_same - 1.0, n_other, s.sum(dim=2)
        # Official: a zero denominator becomes 1, so a row with no other same-class pixel scores recall 0 and a
        # mask that is one class on the whole grid scores spec 0 (-log 0 -> the clamp, 100). skip_empty_rows
        # leaves those rows out of the mean instead.
        keep = (lambda d: d > 0) if skip_empty_rows else (lambda d: None)
        recall = _bce_with_one(tp / _safe(rec_den), keep(rec_den))
        spec = _bce_with_one((n_other - s_other) / _safe(spec_den), keep(spec_den))
        precision = _bce_with_one(tp / _safe(prec_den), keep(prec_den))
        total = unary_weight * unary + global_weight * (recall + spec + precision)
    return {
        "loss": total,
        "unary": unary.detach(),
        "recall": recall.detach(),
        "spec": spec.detach(),
        "precision": precision.detach(),
    }


class CrossCorrelationLoss(nn.Module):
    """Module form of :func:`cross_correlation_loss`, called on a context map and a mask.

    Args:
        variant: ``"cln"`` (default: the CLN seed's ``CrossCorrelationLoss``, global terms divided by 64) or
            ``"cpnet"`` (Context Prior's ``AffinityLoss``, global terms with weight 1).
        unary_weight: weight of the unary BCE term.
        global_weight: weight of ``recall + spec + precision``; ``None`` takes the variant's value.
        grid_size: the feature grid ``(h, w)``; ``None`` infers it from the mask (the model checks its input size).
        threshold: mask binarisation threshold.
        skip_empty_rows: see :func:`cross_correlation_loss` (default: the official behaviour).

    Example:
        >>> loss = CrossCorrelationLoss("cpnet")
        >>> t = torch.zeros(2, 1, 16, 16); t[:, :, 4:12, 4:12] = 1
        >>> sorted(loss(torch.full((2, 16, 16), 0.5), t))
        ['loss', 'precision', 'recall', 'spec', 'unary']
    """

    def __init__(
        self,
        variant: str = "cln",
        unary_weight: float = 1.0,
        global_weight: float | None = None,
        grid_size: Sequence[int] | None = None,
        threshold: float = 0.5,
        skip_empty_rows: bool = False,
    ) -> None:
        super().__init__()
        if variant not in GLOBAL_WEIGHTS:
            raise ValueError(
                f"cross_correlation.variant='{variant}' is unknown; use 'cln' (the CLN seed: global terms / 64) or "
                "'cpnet' (the Context Prior paper's code: global terms with weight 1)."
            )
        self.variant = variant
        self.unary_weight = float(unary_weight)
        self.global_weight = GLOBAL_WEIGHTS[variant] if global_weight is None else float(global_weight)
        self.grid_size = None if grid_size is None else (int(grid_size[0]), int(grid_size[1]))
        self.threshold = float(threshold)
        self.skip_empty_rows = bool(skip_empty_rows)

    def forward(self, context_map: Tensor, target: Tensor, context_logits: Tensor | None = None) -> dict[str, Tensor]:
        return cross_correlation_loss(
            context_map,
            target,
            self.grid_size,
            context_logits=context_logits,
            unary_weight=self.unary_weight,
            global_weight=self.global_weight,
            threshold=self.threshold,
            skip_empty_rows=self.skip_empty_rows,
        )


class CLNLoss(nn.Module):
    """A segmentation loss plus ``weight`` times the cross-correlation loss on the model's context map.

    ``total = seg(outputs, target)["loss"] + weight * cross_correlation(outputs.aux["context_map"], target)["loss"]``.
    Any model that returns :class:`~sod_lightning.models.outputs.SideOutputs` with a ``"context_map"`` entry
    (and optionally ``"context_logits"``) can use it; the CLN seed trains BCE + cross-correlation with an
    unpublished relative weight (presumably 1, the default here).

    Args:
        seg: a criterion ``seg(outputs, target) -> dict`` with ``"loss"``, e.g.
            ``DeepSupervision(BCELoss())`` (any entry of the loss group).
        cross_correlation: a :class:`CrossCorrelationLoss`; ``None`` uses ``CrossCorrelationLoss()`` (CLN variant).
        weight: lambda, the weight of the cross-correlation term.
        aux_key: the ``outputs.aux`` entry holding the context map (probabilities).

    Returns (from ``forward``):
        ``{"loss", "seg", "cross_correlation", "unary", "recall", "spec", "precision"}`` plus the segmentation
        loss's other components prefixed with ``seg_``; everything but ``"loss"`` is detached.

    Example:
        >>> from sod_lightning.losses import BCELoss, DeepSupervision
        >>> from sod_lightning.models.outputs import SideOutputs
        >>> crit = CLNLoss(DeepSupervision(BCELoss()), weight=1.0)
        >>> out = SideOutputs([torch.zeros(1, 1, 16, 16)], aux={"context_map": torch.full((1, 4, 4), 0.5)})
        >>> t = torch.zeros(1, 1, 16, 16); t[..., :8, :] = 1
        >>> sorted(crit(out, t))
        ['cross_correlation', 'loss', 'precision', 'recall', 'seg', 'seg_final', 'spec', 'unary']
    """

    def __init__(
        self,
        seg: nn.Module,
        cross_correlation: nn.Module | None = None,
        weight: float = 1.0,
        aux_key: str = "context_map",
    ) -> None:
        super().__init__()
        self.seg = seg
        self.cross_correlation = cross_correlation if cross_correlation is not None else CrossCorrelationLoss()
        self.weight = float(weight)
        self.aux_key = aux_key

    def forward(self, outputs: Sequence[Tensor], target: Tensor) -> dict[str, Tensor]:
        aux: Mapping[str, Tensor] = getattr(outputs, "aux", {})
        if self.aux_key not in aux:
            raise ValueError(
                f"loss=cln needs the model's '{self.aux_key}' (outputs.aux), but the model returned "
                f"{type(outputs).__name__} with aux keys {sorted(aux)}. Use it with a context-prior model "
                "(model=cln), or choose another loss (loss=bce, loss=hybrid, ...)."
            )
        seg_out = self.seg(outputs, target)
        cc_out = self.cross_correlation(aux[self.aux_key], target, aux.get("context_logits"))
        total = seg_out["loss"] + self.weight * cc_out["loss"]
        result = {"loss": total, "seg": seg_out["loss"].detach(), "cross_correlation": cc_out["loss"].detach()}
        result.update({k: v for k, v in cc_out.items() if k != "loss"})
        result.update({f"seg_{k}": v.detach() for k, v in seg_out.items() if k != "loss"})
        return result
