"""A procedural salient-object data set: deterministic by seed, generated on the fly, no files.

Each image holds one to three salient objects (ellipses, star polygons and blobs; some with holes, some with thin
limbs) on a cluttered background. Objects differ from the background in colour and texture, but the background
carries small distractor shapes, some in object-like colours, plus a lighting gradient and noise, so a model has to
use shape, size and texture rather than one colour threshold.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

_SPLITS = {"train": 0, "val": 1, "test": 2}


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise: a coarse random grid upsampled bilinearly, in [-1, 1]."""
    grid = rng.uniform(-1, 1, size=(cells, cells, channels)).astype(np.float32)
    return np.stack(
        [np.asarray(Image.fromarray(grid[..., c]).resize((w, h), Image.BILINEAR)) for c in range(channels)], -1
    )


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random stripe, checker or noise pattern in [-1, 1], shape (H, W, 1)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = rng.integers(3)
    freq = rng.uniform(0.15, 0.6)
    if kind == 0:
        angle = rng.uniform(0, np.pi)
        pattern = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    elif kind == 1:
        pattern = np.sign(np.sin(freq * xx) * np.sin(freq * yy))
    else:
        pattern = rng.uniform(-1, 1, size=(h, w)).astype(np.float32)
    return pattern[..., None]


def _shape_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, kind: int) -> list[tuple]:
    """Vertices of an ellipse (kind 0) or a star-shaped polygon (kind 1)."""
    if kind == 0:
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        a, b, rot = radius, radius * rng.uniform(0.45, 1.0), rng.uniform(0, np.pi)
        x, y = a * np.cos(t), b * np.sin(t)
    else:
        n = int(rng.integers(5, 10))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = radius * rng.uniform(0.55, 1.0, n)
        x, y, rot = r * np.cos(t), r * np.sin(t), 0.0
    xr, yr = cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)
    return list(zip(xr.tolist(), yr.tolist()))


