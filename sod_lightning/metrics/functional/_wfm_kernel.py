"""Compiled CPU kernel of the weighted F-measure: scipy's exact feature transform fused with the rest of wF.

Why hand-written (numba) and not torch or scipy:

* wF needs, for every background pixel, the *index* of its nearest foreground pixel with scipy's tie-break
  (``distance_transform_edt(..., return_indices=True)``, which pysodmetrics uses); where several foreground
  pixels are equally near, picking another one changes wF by up to 4e-4. No torch or kornia routine returns
  those indices, and the exact transform (Maurer's lower envelope of parabolas, one line at a time) is a
  sequential scan that does not map to batched tensor ops.
* scipy's routine is generic N-d C code that holds the GIL: on a 400x300 map it alone costs more than every
  other SOD metric together. This 2-D port of the same algorithm, fused with the error lookup, the 7x7
  Gaussian and the weighted sums, touches each pixel a few times and releases the GIL, so a batch's images run
  on plain worker threads (numba's own parallel layer is not used: its OpenMP pool is a second one beside
  torch's, and the two spinning pools slowed the torch metrics down by half on 2 cores).

:func:`feature_transform` reproduces scipy's ``_ComputeFT`` / ``_VoronoiFT`` (``scipy/ndimage/src/
ni_morphology.c``) for rank 2: first every column is scanned for its nearest feature pixel (ties to the lower
row index), then every row runs the Voronoi (lower-envelope) pass over the columns with scipy's exact
comparisons (``<= 0`` keeps a site, ``delta1 <= delta2`` stops the scan). All quantities are integers, so the
decisions are exact and the indices equal scipy's bit for bit (tested against scipy on random and
tie-heavy masks).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .._prepare import EPS

_LOG_HALF_OVER_5 = math.log(0.5) / 5

#: Background importance ``B = 2 - exp(log(0.5) / 5 * sqrt(d2))`` for every squared distance ``d2`` below 2**18
#: (512 px), computed once with numpy as pysodmetrics computes it; farther pixels compute it directly.
IMPORTANCE = 2.0 - np.exp(_LOG_HALF_OVER_5 * np.sqrt(np.arange(1 << 18, dtype=np.float64)))

# Helpers are inlined into the kernels that call them (measurably faster than a call per row).
_inline = numba.njit(cache=True, nogil=True, inline="always")


@_inline
def _column_pass(feature: np.ndarray, nearest: np.ndarray) -> None:
    """Row of the nearest feature pixel in the same column (ties: the upper one), -1 in a featureless column.

    Two sweeps over rows (contiguous, vectorised selects): down for the nearest at or above, then up, where a
    strictly nearer feature below replaces it.
    """
    h, w = feature.shape
    for j in range(w):
        nearest[0, j] = 0 if feature[0, j] else -1
    for i in range(1, h):
        for j in range(w):
            nearest[i, j] = i if feature[i, j] else nearest[i - 1, j]
    below = np.full(w, -1, np.int32)
    for i in range(h - 1, -1, -1):
        for j in range(w):
            if feature[i, j]:
                below[j] = i
            lower, upper = below[j], nearest[i, j]
            if lower >= 0 and (upper < 0 or lower - i < i - upper):
                nearest[i, j] = lower


@_inline
def _row_pass(i: int, column_nearest: np.ndarray, site_col: np.ndarray, site_h2: np.ndarray, out_row: np.ndarray,
              out_col: np.ndarray) -> None:
    """scipy's ``_VoronoiFT`` along row ``i`` (d = 1); sites are the columns with a feature.

    ``site_col`` / ``site_h2`` (``(W,)`` int64 scratch) hold the lower envelope's columns and squared
    vertical distances; the comparisons are scipy's, on the same integers.
    """
    w = column_nearest.shape[1]
    row = column_nearest[i]
    top = -1
    for jj in range(w):
        r = row[jj]
        if r < 0:
            continue
        w_r = (r - i) * (r - i)
        while top >= 1:
            a = site_col[top] - site_col[top - 1]
            b = jj - site_col[top]
            c = a + b
            if c * site_h2[top] - b * site_h2[top - 1] - a * w_r - a * b * c <= 0:
                break
            top -= 1
        top += 1
        site_col[top] = jj
        site_h2[top] = w_r
    last = top
    if last < 0:
        return
    top = 0
    for ii in range(w):
        d = site_col[top] - ii
        delta1 = site_h2[top] + d * d
        while top < last:
            d = site_col[top + 1] - ii
            delta2 = site_h2[top + 1] + d * d
            if delta1 <= delta2:
                break
            delta1 = delta2
            top += 1
        g = site_col[top]
        out_row[ii] = row[g]
        out_col[ii] = g


@numba.njit(cache=True, nogil=True)
def feature_transform(feature: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the nearest ``True`` pixel of a 2-D bool array, as scipy's feature transform.

    Equal to ``scipy.ndimage.distance_transform_edt(~feature, return_distances=False, return_indices=True)``
    (int32 ``(H, W)`` each). ``feature`` must hold at least one ``True``.
    """
    h, w = feature.shape
    column_nearest = np.empty((h, w), np.int32)
    _column_pass(feature, column_nearest)
    rows = np.empty((h, w), np.int32)
    cols = np.empty((h, w), np.int32)
    site_col, site_h2 = np.empty(w, np.int64), np.empty(w, np.int64)
    for i in range(h):
        _row_pass(i, column_nearest, site_col, site_h2, rows[i], cols[i])
    return rows, cols


