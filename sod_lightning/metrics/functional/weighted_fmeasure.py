"""Weighted F-measure (Margolin, Zelnik-Manor and Tal, CVPR 2014), as pysodmetrics 1.6 ``WeightedFmeasure``.

With ``E = |x - gt|``:

1. ``Dst, Idxt = bwdist(gt)``: distance to, and index of, the nearest ground-truth foreground pixel.
2. Pixel dependency: ``Et = E`` with each background pixel replaced by ``E`` at its nearest foreground pixel;
   ``EA = Et * K`` with ``K = fspecial('gaussian', 7, 5)`` and zero padding; ``MIN_E_EA = EA`` where
   ``gt & (EA < E)``, else ``E``.
3. Pixel importance: ``B = 1`` on the foreground, ``2 - exp(log(0.5) / 5 * Dst)`` on the background;
   ``Ew = MIN_E_EA * B``.
4. ``TPw = |GT| - sum(Ew[GT])``, ``FPw = sum(Ew[~GT])``, ``R = 1 - mean(Ew[GT])``, ``P = TPw / (TPw + FPw + eps)``,
   ``Q = 2 R P / (R + P + eps)`` (beta = 1; Fan's MATLAB hard-codes the same). All-background GT: ``Q = 0``.

The nearest-foreground *index* is the one step done on the CPU with scipy: where several foreground pixels are
equally near, scipy's feature transform picks one by its own tie-break, and choosing another changes wF by up
to 4e-4 (measured on ellipse masks); no torch or kornia routine returns those indices (kornia's
``distance_transform`` is a convolutional approximation without indices). Everything else runs batched on the
input's device in float64.
"""

from __future__ import annotations

import math

import torch
from scipy import ndimage
from torch import Tensor

from .._prepare import EPS, PreparedBatch
from ._base import MetricFamily, evaluate_family

BETA = 1.0


def matlab_gaussian_1d(size: int = 7, sigma: float = 5.0) -> Tensor:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (float64, sums to 1).

    ``fspecial`` builds ``exp(-(x^2 + y^2) / (2 sigma^2))``, zeroes values below ``eps * max`` (none for
    7x7, sigma 5) and normalises; that kernel is the outer product of this vector with itself up to float64
    rounding, so two 1-D passes replace the 49-tap 2-D convolution.
    """
    half = (size - 1) / 2
    x = torch.arange(size, dtype=torch.float64) - half
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _separable_blur(image: Tensor, kernel: Tensor) -> Tensor:
    """Zero-padded ``image * (k k^T)`` for ``(B, H, W)`` float64, by shifted in-place adds.

    Written by hand because ``F.conv2d`` on float64 CPU tensors has no fast path (24 ms for a 400x300 map
    with the 7x7 kernel here vs well under 1 ms for these shifted adds); adding into slices of the output
    instead of padding the input is what zero padding means, without allocating padded copies.
    """
    weights = kernel.tolist()
    half = len(weights) // 2
    out = image * weights[half]
    for k in range(1, half + 1):  # along W: out[j] += w[half + k] * in[j + k] + w[half - k] * in[j - k]
        out[..., :-k].add_(image[..., k:], alpha=weights[half + k])
        out[..., k:].add_(image[..., :-k], alpha=weights[half - k])
    rows = out
    out = rows * weights[half]
    for k in range(1, half + 1):  # along H
        out[..., :-k, :].add_(rows[..., k:, :], alpha=weights[half + k])
        out[..., k:, :].add_(rows[..., :-k, :], alpha=weights[half - k])
    return out


def nearest_foreground(gt: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest-foreground index and squared distance of every pixel, as scipy's ``distance_transform_edt``.

    Args:
        gt: ``(H, W)`` bool mask with at least one foreground pixel (any device).

    Returns:
        ``(index, dist2)`` on ``gt``'s device: ``(H * W,)`` int64 flat index ``row * W + col`` of the nearest
        foreground pixel (itself on the foreground) and ``(H, W)`` int32 squared Euclidean distance to it.
        ``sqrt(dist2.double())`` is bit for bit scipy's distance (integer squares are exact in float64).
    """
    mask = gt.detach().cpu().numpy()
    # scipy's feature transform decides the ties; the distances are recomputed from the indices below.
    rows_cols = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    h, w = mask.shape
    rows, cols = torch.from_numpy(rows_cols).to(gt.device)  # (H, W) int32 each
    index = (rows * w).add_(cols).flatten().long()
    rows -= torch.arange(h, device=gt.device, dtype=torch.int32)[:, None]
    cols -= torch.arange(w, device=gt.device, dtype=torch.int32)[None, :]
    return index, rows.mul_(rows).add_(cols * cols)


