"""SOD metrics against pysodmetrics 1.6 (the field's reference), hand-made cases and input errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from sod_lightning.metrics import (
    EMeasure,
    FMeasure,
    MAE,
    RelaxedBoundaryFMeasure,
    SMeasure,
    SODMetrics,
    WeightedFMeasure,
    e_measure,
    f_measure,
    mae,
    relaxed_boundary_f_measure,
    s_measure,
    sod_metrics,
    thresholds,
    weighted_f_measure,
)
from sod_lightning.metrics._prepare import PreparedBatch
from sod_lightning.metrics.functional.collection import ALL_KEYS, FAMILIES

psm = pytest.importorskip("py_sod_metrics", reason="pysodmetrics (the `dev` extra) is the reference implementation")

TOL = 1e-6
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


# ----------------------------------------------------------------------------------------------- reference
def _reference_objects(pairs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure's deprecation notice, numpy's empty-slice warnings
        objs = psm.MAE(), psm.Fmeasure(), psm.Smeasure(), psm.Emeasure(), psm.WeightedFmeasure()
        for pred, gt in pairs:
            for m in objs:
                m.step(pred, gt)
    return objs


def _aggregate(objs) -> dict[str, np.ndarray]:
    m_mae, m_f, m_s, m_e, m_w = objs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm, em = m_f.get_results(), m_e.get_results()["em"]
    f_curve, e_curve = np.flip(fm["fm"]["curve"]), np.flip(em["curve"])
    return {
        "mae": m_mae.get_results()["mae"],
        "maxf": f_curve.max(),
        "meanf": f_curve.mean(),
        "adpf": fm["fm"]["adp"],
        "sm": m_s.get_results()["sm"],
        "maxem": e_curve.max(),
        "meanem": e_curve.mean(),
        "adpem": em["adp"],
        "wfm": m_w.get_results()["wfm"],
        "pr_precision": np.flip(fm["pr"]["p"]),
        "pr_recall": np.flip(fm["pr"]["r"]),
        "f_curve": f_curve,
        "em_curve": e_curve,
    }


def _per_image(objs, i: int) -> dict[str, np.ndarray]:
    """Image ``i``'s own values, read from the reference objects' per-image lists."""
    m_mae, m_f, m_s, m_e, m_w = objs
    f_curve, e_curve = np.flip(m_f.changeable_fms[i]), np.flip(m_e.changeable_ems[i])
    return {
        "mae": m_mae.maes[i],
        "maxf": f_curve.max(),
        "meanf": f_curve.mean(),
        "adpf": m_f.adaptive_fms[i],
        "sm": m_s.sms[i],
        "maxem": e_curve.max(),
        "meanem": e_curve.mean(),
        "adpem": m_e.adaptive_ems[i],
        "wfm": m_w.weighted_fms[i],
        "pr_precision": np.flip(m_f.precisions[i]),
        "pr_recall": np.flip(m_f.recalls[i]),
        "f_curve": f_curve,
        "em_curve": e_curve,
    }


def reference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """pysodmetrics results over uint8 (pred, gt) pairs, as its ``metric_recorder`` aggregates them.

    Curves are flipped to ascending thresholds (pysodmetrics stores them descending).
    """
    return _aggregate(_reference_objects(pairs))


def assert_matches(ours: dict[str, torch.Tensor], ref: dict[str, np.ndarray], what: str, tol: float = TOL) -> None:
    for key, expected in ref.items():
        got = ours[key].cpu().numpy()
        assert got.shape == np.shape(expected), f"{what}: {key} shape {got.shape} vs {np.shape(expected)}"
        diff = float(np.max(np.abs(got - expected)))
        assert diff <= tol, f"{what}: {key} differs from pysodmetrics by {diff:.3g}"


def per_image_results(preds: torch.Tensor, gts: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """Each image's own results from ONE batched update of every family (tests the batched code paths)."""
    prep = PreparedBatch(preds, gts)
    stats = [(family, family.update(prep)) for family in FAMILIES]
    one = torch.ones((), dtype=torch.float64)
    out = []
    for i in range(prep.batch_size):
        result = {}
        for family, per_image in stats:
            result.update(family.compute({k: v[i] for k, v in per_image.items()}, one))
        out.append(result)
    return out


