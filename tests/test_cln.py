"""CLN: the context-prior head against the official fixture, and the full model's contract.

The oracle is tests/fixtures/reference/cln_vgg_head.* (the seed's ``CALNet_Vgg(64, 32, 8, 5)`` head run in float64),
under both weight fill rules (README.md of the fixtures: rule B is the one that sees the separable branches).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sod_lightning.models.cln import CLN, ContextPriorHead
from sod_lightning.models.outputs import SideOutputs
from sod_lightning.models.weights import load_weights
import reference_weights

REPO = Path(__file__).resolve().parents[1]
REF = REPO / "tests" / "fixtures" / "reference"
# Our head uses the official names (the seed's bottleneck.7 is a parameter-free Sigmoid): the key map is the identity.
KEY_MAP: dict[str, str] = {}


def official_state_dict(rule: str) -> dict[str, torch.Tensor]:
    """The fixture's weights, rebuilt from the JSON key list by fill rule A or B."""
    return reference_weights.official_state_dict("cln_vgg_head", rule)


@pytest.mark.parametrize(
    "rule, fixture", [("A", "cln_vgg_head.fixture.npz"), ("B", "cln_vgg_head.fixture_unitgamma.npz")]
)
def test_head_matches_the_official_fixture(rule, fixture):
    head = ContextPriorHead(in_channels=64, inter_channels=32, prior_size=8, am_kernel_size=5)
    state = official_state_dict(rule)
    assert list(head.state_dict()) == [KEY_MAP.get(k, k) for k in state]  # same keys, same order
    head.load_state_dict({KEY_MAP.get(k, k): v for k, v in state.items()}, strict=True)
    head.double().eval()
    ref = np.load(REF / fixture)
    for name in ("x", "x2"):  # 8x8 and the non-square 4x16 (h * w = 64)
        with torch.no_grad():
            logits, context_logits = head(torch.from_numpy(ref[name]).double())
        pred = torch.sigmoid(logits).numpy()
        context = torch.sigmoid(context_logits).numpy()
        assert np.abs(pred - ref[f"{name}__pred"]).max() < 1e-6
        assert np.abs(context - ref[f"{name}__context_map"]).max() < 1e-6
    assert sum(p.numel() for p in head.parameters()) == 70401  # the fixture's meta.num_parameters


def test_head_rejects_a_grid_of_another_size():
    head = ContextPriorHead(16, 8, 4).eval()
    with pytest.raises(ValueError, match="h\\*w = N"):
        head(torch.zeros(1, 16, 4, 5))


def _compose(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=["model=cln", "data.image_size=64", *overrides])


@pytest.fixture(scope="module")
def cln_cfg():
    return _compose("loss=cln")


def test_config_defaults_to_resnet50_at_stride_8(cln_cfg):
    assert cln_cfg.backbone.name == "resnet50" and cln_cfg.model.output_stride == 8
    assert cln_cfg.model.input_size == 64  # follows data.image_size


def test_forward_backward_and_one_step_lower_the_cln_loss(cln_cfg):
    torch.manual_seed(0)
    net = instantiate(cln_cfg.model)
    criterion = instantiate(cln_cfg.loss)
    assert net.encoder.output_stride == 8 and net.grid_size == (8, 8)
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 1, 64, 64)
    target[0, :, 16:48, 8:40] = 1
    target[1, :, :, 32:] = 1
    out = net(x)
    assert isinstance(out, SideOutputs) and len(out) == 1
    assert out[0].shape == (2, 1, 64, 64)
    ctx, ctx_logits = out.aux["context_map"], out.aux["context_logits"]
    assert ctx.shape == (2, 64, 64) and torch.allclose(ctx, torch.sigmoid(ctx_logits))
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    losses = criterion(out, target)
    losses["loss"].backward()
    # layer4 is never run at encoder_depth 4: frozen, so DDP needs no unused-parameter search.
    assert not any(p.requires_grad for p in net.encoder.layer4.parameters())
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert all(p.grad is not None for _, p in trainable), [n for n, p in trainable if p.grad is None]
    optimizer.step()
    after = criterion(net(x), target)
    assert after["loss"].item() < losses["loss"].item()
    assert after["cross_correlation"].item() < losses["cross_correlation"].item()


def test_input_size_rule_is_enforced():
    net = CLN("resnet34", input_size=[64, 96], encoder_depth=3, inter_channels=8)
    assert net.grid_size == (8, 12)
    net.check_input_size(64, 96)
    with pytest.raises(ValueError, match=r"96x64.*built for 64x96"):
        net.check_input_size(96, 64)
    with pytest.raises(ValueError, match=r"60x96.*multiples of the feature stride 8"):
        net.check_input_size(60, 96)
    with pytest.raises(ValueError, match="72x96"):
        net(torch.zeros(1, 3, 72, 96))
    with pytest.raises(ValueError, match="multiples of the feature stride"):
        CLN("resnet34", input_size=60, encoder_depth=3)


def test_memory_guard_and_bad_backbones_name_the_keys():
    # (backbone=vgg16 at output stride 8 is checked through the config in test_baselines.py.)
    with pytest.raises(ValueError, match=r"N=4900.*max_context_size"):
        CLN("resnet34", input_size=560, encoder_depth=3, inter_channels=8)
    with pytest.raises(ValueError, match="model=cln cannot use backbone=resnet_5"):
        CLN("resnet_5", input_size=64)


def test_vgg_without_dilation_runs_at_its_natural_stride():
    net = CLN("vgg16", input_size=64, output_stride=32, encoder_depth=4, inter_channels=8)
    assert net.stride == 16 and net.grid_size == (4, 4)
    out = net(torch.zeros(1, 3, 64, 64))
    assert out[0].shape == (1, 1, 64, 64) and out.aux["context_map"].shape == (1, 16, 16)


def test_weights_round_trip_and_official_head_keys_load_under_head(tmp_path):
    torch.manual_seed(0)
    net = CLN("resnet34", input_size=64, encoder_depth=3, inter_channels=32).eval()
    path = tmp_path / "cln.pth"
    torch.save(net.state_dict(), path)
    encoder_path = tmp_path / "encoder.pth"
    torch.save(net.encoder.state_dict(), encoder_path)
    twin = CLN("resnet34", input_size=64, encoder_depth=3, inter_channels=32, weights=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x)[0], twin(x)[0])
    other = CLN("resnet34", input_size=64, encoder_depth=3, inter_channels=32, encoder_weights=str(encoder_path))
    pairs = zip(net.encoder.state_dict().values(), other.encoder.state_dict().values())
    assert all(torch.equal(a, b) for a, b in pairs)
    # The official head weights load strictly under "head." when the encoder stage has the fixture's shape:
    # resnet34 layer1 has 64 channels at stride 4, so a 32x32 input gives the fixture's 8x8 grid.
    fixture_shaped = CLN("resnet34", input_size=32, encoder_depth=2, inter_channels=32)
    load_weights(fixture_shaped, {f"head.{k}": v for k, v in official_state_dict("B").items()}, strict=False)
    fixture_shaped.head.load_state_dict(official_state_dict("B"), strict=True)
    ref = np.load(REF / "cln_vgg_head.fixture_unitgamma.npz")
    head = fixture_shaped.head.double().eval()
    with torch.no_grad():
        pred = torch.sigmoid(head(torch.from_numpy(ref["x"]).double())[0]).numpy()
    assert np.abs(pred - ref["x__pred"]).max() < 1e-6
