"""Compositing arithmetic for predicted masks: cut-outs, new backgrounds, sky replacement, edge refinement.

Pure functions on NumPy arrays (8-bit images ``(H, W, 3)``, float masks ``(H, W)`` in [0, 1]) so that every number
can be checked by hand. A mask is used as *straight* (non-premultiplied) alpha, the convention of PNG:

    out = alpha * foreground + (1 - alpha) * background,

rounded half up to 8 bits. Soft mask values blend; nothing is thresholded.

Example:
    >>> fg = np.full((1, 2, 3), 200, np.uint8); bg = np.zeros((1, 2, 3), np.uint8)
    >>> composite(fg, np.array([[1.0, 0.25]]), bg)[0, :, 0]
    array([200,  50], dtype=uint8)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageColor, ImageOps

Colour = tuple[int, int, int]


def _check(image: np.ndarray, alpha: np.ndarray, what: str = "image") -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit RGB {what} (H, W, 3) uint8, got {image.shape} {image.dtype}.")
    if alpha.shape != image.shape[:2]:
        raise ValueError(f"expected a mask (H, W) = {image.shape[:2]} matching the {what}, got {alpha.shape}.")


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in [0, 255] (floats) rounded half up to uint8; out-of-range values are clipped.

    Example:
        >>> to_uint8(np.array([0.5, 127.49, 254.5, 300.0]))
        array([  1, 127, 255, 255], dtype=uint8)
    """
    return np.clip(np.floor(np.asarray(values, dtype=np.float64) + 0.5), 0, 255).astype(np.uint8)


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """A float mask ``(H, W)`` in [0, 1] as 8-bit grey ``(H, W)`` (``round(255 * m)``).

    Example:
        >>> mask_to_uint8(np.array([[0.0, 0.5, 1.0]]))
        array([[  0, 128, 255]], dtype=uint8)
    """
    return to_uint8(np.asarray(mask, dtype=np.float64) * 255.0)


