"""Losses against hand-computed values and the official BASNet / U^2-Net loss values."""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import torch

from sod_lightning.losses import BCELoss, DeepSupervision, DiceLoss, HybridLoss, IoULoss, SSIMLoss
from sod_lightning.losses import functional as LF

from conftest import FIXTURES

REF = np.load(FIXTURES / "reference" / "losses.fixture.npz")


# The official values were computed in float32, and SSIM's local variances cancel at float32 precision (the
# structured case moves by 3e-6 in float64), so the comparisons run in float32 as the official code did.
def _logits(p: np.ndarray) -> torch.Tensor:
    return torch.logit(torch.from_numpy(p).double()).float()


@pytest.fixture
def target() -> torch.Tensor:
    return torch.from_numpy(REF["target"]).float()


@pytest.mark.parametrize("prefix,pred", [("basnet", lambda: REF["preds"][0]), ("structured", lambda: REF["pred_structured"])])
def test_hybrid_terms_equal_official(prefix, pred, target):
    logits = _logits(pred())
    assert LF.bce(logits, target).item() == pytest.approx(float(REF[f"{prefix}_bce"]), abs=1e-6)
    assert LF.ssim(torch.from_numpy(pred()), target).item() == pytest.approx(float(REF[f"{prefix}_ssim"]), abs=1e-6)
    assert LF.iou(logits, target).item() == pytest.approx(float(REF[f"{prefix}_iou_loss"]), abs=1e-6)
    # sigmoid(logit(p)) in float32 is p to one ulp, and the structured SSIM amplifies that to ~2e-6, as large as the
    # float32 noise in the official value itself (float64 moves it by 3e-6); the random case holds at 1e-6.
    tol = 1e-6 if prefix == "basnet" else 5e-6
    assert HybridLoss()(logits, target).item() == pytest.approx(float(REF[f"{prefix}_hybrid"]), abs=tol)


def test_ssim_per_sample_and_self(target):
    prob = torch.from_numpy(REF["preds"][0])
    per_sample = [LF.ssim(prob[i : i + 1], target[i : i + 1]).item() for i in range(2)]
    np.testing.assert_allclose(per_sample, REF["basnet_ssim_per_sample"], atol=1e-6)
    assert LF.ssim(target, target).item() == pytest.approx(float(REF["basnet_ssim_self"]), abs=1e-9)


def test_deep_supervision_reproduces_official_training_losses(target):
    outputs = [_logits(p) for p in REF["preds"]]
    basnet = DeepSupervision(HybridLoss())(outputs[:8], target)["loss"].item()
    u2net = DeepSupervision(BCELoss())(outputs[:7], target)["loss"].item()
    assert basnet == pytest.approx(float(REF["basnet_total_8_outputs"]), abs=1e-5)  # a sum of 8 float32 values
    assert u2net == pytest.approx(float(REF["u2net_total_7_outputs"]), abs=1e-6)
    assert LF.bce(outputs[0], target).item() == pytest.approx(float(REF["u2net_loss0"]), abs=1e-6)


def test_zero_padding_is_the_default_and_differs_from_reflect():
    pred = torch.from_numpy(REF["pred_structured"]).double()
    t = torch.from_numpy(REF["target"]).double()
    zeros, reflect = LF.ssim(pred, t), LF.ssim(pred, t, padding="reflect")
    assert abs(zeros.item() - 0.16903) < 1e-5 and abs(reflect.item() - 0.16771) < 1e-5
    # reflect padding is exactly kornia's SSIM (whose eps only enters the denominator; 0 here)
    assert reflect.item() == pytest.approx(kornia.metrics.ssim(pred, t, 11, eps=0.0).mean().item(), abs=1e-9)
    # loss=ssim defaults to kornia's borders with BASNet's scale: 1 - SSIM, not kornia's (1 - SSIM) / 2
    logits = torch.logit(pred)
    assert SSIMLoss()(logits, t).item() == pytest.approx(1 - reflect.item(), abs=1e-9)
    assert SSIMLoss()(logits, t).item() == pytest.approx(2 * kornia.losses.ssim_loss(pred, t, 11).item(), abs=1e-6)


def test_hand_computed_values():
    zeros, ones = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 4, 4)
    assert BCELoss()(zeros, ones).item() == pytest.approx(math.log(2), abs=1e-7)
    # p = sigmoid(0) = 0.5 everywhere, half the target on: IoU = 4 / (8 + 8 - 4) = 1/3
    t = torch.zeros(1, 1, 4, 4)
    t[..., :2, :] = 1
    assert IoULoss()(zeros, t).item() == pytest.approx(1 - 1 / 3, abs=1e-7)
    # Dice with p = 0.5: 2 * 4 / (8 + 8) = 0.5
    assert DiceLoss()(zeros, t).item() == pytest.approx(0.5, abs=1e-6)
    # a confident perfect prediction costs (almost) nothing in every loss
    t = torch.zeros(1, 1, 16, 16)
    t[..., 3:9, 2:12] = 1
    perfect = torch.where(t > 0, 40.0, -40.0)
    for loss in (BCELoss(), IoULoss(), HybridLoss(), DiceLoss(), SSIMLoss()):
        assert loss(perfect, t).item() < 1e-6, type(loss).__name__


def test_bce_is_stable_for_extreme_logits_and_under_autocast():
    t = (torch.rand(2, 1, 32, 32) > 0.5).float()
    logits = torch.where(t > 0, -200.0, 200.0)  # confidently wrong: probabilities round to 0 and 1
    assert torch.isfinite(HybridLoss()(logits, t))
    assert LF.bce(logits, t).item() == pytest.approx(200.0, rel=1e-6)
    x = torch.randn(2, 1, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = HybridLoss()(x.bfloat16(), t)
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(HybridLoss()(x.bfloat16().float(), t).item(), abs=1e-5)


def test_deep_supervision_weights_and_errors():
    t = torch.ones(1, 1, 4, 4)
    outs = [torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 2.0)]
    bce0, bce1 = math.log(2), math.log(1 + math.exp(-2))
    got = DeepSupervision(BCELoss(), weights=[1.0, 0.25])(outs, t)
    assert got["loss"].item() == pytest.approx(bce0 + 0.25 * bce1, abs=1e-6)
    assert got["final"].item() == pytest.approx(bce0, abs=1e-6)
    with pytest.raises(ValueError, match="loss.weights has 3 entries but the model returns 2 outputs"):
        DeepSupervision(BCELoss(), weights=[1, 1, 1])(outs, t)
    with pytest.raises(ValueError, match=r"target: expected the shape of logits"):
        BCELoss()(outs[0], torch.ones(1, 1, 8, 8))
    with pytest.raises(ValueError, match="ssim padding"):
        SSIMLoss(padding="wrap")(outs[0], t)
