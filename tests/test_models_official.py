"""BASNet, U^2-Net and U^2-Netp against the official architectures (``tests/fixtures/reference``).

The official weights are rebuilt from ``<name>.state_dict.json`` by the reference README's fill rules A and B, loaded
into our modules, and every stored input is run in float64; every output must match ``sigmoid(ours)`` to 1e-6.
Rule B is the one that sees dilations, residuals and early layers (README "Why two rules").
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from sod_lightning.models.basnet import BASNet
from sod_lightning.models.u2net import U2Net, U2NetP
from reference_weights import REFERENCE, official_state_dict
from reference_weights import spec as _spec

MODELS = {"basnet": BASNet, "u2net": U2Net, "u2netp": U2NetP}
# The figures, written out so that a change in the JSON or in the model cannot hide a mismatch.
OFFICIAL_PARAMETERS = {"basnet": 87_060_360, "u2net": 44_009_869, "u2netp": 1_131_181}
# Official key -> our key. Our modules keep the official names (so published .pth files load strictly as they
# are); the map is explicit anyway, and test_state_dict_layout proves it is the identity on every key.
KEY_MAP: dict[str, str] = {}


def max_fixture_error(model: nn.Module, name: str, fixture: str) -> float:
    """Largest |sigmoid(ours) - official| over every stored input and every output (float64, eval mode)."""
    meta = _spec(name)["meta"]
    stored = np.load(REFERENCE / f"{name}.{fixture}.npz")
    model = model.double().eval()
    worst = 0.0
    with torch.no_grad():
        for spec in meta["inputs"]:
            x = torch.from_numpy(stored[spec["name"]]).double()
            outputs = model(x)
            assert isinstance(outputs, list) and len(outputs) == len(meta["outputs_in_forward_order"])
            for out, out_name in zip(outputs, meta["outputs_in_forward_order"]):
                expected = torch.from_numpy(stored[f"{spec['name']}__{out_name}"]).double()
                assert out.shape == expected.shape, f"{name} {spec['name']} {out_name}"
                worst = max(worst, (torch.sigmoid(out) - expected).abs().max().item())
    return worst


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_layout(name):
    """Same keys in the same order, same shapes and dtypes, and the official parameter count."""
    spec = _spec(name)
    model = MODELS[name]()
    ours = model.state_dict()
    official_keys = [KEY_MAP.get(e["key"], e["key"]) for e in spec["entries"]]
    assert list(ours) == official_keys
    for entry, key in zip(spec["entries"], official_keys):
        assert tuple(ours[key].shape) == tuple(entry["shape"]), key
        assert str(ours[key].dtype) == f"torch.{entry['dtype']}", key
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == OFFICIAL_PARAMETERS[name] == spec["meta"]["num_parameters"]


@pytest.mark.parametrize("name", MODELS)
def test_matches_official_rule_a(name):
    """Rule A weights, loaded from memory through ``load_weights`` with the explicit key map."""
    from sod_lightning.models.weights import load_weights

    model = load_weights(MODELS[name](), official_state_dict(name, "A"), key_map=KEY_MAP, strict=True)
    assert max_fixture_error(model, name, "fixture") < 1e-6


@pytest.mark.parametrize("name", MODELS)
def test_official_checkpoint_file_matches_rule_b(name, tmp_path):
    """A published-style ``<name>.pth`` (official keys, rule B values) loads through ``weights=`` and matches."""
    path = tmp_path / f"{name}.pth"
    torch.save(official_state_dict(name, "B"), path)
    model = MODELS[name](weights=str(path))
    assert max_fixture_error(model, name, "fixture_unitgamma") < 1e-6


def test_lightning_checkpoint_loads(tmp_path):
    """The suite's own checkpoints (network under ``net.``, plus trainer state) load through ``weights=``."""
    state = official_state_dict("u2netp", "B")
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 12, "state_dict": {f"net.{k}": v for k, v in state.items()}}, path)
    loaded = U2NetP(weights=str(path)).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_mismatched_file_names_missing_and_unexpected_keys(tmp_path):
    state = official_state_dict("u2netp", "A")
    state["stage1.rebnconvin.conv_s1.kernel"] = state.pop("stage1.rebnconvin.conv_s1.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="missing") as err:
        U2NetP(weights=str(path))
    assert "stage1.rebnconvin.conv_s1.weight" in str(err.value)
    assert "stage1.rebnconvin.conv_s1.kernel" in str(err.value)
    assert "renamed.pth" in str(err.value)
    # U^2-Netp weights do not fit U^2-Net: same keys, other shapes.
    good = tmp_path / "u2netp.pth"
    torch.save(official_state_dict("u2netp", "A"), good)
    with pytest.raises(ValueError, match="shape"):
        U2Net(weights=str(good))


@pytest.fixture(scope="module")
def resnet34_file(tmp_path_factory):
    """A torchvision resnet34 state dict with distinctive (seeded, random) values, saved as a hub-cache file."""
    torch.manual_seed(0)
    state = torchvision.models.resnet34(weights=None).state_dict()
    folder = tmp_path_factory.mktemp("torch_home") / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    # The file name torchvision's IMAGENET1K_V1 entry caches under, so the same file serves the pretrained path.
    path = folder / Path(torchvision.models.ResNet34_Weights.IMAGENET1K_V1.url).name
    torch.save(state, path)
    return path, state


def _assert_encoder_is(model: BASNet, resnet_state: dict[str, torch.Tensor]) -> None:
    key_map = _spec("basnet")["meta"]["torchvision_resnet34_key_map"]  # encoderK. -> layerK.
    ours = model.state_dict()
    checked = 0
    for key, value in ours.items():
        for ours_prefix, tv_prefix in key_map.items():
            if key.startswith(ours_prefix):
                assert torch.equal(value, resnet_state[tv_prefix + key[len(ours_prefix):]]), key
                checked += 1
    assert checked == 36 + 54 + 78 + 42  # every key of layer1..4


def test_basnet_backbone_local_file(resnet34_file, monkeypatch):
    path, state = resnet34_file
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    _assert_encoder_is(BASNet(backbone_weights=str(path)), state)
    # The default is random (nothing downloads) and differs from the file.
    assert not torch.equal(BASNet().encoder1[0].conv1.weight, state["layer1.0.conv1.weight"])


def _no_download(*args, **kwargs):
    raise urllib.error.URLError("no network in tests")


def test_basnet_backbone_pretrained_from_hub_cache(resnet34_file, monkeypatch):
    path, state = resnet34_file
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    monkeypatch.setenv("TORCH_HOME", str(path.parents[2]))
    _assert_encoder_is(BASNet(backbone_pretrained=True), state)


def test_basnet_backbone_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_download)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match=r"backbone\.weights=<path>"):
        BASNet(backbone_pretrained=True)
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match=r"layer1\.2\.conv1\.weight"):  # resnet18 has two blocks in layer1
        BASNet(backbone_weights=str(wrong))


