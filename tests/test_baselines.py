"""The semantic-segmentation baselines (and CLN) as conf/model options: the SOD model contract for each.

Every option composes with ``model=<name>`` (its default backbone), instantiates through Hydra, runs a 64x64
forward and backward, returns logits of the input size, and one optimiser step lowers its loss on the batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sod_lightning.models.weights import load_weights

REPO = Path(__file__).resolve().parents[1]

# model option -> the backbone its config selects by default.
MODELS = {
    "cln": "resnet50",
    "fcn": "resnet50",
    "segnet": "vgg16_bn",
    "deconvnet": "vgg16_bn",
    "refinenet": "resnet50",
    "gcn": "resnet50",
    "hrnet": "hrnet_w18",
    "pspnet": "mobilenet_v2",
    "deeplabv3": "mobilenet_v2",
    "deeplabv3plus": "mobilenet_v2",
    "pan": "mobilenet_v2",
    "fpn": "mobilenet_v2",
    "unetplusplus": "mobilenet_v2",
}


# Documented minimum sizes above 64: PAN's feature pyramid attention pools the stride-16 map three more times.
MIN_SIZE = {"pan": 128}


def _compose(*overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=["data.image_size=64", *overrides], return_hydra_config=True)


def _batch(size: int = 64):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen)
    target = torch.zeros(2, 1, size, size)
    q = size // 4
    target[0, :, q : 3 * q, q // 2 : 5 * q // 2] = 1
    target[1, :, q // 2 : 5 * q // 2, 3 * q // 2 :] = 1
    return x, target


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_option_forward_backward_and_one_step(name):
    cfg = _compose(f"model={name}", "loss=cln" if name == "cln" else "loss=bce")
    assert cfg.hydra.runtime.choices.backbone == MODELS[name]
    torch.manual_seed(0)
    net = instantiate(cfg.model)
    criterion = instantiate(cfg.loss)
    net.train()
    size = MIN_SIZE.get(name, 64)
    if hasattr(net, "check_input_size"):
        net.check_input_size(size, size)
    x, target = _batch(size)
    outputs = net(x)
    assert isinstance(outputs, list) and len(outputs) >= 1
    for out in outputs:
        assert out.shape == (2, 1, size, size) and out.dtype == torch.float32
    # Logits, not probabilities: an untrained head is not confined to [0, 1] everywhere.
    assert outputs[0].min() < 0 or outputs[0].max() > 1
    before = criterion(outputs, target)["loss"]
    before.backward()
    params = [p for p in net.parameters() if p.requires_grad]
    grads = [p.grad for p in params if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # One normalised gradient-descent step of length 1e-3 in parameter space: first order, it must lower the loss
    # on the same batch (Adam's first step moves every weight by lr and can overshoot a 60 M-parameter net).
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
    torch.optim.SGD(params, lr=1e-3 / norm).step()
    after = criterion(net(x), target)["loss"]
    assert after.item() < before.item()


@pytest.mark.parametrize(
    "model, backbone, message",
    [
        ("fcn", "mobilenet_v2", "model=fcn cannot use backbone=mobilenet_v2"),
        ("segnet", "resnet50", "model=segnet cannot use backbone=resnet50"),
        ("deconvnet", "resnet34", "model=deconvnet cannot use backbone=resnet34"),
        ("hrnet", "resnet34", "model=hrnet cannot use backbone=resnet34"),
        ("cln", "vgg16", "model=cln cannot use backbone=vgg16"),
        ("deeplabv3", "vgg16", "DeepLabV3.*vgg16"),
    ],
)
def test_a_combination_that_makes_no_sense_names_both_keys(model, backbone, message):
    cfg = _compose(f"model={model}", f"backbone={backbone}")
    with pytest.raises(Exception, match=message) as info:
        instantiate(cfg.model)
    # Hydra wraps constructor errors; the cause is our ValueError.
    err = info.value
    while not isinstance(err, ValueError) and err.__cause__ is not None:
        err = err.__cause__
    assert isinstance(err, ValueError)


def test_input_size_rules_are_explained():
    from sod_lightning.models.gcn import GCN
    from sod_lightning.models.segnet import SegNet

    with pytest.raises(ValueError, match=r"24x64.*at least 32"):
        SegNet().check_input_size(24, 64)
    SegNet().check_input_size(50, 70)  # odd sizes are fine: unpooling restores each pre-pool size
    with pytest.raises(ValueError, match=r"80x70.*multiples of 32"):
        GCN("resnet18", channels=4).check_input_size(80, 70)


def test_segnet_runs_at_an_odd_size():
    from sod_lightning.models.segnet import SegNet

    net = SegNet().eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 50, 70))[0].shape == (1, 1, 50, 70)


def test_encoder_weights_load_from_library_layouts(tmp_path):
    """backbone.weights files in the libraries' key layouts reach the encoders (and bad files fail clearly)."""
    from sod_lightning.models.fcn import FCN
    from sod_lightning.models.gcn import GCN
    from sod_lightning.models.hrnet import HRNet
    from sod_lightning.models.segnet import SegNet, build_vgg16_features

    torch.manual_seed(1)
    # torchvision VGG layout: features.* plus classifier.* (ignored).
    features = build_vgg16_features("segnet", "vgg16_bn", False, None)
    vgg_state = {f"features.{k}": v for k, v in features.state_dict().items()}
    vgg_state["classifier.0.weight"] = torch.zeros(2, 2)
    torch.save(vgg_state, tmp_path / "vgg.pth")
    segnet = SegNet(encoder_weights=str(tmp_path / "vgg.pth"))
    assert torch.equal(segnet.encoder[0][0].weight, features[0].weight)
    assert torch.equal(segnet.encoder[4][-3].weight, features[-4].weight)  # last conv before pool 5

    # torchvision ResNet layout with fc.* for FCN.
    import torchvision

    resnet = torchvision.models.resnet50(weights=None)
    torch.save(resnet.state_dict(), tmp_path / "r50.pth")
    fcn = FCN(encoder_weights=str(tmp_path / "r50.pth"))
    assert torch.equal(fcn.model.backbone.layer4[2].conv3.weight, resnet.layer4[2].conv3.weight)

    # smp encoder layout for GCN / RefineNet.
    donor = GCN("resnet18", channels=4)
    torch.save(donor.encoder.state_dict(), tmp_path / "r18.pth")
    gcn = GCN("resnet18", channels=4, encoder_weights=str(tmp_path / "r18.pth"))
    assert torch.equal(gcn.encoder.layer3[0].conv1.weight, donor.encoder.layer3[0].conv1.weight)

    # A full timm HRNet classification state dict: the feature extractor takes what it has.
    import timm

    full = timm.create_model("hrnet_w18_small", pretrained=False)
    torch.save(full.state_dict(), tmp_path / "hrnet.pth")
    hrnet = HRNet("hrnet_w18_small", encoder_weights=str(tmp_path / "hrnet.pth"))
    assert torch.equal(hrnet.encoder.conv1.weight, full.conv1.weight)

    # A file for another architecture names the mismatch.
    with pytest.raises(ValueError, match="do not fit"):
        SegNet(encoder_weights=str(tmp_path / "r50.pth"))


def test_whole_network_weights_round_trip(tmp_path):
    from sod_lightning.models.gcn import GCN

    torch.manual_seed(2)
    net = GCN("resnet18", channels=4).eval()
    torch.save(net.state_dict(), tmp_path / "gcn.pth")
    twin = GCN("resnet18", channels=4, weights=str(tmp_path / "gcn.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x)[0], twin(x)[0])
    with pytest.raises(ValueError, match="do not fit"):
        load_weights(GCN("resnet18", channels=8), tmp_path / "gcn.pth")
