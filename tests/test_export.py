"""python -m sod_lightning.export: onnxruntime against eager PyTorch, dynamic shapes, metadata, rembg's contract."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import CONF_DIR, shared_data
from sod_lightning.export import check_parity, export, export_onnx, onnx_metadata, onnx_session
from sod_lightning.inference import load_model
from sod_lightning.predict import read_input


def export_cfg(*overrides: str):
    """The config ``python -m sod_lightning.export <overrides>`` runs."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("export", overrides=list(overrides))


def test_unet_export_matches_pytorch_on_random_and_real_images(tmp_path):
    photos = sorted((shared_data("PASCAL-S") / "images").glob("*.jpg"))[:4]
    (tmp_path / "photos").mkdir()
    for p in photos:
        (tmp_path / "photos" / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "unet.onnx"
    result = export(export_cfg("model=unet_small", "image_size=64", "normalization=imagenet", f"out={out}",
                               f"check_images={tmp_path / 'photos'}"))
    diffs = result["max_abs_diff"]
    assert set(diffs) == {"random", "random_batch2_96x128", "images"}
    assert max(diffs.values()) <= 1e-4
    meta = onnx_metadata(out)
    assert (meta["input_size"], meta["normalization"], meta["dynamic"]) == ("64,64", "imagenet", "true")
    # Dynamic axes are real: a batch of 3 at 128x96 runs and has the input's size.
    session = onnx_session(out)
    assert session.run(None, {"input": np.zeros((3, 3, 128, 96), np.float32)})[0].shape == (3, 1, 128, 96)


def test_fixed_size_export_and_parity_failure_is_detected(tmp_path):
    model = load_model(model="unet_small", image_size=64, normalization="imagenet")
    out = export_onnx(model, tmp_path / "fixed.onnx", dynamic=False)
    assert onnx_session(out).get_inputs()[0].shape == [1, 3, 64, 64]
    assert set(check_parity(out, model)) == {"random"}
    # The check can fail: the same architecture with other weights does not match the file.
    torch.manual_seed(1)
    other = load_model(model="unet_small", image_size=64, normalization="imagenet")
    with pytest.raises(ValueError, match="does not match PyTorch within atol=0.0001"):
        check_parity(out, other)


def test_checkpoint_export_from_the_command_config(run_dir, tmp_path):
    """A suite checkpoint (rebuilt from its hyper-parameters) exports with its DataModule's preprocessing."""
    run = run_dir
    out = tmp_path / "ckpt.onnx"
    result = export(export_cfg(f"ckpt={run}", f"out={out}"))
    assert result["input_size"] == [64, 64] and result["normalization"] == "imagenet"
    assert max(result["max_abs_diff"].values()) <= 1e-4
    with pytest.raises(FileExistsError, match="overwrite=true"):
        export(export_cfg(f"ckpt={run}", f"out={out}"))
    with pytest.raises(ValueError, match="must end in .onnx"):
        export(export_cfg(f"ckpt={run}", f"out={tmp_path / 'model.pth'}"))
    text = tmp_path / "model.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        export(export_cfg(f"ckpt={text}", f"out={tmp_path / 'x.onnx'}"))


@pytest.fixture(scope="module")
def u2netp_onnx(tmp_path_factory):
    """U^2-Netp (random weights) exported with the official preprocessing: 320x320, imagenet_max."""
    torch.manual_seed(0)
    model = load_model(model="u2netp")
    path = export_onnx(model, tmp_path_factory.mktemp("u2") / "u2netp.onnx")
    return model, path


def rembg_input(image: Image.Image) -> np.ndarray:
    """rembg's documented u2net_custom input: LANCZOS to 320x320, divide by the maximum, ImageNet mean/std."""
    arr = np.asarray(image.convert("RGB").resize((320, 320), Image.LANCZOS), dtype=np.float64)
    arr = arr / max(arr.max(), 1e-6)
    arr = (arr - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)
    return arr.transpose(2, 0, 1)[None].astype(np.float32)


def test_u2netp_export_fits_rembg_u2net_custom_contract(u2netp_onnx):
    model, path = u2netp_onnx
    meta = onnx_metadata(path)
    assert (meta["model"], meta["input_size"], meta["normalization"]) == ("u2netp", "320,320", "imagenet_max")
    photo = read_input(sorted((shared_data("sky") / "images").glob("*.jpg"))[0])[0]
    x = rembg_input(photo)
    session = onnx_session(path)
    # rembg feeds the first input and reads the first output as (1, 1, 320, 320).
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == (1, 1, 320, 320) and 0.0 <= got.min() and got.max() <= 1.0
    ref = model.probabilities(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.skipif(importlib.util.find_spec("rembg") is None, reason="rembg is not installed (optional extra)")
def test_rembg_u2net_custom_session_runs_the_export(u2netp_onnx):
    from rembg import new_session, remove

    model, path = u2netp_onnx
    photo = read_input(sorted((shared_data("sky") / "images").glob("*.jpg"))[0])[0]
    mask = np.asarray(remove(photo, session=new_session("u2net_custom", model_path=str(path)), only_mask=True))
    # rembg min-max scales the network output to 0..255 and resizes it to the photo with LANCZOS.
    session = onnx_session(path)
    pred = session.run(None, {session.get_inputs()[0].name: rembg_input(photo)})[0][0, 0]
    pred = (pred - pred.min()) / (pred.max() - pred.min())
    expected = np.asarray(Image.fromarray((pred * 255).astype(np.uint8), "L").resize(photo.size, Image.LANCZOS))
    assert mask.shape == expected.shape
    assert np.abs(mask.astype(int) - expected.astype(int)).max() <= 1