def _object_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """One object's binary mask (H, W): ellipse, star polygon or blob; maybe a hole, maybe a thin limb."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    side = min(h, w)
    radius = side * rng.uniform(0.14, 0.3)
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    kind = int(rng.integers(3))
    if kind < 2:
        draw.polygon(_shape_polygon(rng, cx, cy, radius, kind), fill=255)
    else:  # blob: a union of overlapping discs
        for _ in range(int(rng.integers(3, 6))):
            r = radius * rng.uniform(0.4, 0.7)
            ox, oy = cx + rng.uniform(-0.6, 0.6) * radius, cy + rng.uniform(-0.6, 0.6) * radius
            draw.ellipse([ox - r, oy - r, ox + r, oy + r], fill=255)
    if rng.random() < 0.3:  # thin part: a limb of 2-4 px leaving the body
        angle, length = rng.uniform(0, 2 * np.pi), radius * rng.uniform(1.2, 1.9)
        end = (cx + length * np.cos(angle), cy + length * np.sin(angle))
        draw.line([(cx, cy), end], fill=255, width=int(rng.integers(2, 5)))
    if rng.random() < 0.3:  # hole
        r = radius * rng.uniform(0.2, 0.35)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=0)
    return np.asarray(canvas, dtype=np.float32) / 255.0


def render(seed: int, split: str, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Render one sample.

    Args:
        seed: the data set's seed.
        split: ``train``, ``val`` or ``test`` (separate streams, so the splits never share an image).
        index: the sample's index.
        size: ``(H, W)``.

    Returns:
        ``image`` float32 ``(H, W, 3)`` in [0, 1] and ``mask`` float32 ``(H, W)`` in {0, 1}.

    Example:
        >>> img, mask = render(0, "train", 3, (64, 64))
        >>> img.shape, mask.shape, set(np.unique(mask)) <= {0.0, 1.0}
        ((64, 64, 3), (64, 64), True)
    """
    h, w = size
    rng = np.random.default_rng([seed, _SPLITS[split], index])
    bg_colour = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    image = bg_colour + 0.22 * _smooth_noise(rng, h, w, int(rng.integers(3, 7)), 3)
    image += 0.06 * _texture(rng, h, w)
    # Clutter: small shapes, mostly background-like colours, a few in arbitrary (possibly object-like) colours.
    clutter = Image.new("RGB", (w, h))
    clutter_mask = Image.new("L", (w, h), 0)
    draw_c, draw_m = ImageDraw.Draw(clutter), ImageDraw.Draw(clutter_mask)
    for _ in range(int(rng.integers(4, 11))):
        colour = rng.uniform(0, 1, 3) if rng.random() < 0.35 else np.clip(bg_colour + rng.normal(0, 0.18, 3), 0, 1)
        fill = tuple(int(255 * c) for c in colour)
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        s = min(h, w) * rng.uniform(0.03, 0.1)
        if rng.random() < 0.5:
            box = [x0 - s, y0 - s * rng.uniform(0.3, 1), x0 + s, y0 + s * rng.uniform(0.3, 1)]
            if rng.random() < 0.5:
                draw_c.rectangle(box, fill=fill)
                draw_m.rectangle(box, fill=255)
            else:
                draw_c.ellipse(box, fill=fill)
                draw_m.ellipse(box, fill=255)
        else:
            end = (x0 + rng.uniform(-3, 3) * s, y0 + rng.uniform(-3, 3) * s)
            width = int(rng.integers(1, 3))
            draw_c.line([(x0, y0), end], fill=fill, width=width)
            draw_m.line([(x0, y0), end], fill=255, width=width)
    cm = np.asarray(clutter_mask, dtype=np.float32)[..., None] / 255.0
    image = image * (1 - cm) + np.asarray(clutter, dtype=np.float32) / 255.0 * cm
    # Salient objects: a colour far enough from the background, with their own texture and shading.
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 4)) if rng.random() < 0.5 else 1):
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        while np.linalg.norm(colour - bg_colour) < 0.45:
            colour = rng.uniform(0, 1, 3).astype(np.float32)
        obj = _object_mask(rng, h, w)[..., None]
        appearance = colour + rng.uniform(0.05, 0.15) * _texture(rng, h, w) + 0.08 * _smooth_noise(rng, h, w, 3, 3)
        image = image * (1 - obj) + appearance * obj
        mask = np.maximum(mask, obj[..., 0])
    # Global lighting gradient and sensor noise.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gradient = rng.uniform(-0.15, 0.15) * (xx / w - 0.5) + rng.uniform(-0.15, 0.15) * (yy / h - 0.5)
    image = image + gradient[..., None] + rng.normal(0, 0.02, (h, w, 3)).astype(np.float32)
    return np.clip(image, 0, 1).astype(np.float32), (mask > 0.5).astype(np.float32)


class SyntheticSOD(Dataset):
    """``length`` procedural samples of one split; items as :class:`~sod_lightning.data.folders.FolderDataset`'s.

    Args:
        length: number of samples.
        image_size: ``(H, W)``.
        seed: the data set's seed (same seed, same images).
        split: ``train``, ``val`` or ``test``.
        keep_original: add ``mask_orig`` (equal to ``mask``: synthetic images have no other resolution).
    """

    def __init__(
        self, length: int, image_size: tuple[int, int], seed: int = 0, split: str = "train", keep_original: bool = False
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"synthetic split '{split}' is unknown; use one of {', '.join(_SPLITS)}.")
        if length < 1:
            raise ValueError(f"data.synthetic.{split}_size must be at least 1, got {length}.")
        self.length, self.image_size, self.seed, self.split = length, tuple(image_size), seed, split
        self.keep_original = keep_original
        self.name = "synthetic"

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        image, mask = render(self.seed, self.split, index, self.image_size)
        mask_t = torch.from_numpy(mask)[None]
        item = {"image": torch.from_numpy(image).permute(2, 0, 1).contiguous(), "mask": mask_t, "name": f"{self.split}_{index:05d}"}
        if self.keep_original:
            item["mask_orig"] = mask_t
        return item
