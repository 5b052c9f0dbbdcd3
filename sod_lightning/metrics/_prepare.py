"""Input preparation shared by every SOD metric, exactly as pysodmetrics 1.6 prepares its inputs.

Every metric in this package starts from a :class:`PreparedBatch`, so the quantisation, the ground-truth
threshold and the min-max normalisation happen once per batch and are identical for all metrics.

The pipeline (each step reproduces pysodmetrics ``utils.prepare_data`` bit for bit):

1. **Prediction bytes.** A float prediction ``p`` in ``[0, 1]`` is quantised as saving it to an 8-bit PNG would:
   ``q = round(p * 255)`` (round half to even, computed in float64), so a map read from a PNG and divided by 255
   comes back to exactly its bytes. A ``uint8`` prediction is taken as the bytes ``q`` directly.
2. **Ground truth.** ``gt = gt255 > 128`` on the 0..255 scale. A ``uint8`` mask is ``gt255`` itself; a ``bool``
   mask is used as is; a float mask in ``[0, 1]`` is first quantised like the prediction,
   ``gt255 = round(t * 255)``, so 0/1 masks map to background/foreground and a soft mask is foreground where
   ``t > 128.5 / 255`` (``t >= 0.50392``; 0.5 is background).
3. **Normalised prediction.** ``x = q / 255`` in float64, then, only if the image is not constant,
   ``x = (x - min) / (max - min)`` (MATLAB ``mapminmax(im2double(...))``). A constant map keeps ``q / 255``.
4. **Threshold bins.** ``bin = trunc(x * 255)`` in float64, in that order (float32 puts ~0.4 % of pixels in
   another bin). Threshold ``t`` in ``0..255`` binarises a map as ``bin >= t``.

Because ``x`` only depends on the byte ``q``, each image is summarised by a 256-entry lookup table
(``values``) and histograms of its bytes split by ground truth (and by S-measure quadrant); MAE, F, E and
S-measure are computed from those histograms without a per-pixel float64 pass, which is what makes the
metrics fast. The per-pixel normalised prediction (``pred``) is only materialised for weighted F and the
relaxed boundary F.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch
from torch import Tensor

#: MATLAB ``eps`` (``numpy.spacing(1)``), the epsilon pysodmetrics and Fan's MATLAB code use everywhere.
EPS = 2.220446049250313e-16

#: Number of thresholds of every dynamic curve (``bin >= t`` for ``t = 0..255``).
NUM_THRESHOLDS = 256


def thresholds(device: torch.device | str | None = None) -> Tensor:
    """Return the 256 thresholds of every curve, ascending, on the normalised [0, 1] scale.

    Curve index ``t`` binarises the normalised prediction ``x`` as ``trunc(x * 255) >= t``, i.e. roughly
    ``x >= t / 255``. pysodmetrics stores its curves in the opposite (descending) order; ours are flipped.

    Example:
        >>> thresholds()[:3]
        tensor([0.0000, 0.0039, 0.0078], dtype=torch.float64)
    """
    return torch.arange(NUM_THRESHOLDS, dtype=torch.float64, device=device) / 255


def _as_batch(tensor: Tensor, name: str) -> Tensor:
    """Reshape ``(B, 1, H, W)``, ``(B, H, W)`` or ``(H, W)`` to ``(B, H, W)``."""
    if tensor.ndim == 4 and tensor.shape[1] == 1:
        return tensor[:, 0]
    if tensor.ndim == 3:
        return tensor
    if tensor.ndim == 2:
        return tensor[None]
    raise ValueError(
        f"SOD metrics: `{name}` has shape {tuple(tensor.shape)}, expected (B, 1, H, W), (B, H, W) or (H, W) "
        f"grey maps. Pass one channel (e.g. `{name}[:, :1]` for a single-channel model output, or convert an "
        f"RGB mask to grey before evaluating)."
    )


def _to_bytes_prediction(preds: Tensor) -> Tensor:
    """Quantise a prediction to its PNG bytes ``0..255`` (int32: half the memory traffic of int64)."""
    if preds.dtype == torch.uint8:
        return preds.to(torch.int32)
    if not preds.is_floating_point():
        raise TypeError(
            f"SOD metrics: `preds` has dtype {preds.dtype}; expected float probabilities in [0, 1] or uint8 "
            f"bytes 0..255. Apply `torch.sigmoid` to logits, or divide integer maps by 255."
        )
    lo, hi = torch.aminmax(preds)
    lo, hi = float(lo), float(hi)
    if not (lo >= 0.0 and hi <= 1.0):  # also false for NaN
        raise ValueError(
            f"SOD metrics: `preds` must be probabilities in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. "
            f"Models return logits: apply `torch.sigmoid(logits)` before `update`; a map read from an 8-bit "
            f"file must be divided by 255 (or passed as uint8)."
        )
    # float64 so that p = k / 255 (float32 or float64) always comes back to the byte k; for float32 inputs the
    # product is exact (24-bit mantissa x 8-bit constant), so only the rounding (half to even) is a choice.
    return preds.double().mul_(255).round_().to(torch.int32)


def _first_float32_above(value: float, scale: int) -> float:
    """The smallest float32 ``t`` with ``float64(t) * scale > value`` (exact for float32 ``t`` and small ``scale``)."""
    t = np.float32(value / scale)
    while float(t) * scale > value:
        t = np.nextafter(t, np.float32(0))
    while float(t) * scale <= value:
        t = np.nextafter(t, np.float32(1))
    return float(t)


_FLOAT32_GT_THRESHOLD = _first_float32_above(128.5, 255)


def _to_bool_target(target: Tensor) -> Tensor:
    """Binarise the ground truth as pysodmetrics does (``gt255 > 128``)."""
    if target.dtype == torch.bool:
        return target
    if target.dtype == torch.uint8:
        return target > 128
    if not target.is_floating_point():
        raise TypeError(
            f"SOD metrics: `target` has dtype {target.dtype}; expected a float mask in [0, 1], a uint8 mask "
            f"0..255 or a bool mask. Convert integer 0/1 masks with `target.bool()` or `target.float()`."
        )
    lo, hi = torch.aminmax(target)
    lo, hi = float(lo), float(hi)
    if not (lo >= 0.0 and hi <= 1.0):
        raise ValueError(
            f"SOD metrics: `target` must be in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. A mask read from an "
            f"8-bit PNG must be divided by 255 (or passed as uint8)."
        )
    # round(255 t) > 128  <=>  255 t > 128.5 (128.5 rounds to even 128), the product taken exactly.
    if target.dtype == torch.float32:  # one comparison, no float64 copy: t >= the first float32 above 128.5/255
        return target >= _FLOAT32_GT_THRESHOLD
    return target.double().mul_(255) > 128.5


class PreparedBatch:
    """A batch of prediction/ground-truth pairs prepared once for all metrics.

    Args:
        preds: ``(B, 1, H, W)``, ``(B, H, W)`` or ``(H, W)``; float probabilities in [0, 1] or uint8 bytes.
        target: same shape; float in [0, 1], uint8 0..255 or bool.

    Attributes:
        q: ``(B, H, W)`` int32 prediction bytes 0..255.
        gt: ``(B, H, W)`` bool ground truth.
        values: ``(B, 256)`` float64, the normalised prediction ``x`` of each byte value.
        bins: ``(B, 256)`` int64, the threshold bin ``trunc(x * 255)`` of each byte value.

    Example:
        >>> prep = PreparedBatch(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8) > 0.5)
        >>> prep.hist.shape, prep.values.dtype
        (torch.Size([2, 2, 256]), torch.float64)
    """

    def __init__(self, preds: Tensor, target: Tensor) -> None:
        if not isinstance(preds, Tensor) or not isinstance(target, Tensor):
            raise TypeError(
                f"SOD metrics: `preds` and `target` must be torch tensors, got {type(preds).__name__} and "
                f"{type(target).__name__}. Wrap numpy arrays with `torch.from_numpy`."
            )
        preds_b, target_b = _as_batch(preds, "preds"), _as_batch(target, "target")
        if preds_b.shape != target_b.shape:
            raise ValueError(
                f"SOD metrics: `preds` {tuple(preds.shape)} and `target` {tuple(target.shape)} differ in size. "
                f"Evaluate at the mask's original resolution: resize the prediction to the mask (e.g. "
                f"`F.interpolate(preds, size=target.shape[-2:], mode='bilinear')`) before `update`."
            )
        if preds_b.shape[-1] * preds_b.shape[-2] < 2:
            raise ValueError(
                f"SOD metrics: images must have at least 2 pixels, got {tuple(preds.shape)} "
                f"(E-measure and S-measure divide by N - 1)."
            )
        self.device = preds_b.device
        self.q = _to_bytes_prediction(preds_b)
        self.gt = _to_bool_target(target_b.to(self.device))
        self.batch_size, self.height, self.width = self.q.shape
        self.num_pixels = self.height * self.width

        # Lookup table of the normalised prediction for every byte value, with pysodmetrics' exact op order:
        # x = q / 255; x = (x - min) / (max - min) when max != min. Elementwise IEEE float64 ops, so the table
        # entry for byte k equals, bit for bit, what pysodmetrics computes for a pixel of value k.
        flat = self.q.flatten(1)
        qmin, qmax = flat.amin(1), flat.amax(1)  # two reductions: 5x faster here than aminmax(dim=1)
        base = torch.arange(NUM_THRESHOLDS, dtype=torch.float64, device=self.device) / 255
        lo, hi = base[qmin][:, None], base[qmax][:, None]
        constant = (qmin == qmax)[:, None]
        scale = torch.where(constant, torch.ones_like(hi), hi - lo)
        self.values = torch.where(constant, base.expand(self.batch_size, -1), (base - lo) / scale)
        # trunc(x * 255) like numpy's astype(uint8) (x * 255 is in [0, 255], so trunc == floor).
        self.bins = torch.trunc(self.values * 255).long().clamp_(0, NUM_THRESHOLDS - 1)

    @cached_property
    def code(self) -> Tensor:
        """``(B, H, W)`` int32 ``q + 256 * gt``: the byte and the gt class of every pixel in one index."""
        return self.q.add(self.gt, alpha=256)

    def _batched_bincount(self, index: Tensor, size: int) -> Tensor:
        """Per-image ``bincount`` of ``(B, H, W)`` int indices in ``0..size-1`` -> ``(B, size)`` int64."""
        if self.batch_size > 1:
            offsets = torch.arange(self.batch_size, device=self.device, dtype=index.dtype) * size
            index = index + offsets[:, None, None]  # (a new tensor: ``index`` may be the cached ``code``)
        # Integer counts: exact and order-independent on every device (no float atomics).
        counts = torch.bincount(index.flatten(), minlength=self.batch_size * size)
        return counts.view(self.batch_size, size)

    # ------------------------------------------------------------------ histograms (no float pass per pixel)
    @cached_property
    def centroid(self) -> Tensor:
        """``(B, 2)`` int64 split point ``(cy, cx)`` of the S-measure regions.

        pysodmetrics: ``cy, cx = argwhere(gt).mean(0).round() + 1`` (numpy round = half to even, like
        ``torch.round``; do not "fix" it towards MATLAB's half-away rounding). Sums of integer coordinates are
        exact, so the mean is the correctly rounded quotient in both libraries. Empty masks get 0 (unused).
        """
        gt = self.gt
        rows = torch.arange(self.height, device=self.device, dtype=torch.float64)
        cols = torch.arange(self.width, device=self.device, dtype=torch.float64)
        row_counts = gt.sum(2).double()  # (B, H): the only two passes over the mask
        # Integer-valued float64 sums below 2**53 are exact, whatever the summation order.
        count = row_counts.sum(1)
        sum_y = (row_counts * rows).sum(1)
        sum_x = (gt.sum(1).double() * cols).sum(1)
        safe = count.clamp(min=1)
        cy = torch.round(sum_y / safe) + 1
        cx = torch.round(sum_x / safe) + 1
        return torch.stack([cy, cx], 1).long() * (count > 0)[:, None]

    @cached_property
    def quadrant_hist(self) -> Tensor:
        """``(B, 4, 2, 256)`` int64 byte histograms per S-measure quadrant (lt, rt, lb, rb) and gt class.

        Quadrants follow pysodmetrics' slices ``[0:cy, 0:cx]``, ``[0:cy, cx:w]``, ``[cy:h, 0:cx]``,
        ``[cy:h, cx:w]``; the gt class index is 0 for background, 1 for foreground.
        """
        cy, cx = self.centroid[:, 0], self.centroid[:, 1]
        rows = torch.arange(self.height, device=self.device)
        cols = torch.arange(self.width, device=self.device)
        row_part = ((rows[None, :] >= cy[:, None]) * 1024).to(torch.int32)[:, :, None]  # (B, H, 1)
        col_part = ((cols[None, :] >= cx[:, None]) * 512).to(torch.int32)[:, None, :]  # (B, 1, W)
        counts = self._batched_bincount((self.code + row_part).add_(col_part), 2048)
        return counts.view(self.batch_size, 4, 2, NUM_THRESHOLDS)

    @cached_property
    def hist(self) -> Tensor:
        """``(B, 2, 256)`` int64 byte histograms of the background (0) and foreground (1) pixels."""
        if "quadrant_hist" in self.__dict__:  # already paid for by the S-measure: reuse it
            return self.quadrant_hist.sum(1)
        return self._batched_bincount(self.code, 512).view(self.batch_size, 2, NUM_THRESHOLDS)

    @cached_property
    def num_fg(self) -> Tensor:
        """``(B,)`` int64 number of foreground pixels."""
        return self.hist[:, 1].sum(1)

    @cached_property
    def counts_at_thresholds(self) -> Tensor:
        """``(B, 2, 256)`` int64: bg (0) / fg (1) pixels with ``bin >= t``, thresholds ``t`` ascending.

        The pysodmetrics histogram + ``cumsum(flip(...))`` trick, stored in ascending threshold order.
        """
        binned = torch.zeros_like(self.hist)
        binned.scatter_add_(2, self.bins[:, None, :].expand(-1, 2, -1), self.hist)
        return binned.flip(2).cumsum(2).flip(2)

    @cached_property
    def adaptive_counts(self) -> Tensor:
        """``(B, 2)`` int64: bg / fg pixels with ``x >= min(2 * mean(x), 1)`` (the adaptive threshold).

        The threshold is compared with the float prediction (not the bins). The image mean is computed from
        the histogram; it can differ from numpy's pairwise sum in the last bits, which only matters when a
        pixel value lies exactly on the threshold. Those images (rare: e.g. two-valued maps) are recomputed
        with numpy's own ``mean`` on the CPU so that the counts equal pysodmetrics' exactly.
        """
        hist = self.hist
        total = hist.sum(1).double()  # (B, 256)
        mean = (total * self.values).sum(1) / self.num_pixels
        doubled = 2 * mean
        threshold = doubled.clamp(max=1.0)
        near_tie = ((total > 0) & ((self.values - doubled[:, None]).abs() < 1e-9)).any(1)
        if bool(near_tie.any()):
            threshold = threshold.clone()
            for b in near_tie.nonzero().flatten().tolist():
                x = self.values[b][self.q[b].long()].cpu().numpy()  # (H, W) C-contiguous, as pysodmetrics' pred
                threshold[b] = min(2 * float(x.mean()), 1.0)
        above = (self.values >= threshold[:, None]).long()  # (B, 256)
        return (hist * above[:, None, :]).sum(2)

    @cached_property
    def fg_counts(self) -> Tensor:
        """``(B, 2, 257)`` float64 bg / fg counts at the 256 thresholds, then at the adaptive threshold.

        F- and E-measure evaluate their curve and their adaptive value with the same formula, so they take the
        adaptive counts as a 257th column and run it once.
        """
        return torch.cat([self.counts_at_thresholds, self.adaptive_counts[:, :, None]], 2).double()

    # ------------------------------------------------------------------ per-pixel maps (only when needed)
    @cached_property
    def code_index(self) -> Tensor:
        """``(B, H * W)`` int64 copy of ``code`` for ``gather`` (which needs int64 indices)."""
        return self.code.flatten(1).long()

    def lookup(self, table: Tensor) -> Tensor:
        """Per-pixel value of a per-image table indexed by ``code``: ``(B, 512)`` -> ``(B, H, W)``.

        ``table[:, k]`` is the value for a background pixel of byte ``k``, ``table[:, 256 + k]`` for a
        foreground one; e.g. ``cat([values, values], 1)`` gives the normalised prediction.
        """
        return torch.gather(table, 1, self.code_index).view(self.q.shape)

    @cached_property
    def pred(self) -> Tensor:
        """``(B, H, W)`` float64 normalised prediction ``x`` (pysodmetrics' ``pred`` after preparation)."""
        return self.lookup(torch.cat([self.values, self.values], 1))