def cutout(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """An RGBA cut-out: the image's colours unchanged, the mask as the alpha channel.

    Args:
        image: ``(H, W, 3)`` uint8.
        alpha: ``(H, W)`` float in [0, 1] (e.g. the predicted mask times the input's own alpha).

    Returns:
        ``(H, W, 4)`` uint8.

    Example:
        >>> cutout(np.full((1, 1, 3), 9, np.uint8), np.array([[0.5]]))[0, 0]
        array([  9,   9,   9, 128], dtype=uint8)
    """
    _check(image, alpha)
    return np.concatenate([image, mask_to_uint8(alpha)[..., None]], axis=2)


def composite(foreground: np.ndarray, alpha: np.ndarray, background: np.ndarray | Sequence[int]) -> np.ndarray:
    """Alpha-blend ``foreground`` over ``background``: ``alpha * fg + (1 - alpha) * bg``, rounded half up.

    Args:
        foreground: ``(H, W, 3)`` uint8.
        alpha: ``(H, W)`` float in [0, 1], the foreground's weight.
        background: ``(H, W, 3)`` uint8 (see :func:`cover` to fit an image), or an RGB colour ``(r, g, b)``.

    Returns:
        ``(H, W, 3)`` uint8.

    Example:
        >>> composite(np.full((1, 1, 3), 255, np.uint8), np.array([[0.5]]), (0, 0, 255))[0, 0]
        array([128, 128, 255], dtype=uint8)
    """
    _check(foreground, alpha, "foreground")
    bg = np.asarray(background)
    if bg.ndim == 1:
        if bg.shape != (3,) or bg.min() < 0 or bg.max() > 255:
            raise ValueError(f"expected a background colour (r, g, b) in 0..255, got {tuple(bg.tolist())}.")
        bg = np.broadcast_to(bg.astype(np.float64), foreground.shape)
    elif bg.shape != foreground.shape:
        raise ValueError(f"expected a background of the foreground's shape {foreground.shape}, got {bg.shape}.")
    a = np.clip(np.asarray(alpha, dtype=np.float64), 0.0, 1.0)[..., None]
    return to_uint8(a * foreground + (1.0 - a) * bg)


def sky_replace(image: np.ndarray, sky_alpha: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """Replace the sky: the new sky blended in where the (soft) sky mask is high, the photo kept elsewhere.

    ``out = sky_alpha * sky + (1 - sky_alpha) * image``: a soft mask blends the two at the skyline (thin branches,
    haze), where a thresholded one would leave a hard seam.

    Args:
        image: the photo ``(H, W, 3)`` uint8.
        sky_alpha: ``(H, W)`` float in [0, 1], the probability of sky (optionally :func:`refine_mask`-ed).
        sky: the new sky ``(H, W, 3)`` uint8 (see :func:`cover`).

    Returns:
        ``(H, W, 3)`` uint8.

    Example:
        >>> photo, new = np.zeros((1, 2, 3), np.uint8), np.full((1, 2, 3), 100, np.uint8)
        >>> sky_replace(photo, np.array([[1.0, 0.3]]), new)[0, :, 0]
        array([100,  30], dtype=uint8)
    """
    _check(image, sky_alpha)
    return composite(sky, sky_alpha, image)


def refine_mask(image: np.ndarray, mask: np.ndarray, radius: int = 8, eps: float = 1e-3) -> np.ndarray:
    """Snap a soft mask's edges to the image's edges with a guided filter (He et al., ECCV 2010; kornia).

    The mask is filtered with the RGB image (scaled to [0, 1]) as guidance: within each ``(2r+1)^2`` window the
    output is a linear function of the guide, so a blurry upsampled mask gets the sharp outline of the photo while
    flat regions are smoothed. ``eps`` (in squared [0, 1] guide units) sets which guide variations count as edges.

    Args:
        image: guidance ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` float in [0, 1].
        radius: window radius ``r`` in pixels (the window is ``2r+1`` wide).
        eps: regularisation; larger values smooth more.

    Returns:
        The refined mask ``(H, W)`` float32, clipped to [0, 1].

    Example:
        >>> flat = np.full((8, 8, 3), 90, np.uint8)
        >>> float(refine_mask(flat, np.full((8, 8), 0.25), radius=2).max())  # a constant mask stays constant
        0.25
    """
    _check(image, mask)
    if radius < 1 or eps <= 0:
        raise ValueError(f"refine_radius must be >= 1 and refine_eps > 0, got {radius} and {eps}.")
    from kornia.filters import guided_blur

    guide = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0
    src = torch.from_numpy(np.array(mask, dtype=np.float32))[None, None]
    # float32 and separable box means: ~0.1 s for a 400x300 photo (float64 takes ~80x longer on a CPU).
    out = guided_blur(guide, src, kernel_size=2 * radius + 1, eps=eps, separable=True)
    return out[0, 0].clamp(0.0, 1.0).numpy()


def parse_colour(spec: str | Sequence[int], key: str = "background") -> Colour:
    """An RGB colour from a name (``white``), ``#rrggbb``, ``rgb(…)`` or ``[r, g, b]`` (0-255).

    Args:
        spec: the colour.
        key: the config key, for the error message.

    Example:
        >>> parse_colour("#00ff00"), parse_colour([1, 2, 3])
        ((0, 255, 0), (1, 2, 3))
    """
    if isinstance(spec, str):
        try:
            rgb = ImageColor.getrgb(spec)
        except ValueError as err:
            raise ValueError(
                f"{key}={spec} is neither an existing image file nor a colour. Give a colour name (white), "
                f"'#rrggbb', an [r, g, b] list of 0-255 values, or the path of an image that exists."
            ) from err
        return tuple(int(c) for c in rgb[:3])
    values = list(spec)
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in values):
        raise ValueError(f"{key}={values}: a colour list must be three integers in 0..255, e.g. [0, 177, 64].")
    return tuple(int(v) for v in values)


def cover(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resize an image to cover ``size = (height, width)`` and centre-crop the overflow (CSS ``object-fit: cover``).

    The aspect ratio is kept, so a landscape sky put behind a portrait photo is cropped at the sides, not squeezed.

    Args:
        image: any PIL image (converted to RGB).
        size: ``(height, width)`` of the result.

    Returns:
        ``(height, width, 3)`` uint8.

    Example:
        >>> cover(Image.new("RGB", (40, 10)), (20, 20)).shape
        (20, 20, 3)
    """
    h, w = size
    return np.asarray(ImageOps.fit(image.convert("RGB"), (w, h), method=Image.LANCZOS), dtype=np.uint8)


def load_background(spec: str | Sequence[int], key: str) -> Image.Image | Colour:
    """A background given in the config: an image file (opened, EXIF orientation applied) or a colour.

    Args:
        spec: a path to an existing image, or a colour for :func:`parse_colour`.
        key: the config key (``background`` or ``sky``), for messages.
    """
    from sod_lightning.data.imageio import BadFileError, read_image

    if isinstance(spec, str) and Path(spec).is_file():
        try:
            return read_image(spec)
        except BadFileError as err:
            raise ValueError(f"{key}={spec}: {err}") from err
    if isinstance(spec, str) and (Path(spec).suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff",
                                                                ".webp") or "/" in spec):
        raise FileNotFoundError(f"{key}={spec}: no such image file. Check the path (relative to where you run).")
    return parse_colour(spec, key)
