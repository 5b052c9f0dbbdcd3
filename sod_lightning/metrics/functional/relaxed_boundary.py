"""Relaxed boundary F-measure (Qin et al., "BASNet: Boundary-Aware Salient Object Detection", CVPR 2019).

No official code exists (xuebinqin/BASNet#20; the authors' Binary-Segmentation-Evaluation-Tool lists it under
"Future measures"), so this follows the paper's wording, with the parameters it states:

1. Binarise the (min-max normalised) prediction at 0.5 (``x >= 0.5``) and take the ground truth as for every
   other metric (``gt255 > 128``).
2. Boundary of a binary map ``M`` = ``M XOR erode(M)`` with a 3x3 square, zero padding (foreground touching the
   image border is boundary).
3. Relaxed precision = fraction of *predicted* boundary pixels within ``rho = 3`` pixels of a *ground-truth*
   boundary pixel; relaxed recall = fraction of *ground-truth* boundary pixels within ``rho`` of a *predicted*
   boundary pixel. "Within rho" is a ``(2 rho - 1)^2 = 5x5`` square window (as in the only public
   implementation, below).
4. ``F = (1 + b2) P R / (b2 P + R)`` with ``b2 = 0.3``, 0 when ``P R = 0`` (so an all-background ground truth,
   which has no boundary, gives 0, as for the F-measure); averaged over images.

Note: the TensorFlow Model Garden version (tensorflow/models ``official/projects/basnet/evaluation/metrics.py``,
``RelaxedFscore``) counts *ground-truth* boundary pixels near a predicted boundary in its precision numerator
while dividing by the number of *predicted* boundary pixels (and the reverse for recall): its numerators are
swapped relative to the paper. Its numbers therefore differ from these whenever the two boundaries have
different lengths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .._prepare import PreparedBatch
from ._base import MetricFamily, evaluate_family

BETA2 = 0.3
RHO = 3


def _dilate(mask: Tensor, size: int, outside: bool) -> Tensor:
    """Binary dilation of ``(B, H, W)`` bool by a ``size x size`` square; pixels outside read as ``outside``.

    Separable shifted ORs on booleans. Written by hand because ``F.max_pool2d`` (float) and kornia.morphology
    (unfolded patches) cost several milliseconds per 400x300 map on the CPU; these few boolean passes do not.
    """
    half = size // 2
    h, w = mask.shape[-2:]
    padded = F.pad(mask.to(torch.uint8), (half, half, half, half), value=int(outside)).bool()
    rows = padded[..., 0:w].clone()
    for i in range(1, size):
        rows |= padded[..., i : i + w]
    out = rows[..., 0:h, :].clone()
    for i in range(1, size):
        out |= rows[..., i : i + h, :]
    return out


def boundary(mask: Tensor) -> Tensor:
    """``mask XOR erode(mask, 3x3)`` with zero padding.

    Args:
        mask: ``(B, H, W)`` bool.

    Returns:
        ``(B, H, W)`` bool boundary map: foreground pixels with a background (or outside) 8-neighbour.

    Example:
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool); m[0, 1:4, 1:4] = True
        >>> boundary(m)[0].int()[2]
        tensor([0, 1, 0, 1, 0], dtype=torch.int32)
    """
    # erode(M) is False where the 3x3 window holds a background pixel; zero padding = outside is background.
    return mask & _dilate(~mask, 3, outside=True)


def _near(mask: Tensor, rho: int = RHO) -> Tensor:
    """Pixels within the ``(2 rho - 1)^2`` square window of a ``True`` pixel of ``mask`` (B, H, W)."""
    return _dilate(mask, 2 * rho - 1, outside=False)


def _relaxfb_update(prep: PreparedBatch) -> dict[str, Tensor]:
    """Per-image relaxed boundary F.

    Returns:
        ``{"sum_relaxfb": (B,)}`` float64.
    """
    # x is non-decreasing in the byte q, so x >= 0.5 <=> q >= (number of byte values whose x is < 0.5).
    first_byte = (prep.values < 0.5).sum(1).to(torch.int32)
    # Predicted and GT maps stacked: one boundary and one neighbourhood pass for both.
    edges = boundary(torch.cat([prep.q >= first_byte[:, None, None], prep.gt]))  # (2B, H, W)
    near = _near(edges).roll(prep.batch_size, 0)  # pred rows get "near GT", GT rows "near pred"
    counts = torch.stack([edges.flatten(1).sum(1), (edges & near).flatten(1).sum(1)]).double()
    total, hits = counts.view(2, 2, prep.batch_size)  # [pred, gt] x B each
    precision = hits[0] / total[0].clamp(min=1)
    recall = hits[1] / total[1].clamp(min=1)
    numerator = (1 + BETA2) * precision * recall
    denominator = torch.where(numerator == 0, torch.ones_like(numerator), BETA2 * precision + recall)
    return {"sum_relaxfb": numerator / denominator}


def _relaxfb_compute(sums: dict[str, Tensor], n: Tensor) -> dict[str, Tensor]:
    return {"relaxfb": sums["sum_relaxfb"] / n}


RELAXFB_FAMILY = MetricFamily("relaxfb", ("relaxfb",), {"sum_relaxfb": ()}, _relaxfb_update, _relaxfb_compute)


def relaxed_boundary_f_measure(preds: Tensor, target: Tensor) -> Tensor:
    """Relaxed boundary F-measure of a batch (BASNet paper; beta^2 = 0.3, rho = 3), mean over images.

    Args:
        preds: ``(B, 1, H, W)`` or ``(B, H, W)`` probabilities in [0, 1] (or uint8 0..255).
        target: same shape; float in [0, 1], uint8 or bool.

    Returns:
        0-d float64 tensor.

    Example:
        >>> gt = torch.zeros(1, 1, 16, 16); gt[..., 4:12, 4:12] = 1
        >>> relaxed_boundary_f_measure(gt.clone(), gt)
        tensor(1., dtype=torch.float64)
    """
    return evaluate_family(RELAXFB_FAMILY, preds, target)["relaxfb"]