def random_pairs(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` uint8 (pred, gt) pairs covering the cases where implementations disagree.

    GT: ellipses, all background, all foreground, noisy soft masks, masks at 128/129 (the threshold).
    Predictions: uniform noise, noisy ellipses, constants (not min-max normalised), two-valued maps,
    few-level maps (ties), smooth ramps. Sizes from 5x7 to 100x75, odd and even.
    """
    rng = np.random.default_rng(seed)
    sizes = [(64, 64), (48, 80), (31, 17), (100, 75), (5, 7), (64, 33)]
    pairs = []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[:h, :w]
        ell = ((yy - rng.uniform(0, h)) / rng.uniform(1, h / 1.5)) ** 2 + (
            (xx - rng.uniform(0, w)) / rng.uniform(1, w / 1.5)
        ) ** 2 < 1
        gt = ell.astype(np.uint8) * 255
        kind = i % 10
        if kind == 1:
            gt[:] = 0
        elif kind == 2:
            gt[:] = 255
        elif kind == 3:
            gt = rng.integers(0, 256, (h, w)).astype(np.uint8)
        elif kind == 4:
            gt = np.where(ell, 129, 128).astype(np.uint8)
        pred_kind = (i // 10) % 6
        if pred_kind == 0:
            pred = rng.integers(0, 256, (h, w))
        elif pred_kind == 1:
            pred = np.clip(ell * 200 + rng.normal(0, 40, (h, w)), 0, 255)
        elif pred_kind == 2:
            pred = np.full((h, w), rng.choice([0, 1, 77, 128, 254, 255]))
        elif pred_kind == 3:
            pred = rng.choice([0, 255], (h, w))
        elif pred_kind == 4:
            pred = rng.choice([3, 40, 41, 200], (h, w))
        else:
            pred = np.clip(ell * 255 * rng.uniform(0.3, 1) + rng.uniform(0, 60) + xx, 0, 255)
        pairs.append((pred.astype(np.uint8), gt))
    return pairs


def centroid_on_last_row_or_col(gt: np.ndarray) -> bool:
    """pysodmetrics returns NaN for S when the GT centroid rounds to the last row/column (empty quadrant)."""
    ys, xs = np.nonzero(gt > 128)
    if ys.size == 0 or ys.size == gt.size:
        return False
    return np.round(ys.mean()) + 1 == gt.shape[0] or np.round(xs.mean()) + 1 == gt.shape[1]


# ----------------------------------------------------------------------------------------------- agreement
def test_random_pairs_match_pysodmetrics_per_image_and_aggregated():
    pairs = [p for p in random_pairs(260) if not centroid_on_last_row_or_col(p[1])]
    assert len(pairs) >= 240
    objs = _reference_objects(pairs)
    # Images grouped by size, one batched update per size (B up to 44, with all-background, all-foreground and
    # constant maps mixed in one batch), fed float predictions like the LightningModule does.
    metric = SODMetrics()
    for shape in sorted({p.shape for p, _ in pairs}):
        index = [i for i, (p, _) in enumerate(pairs) if p.shape == shape]
        preds = torch.stack([torch.from_numpy(pairs[i][0]) for i in index]).float()[:, None] / 255
        gts = torch.stack([torch.from_numpy(pairs[i][1]) for i in index]).float()[:, None] / 255
        metric.update(preds, gts)
        # Per image: every scalar and every curve of each pair.
        for i, ours in zip(index, per_image_results(preds, gts)):
            assert_matches(ours, _per_image(objs, i), f"pair {i} {shape}")
    assert_matches(metric.compute(), _aggregate(objs), "aggregate")


def test_adaptive_threshold_on_a_pixel_value_matches_numpy_mean():
    # 2 * mean equals the value 102/255 mathematically; numpy's pairwise mean lands one ulp off for some pixel
    # orders, which moves 1048 pixels across the threshold. The counts must follow numpy's rounding.
    rng = np.random.default_rng(1)
    off = 0
    for _ in range(12):
        values = np.array([0] * 2648 + [255] * 400 + [102] * 1048, np.uint8)
        rng.shuffle(values)
        pred = values.reshape(64, 64)
        gt = (rng.random((64, 64)) > 0.5).astype(np.uint8) * 255
        off += 2 * (pred / 255).mean() != 102 / 255
        ours = sod_metrics(torch.from_numpy(pred), torch.from_numpy(gt), metrics=["adpf", "adpem"])
        ref = reference([(pred, gt)])
        assert abs(float(ours["adpf"]) - ref["adpf"]) <= TOL
        assert abs(float(ours["adpem"]) - ref["adpem"]) <= TOL
    assert off > 0, "the case no longer exercises an off-by-one-ulp mean"


def test_constant_prediction_over_a_constant_quadrant_matches_pysodmetrics():
    # A constant map (not min-max normalised) over quadrants whose GT is constant: pysodmetrics' SSIM there is
    # 0 or 1 depending on numpy's rounding of the mean of a constant slice.
    gt = np.zeros((64, 48), np.uint8)
    gt[5:20, 30:44] = 255
    gt[40:60, 3:10] = 255
    for value in (1, 77, 128, 200, 254):
        pred = np.full(gt.shape, value, np.uint8)
        ours = s_measure(torch.from_numpy(pred), torch.from_numpy(gt))
        assert abs(float(ours) - reference([(pred, gt)])["sm"]) <= TOL, value


def test_pysodmetrics_nan_case_stays_finite():
    # GT centroid on the last row: pysodmetrics returns NaN (empty quadrant x zero weight); ours gives the
    # limit with that quadrant weighted 0.
    gt = np.zeros((20, 30), np.uint8)
    gt[-1, 5:25] = 255
    pred = np.random.default_rng(0).integers(0, 256, gt.shape).astype(np.uint8)
    assert centroid_on_last_row_or_col(gt)
    assert np.isnan(reference([(pred, gt)])["sm"])
    ours = float(s_measure(torch.from_numpy(pred), torch.from_numpy(gt)))
    assert 0.0 <= ours <= 1.0


def _pascal_pairs(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from PIL import Image
    from scipy import ndimage

    masks = sorted((DATA / "PASCAL-S" / "masks").glob("*.png"))[:n]
    rng = np.random.default_rng(0)
    pairs = []
    for path in masks:
        gt = np.array(Image.open(path).convert("L"))
        soft = ndimage.gaussian_filter(gt.astype(np.float64), sigma=rng.uniform(1, 6))
        soft = np.roll(soft, rng.integers(-8, 9, 2), axis=(0, 1))
        pred = np.clip(soft * rng.uniform(0.6, 1.0) + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8)
        pairs.append((pred, gt))
    return pairs


def test_real_pascal_s_masks_with_perturbed_predictions():
    if not (DATA / "PASCAL-S" / "masks").is_dir():
        pytest.skip(f"real masks not found at {DATA / 'PASCAL-S' / 'masks'} (../shared beside the repo)")
    pairs = _pascal_pairs(12)
    objs = _reference_objects(pairs)
    metric = SODMetrics()
    for i, (pred, gt) in enumerate(pairs):
        metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
        assert_matches(sod_metrics(torch.from_numpy(pred), torch.from_numpy(gt)), _per_image(objs, i), f"PASCAL-S {i}")
    assert_matches(metric.compute(), _aggregate(objs), "PASCAL-S aggregate")


# ----------------------------------------------------------------------------------------------- API
def test_classes_functionals_and_batches_agree():
    pairs = [p for p in random_pairs(12, seed=3) if p[0].shape == (64, 64)]
    preds = torch.stack([torch.from_numpy(p) for p, _ in pairs]).float()[:, None] / 255
    gts = torch.stack([torch.from_numpy(g) for _, g in pairs]).float()[:, None] / 255
    batched = SODMetrics()
    batched.update(preds, gts)
    one_by_one = SODMetrics()
    for i in range(len(pairs)):
        one_by_one.update(preds[i : i + 1], gts[i])  # (B, 1, H, W) with (1, H, W): both accepted
    all_b, all_1 = batched.compute(), one_by_one.compute()
    for key in ALL_KEYS:
        torch.testing.assert_close(all_b[key], all_1[key], atol=1e-12, rtol=0)
    singles = {
        MAE: ({"mae": mae(preds, gts)}, "mae"),
        SMeasure: ({"sm": s_measure(preds, gts)}, "sm"),
        WeightedFMeasure: ({"wfm": weighted_f_measure(preds, gts)}, "wfm"),
        RelaxedBoundaryFMeasure: ({"relaxfb": relaxed_boundary_f_measure(preds, gts)}, "relaxfb"),
    }
    for cls, (functional, key) in singles.items():
        m = cls()
        m.update(preds, gts)
        torch.testing.assert_close(m.compute(), all_b[key], atol=1e-12, rtol=0)
        torch.testing.assert_close(functional[key], all_b[key], atol=1e-12, rtol=0)
    for cls, fn in ((FMeasure, f_measure), (EMeasure, e_measure)):
        m = cls()
        m.update(preds, gts)
        for key, value in m.compute().items():
            torch.testing.assert_close(value, all_b[key], atol=1e-12, rtol=0)
            torch.testing.assert_close(fn(preds, gts)[key], all_b[key], atol=1e-12, rtol=0)
    # compute() output types: 0-d scalars and 256-value curves, float64.
    for key in SODMetrics.SCALAR_KEYS:
        assert all_b[key].shape == () and all_b[key].dtype == torch.float64
    for key in SODMetrics.CURVE_KEYS:
        assert all_b[key].shape == (256,)


def test_input_encodings_give_identical_results():
    rng = np.random.default_rng(5)
    pred = rng.integers(0, 256, (1, 40, 50)).astype(np.uint8)
    gt = np.zeros((1, 40, 50), np.uint8)
    gt[:, 10:30, 5:35] = 255
    as_bytes = sod_metrics(torch.from_numpy(pred), torch.from_numpy(gt))
    variants = [
        (torch.from_numpy(pred).float() / 255, torch.from_numpy(gt).float() / 255),  # PNG read back / 255
        (torch.from_numpy(pred).double() / 255, torch.from_numpy(gt > 128)),  # bool GT
        (torch.from_numpy(pred)[:, None], torch.from_numpy(gt // 255).float()[:, None]),  # 0/1 float GT
    ]
    for p, g in variants:
        out = sod_metrics(p, g)
        for key in ALL_KEYS:
            assert torch.equal(out[key], as_bytes[key]), key


def test_quantisation_and_gt_threshold_mapping():
    # round(255 p): 0.5 / 255 rounds to even (0), 1.5 / 255 to 2; the metric sees bytes.
    p = torch.tensor([[[0.5 / 255, 1.5 / 255, 1.0, 0.0]]], dtype=torch.float64)
    q = torch.tensor([[[0, 2, 255, 0]]], dtype=torch.uint8)
    g = torch.tensor([[[True, False, True, False]]])
    assert torch.equal(sod_metrics(p, g)["f_curve"], sod_metrics(q, g)["f_curve"])
    # Soft GT in [0, 1]: foreground iff round(255 t) > 128, i.e. 0.5 -> background, 129 / 255 -> foreground.
    soft = torch.tensor([[[0.5, 128 / 255, 129 / 255, 1.0]]])
    pred = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    assert float(mae(pred, soft)) == 0.0
    assert float(mae(pred, torch.tensor([[[0.51, 0.0, 1.0, 1.0]]]))) == 0.25


def test_float32_mask_threshold_equals_the_exact_float64_comparison():
    from sod_lightning.metrics._prepare import _FLOAT32_GT_THRESHOLD, _to_bool_target

    # Every float32 within 2000 ulps of the threshold, plus random masks: the one-comparison float32 path must
    # equal the exact ``255 t > 128.5`` in float64 (and round(255 t) > 128) everywhere.
    near = torch.tensor(_FLOAT32_GT_THRESHOLD, dtype=torch.float32).view(torch.int32) + torch.arange(-2000, 2001)
    t = torch.cat([near.view(torch.float32), torch.rand(10000), torch.tensor([0.0, 0.5, 128 / 255, 129 / 255, 1.0])])
    expected = t.double() * 255 > 128.5
    assert torch.equal(_to_bool_target(t), expected)
    assert torch.equal(expected, torch.round(t.double() * 255) > 128)
    assert expected.any() and not expected.all()


def test_curves_are_in_ascending_threshold_order():
    assert torch.equal(thresholds(), torch.arange(256, dtype=torch.float64) / 255)
    gt = torch.zeros(1, 32, 32)
    gt[:, 8:24, 8:24] = 1
    pred = torch.linspace(0, 1, 32 * 32).view(1, 32, 32)
    out = f_measure(pred, gt)
    # Threshold 0 keeps every pixel: recall 1, precision = foreground fraction; recall never increases.
    assert float(out["pr_recall"][0]) == 1.0
    assert float(out["pr_precision"][0]) == pytest.approx(0.25)
    assert bool((out["pr_recall"][1:] <= out["pr_recall"][:-1]).all())


def test_all_background_and_all_foreground_conventions():
    zeros, ones = torch.zeros(1, 16, 16), torch.ones(1, 16, 16)
    pred = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
    out = sod_metrics(pred, zeros)
    assert float(out["maxf"]) == 0.0 and float(out["wfm"]) == 0.0 and float(out["relaxfb"]) == 0.0
    out = sod_metrics(ones, ones)
    assert float(out["maxem"]) == pytest.approx(256 / 255)  # the N - 1 denominator lets E exceed 1


def test_metric_subset_and_errors():
    m = SODMetrics(metrics=["mae", "maxf", "sm"])
    assert not hasattr(m, "sum_wfm") and not hasattr(m, "sum_em")
    gt = torch.zeros(1, 1, 8, 8)
    gt[..., 2:6, 2:6] = 1
    m.update(gt.clone(), gt)
    assert list(m.compute()) == ["mae", "maxf", "sm"]
    m.reset()
    with pytest.raises(RuntimeError, match="before any image"):
        m.compute()
    with pytest.raises(ValueError, match="unknown metric key"):
        SODMetrics(metrics=["maxF"])
    with pytest.raises(ValueError, match="sigmoid"):
        mae(torch.randn(1, 1, 8, 8) * 5, gt)
    with pytest.raises(ValueError, match="sigmoid"):
        mae(torch.full((1, 1, 8, 8), float("nan")), gt)
    with pytest.raises(ValueError, match="differ in size"):
        mae(torch.rand(1, 1, 8, 9), gt)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        mae(torch.rand(1, 3, 8, 8), gt)
    with pytest.raises(TypeError, match="uint8"):
        mae(torch.ones(1, 1, 8, 8, dtype=torch.int64), gt)
    with pytest.raises(TypeError, match="bool"):
        mae(gt, gt.long())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mae(gt, gt * 255)


# ----------------------------------------------------------------------------------------------- relaxed F
def _relaxfb_oracle(pred: np.ndarray, gt: np.ndarray) -> float:
    """Paper definition with scipy morphology (a different implementation from ours)."""
    from scipy import ndimage

    def boundary(m):
        return m & ~ndimage.binary_erosion(m, np.ones((3, 3)), border_value=0)

    pb, gb = boundary(pred), boundary(gt)
    near = np.ones((5, 5), bool)
    p = (pb & ndimage.binary_dilation(gb, near)).sum() / max(pb.sum(), 1)
    r = (gb & ndimage.binary_dilation(pb, near)).sum() / max(gb.sum(), 1)
    return 0.0 if p * r == 0 else 1.3 * p * r / (0.3 * p + r)


def test_relaxed_boundary_f_hand_made_cases():
    gt = torch.zeros(1, 40, 40)
    gt[:, 10:30, 10:30] = 1
    assert float(relaxed_boundary_f_measure(gt, gt)) == 1.0
    shifted = torch.roll(gt, shifts=(2, -2), dims=(1, 2))  # within rho = 3 everywhere
    assert float(relaxed_boundary_f_measure(shifted, gt)) == 1.0
    # A far 4x4 blob: 12 extra predicted boundary pixels, none near the GT boundary (76 pixels).
    blob = gt.clone()
    blob[:, 34:38, 34:38] = 1
    p, r = 76 / 88, 1.0
    assert float(relaxed_boundary_f_measure(blob, gt)) == pytest.approx(1.3 * p * r / (0.3 * p + r), abs=1e-12)
    # Foreground touching the image border is boundary (zero padding): a full-width band.
    band = torch.zeros(1, 10, 10)
    band[:, :3] = 1
    assert float(relaxed_boundary_f_measure(band, band)) == 1.0
    # Precision and recall are not swapped (TF Model Garden swaps the numerators): a small inner square.
    inner = torch.zeros(1, 40, 40)
    inner[:, 11:16, 11:16] = 1
    expected = _relaxfb_oracle(inner[0].numpy() > 0.5, gt[0].numpy() > 0.5)
    assert float(relaxed_boundary_f_measure(inner, gt)) == pytest.approx(expected, abs=1e-12)
    assert expected < 0.5


def test_relaxed_boundary_f_matches_scipy_morphology_oracle():
    rng = np.random.default_rng(7)
    for _ in range(20):
        h, w = rng.integers(8, 48, 2)
        gt = rng.random((h, w)) > rng.uniform(0.3, 0.9)
        pred = rng.random((h, w))
        ours = float(relaxed_boundary_f_measure(torch.from_numpy(pred), torch.from_numpy(gt)))
        normalised = (np.round(pred * 255) - np.round(pred * 255).min()) / np.ptp(np.round(pred * 255))
        assert ours == pytest.approx(_relaxfb_oracle(normalised >= 0.5, gt), abs=1e-12)
