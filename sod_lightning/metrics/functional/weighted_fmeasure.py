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

Computed by one compiled CPU kernel (:mod:`._wfm_kernel`): the nearest-foreground *index* must follow
scipy's feature-transform tie-break exactly (another choice among equally near pixels changes wF by up to
4e-4), which is a sequential scan no torch routine offers, so the map goes to the CPU once per batch and the
error lookup, blur and sums are fused there instead of coming back to the device for a few cheap passes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._prepare import PreparedBatch
from ._base import MetricFamily, evaluate_family
from ._wfm_kernel import weighted_fmeasure_batch


def matlab_gaussian_1d(size: int = 7, sigma: float = 5.0) -> np.ndarray:
    """1-D factor of MATLAB ``fspecial('gaussian', size, sigma)`` (float64, sums to 1).

    ``fspecial`` builds ``exp(-(x^2 + y^2) / (2 sigma^2))``, zeroes values below ``eps * max`` (none for
    7x7, sigma 5) and normalises; that kernel is the outer product of this vector with itself up to float64
    rounding, so two 1-D passes replace the 49-tap 2-D convolution.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


_KERNEL = matlab_gaussian_1d()


def _wfmeasure_update(prep: PreparedBatch) -> dict[str, Tensor]:
    """Per-image weighted F-measure.

    Returns:
        ``{"sum_wfm": (B,)}`` float64.
    """
    q = prep.q.to(torch.uint8).cpu().numpy()  # bytes: a quarter of the int32 map to copy from a GPU
    gt = np.ascontiguousarray(prep.gt.cpu().numpy())
    values = np.ascontiguousarray(prep.values.cpu().numpy())
    # As many threads as torch uses, this one included.
    result = weighted_fmeasure_batch(q, gt, values, _KERNEL, threads=max(1, torch.get_num_threads()))
    return {"sum_wfm": torch.from_numpy(result).to(prep.device)}


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
