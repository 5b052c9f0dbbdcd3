"""python -m sod_lightning.predict and the shared loader (sod_lightning.inference) with a briefly trained model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import CONF_DIR, REPO, shared_data
from sod_lightning.data.augment import Normalize
from sod_lightning.data.folders import FolderDataset
from sod_lightning.inference import load_model
from sod_lightning.predict import predict, report

def predict_cfg(*overrides: str):
    """The config ``python -m sod_lightning.predict <overrides>`` runs."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("predict", overrides=list(overrides))


def odd_inputs(folder: Path) -> dict[str, tuple[int, int]]:
    """Inputs of every awkward kind; returns name -> expected mask size (width, height) after EXIF."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 50), dtype=np.uint8), "L").save(folder / "grey.jpg")
    rgba = np.dstack([rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), np.full((20, 24), 255, np.uint8)])
    rgba[:, :12, 3] = 0  # left half fully transparent
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (16, 18), dtype=np.uint16)).save(folder / "deep16.png")
    assert Image.open(folder / "deep16.png").mode.startswith("I;16") or Image.open(folder / "deep16.png").mode == "I"
    Image.new("P", (12, 10), 3).save(folder / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored 40x20, shown 20x40
    Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)).save(folder / "rotated.jpg", exif=exif)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    return {"grey": (50, 30), "rgba": (24, 20), "deep16": (18, 16), "palette": (12, 10), "rotated": (20, 40)}


def test_predict_on_real_sky_photos_writes_every_output_at_original_size(run_dir, tmp_path):
    sky = shared_data("sky")
    photos = sorted((sky / "images").glob("*.jpg"))[:6]
    src = tmp_path / "photos"
    src.mkdir()
    for p in photos:
        (src / p.name).write_bytes(p.read_bytes())
    new_sky = sorted((shared_data("PASCAL-S") / "images").glob("*.jpg"))[0]
    out = tmp_path / "out"
    cfg = predict_cfg(f"ckpt={run_dir}", f"input={src}", f"output={out}", "cutout=true", "background=[0,177,64]",
                      f"sky={new_sky}", "refine=true", "batch_size=4")
    summary = predict(cfg)
    assert report(summary, out) == 0 and not summary.failed
    for p in photos:
        size = Image.open(p).size
        mask, cut = Image.open(out / "masks" / f"{p.stem}.png"), Image.open(out / "cutouts" / f"{p.stem}.png")
        comp, skyed = Image.open(out / "composites" / f"{p.stem}.png"), Image.open(out / "sky" / f"{p.stem}.png")
        assert (mask.mode, cut.mode, comp.mode, skyed.mode) == ("L", "RGBA", "RGB", "RGB")
        assert mask.size == cut.size == comp.size == skyed.size == size
        # The cut-out is the photo with the mask as alpha; the composite blends over the colour by that mask.
        rgb, alpha = np.asarray(Image.open(p).convert("RGB")), np.asarray(mask)
        np.testing.assert_array_equal(np.asarray(cut)[..., :3], rgb)
        np.testing.assert_array_equal(np.asarray(cut)[..., 3], alpha)
        a = np.asarray(mask, np.float64)[..., None] / 255
        expected = np.floor(a * rgb + (1 - a) * np.array([0, 177, 64]) + 0.5)
        assert np.abs(np.asarray(comp, np.float64) - expected).max() <= 1  # mask rounded to 8 bits in between


def test_odd_inputs_exif_and_unreadable_files(run_dir, tmp_path, caplog):
    expected = odd_inputs(tmp_path / "in")
    background = tmp_path / "bg.png"
    Image.new("RGB", (7, 5), (255, 0, 0)).save(background)
    out = tmp_path / "out"
    cfg = predict_cfg(f"ckpt={run_dir}", f"input={tmp_path / 'in'}", f"output={out}", "cutout=true",
                      f"background={background}", "batch_size=2")
    summary = predict(cfg)
    assert [p.name for p, _ in summary.failed] == ["broken.jpg"]
    assert [p.name for p in summary.ignored] == ["notes.txt"]
    assert report(summary, out) == 1
    assert "broken.jpg" in caplog.text and "could not be read" in caplog.text
    assert sorted(p.stem for p in (out / "masks").iterdir()) == sorted(expected)
    for stem, size in expected.items():
        assert Image.open(out / "masks" / f"{stem}.png").size == size
        assert Image.open(out / "composites" / f"{stem}.png").size == size
    # The input's own transparency is kept: the transparent half stays transparent in the cut-out and shows the
    # background (pure red) in the composite.
    cut = np.asarray(Image.open(out / "cutouts" / "rgba.png"))
    assert cut[:, :12, 3].max() == 0 and cut[:, 12:, 3].max() > 0
    assert (np.asarray(Image.open(out / "composites" / "rgba.png"))[:, :12] == [255, 0, 0]).all()


def test_existing_outputs_are_not_overwritten_unless_asked(run_dir, tmp_path):
    src = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (9, 9, 9)).save(src)
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png").write_bytes(b"keep me")
    cfg = predict_cfg(f"ckpt={run_dir}", f"input={src}", f"output={out}", "cutout=true")
    with pytest.raises(FileExistsError, match="overwrite=true"):
        predict(cfg)
    assert (out / "masks" / "a.png").read_bytes() == b"keep me" and not (out / "cutouts").exists()
    predict(predict_cfg(f"ckpt={run_dir}", f"input={src}", f"output={out}", "overwrite=true"))
    assert Image.open(out / "masks" / "a.png").size == (20, 10)


def test_prediction_equals_the_training_pipeline(run_dir, tmp_path):
    """The loader's preprocessing and resizing are those of the data sets and SODModule's evaluation."""
    from sod_lightning.module import SODModule

    img = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(img)
    Image.new("L", (53, 37)).save(tmp_path / "x_mask.png")
    model = load_model(ckpt=run_dir)
    assert model.input_size == (64, 64) and model.normalization == "imagenet"
    got = model.predict([Image.open(img).convert("RGB")])[0]

    module = SODModule.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", weights_only=True).eval()
    item = FolderDataset([(img, tmp_path / "x_mask.png")], (64, 64))[0]
    with torch.no_grad():
        probs = torch.sigmoid(module(Normalize("imagenet")(item["image"][None]))[0])
    ref = torch.nn.functional.interpolate(probs, size=(37, 53), mode="bilinear", align_corners=False)[0, 0]
    assert got.shape == (37, 53)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-6)


def test_published_weights_route_matches_the_checkpoint(run_dir, tmp_path):
    from_ckpt = load_model(ckpt=run_dir / "checkpoints" / "best.ckpt")
    pth = tmp_path / "net.pth"
    torch.save(from_ckpt.net.state_dict(), pth)
    from_pth = load_model(model="unet_small", weights=pth, image_size=64, normalization="imagenet")
    photo = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    np.testing.assert_array_equal(from_ckpt.predict([photo])[0], from_pth.predict([photo])[0])


def test_bad_networks_get_clear_errors(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    text = tmp_path / "notes.ckpt"
    text.write_text("definitely not a checkpoint")
    state = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(2)}, state)
    with pytest.raises(FileNotFoundError, match="ckpt=.*missing.ckpt: no such file"):
        load_model(ckpt=tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint that can be read safely.*weights_only=True"):
        load_model(ckpt=text)
    with pytest.raises(ValueError, match="plain state dict.*weights="):
        load_model(ckpt=state)
    with pytest.raises(ValueError, match="ckpt=.*together with model="):
        load_model(ckpt=ckpt, model="unet_small")
    with pytest.raises(ValueError, match="No network given"):
        load_model()
    with pytest.raises(ValueError, match="weights=.*plain.pth.*do not fit"):
        load_model(model="unet_small", weights=state, image_size=64, normalization="imagenet")
    with pytest.raises(ValueError, match="model=nosuchnet: there is no conf/model/nosuchnet.yaml"):
        load_model(model="nosuchnet", weights=state)
    with pytest.raises(ValueError, match="image_size=<int or \\[H, W\\]> and normalization="):
        load_model(model="unet_small")
    with pytest.raises(ValueError, match="normalization=sepia is unknown"):
        load_model(ckpt=ckpt, normalization="sepia")
    with pytest.raises(ValueError, match=r"image_size=\[16, 16\] does not fit the network.*too small"):
        load_model(model={"_target_": "sod_lightning.models.u2net.U2NetP"}, image_size=16)


def test_bad_inputs_get_clear_errors(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "twins").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "twins" / "a.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "twins" / "a.jpg")
    cases = [
        ((f"input={tmp_path / 'nowhere'}",), FileNotFoundError, "input=.*nowhere: no such file or folder"),
        ((f"input={tmp_path / 'empty'}",), FileNotFoundError, "holds no images"),
        ((f"input={tmp_path / 'twins'}",), ValueError, "share the stem 'a'"),
        ((f"input={tmp_path / 'twins'}", "background=notacolour"), ValueError, "background=notacolour is neither"),
    ]
    for overrides, error, message in cases:
        if "twins" in overrides[0] and len(overrides) == 2:
            (tmp_path / "twins" / "a.jpg").unlink()
        with pytest.raises(error, match=message):
            predict(predict_cfg(f"ckpt={run_dir}", f"output={tmp_path / 'out'}", *overrides))
    assert not (tmp_path / "out").exists()


def test_command_line_lists_unreadable_files_and_exits_non_zero(run_dir, tmp_path):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (30, 20), (0, 80, 200)).save(tmp_path / "in" / "ok.png")
    (tmp_path / "in" / "bad.png").write_bytes(b"\x89PNG truncated")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sod_lightning.predict", f"ckpt={run_dir}", f"input={tmp_path / 'in'}",
         f"output={tmp_path / 'out'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "1 files could not be read" in proc.stdout + proc.stderr and "bad.png" in proc.stdout + proc.stderr
    assert Image.open(tmp_path / "out" / "masks" / "ok.png").size == (30, 20)
    # Nothing but the outputs is written: no Hydra run folder, no log file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
    assert REPO.is_dir()