@_inline
def _blur_row(src: np.ndarray, dst: np.ndarray, kernel: np.ndarray) -> None:
    """``dst = src * kernel`` along one row (7 taps), zero padding."""
    n = src.shape[0]
    k0, k1, k2, k3, k4, k5, k6 = kernel[0], kernel[1], kernel[2], kernel[3], kernel[4], kernel[5], kernel[6]
    for x in range(3, n - 3):  # interior: a fixed 7-term sum the compiler vectorises
        dst[x] = (k0 * src[x - 3] + k1 * src[x - 2] + k2 * src[x - 1] + k3 * src[x] + k4 * src[x + 1]
                  + k5 * src[x + 2] + k6 * src[x + 3])
    for x in range(n):  # borders: taps outside the image count 0
        if 3 <= x < n - 3:
            continue
        acc = 0.0
        for k in range(7):
            if 0 <= x + k - 3 < n:
                acc += kernel[k] * src[x + k - 3]
        dst[x] = acc


@_inline
def _blur_column(rows: np.ndarray, i: int, dst: np.ndarray, kernel: np.ndarray) -> None:
    """``dst = (rows * kernel)[i]`` along the columns (7 taps), zero padding."""
    h = rows.shape[0]
    if 3 <= i < h - 3:
        r0, r1, r2, r3, r4, r5, r6 = rows[i - 3], rows[i - 2], rows[i - 1], rows[i], rows[i + 1], rows[i + 2], \
            rows[i + 3]
        k0, k1, k2, k3, k4, k5, k6 = kernel[0], kernel[1], kernel[2], kernel[3], kernel[4], kernel[5], kernel[6]
        for x in range(dst.shape[0]):
            dst[x] = k0 * r0[x] + k1 * r1[x] + k2 * r2[x] + k3 * r3[x] + k4 * r4[x] + k5 * r5[x] + k6 * r6[x]
        return
    dst[:] = 0.0
    for k in range(7):
        if 0 <= i + k - 3 < h:
            for x in range(dst.shape[0]):
                dst[x] += kernel[k] * rows[i + k - 3, x]


