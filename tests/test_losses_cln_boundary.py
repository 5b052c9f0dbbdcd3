"""The cross-correlation (affinity) loss of CLN / Context Prior, CLNLoss, and the boundary loss.

Oracles: the stored official values in tests/fixtures/reference/losses.fixture.npz (seed ``CrossCorrelationLoss`` and
the Context Prior paper's version), a dense re-derivation that materialises A (written here from the formulas), and
scipy's grey dilation for the boundary loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from scipy.ndimage import maximum_filter

from sod_lightning.losses import BCELoss, DeepSupervision
from sod_lightning.losses.affinity import (
    CLNLoss,
    CrossCorrelationLoss,
    cross_correlation_loss,
    ideal_affinity,
    infer_grid_size,
)
from sod_lightning.losses.boundary import BoundaryAwareLoss, BoundaryLoss, boundary_loss
from sod_lightning.models.outputs import SideOutputs

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "reference" / "losses.fixture.npz"


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE)


def _dense_loss(s: torch.Tensor, a: torch.Tensor, global_weight: float) -> torch.Tensor:
    """The loss exactly as the official code writes it, with A materialised (an independent re-derivation)."""
    unary = F.binary_cross_entropy(s, a)
    abar = a * (1 - torch.eye(a.shape[1], dtype=a.dtype))

    def part(num, den):
        den = den.masked_fill(~(den > 0), 1)
        x = num / den
        return F.binary_cross_entropy(x, torch.ones_like(x))

    recall = part((s * abar).sum(2), abar.sum(2))
    spec = part(((1 - s) * (1 - a)).sum(2), (1 - a).sum(2))
    precision = part((s * abar).sum(2), s.sum(2))
    return unary + global_weight * (recall + spec + precision)


# ----------------------------------------------------------------------------------------------- ideal affinity
def test_ideal_affinity_of_a_hand_made_label_is_l_lt():
    # 2x3 grid: foreground at (0,0), (0,2), (1,1); L is written out by hand, one row per pixel (bg, fg).
    label = torch.tensor([[[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]])
    L = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0], [0, 1], [1, 0]], dtype=torch.float32)
    expected = L @ L.T
    got = ideal_affinity(label, (2, 3))[0]
    assert torch.equal(got, expected)
    # Spot checks that do not rely on the matrix product: same label -> 1, different -> 0, diagonal 1.
    assert got[0, 2] == 1 and got[0, 1] == 0 and torch.all(got.diagonal() == 1)


def test_ideal_affinity_resizes_with_nearest_like_the_fixture(ref):
    label = torch.from_numpy(ref["cln_label"])  # (2, 1, 32, 32) -> 8x8 grid
    got = ideal_affinity(label, (8, 8))
    np.testing.assert_array_equal(got.numpy(), ref["cln_ideal_affinity"])


# ------------------------------------------------------------------------------------------ fixture values
@pytest.mark.parametrize(
    "variant, key", [("cln", "cln_cross_correlation_loss"), ("cpnet", "cpnet_affinity_loss_total")]
)
@pytest.mark.parametrize("from_logits", [False, True])
def test_cross_correlation_loss_matches_the_official_values(ref, variant, key, from_logits):
    s = torch.from_numpy(ref["cln_cls_score"]).double()
    label = torch.from_numpy(ref["cln_label"]).double()
    logits = torch.logit(s) if from_logits else None
    out = CrossCorrelationLoss(variant)(s, label, logits)
    assert abs(out["loss"].item() - float(ref[key])) < 1e-6
    for name, fixture_key in [
        ("unary", "cln_unary"),
        ("recall", "cln_recall_bce"),
        ("spec", "cln_spec_bce"),
        ("precision", "cln_precision_bce"),
    ]:
        assert abs(out[name].item() - float(ref[fixture_key])) < 1e-6, name


def test_variants_differ_only_by_the_global_weight(ref):
    s = torch.from_numpy(ref["cln_cls_score"]).double()
    label = torch.from_numpy(ref["cln_label"]).double()
    cln = CrossCorrelationLoss("cln")(s, label)
    explicit = CrossCorrelationLoss("cpnet", global_weight=1 / 64)(s, label)
    assert abs(cln["loss"].item() - explicit["loss"].item()) < 1e-12
    with pytest.raises(ValueError, match="variant"):
        CrossCorrelationLoss("paper")


def test_memory_light_loss_equals_the_dense_formula_on_a_non_square_grid():
    gen = torch.Generator().manual_seed(0)
    label = (torch.rand(3, 1, 24, 40, generator=gen) > 0.6).double()  # grid 3x5 = 15 positions
    s = torch.rand(3, 15, 15, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    a = ideal_affinity(label, (3, 5)).double()
    for gw in (1 / 64, 1.0):
        got = cross_correlation_loss(s, label, (3, 5), global_weight=gw)["loss"]
        assert abs(got.item() - _dense_loss(s, a, gw).item()) < 1e-10
    # The grid is inferred from the mask's aspect ratio when not given.
    assert infer_grid_size(15, 24, 40) == (3, 5)
    assert abs(cross_correlation_loss(s, label)["loss"].item() - _dense_loss(s, a, 1 / 64).item()) < 1e-10


# ------------------------------------------------------------------------------------------ minimum at S = A
def _pair_label():
    label = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    label[..., 4:12, 2:10] = 1  # on the 4x4 grid: 4 foreground cells of 16
    return label


def test_loss_is_minimal_at_the_ideal_map_and_rises_as_s_departs():
    label = _pair_label()
    a = ideal_affinity(label, (4, 4)).double()
    gen = torch.Generator().manual_seed(1)
    for variant in ("cln", "cpnet"):
        crit = CrossCorrelationLoss(variant)
        at_a = crit(a, label)["loss"].item()
        previous = at_a
        noise = torch.rand(a.shape, generator=gen, dtype=torch.float64)
        # Moving S from A towards a random map: the loss grows monotonically with the distance.
        for t in (0.05, 0.2, 0.5, 0.9):
            s = (1 - t) * a + t * noise
            value = crit(s, label)["loss"].item()
            assert value > previous, (variant, t)
            previous = value
        for other in (1 - a, torch.full_like(a, 0.5), a.roll(1, -1)):
            assert crit(other.clamp(1e-4, 1 - 1e-4), label)["loss"].item() > at_a + 0.1


def test_every_single_entry_departure_raises_the_cln_loss():
    label = _pair_label()
    a = ideal_affinity(label, (4, 4)).double()
    base = cross_correlation_loss(a, label, (4, 4))["loss"].item()
    # At S = A the only non-zero term is the precision one: -log((n_i - 1) / n_i) per row, weighted 1/64.
    n_same = a.sum(-1)[0]
    expected = (-torch.log((n_same - 1) / n_same)).mean().item() / 64
    assert abs(base - expected) < 1e-12
    # Rows 0 (background) and 5 (foreground) in full, plus the whole diagonal: every kind of entry, 48 evaluations.
    entries = [(i, j) for i in (0, 5) for j in range(16)] + [(i, i) for i in range(16)]
    for i, j in entries:
        s = a.clone()
        s[0, i, j] = 0.9 if a[0, i, j] == 1 else 0.1
        assert cross_correlation_loss(s, label, (4, 4))["loss"].item() > base, (i, j)


def test_cpnet_precision_term_rewards_a_lower_diagonal_as_documented():
    # Both official codes keep S_ii in the precision denominator only (see cross_correlation_loss's Note): with
    # the Context Prior weight 1, lowering a diagonal entry below 1 lowers the loss; with CLN's 1/64 it does not.
    label = _pair_label()
    a = ideal_affinity(label, (4, 4)).double()
    s = a.clone()
    s[0, 0, 0] = 0.9
    assert cross_correlation_loss(s, label, (4, 4), global_weight=1.0)["loss"] < cross_correlation_loss(
        a, label, (4, 4), global_weight=1.0
    )["loss"]
    assert cross_correlation_loss(s, label, (4, 4))["loss"] > cross_correlation_loss(a, label, (4, 4))["loss"]


# ------------------------------------------------------------------------------------ robustness and errors
def test_saturated_maps_give_finite_gradients_and_empty_rows_can_be_skipped():
    label = torch.ones(1, 1, 8, 8)  # one class on the whole grid: every spec denominator is 0
    s = torch.ones(1, 4, 4, requires_grad=True)  # a saturated sigmoid (exact 1.0)
    out = cross_correlation_loss(s, label, (2, 2))
    out["loss"].backward()
    assert torch.isfinite(s.grad).all()
    assert abs(out["spec"].item() - 100.0) < 1e-4  # the official fill-with-1: -log(0) clamped at 100
    skipped = cross_correlation_loss(s.detach(), label, (2, 2), skip_empty_rows=True)
    assert skipped["spec"].item() == 0.0 and skipped["recall"].item() < 1e-6
    # What remains is the documented precision term at S = A: -log(3/4) / 64 (4 cells, all one class).
    assert abs(skipped["loss"].item() - np.log(4 / 3) / 64) < 1e-6


def test_bad_inputs_raise_clear_errors():
    label = torch.zeros(2, 1, 16, 16)
    with pytest.raises(ValueError, match=r"\(B, N, N\)"):
        cross_correlation_loss(torch.zeros(2, 4, 5), label)
    with pytest.raises(ValueError, match="grid_size"):
        cross_correlation_loss(torch.zeros(2, 4, 4), label, (3, 3))
    with pytest.raises(ValueError, match="grid_size"):
        cross_correlation_loss(torch.zeros(2, 7, 7), label)  # 7 cells fit no 1:1 grid
    with pytest.raises(ValueError, match="batch size"):
        cross_correlation_loss(torch.zeros(3, 4, 4), label)


def test_autocast_runs_the_loss_in_float32():
    label = _pair_label().float()
    z = torch.randn(1, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s = torch.sigmoid(z.bfloat16())
        out = cross_correlation_loss(s, label, context_logits=z.bfloat16())
    assert out["loss"].dtype == torch.float32
    out["loss"].backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------------- CLNLoss
def test_cln_loss_composes_segmentation_and_cross_correlation():
    torch.manual_seed(0)
    target = _pair_label().float()
    logits = torch.randn(1, 1, 16, 16, requires_grad=True)
    z = torch.randn(1, 16, 16, requires_grad=True)
    outputs = SideOutputs([logits], aux={"context_map": torch.sigmoid(z), "context_logits": z})
    crit = CLNLoss(DeepSupervision(BCELoss()), CrossCorrelationLoss("cln"), weight=0.5)
    out = crit(outputs, target)
    seg = F.binary_cross_entropy_with_logits(logits, target)
    cc = cross_correlation_loss(torch.sigmoid(z), target, context_logits=z)["loss"]
    assert torch.allclose(out["loss"], seg + 0.5 * cc)
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    assert {"seg", "cross_correlation", "unary", "recall", "spec", "precision", "seg_final"} <= set(out)
    out["loss"].backward()
    assert logits.grad.abs().sum() > 0 and z.grad.abs().sum() > 0


def test_cln_loss_explains_a_missing_context_map():
    crit = CLNLoss(DeepSupervision(BCELoss()))
    with pytest.raises(ValueError, match="context_map.*model=cln"):
        crit([torch.zeros(1, 1, 8, 8)], torch.zeros(1, 1, 8, 8))


def test_loss_configs_instantiate_and_compose():
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cln = instantiate(compose("config", overrides=["loss=cln"]).loss)
        overrides = ["loss=cln", "loss.cross_correlation.variant=cpnet", "loss@loss.seg=boundary"]
        cpnet = instantiate(compose("config", overrides=overrides).loss)
        boundary = instantiate(
            compose(
                "config", overrides=["loss=boundary", "loss.loss.region._target_=sod_lightning.losses.HybridLoss"]
            ).loss
        )
    assert isinstance(cln, CLNLoss) and cln.cross_correlation.global_weight == 1 / 64
    assert isinstance(cln.seg, DeepSupervision) and isinstance(cln.seg.loss, BCELoss)
    assert cpnet.cross_correlation.global_weight == 1.0 and isinstance(cpnet.seg.loss, BoundaryAwareLoss)
    target = _pair_label().float()
    out = boundary([torch.zeros(1, 1, 16, 16)] * 2, target)
    assert out["loss"].item() > 0


# -------------------------------------------------------------------------------------------------- boundary
def _boundary_reference(prob: np.ndarray, gt: np.ndarray, theta0=3, theta=5) -> float:
    """Bokhovkin's BF1 loss for one (H, W) class map with scipy's grey dilation (outside the image ignored)."""

    def dil(x, k):
        return maximum_filter(x, size=k, mode="constant", cval=-np.inf)

    gt_b = dil(1 - gt, theta0) - (1 - gt)
    pred_b = dil(1 - prob, theta0) - (1 - prob)
    p = (pred_b * dil(gt_b, theta)).sum() / (pred_b.sum() + 1e-7)
    r = (dil(pred_b, theta) * gt_b).sum() / (gt_b.sum() + 1e-7)
    return 1 - 2 * p * r / (p + r + 1e-7)


def test_boundary_loss_matches_a_scipy_reference():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 20, 24, generator=gen, dtype=torch.float64)
    target = torch.zeros(2, 1, 20, 24, dtype=torch.float64)
    target[0, :, 3:12, 5:20] = 1
    target[1, :, 8:, :9] = 1
    prob = torch.sigmoid(logits).numpy()
    t = target.numpy()
    fg = [_boundary_reference(prob[b, 0], t[b, 0]) for b in range(2)]
    bg = [_boundary_reference(1 - prob[b, 0], 1 - t[b, 0]) for b in range(2)]
    assert abs(boundary_loss(logits, target, classes="foreground").item() - np.mean(fg)) < 1e-9
    assert abs(boundary_loss(logits, target).item() - np.mean(fg + bg)) < 1e-9


def test_boundary_loss_is_zero_for_a_perfect_map_and_grows_as_the_boundary_moves():
    target = torch.zeros(1, 1, 32, 32)
    target[..., 8:24, 8:24] = 1
    values = []
    for shift in range(0, 6):
        pred = torch.roll(target, shifts=shift, dims=-1)
        values.append(boundary_loss(torch.where(pred > 0, 20.0, -20.0), target).item())
    assert values[0] < 1e-5
    # Within the tolerance theta=5 (2 px) a shift costs little; beyond it the boundaries stop matching.
    assert all(b >= a - 1e-6 for a, b in zip(values, values[1:])) and values[-1] > 0.4


def test_boundary_loss_gradients_and_errors():
    target = torch.zeros(2, 1, 16, 16)
    target[..., 4:12, 4:12] = 1
    logits = torch.zeros(2, 1, 16, 16, requires_grad=True)
    crit = BoundaryAwareLoss(BCELoss(), boundary_weight=2.0)
    value = crit(logits, target)
    expected = F.binary_cross_entropy_with_logits(logits, target) + 2 * BoundaryLoss()(logits, target)
    assert torch.allclose(value, expected)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="odd"):
        BoundaryLoss(theta0=4)(logits, target)
    with pytest.raises(ValueError, match="classes"):
        BoundaryLoss(classes="all")(logits, target)
    with pytest.raises(ValueError, match="target"):
        BoundaryLoss()(logits, target[:, :, :8])