def _wfmeasure_update(prep: PreparedBatch) -> dict[str, Tensor]:
    """Per-image weighted F-measure.

    Returns:
        ``{"sum_wfm": (B,)}`` float64.
    """
    num_fg = prep.num_fg
    result = torch.zeros(prep.batch_size, dtype=torch.float64, device=prep.device)
    chosen = (num_fg > 0).nonzero().flatten()
    if chosen.numel() == 0:  # all-background ground truth: wF = 0
        return {"sum_wfm": result}
    nearest = [nearest_foreground(prep.gt[b]) for b in chosen.tolist()]
    if len(nearest) == 1:  # B = 1 (validation): views, no copies
        index, dist2 = nearest[0][0][None], nearest[0][1][None]
    else:
        index = torch.stack([i for i, _ in nearest])  # (b, H * W)
        dist2 = torch.stack([d for _, d in nearest])  # (b, H, W)
    shape = dist2.shape

    if len(nearest) == prep.batch_size:  # the usual case: no copies of the per-pixel tensors
        values, gt, code_index, hist_fg = prep.values, prep.gt, prep.code_index, prep.hist[:, 1]
    else:
        values, gt, code_index = prep.values[chosen], prep.gt[chosen], prep.code_index[chosen]
        hist_fg = prep.hist[chosen, 1]
    # E = |x - gt| looked up per byte and gt class: x on the background, |x - 1| on the foreground.
    error = torch.gather(torch.cat([values, (values - 1).abs()], 1), 1, code_index)  # (b, H*W)
    error_t = torch.gather(error, 1, index).view(shape)  # Et: background pixels take E of their nearest fg
    error = error.view(shape)
    blurred = _separable_blur(error_t, matlab_gaussian_1d().to(prep.device))  # EA
    # MIN_E_EA on the foreground (B = 1 there): min(E, EA); the background keeps E.
    ew_fg = torch.minimum(error, blurred, out=blurred).masked_fill_(~gt, 0).flatten(1).sum(1)
    # Background weight B = 2 - exp(log(0.5) / 5 * Dst); at foreground pixels Dst = 0 gives exactly B = 1, so
    # the sum over all pixels minus the foreground's sum of E (from the histogram) is the background's sum.
    importance = dist2.double().sqrt_().mul_(math.log(0.5) / 5).exp_().neg_().add_(2)
    e_fg = (hist_fg.double() * (1 - values)).sum(1)
    fpw = importance.mul_(error).flatten(1).sum(1) - e_fg
    n_fg = num_fg[chosen].double()
    tpw = n_fg - ew_fg
    recall = 1 - ew_fg / n_fg
    precision = tpw / (tpw + fpw + EPS)
    result[chosen] = (1 + BETA) * recall * precision / (recall + BETA * precision + EPS)
    return {"sum_wfm": result}


def _wfmeasure_compute(sums: dict[str, Tensor], n: Tensor) -> dict[str, Tensor]:
    return {"wfm": sums["sum_wfm"] / n}


WFMEASURE_FAMILY = MetricFamily("wfmeasure", ("wfm",), {"sum_wfm": ()}, _wfmeasure_update, _wfmeasure_compute)


def weighted_f_measure(preds: Tensor, target: Tensor) -> Tensor:
    """Weighted F-measure of a batch, averaged over its images (pysodmetrics ``WeightedFmeasure``).

    Args:
        preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (or uint8 0..255).
        target: same shape; float in [0, 1], uint8 or bool.

    Returns:
        0-d float64 tensor.

    Example:
        >>> import torch
        >>> gt = torch.zeros(1, 1, 8, 8); gt[..., 2:6, 2:6] = 1
        >>> weighted_f_measure(gt.clone(), gt)
        tensor(1., dtype=torch.float64)
    """
    return evaluate_family(WFMEASURE_FAMILY, preds, target)["wfm"]
