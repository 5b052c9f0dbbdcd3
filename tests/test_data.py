"""The DataModule: synthetic data, every folder layout, image modes, augmentation, and every bad-input case."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sod_lightning.data import SODDataModule, SyntheticSOD, pair_files, resolve_set
from sod_lightning.data.augment import Normalize, build_augmentation
from sod_lightning.data.imageio import image_size, read_image, read_mask
from sod_lightning.data.synthetic import render

from conftest import shared_data


def _write_pair(img_dir: Path, mask_dir: Path, stem: str, size=(40, 30), img_ext=".jpg", mask_ext=".png") -> None:
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(abs(hash(stem)) % 2**32)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(img_dir / f"{stem}{img_ext}")
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 255
    Image.fromarray(mask).save(mask_dir / f"{stem}{mask_ext}")


# ---------------------------------------------------------------------------------------------------------------
# synthetic
def test_synthetic_is_deterministic_and_splits_differ():
    a, b = SyntheticSOD(4, (64, 64), seed=3), SyntheticSOD(4, (64, 64), seed=3)
    for i in range(4):
        assert torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["mask"], b[i]["mask"])
    assert not torch.equal(a[0]["image"], SyntheticSOD(4, (64, 64), seed=4)[0]["image"])
    assert not torch.equal(a[0]["image"], SyntheticSOD(4, (64, 64), seed=3, split="test")[0]["image"])
    item = a[0]
    assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (1, 64, 64)
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}


def test_synthetic_objects_are_salient_but_not_a_colour_threshold():
    fractions, overlaps = [], []
    for i in range(40):
        img, mask = render(0, "train", i, (64, 64))
        fractions.append(mask.mean())
        fg, bg = img[mask > 0.5], img[mask < 0.5]
        # distance of every background pixel to the mean object colour: some clutter pixels come close
        d = np.linalg.norm(bg - fg.mean(0), axis=1)
        overlaps.append((d < np.linalg.norm(fg - fg.mean(0), axis=1).mean()).mean())
    fractions = np.array(fractions)
    assert 0.03 < fractions.mean() < 0.5 and fractions.min() > 0.005  # an object in every image, never everything
    assert np.mean(np.array(overlaps) > 0) > 0.3  # background pixels in object colours occur often


# ---------------------------------------------------------------------------------------------------------------
# layouts and pairing
@pytest.mark.parametrize(
    "layout,img_rel,mask_rel,split",
    [
        ("duts", "DUTS-TR-Image", "DUTS-TR-Mask", "train"),
        ("images_masks", "images", "masks", "test"),
        ("image_gt", "Image", "GT", "test"),
        ("split_label", "train_image", "train_label", "train"),
        ("split_label", "test_image", "test_label", "test"),
    ],
)
def test_layouts(tmp_path, layout, img_rel, mask_rel, split):
    root = tmp_path / "DUTS-TR"
    for i, (ie, me) in enumerate([(".jpg", ".png"), (".png", ".png"), (".bmp", ".tif"), (".jpeg", ".bmp")]):
        _write_pair(root / img_rel, root / mask_rel, f"s{i}", img_ext=ie, mask_ext=me)
    for lay in (layout, "auto"):
        spec = resolve_set({"name": "X", "root": str(root), "layout": lay}, split, "data.test[0]")
        assert (spec.image_dir, spec.mask_dir) == (root / img_rel, root / mask_rel)
        pairs = pair_files(spec, "data.test[0]")
        assert [p[0].stem for p in pairs] == ["s0", "s1", "s2", "s3"]
        assert all(i.stem == m.stem for i, m in pairs)


def test_real_pascal_s_layout():
    root = shared_data("PASCAL-S")
    pairs = pair_files(resolve_set({"name": "PASCAL-S", "root": str(root)}, "test", "data.test[0]"), "data.test[0]")
    assert len(pairs) == 300


# ---------------------------------------------------------------------------------------------------------------
# image and mask modes
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16"])
def test_image_modes_become_rgb(tmp_path, mode):
    arr = np.linspace(0, 1, 12 * 10).reshape(10, 12)
    if mode == "I;16":
        img = Image.fromarray((arr * 65535).astype(np.uint16))
        assert img.mode == "I;16"
    else:
        img = Image.fromarray((arr * 255).astype(np.uint8)).convert(mode)
    img.save(tmp_path / "x.png")
    rgb = read_image(tmp_path / "x.png")
    assert rgb.mode == "RGB" and rgb.size == (12, 10)
    grey = np.asarray(rgb, dtype=np.float64)[..., 0] / 255
    assert np.abs(grey - arr).max() < 0.02  # 16-bit is scaled down, not clipped to white


@pytest.mark.parametrize(
    "stored,expected",
    [
        (np.array([[0, 255], [255, 0]], np.uint8), [[0, 1], [1, 0]]),
        (np.array([[0, 1], [1, 0]], np.uint8), [[0, 1], [1, 0]]),
        (np.array([[0, 51], [255, 102]], np.uint8), [[0, 0.2], [1, 0.4]]),
        (np.array([[0, 65535], [32768, 0]], np.uint16), [[0, 1], [32768 / 65535, 0]]),
    ],
)
def test_masks_become_unit_floats(tmp_path, stored, expected):
    Image.fromarray(stored).save(tmp_path / "m.png")
    np.testing.assert_allclose(read_mask(tmp_path / "m.png"), expected, atol=1e-6)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((10, 20, 3), np.uint8))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise
    img.save(tmp_path / "r.jpg", exif=exif)
    assert image_size(tmp_path / "r.jpg") == (20, 10)
    assert read_image(tmp_path / "r.jpg").size == (10, 20)


# ---------------------------------------------------------------------------------------------------------------
# bad input
def test_missing_and_empty_folders(tmp_path):
    spec = {"name": "A", "image_dir": str(tmp_path / "nope"), "mask_dir": str(tmp_path / "m")}
    with pytest.raises(FileNotFoundError, match=r"data.train\[0\]: image folder '.*nope' does not exist"):
        pair_files(resolve_set(spec, "train", "data.train[0]"), "data.train[0]")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    spec["image_dir"] = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"image folder '.*empty' holds no images"):
        pair_files(resolve_set(spec, "train", "data.train[0]"), "data.train[0]")
    with pytest.raises(FileNotFoundError, match="no known layout found under"):
        resolve_set({"name": "B", "root": str(tmp_path)}, "test", "data.test[0]")


def test_unmatched_names_error_lists_them_and_skip_drops_them(tmp_path, caplog):
    for s in ("a", "b", "c"):
        _write_pair(tmp_path / "img", tmp_path / "gt", s)
    _write_pair(tmp_path / "img", tmp_path / "other", "only_image")
    _write_pair(tmp_path / "other2", tmp_path / "gt", "only_mask")
    spec = resolve_set({"name": "S", "image_dir": str(tmp_path / "img"), "mask_dir": str(tmp_path / "gt")}, "train", "k")
    with pytest.raises(ValueError, match=r"1 images without a mask \[only_image\] and 1 masks without an image \[only_mask\]"):
        pair_files(spec, "data.train[0]")
    with caplog.at_level(logging.WARNING):
        pairs = pair_files(spec, "data.train[0]", on_bad_sample="skip")
    assert [p[0].stem for p in pairs] == ["a", "b", "c"]
    assert "only_image" in caplog.text and "only_mask" in caplog.text and "skipped 2 files in total" in caplog.text


def test_corrupt_file_and_size_mismatch(tmp_path, caplog):
    for s in ("a", "b"):
        _write_pair(tmp_path / "img", tmp_path / "gt", s)
    (tmp_path / "img" / "c.jpg").write_bytes(b"this is not a jpeg")
    _write_pair(tmp_path / "x", tmp_path / "gt", "c")
    spec = resolve_set({"name": "S", "image_dir": str(tmp_path / "img"), "mask_dir": str(tmp_path / "gt")}, "train", "k")
    with pytest.raises(ValueError, match=r"'.*img/c.jpg' cannot be read as an image"):
        pair_files(spec, "data.train[0]")
    (tmp_path / "img" / "c.jpg").unlink()
    _write_pair(tmp_path / "img", tmp_path / "y", "c", size=(50, 30))  # image 50x30, mask 40x30
    with pytest.raises(ValueError, match=r"mask '.*gt/c.png' is 40x30 but its image '.*img/c.jpg' is 50x30"):
        pair_files(spec, "data.train[0]")
    with caplog.at_level(logging.WARNING):
        assert len(pair_files(spec, "data.train[0]", on_bad_sample="skip")) == 2
    assert "c.png" in caplog.text


def test_config_errors():
    with pytest.raises(ValueError, match="No data"):
        SODDataModule()
    with pytest.raises(ValueError, match="both set"):
        SODDataModule(synthetic={"train_size": 4}, train=[{"name": "a", "root": "x"}])
    with pytest.raises(ValueError, match="data.crop_size .* is larger than data.image_size"):
        SODDataModule(synthetic={}, image_size=64, crop_size=96)
    with pytest.raises(ValueError, match="data.normalization='lab' is unknown"):
        SODDataModule(synthetic={"seed": 0}, normalization="lab")
    with pytest.raises(ValueError, match="data.on_bad_sample='ignore' is unknown"):
        SODDataModule(synthetic={"seed": 0}, on_bad_sample="ignore")


# ---------------------------------------------------------------------------------------------------------------
# batches, augmentation, normalisation
def test_folder_datamodule_mixed_sizes_and_hold_out(tmp_path):
    for i, size in enumerate([(40, 30), (30, 40), (64, 48), (40, 30), (20, 20), (33, 17)]):
        _write_pair(tmp_path / "images", tmp_path / "masks", f"{i}", size=size)
    dm = SODDataModule(train=[{"name": "T", "root": str(tmp_path)}], test=[{"name": "T", "root": str(tmp_path)}],
                       val_split=0.34, image_size=32, batch_size=4, augment=None)
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) == 4 and len(dm.val_set) == 2
    batch = next(iter(dm.test_dataloader()[0]))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    assert [tuple(m.shape) for m in batch["mask_orig"]] == [(1, 30, 40), (1, 40, 30), (1, 48, 64), (1, 30, 40)]
    assert dm.test_set_names == ["T"]


def test_augmentation_moves_image_and_mask_together():
    torch.manual_seed(0)
    # 8x8 blocks, so that bilinear (image) and nearest (mask) resampling differ only along block edges
    mask = torch.nn.functional.interpolate((torch.rand(4, 1, 6, 6) > 0.5).float(), scale_factor=8)
    image = mask.repeat(1, 3, 1, 1)  # the image *is* the mask: any misalignment shows
    aug = build_augmentation((32, 32), hflip=True, vflip=True, scale=(0.3, 1.0), rotation=20, color_jitter=0.0)
    out_img, out_mask = aug(image, mask)
    assert out_img.shape == (4, 3, 32, 32) and out_mask.shape == (4, 1, 32, 32)
    agree = ((out_img[:, :1] > 0.5) == (out_mask > 0.5)).float().mean()
    assert agree > 0.9  # only interpolation at edges differs; a misaligned pair agrees ~50%
    assert not torch.equal(out_mask, torch.nn.functional.interpolate(mask, size=(32, 32)))


def test_colour_jitter_leaves_mask_alone():
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    aug = build_augmentation((32, 32), hflip=False, scale=None, color_jitter=0.5)
    out_img, out_mask = aug(torch.rand(2, 3, 32, 32), mask)
    assert torch.equal(out_mask, mask)


def test_normalizations():
    x = torch.full((1, 3, 2, 2), 0.5)
    x[:, 0] = 1.0
    imagenet = Normalize("imagenet")(x)
    assert imagenet[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229)
    caffe = Normalize("caffe")(x)  # BGR order, 0..255, mean pixel subtracted
    assert caffe[0, 2, 0, 0].item() == pytest.approx(255 - 123.68, abs=1e-4)
    assert caffe[0, 0, 0, 0].item() == pytest.approx(127.5 - 103.939, abs=1e-4)
    half = Normalize("imagenet_max")(x * 0.5)  # divided by the image maximum first
    assert torch.allclose(half, imagenet)


def test_evaluation_is_not_padded_under_ddp():
    dm = SODDataModule(synthetic={"train_size": 4, "val_size": 7, "test_size": 7}, image_size=32, batch_size=2)
    dm.setup("fit")

    class FakeTrainer:
        world_size, training = 2, False

    seen = []
    for rank in range(2):
        FakeTrainer.global_rank = rank
        dm.trainer = FakeTrainer()
        seen += list(iter(dm.val_dataloader().sampler))
    assert sorted(seen) == list(range(7))  # every image once, none repeated to even out the shards