@pytest.mark.parametrize(
    ("cls", "backbone", "message"),
    [
        (BASNet, "resnet50", "model=basnet backbone=resnet50"),
        (U2Net, "resnet34", "model=u2net backbone=resnet34"),
        (U2NetP, "vgg16", "model=u2netp backbone=vgg16"),
    ],
)
def test_backbone_name_checked(cls, backbone, message):
    with pytest.raises(ValueError, match=message):
        cls(backbone=backbone)


def test_u2net_accepts_no_backbone():
    assert len(U2NetP(backbone="none").eval()(torch.zeros(1, 3, 8, 8))) == 7
    assert len(U2NetP(backbone=None).eval()(torch.zeros(1, 3, 8, 8))) == 7


def test_basnet_input_size_rule():
    model = BASNet()
    model.check_input_size(224, 256)
    model.check_input_size(288, 32)
    for size in [(50, 70), (224, 250), (16, 32), (0, 32)]:
        with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]}.*multiples of 32"):
            model.check_input_size(*size)
    with pytest.raises(ValueError, match="50x70"):
        model.eval()(torch.zeros(1, 3, 50, 70))
    with pytest.raises(ValueError, match="batch of 1"):  # 32x32: BatchNorm would see one value at H/32
        model.train()(torch.zeros(1, 3, 32, 32))


def test_u2net_input_size_rule():
    model = U2NetP()
    for ok in [(33, 33), (288, 32), (320, 320), (50, 70)]:
        model.check_input_size(*ok)
    for bad in [(32, 32), (16, 8), (0, 64)]:
        with pytest.raises(ValueError, match=rf"{bad[0]}x{bad[1]}.*larger than 32"):
            model.check_input_size(*bad)
    with pytest.raises(ValueError, match="batch of 1"):
        model.train()(torch.zeros(1, 3, 32, 32))
    # Any size works in eval mode, and 32x32 trains at batch 2 (the rule at setup is the batch-1 one).
    assert model.eval()(torch.zeros(1, 3, 3, 5))[0].shape == (1, 1, 3, 5)
    assert model.train()(torch.zeros(2, 3, 32, 32))[0].shape == (2, 1, 32, 32)


def test_u2netp_trains_and_returns_logits():
    """One train-mode step at 64x64: seven logit maps, gradients reach every parameter, BN statistics move."""
    torch.manual_seed(0)
    model = U2NetP().train()
    outputs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outputs] == [(2, 1, 64, 64)] * 7
    loss = sum(nn.functional.binary_cross_entropy_with_logits(o, torch.ones_like(o)) for o in outputs)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.stage6.rebnconv4.bn_s1.num_batches_tracked.item() == 1
