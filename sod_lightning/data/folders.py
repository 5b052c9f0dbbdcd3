"""Image/mask folder data sets: pairing by file stem, the field's standard layouts, and checks with clear errors."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from sod_lightning.data.imageio import IMAGE_EXTENSIONS, BadFileError, image_size, read_image, read_mask

log = logging.getLogger(__name__)

# (image folder, mask folder) relative to a data set's root, per layout. ``{name}`` is the root's folder name, so
# ``DUTS-TR`` resolves to ``DUTS-TR/DUTS-TR-Image`` + ``DUTS-TR/DUTS-TR-Mask``.
LAYOUTS: dict[str, dict[str, tuple[str, str]]] = {
    "duts": {"train": ("{name}-Image", "{name}-Mask"), "test": ("{name}-Image", "{name}-Mask")},
    "images_masks": {"train": ("images", "masks"), "test": ("images", "masks")},
    "image_gt": {"train": ("Image", "GT"), "test": ("Image", "GT")},
    "split_label": {"train": ("train_image", "train_label"), "test": ("test_image", "test_label")},
}


@dataclass(frozen=True)
class SetSpec:
    """A named set of image/mask pairs."""

    name: str
    image_dir: Path
    mask_dir: Path


def resolve_set(spec: Mapping, split: str, key: str) -> SetSpec:
    """Turn ``{name, image_dir, mask_dir}`` or ``{name, root, layout}`` into folders.

    Args:
        spec: the set's config. ``layout`` is one of ``LAYOUTS`` or ``auto`` (the first layout whose folders exist).
        split: ``train`` or ``test`` (val and test sets use the test folders of split layouts).
        key: the config key, for error messages (``data.train[0]``).
    """
    spec = dict(spec)
    name = spec.get("name")
    if not name:
        raise ValueError(f"{key} has no 'name'. Every set needs one: {{name: ECSSD, root: /data/ECSSD}}.")
    if spec.get("image_dir") and spec.get("mask_dir"):
        return SetSpec(str(name), Path(spec["image_dir"]), Path(spec["mask_dir"]))
    root = spec.get("root")
    if not root:
        raise ValueError(
            f"{key} (set '{name}') needs either image_dir and mask_dir, or root (with layout: "
            f"{', '.join(LAYOUTS)} or auto)."
        )
    root = Path(root)
    layout = spec.get("layout", "auto")
    candidates = list(LAYOUTS) if layout == "auto" else [layout]
    if layout != "auto" and layout not in LAYOUTS:
        raise ValueError(f"{key}.layout='{layout}' is unknown; use one of {', '.join(LAYOUTS)} or auto.")
    tried = []
    for lay in candidates:
        img_rel, mask_rel = LAYOUTS[lay]["train" if split == "train" else "test"]
        img_dir, mask_dir = root / img_rel.format(name=root.name), root / mask_rel.format(name=root.name)
        if img_dir.is_dir() and mask_dir.is_dir() or layout != "auto":
            return SetSpec(str(name), img_dir, mask_dir)
        tried.append(f"{lay}: {img_dir.relative_to(root)} + {mask_dir.relative_to(root)}")
    raise FileNotFoundError(
        f"{key} (set '{name}'): no known layout found under '{root}' (tried {'; '.join(tried)}). Pass image_dir and "
        "mask_dir explicitly, or fix root."
    )


def _list_images(folder: Path, what: str, key: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{key}: {what} folder '{folder}' does not exist. Check the path (relative paths are taken from the "
            "directory you run from) or the set's layout."
        )
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
            if p.stem in files:
                raise ValueError(
                    f"{key}: '{files[p.stem].name}' and '{p.name}' in '{folder}' share the stem '{p.stem}', so the "
                    "pairing with masks is ambiguous. Remove or rename one of them."
                )
            files[p.stem] = p
    if not files:
        raise FileNotFoundError(
            f"{key}: {what} folder '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)}). Point the set at the "
            "folder that holds the files."
        )
    return files


def _names(stems: list[str]) -> str:
    return ", ".join(stems[:20]) + (f" ... (+{len(stems) - 20} more)" if len(stems) > 20 else "")


def pair_files(spec: SetSpec, key: str, on_bad_sample: str = "error") -> list[tuple[Path, Path]]:
    """Pair images and masks by stem and check every pair (readable, same size).

    Args:
        spec: the set.
        key: its config key, for messages.
        on_bad_sample: ``error`` raises on the first problem; ``skip`` logs each bad or unpaired file, leaves it out
            and logs the total.

    Returns:
        ``(image, mask)`` paths sorted by stem.
    """
    if on_bad_sample not in ("error", "skip"):
        raise ValueError(f"data.on_bad_sample='{on_bad_sample}' is unknown; use error or skip.")
    images = _list_images(spec.image_dir, "image", key)
    masks = _list_images(spec.mask_dir, "mask", key)
    no_mask = sorted(set(images) - set(masks))
    no_image = sorted(set(masks) - set(images))
    skipped: list[str] = []
    if no_mask or no_image:
        msg = (
            f"{key} (set '{spec.name}'): {len(no_mask)} images without a mask [{_names(no_mask)}] and {len(no_image)} "
            f"masks without an image [{_names(no_image)}] (pairs are matched by file stem across extensions, "
            f"images in '{spec.image_dir}', masks in '{spec.mask_dir}')."
        )
        if on_bad_sample == "error":
            raise ValueError(msg + " Add the missing files or remove the strays, or set data.on_bad_sample=skip.")
        for stem in no_mask + no_image:
            log.warning("%s: skipping '%s' (no partner file)", key, (images.get(stem) or masks[stem]))
        skipped += no_mask + no_image
    pairs = []
    for stem in sorted(set(images) & set(masks)):
        try:
            img_hw, mask_hw = image_size(images[stem]), image_size(masks[stem])
            if img_hw != mask_hw:
                raise BadFileError(
                    f"{key} (set '{spec.name}'): mask '{masks[stem]}' is {mask_hw[1]}x{mask_hw[0]} but its image "
                    f"'{images[stem]}' is {img_hw[1]}x{img_hw[0]} (width x height). Masks must have their image's "
                    "size: re-export the mask at the image's size, or set data.on_bad_sample=skip."
                )
        except BadFileError as err:
            if on_bad_sample == "error":
                raise
            log.warning("%s: skipping '%s': %s", key, stem, err)
            skipped.append(stem)
            continue
        pairs.append((images[stem], masks[stem]))
    if skipped:
        log.warning("%s (set '%s'): skipped %d files in total, kept %d pairs.", key, spec.name, len(skipped), len(pairs))
    if not pairs:
        raise ValueError(f"{key} (set '{spec.name}'): no usable image/mask pairs remain. Check the folders.")
    return pairs


class FolderDataset(Dataset):
    """Image/mask pairs from folders, resized to ``image_size``; evaluation items keep the original-size mask.

    Items are ``{"image": (3, H, W) float [0, 1], "mask": (1, H, W) float [0, 1], "name": str}``, plus
    ``"mask_orig": (1, h, w)`` at the file's resolution when ``keep_original`` is true.
    """

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        image_size: tuple[int, int],
        keep_original: bool = False,
        name: str = "",
    ) -> None:
        self.pairs, self.image_size, self.keep_original, self.name = pairs, tuple(image_size), keep_original, name

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        img_path, mask_path = self.pairs[index]
        img = read_image(img_path)
        mask = read_mask(mask_path)
        if mask.shape != (img.height, img.width):
            raise BadFileError(
                f"mask '{mask_path}' is {mask.shape[1]}x{mask.shape[0]} but its image '{img_path}' is "
                f"{img.width}x{img.height} after EXIF orientation. Re-export the mask at the image's size."
            )
        h, w = self.image_size
        image = torch.from_numpy(np.asarray(img.resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0)
        small = Image.fromarray(mask).resize((w, h), Image.BILINEAR)
        item = {
            "image": image.permute(2, 0, 1).contiguous(),
            "mask": torch.from_numpy(np.clip(np.asarray(small, dtype=np.float32), 0.0, 1.0))[None],
            "name": img_path.stem,
        }
        if self.keep_original:
            item["mask_orig"] = torch.from_numpy(mask)[None]
        return item
