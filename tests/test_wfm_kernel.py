"""The compiled weighted-F kernel: scipy's exact feature transform, thread independence, the far-distance branch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from sod_lightning.metrics._prepare import PreparedBatch
from sod_lightning.metrics.functional._wfm_kernel import IMPORTANCE, feature_transform, weighted_fmeasure_batch
from sod_lightning.metrics.functional.collection import FAMILIES
from sod_lightning.metrics.functional.weighted_fmeasure import matlab_gaussian_1d


def _masks(n: int, seed: int = 0):
    """Masks where the nearest feature is often not unique: lattices, symmetric ellipses, a few points, lines."""
    rng = np.random.default_rng(seed)
    for trial in range(n):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        kind = trial % 5
        if kind == 0:
            m = rng.random((h, w)) < rng.uniform(0.001, 0.5)
        elif kind == 1:  # points on a lattice: many equidistant candidates
            m = np.zeros((h, w), bool)
            m[:: rng.integers(2, 7), :: rng.integers(2, 7)] = True
            m &= rng.random((h, w)) < 0.7
        elif kind == 2:  # centred ellipse (mirror-symmetric ties) plus sparse noise
            yy, xx = np.mgrid[:h, :w]
            m = ((yy - h / 2) ** 2 / (h / 4 + 1) ** 2 + (xx - w / 2) ** 2 / (w / 4 + 1) ** 2) < 1
            m |= rng.random((h, w)) < 0.01
        elif kind == 3:  # one to three isolated points
            m = np.zeros((h, w), bool)
            k = int(rng.integers(1, 4))
            m[rng.integers(0, h, k), rng.integers(0, w, k)] = True
        else:  # a horizontal or vertical line
            m = np.zeros((h, w), bool)
            if rng.random() < 0.5:
                m[rng.integers(h), :] = True
            else:
                m[:, rng.integers(w)] = True
        if not m.any():
            m[rng.integers(h), rng.integers(w)] = True
        yield m


def test_feature_transform_equals_scipy_including_ties():
    for i, mask in enumerate(_masks(800)):
        expected = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
        rows, cols = feature_transform(mask)
        assert np.array_equal(rows, expected[0]) and np.array_equal(cols, expected[1]), (
            f"mask {i} {mask.shape}: feature transform differs from scipy's"
        )


def _batch(n: int = 6, h: int = 40, w: int = 56, seed: int = 1):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    gt = np.stack([((yy - rng.uniform(0, h)) / rng.uniform(4, h)) ** 2 + ((xx - rng.uniform(0, w)) / rng.uniform(4, w))
                   ** 2 < 1 for _ in range(n)])
    gt[1] = False  # an image without foreground: wF = 0
    q = rng.integers(0, 256, (n, h, w)).astype(np.uint8)
    values = np.tile(np.arange(256) / 255.0, (n, 1))
    return q, gt, values


def test_kernel_result_does_not_depend_on_threads_or_batching():
    q, gt, values = _batch()
    kernel = matlab_gaussian_1d()
    results = [weighted_fmeasure_batch(q, gt, values, kernel, threads=threads) for threads in (1, 2, 3, 8)]
    one_by_one = np.concatenate([weighted_fmeasure_batch(q[i : i + 1], gt[i : i + 1], values[i : i + 1], kernel)
                                 for i in range(len(q))])
    assert all(np.array_equal(results[0], r) for r in results[1:] + [one_by_one])  # bit for bit
    assert results[0][1] == 0.0 and (results[0][[0, 2, 3, 4, 5]] > 0).all()
    with pytest.raises(ValueError, match="7-tap"):
        weighted_fmeasure_batch(q, gt, values, np.ones(5) / 5)


def test_far_background_beyond_the_importance_table_matches_pysodmetrics():
    import py_sod_metrics as psm

    # One foreground pixel in a corner of a 480x640 map: distances up to 799 px, past the 512 px table.
    gt = np.zeros((480, 640), np.uint8)
    gt[2, 3] = 255
    pred = np.random.default_rng(3).integers(0, 256, gt.shape).astype(np.uint8)
    assert (479 - 2) ** 2 + (639 - 3) ** 2 >= IMPORTANCE.shape[0]
    ref = psm.WeightedFmeasure()
    ref.step(pred, gt)
    prep = PreparedBatch(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    wf = FAMILIES[[f.name for f in FAMILIES].index("wfmeasure")]
    ours = float(wf.update(prep)["sum_wfm"][0])
    assert ours == pytest.approx(ref.get_results()["wfm"], abs=1e-12)
