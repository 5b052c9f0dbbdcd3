"""Reading images and masks the way SOD data sets store them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


class BadFileError(ValueError):
    """A file that cannot be read as an image or mask; the message names it."""


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadFileError(
            f"'{path}' cannot be read as an image ({type(err).__name__}: {err}). The file is corrupt, truncated or "
            "not an image: replace or delete it, or set data.on_bad_sample=skip to leave such files out."
        ) from err
    return img


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` after EXIF orientation, reading only the header where possible."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadFileError(
            f"'{path}' cannot be read as an image ({type(err).__name__}: {err}). The file is corrupt, truncated or "
            "not an image: replace or delete it, or set data.on_bad_sample=skip to leave such files out."
        ) from err
    # EXIF orientations 5-8 rotate by 90 degrees, swapping the sides.
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB: 16-bit grey scaled to 8 bits (PIL would clip it), alpha dropped, palettes expanded."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img) * (255.0 if np.asarray(img).max() <= 1 else 1.0), 0, 255).astype(np.uint8))
    return img.convert("RGB")


def read_image(path: str | Path) -> Image.Image:
    """An RGB image with its EXIF orientation applied."""
    img = _open(Path(path))
    img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def mask_to_float(img: Image.Image) -> np.ndarray:
    """A mask as float32 ``(H, W)`` in [0, 1], whether stored as 0/255, 0/1, soft 8-bit or 16-bit.

    8-bit masks whose values are all 0 or 1 are read as 0/1 masks; other 8-bit masks are divided by 255; 16-bit
    masks by 65535. Colour masks are converted to grey (ITU-R 601 luma) first.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        return (arr / (65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0)).astype(np.float32)
    if img.mode == "F":
        return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    if img.mode == "1":
        return np.asarray(img, dtype=np.float32)
    arr = np.asarray(img.convert("L"), dtype=np.float32)
    return arr if arr.max() <= 1.0 else arr / 255.0


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file as float32 ``(H, W)`` in [0, 1] (see :func:`mask_to_float`), EXIF orientation applied."""
    return mask_to_float(ImageOps.exif_transpose(_open(Path(path))))