@numba.njit(cache=True, nogil=True)
def _wfm_images(q: np.ndarray, gt: np.ndarray, values: np.ndarray, kernel: np.ndarray,
                importance: np.ndarray) -> np.ndarray:
    """Per-image weighted F, one image after the other (scratch buffers of one image stay in cache)."""
    n_images, h, w = q.shape
    out = np.zeros(n_images)  # no foreground: wF = 0, as in pysodmetrics
    column_nearest = np.empty((h, w), np.int32)
    blurred_rows = np.empty((h, w), np.float64)  # EA = Et * K with zero padding: along rows first
    site_col, site_h2 = np.empty(w, np.int64), np.empty(w, np.int64)
    near_row, near_col = np.empty(w, np.int32), np.empty(w, np.int32)
    line = np.empty(w, np.float64)
    for b in range(n_images):
        qb, gtb, vb = q[b], gt[b], values[b]
        if not gtb.any():
            continue
        _column_pass(gtb, column_nearest)
        fpw = 0.0
        for i in range(h):
            _row_pass(i, column_nearest, site_col, site_h2, near_row, near_col)
            for x in range(w):  # line = Et: E, with each background pixel taking E of its nearest fg pixel
                if gtb[i, x]:
                    line[x] = 1.0 - vb[qb[i, x]]
                else:
                    r, c = near_row[x], near_col[x]
                    line[x] = 1.0 - vb[qb[r, c]]
                    d2 = (r - i) * (r - i) + (c - x) * (c - x)
                    if d2 < importance.shape[0]:
                        weight = importance[d2]
                    else:
                        weight = 2.0 - math.exp(_LOG_HALF_OVER_5 * math.sqrt(float(d2)))
                    fpw += vb[qb[i, x]] * weight  # E * B on the background
            _blur_row(line, blurred_rows[i], kernel)
        ew_fg = 0.0
        n_fg = 0
        for i in range(h):  # then along columns; MIN_E_EA = min(E, EA) on the foreground (B = 1 there)
            _blur_column(blurred_rows, i, line, kernel)
            for x in range(w):
                if gtb[i, x]:
                    e = 1.0 - vb[qb[i, x]]
                    ew_fg += line[x] if line[x] < e else e
                    n_fg += 1
        tpw = n_fg - ew_fg
        recall = 1.0 - ew_fg / n_fg
        precision = tpw / (tpw + fpw + EPS)
        out[b] = 2.0 * recall * precision / (recall + precision + EPS)
    return out


_pool: tuple[int, int, ThreadPoolExecutor] | None = None


def _worker_pool(workers: int) -> ThreadPoolExecutor:
    """The process's pool of ``workers`` threads (remade in a forked child, whose parent threads do not exist,
    and when the thread count changes)."""
    global _pool
    if _pool is None or _pool[:2] != (os.getpid(), workers):
        _pool = (os.getpid(), workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sod-wfm"))
    return _pool[2]


def weighted_fmeasure_batch(q: np.ndarray, gt: np.ndarray, values: np.ndarray, kernel: np.ndarray,
                            threads: int = 1) -> np.ndarray:
    """Per-image weighted F (beta = 1) of ``q`` (B, H, W) uint8, ``gt`` (B, H, W) bool, ``values`` (B, 256)
    float64 (the normalised prediction of each byte), with the 7-tap 1-D Gaussian ``kernel``.

    Images without foreground get 0, as in pysodmetrics. The images are split into up to ``threads`` groups:
    the calling thread computes one, a pool of ``threads - 1`` worker threads the others, all without the GIL.
    The pool's threads run compiled code only: a torch op there would give each of them an OpenMP pool of its
    own beside torch's, which slowed every later torch op 2-3x on 2 cores (measured).
    Each image is computed by one thread (splitting one image's rows gained nothing on 2 cores: the cache
    locality of one image's buffers matters more), so the result does not depend on ``threads``.
    """
    if kernel.shape != (7,):
        raise ValueError(f"weighted F: expected the 7-tap Gaussian, got a kernel of shape {kernel.shape}")
    bounds = np.linspace(0, len(q), min(len(q), max(1, threads)) + 1).round().astype(int).tolist()
    groups = list(zip(bounds[:-1], bounds[1:]))
    pool = _worker_pool(len(groups) - 1) if len(groups) > 1 else None
    others = [pool.submit(_wfm_images, q[a:b], gt[a:b], values[a:b], kernel, IMPORTANCE) for a, b in groups[1:]]
    a, b = groups[0]
    parts = [_wfm_images(q[a:b], gt[a:b], values[a:b], kernel, IMPORTANCE)] + [f.result() for f in others]
    return np.concatenate(parts)
