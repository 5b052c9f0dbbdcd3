"""Compositing arithmetic (sod_lightning.compose) on synthetic cases with values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sod_lightning import compose


def test_rounding_is_half_up_and_clipped():
    assert compose.to_uint8(np.array([0.49, 0.5, 1.5, 2.5, 254.5, -3.0, 300.0])).tolist() == [0, 1, 2, 3, 255, 0, 255]
    assert compose.mask_to_uint8(np.array([[0.0, 0.5, 1.0, 0.2]])).tolist() == [[0, 128, 255, 51]]


def test_cutout_keeps_colours_and_puts_the_mask_in_alpha():
    image = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90]]], np.uint8)
    out = compose.cutout(image, np.array([[0.0, 0.5, 1.0]]))
    assert out.dtype == np.uint8 and out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[..., :3], image)
    assert out[0, :, 3].tolist() == [0, 128, 255]


def test_composite_over_a_colour_exact_values():
    fg = np.full((1, 3, 3), 200, np.uint8)
    out = compose.composite(fg, np.array([[1.0, 0.25, 0.0]]), (0, 100, 255))
    # alpha * 200 + (1 - alpha) * bg per channel: 0.25*200 + 0.75*(0, 100, 255) = (50, 125, 241.25)
    assert out.tolist() == [[[200, 200, 200], [50, 125, 241], [0, 100, 255]]]


def test_composite_over_an_image_exact_values():
    fg = np.array([[[100, 0, 255], [10, 10, 10]]], np.uint8)
    bg = np.array([[[0, 100, 55], [250, 250, 250]]], np.uint8)
    out = compose.composite(fg, np.array([[0.5, 0.9]]), bg)
    # 0.5*(100,0,255)+0.5*(0,100,55) = (50, 50, 155); 0.9*10+0.1*250 = 34
    assert out.tolist() == [[[50, 50, 155], [34, 34, 34]]]


def test_alpha_outside_0_1_is_clipped():
    fg, bg = np.full((1, 2, 3), 100, np.uint8), np.zeros((1, 2, 3), np.uint8)
    assert compose.composite(fg, np.array([[1.5, -0.5]]), bg)[0, :, 0].tolist() == [100, 0]


def test_sky_replace_blends_the_new_sky_where_the_mask_is_high():
    photo = np.array([[[0, 0, 0], [100, 100, 100], [50, 60, 70]]], np.uint8)
    sky = np.array([[[200, 220, 255], [0, 0, 0], [150, 160, 170]]], np.uint8)
    out = compose.sky_replace(photo, np.array([[1.0, 0.3, 0.0]]), sky)
    # sky where 1; 0.3*0 + 0.7*100 = 70; photo where 0
    assert out.tolist() == [[[200, 220, 255], [70, 70, 70], [50, 60, 70]]]


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3)), (0, 0, 0)), "mask (H, W) = (2, 2)"),
        ((np.zeros((2, 2, 3), np.float32), np.zeros((2, 2)), (0, 0, 0)), "8-bit RGB"),
        ((np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), np.zeros((3, 3, 3), np.uint8)), "background of the"),
        ((np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2)), (0, 0, 256)), "0..255"),
    ],
)
def test_composite_rejects_mismatched_inputs(args, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose.composite(*args)


def test_refine_mask_keeps_constants_and_snaps_edges_to_the_guide():
    # A constant mask stays constant whatever the guide.
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    np.testing.assert_allclose(compose.refine_mask(noisy, np.full((16, 16), 0.4), radius=2), 0.4, atol=1e-5)
    # Guide: a vertical step at column 16. Mask: the same step, blurred over 8 columns (an upsampled prediction).
    guide = np.zeros((32, 32, 3), np.uint8)
    guide[:, 16:] = 255
    blurry = np.clip((np.arange(32) - 12) / 8.0, 0, 1).astype(np.float32)
    refined = compose.refine_mask(guide, np.tile(blurry, (32, 1)), radius=4, eps=1e-4)
    assert refined.shape == (32, 32) and refined.dtype == np.float32
    assert 0.0 <= refined.min() and refined.max() <= 1.0
    # The blurry mask rises by 0.125 per column; the refined one jumps where the guide does (columns 15 -> 16) and
    # is nearly flat on both sides of it: the edge has moved onto the guide's edge.
    steps = np.diff(refined[16])
    assert steps[15] > 0.5 and np.diff(blurry).max() == 0.125
    assert steps.argmax() == 15 and np.delete(steps, 15).max() < 0.1


def test_refine_mask_rejects_bad_parameters():
    with pytest.raises(ValueError, match="refine_radius"):
        compose.refine_mask(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), radius=0)


def test_parse_colour_forms_and_errors():
    assert compose.parse_colour("white") == (255, 255, 255)
    assert compose.parse_colour("#00b140") == (0, 177, 64)
    assert compose.parse_colour([1, 2, 3]) == (1, 2, 3)
    with pytest.raises(ValueError, match="background=notacolour is neither"):
        compose.parse_colour("notacolour")
    with pytest.raises(ValueError, match="three integers"):
        compose.parse_colour([1, 2, 300])


def test_cover_keeps_aspect_and_crops_the_centre():
    # A 40x10 image: red left half, blue right half. Covering 20x20 scales it to 80x20 and keeps columns 30-49,
    # i.e. the last 10 red and the first 10 blue columns.
    arr = np.zeros((10, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    out = compose.cover(Image.fromarray(arr), (20, 20))
    assert out.shape == (20, 20, 3)
    assert out[10, 2].tolist() == [255, 0, 0] and out[10, 17].tolist() == [0, 0, 255]


def test_load_background_file_colour_and_missing_file(tmp_path):
    path = tmp_path / "bg.png"
    Image.new("RGB", (5, 4), (1, 2, 3)).save(path)
    img = compose.load_background(str(path), "background")
    assert isinstance(img, Image.Image) and img.size == (5, 4)
    assert compose.load_background("red", "sky") == (255, 0, 0)
    with pytest.raises(FileNotFoundError, match="sky=.*missing.jpg: no such image file"):
        compose.load_background(str(tmp_path / "missing.jpg"), "sky")
    (tmp_path / "broken.png").write_text("not a png")
    with pytest.raises(ValueError, match="background=.*broken.png"):
        compose.load_background(str(tmp_path / "broken.png"), "background")
