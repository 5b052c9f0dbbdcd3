"""Prediction entry point: masks, RGBA cut-outs, new backgrounds and sky replacement for an image or a folder.

``python -m sod_lightning.predict ckpt=PATH input=PATH output=DIR [key=value ...]`` (config: ``conf/predict.yaml``).

For every image it writes, under ``output``:

* ``masks/<stem>.png``: the predicted mask, 8-bit grey at the image's original size (always);
* ``cutouts/<stem>.png`` with ``cutout=true``: RGBA, the image with the mask as alpha (times the input's own alpha);
* ``composites/<stem>.png`` with ``background=<colour or image>``: the foreground over a colour (``white``,
  ``'#00b140'``, ``[0,177,64]``) or an image resized to cover the photo;
* ``sky/<stem>.png`` with ``sky=<image>``: the mask's region (the sky, for a model trained on sky masks) replaced by
  the new sky with the soft mask as blend weight; ``refine=true`` first snaps the mask's edges to the photo with a
  guided filter (``refine_radius``, ``refine_eps``); ``sky_invert=true`` replaces everything *outside* the mask
  instead (for a salient-object model, whose mask is the foreground).

Images are read with their EXIF orientation; greyscale, palette, RGBA and 16-bit files are converted to 8-bit RGB
for the network. Folders are processed in batches (``batch_size``) with a progress bar. A file that cannot be read
is reported, skipped and listed at the end, and the exit status is then 1. Existing outputs are never overwritten
unless ``overwrite=true``: the run stops before writing anything and lists them.

From a fresh clone, on the shared sky photos (``../shared/data/sky``)::

    pip install -e ".[dev]"
    # 1. teach a small U-Net what sky is (the sky masks are the targets), a few minutes on a CPU:
    python -m sod_lightning data=folders data.image_size=224 data.crop_size=null logger=csv \\
        'data.train=[{name: sky, root: ../shared/data/sky, layout: images_masks}]' \\
        'data.test=[{name: sky, root: ../shared/data/sky, layout: images_masks}]' \\
        trainer.max_epochs=30 hydra.run.dir=outputs/sky
    # 2. masks, cut-outs, a green-screen composite and a new sky for every photo:
    python -m sod_lightning.predict ckpt=outputs/sky input=../shared/data/sky/images output=predictions/sky \\
        cutout=true 'background="#00b140"' sky=../shared/data/PASCAL-S/images/1.jpg refine=true
    # published weights (https://github.com/xuebinqin/U-2-Net): the model name and the state dict
    python -m sod_lightning.predict model=u2netp weights=u2netp.pth input=../shared/data/sky/images \\
        output=predictions/u2netp cutout=true
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from sod_lightning import compose
from sod_lightning.data.imageio import IMAGE_EXTENSIONS, to_rgb
from sod_lightning.inference import CONFIG_DIR, LoadedModel, load_model

log = logging.getLogger(__name__)

# Output kind -> sub-folder of ``output``.
OUTPUT_FOLDERS = {"mask": "masks", "cutout": "cutouts", "composite": "composites", "sky": "sky"}


@dataclass
class PredictSummary:
    """What a prediction run did.

    Attributes:
        written: output kind -> files written.
        failed: ``(input file, reason)`` for every input that could not be read (skipped).
        ignored: entries of an input folder that are not images by extension (folders, other files).
    """

    written: dict[str, list[Path]] = field(default_factory=dict)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def read_input(path: Path) -> tuple[Image.Image, np.ndarray | None]:
    """An input photo as 8-bit RGB with EXIF orientation applied, and its own alpha channel if it has one.

    Args:
        path: the image file.

    Returns:
        ``(rgb, alpha)``: ``alpha`` is float32 ``(H, W)`` in [0, 1], or ``None`` for opaque modes.

    Raises:
        ValueError: the file cannot be decoded (its message is the reason listed at the end of the run).
    """
    try:
        img = Image.open(path)
        img.load()
        img = ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot be read as an image ({type(err).__name__}: {err})") from err
    alpha = None
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info):
        alpha = np.asarray(img.convert("RGBA").getchannel("A"), dtype=np.float32) / 255.0
    return to_rgb(img), alpha


class _ImageFiles(Dataset):
    """Decodes inputs (in DataLoader workers when ``num_workers > 0``); a failure is returned, not raised."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.files[index]
        try:
            rgb, alpha = read_input(path)
        except ValueError as err:
            return {"path": path, "error": str(err)}
        return {"path": path, "image": rgb, "alpha": alpha, "error": None}


def list_inputs(input_path: str | Path) -> tuple[list[Path], list[Path]]:
    """The images to process: the file itself, or a folder's image files (by extension, not recursive).

    Returns:
        ``(images, ignored)``: images sorted by name; ``ignored`` the folder's other entries (reported).

    Raises:
        FileNotFoundError: the path does not exist or the folder holds no images.
        ValueError: two images of the folder share a stem (their outputs would collide).
    """
    path = Path(input_path)
    if path.is_file():
        return [path], []
    if not path.is_dir():
        raise FileNotFoundError(
            f"input={input_path}: no such file or folder. Pass an image file or a folder of images "
            f"({', '.join(IMAGE_EXTENSIONS)}); relative paths are taken from the directory you run from."
        )
    entries = sorted(path.iterdir())
    images = [p for p in entries if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    ignored = [p for p in entries if p not in images]
    if not images:
        raise FileNotFoundError(
            f"input={input_path} holds no images ({', '.join(IMAGE_EXTENSIONS)}; sub-folders are not searched). "
            "Point input at the folder that holds the image files."
        )
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise ValueError(
                f"input={input_path}: '{stems[p.stem].name}' and '{p.name}' share the stem '{p.stem}', so both would "
                f"write {p.stem}.png. Rename one of them or move it to another folder."
            )
        stems[p.stem] = p
    return images, ignored


def plan_outputs(images: list[Path], output: Path, kinds: list[str], overwrite: bool) -> dict[Path, dict[str, Path]]:
    """Every output path of every image; refuses to start when any exists, unless ``overwrite``.

    Raises:
        FileExistsError: listing the existing outputs (up to 10).
    """
    plan = {p: {k: output / OUTPUT_FOLDERS[k] / f"{p.stem}.png" for k in kinds} for p in images}
    if not overwrite:
        existing = [o for outs in plan.values() for o in outs.values() if o.exists()]
        if existing:
            shown = ", ".join(str(p) for p in existing[:10]) + (f" ... (+{len(existing) - 10} more)"
                                                                 if len(existing) > 10 else "")
            raise FileExistsError(
                f"output={output}: {len(existing)} of the outputs exist already [{shown}]; nothing was written. "
                "Choose another output folder, delete them, or pass overwrite=true to replace them."
            )
    return plan


def _collate(items: list[dict]) -> list[dict]:
    return items


def predict(cfg: DictConfig, model: LoadedModel | None = None) -> PredictSummary:
    """Run the prediction described by ``cfg`` (see ``conf/predict.yaml``).

    Args:
        cfg: the composed config.
        model: an already loaded network (tests, notebooks); by default it is loaded from ``cfg``.

    Returns:
        The summary: files written per kind, unreadable inputs, ignored folder entries.
    """
    if cfg.get("input") is None or cfg.get("output") is None:
        raise ValueError("input= and output= are required: python -m sod_lightning.predict ckpt=... input=photos "
                         "output=predictions")
    if int(cfg.batch_size) < 1:
        raise ValueError(f"batch_size={cfg.batch_size}: must be at least 1.")
    images, ignored = list_inputs(cfg.input)
    for p in ignored:
        log.warning("input=%s: ignoring '%s' (not an image file by extension; sub-folders are not searched).",
                    cfg.input, p.name)
    background = compose.load_background(_plain(cfg.background), "background") if cfg.background is not None else None
    sky = compose.load_background(_plain(cfg.sky), "sky") if cfg.sky is not None else None
    kinds = ["mask"] + ["cutout"] * bool(cfg.cutout) + ["composite"] * (background is not None) + ["sky"] * (sky is not None)
    output = Path(cfg.output)
    plan = plan_outputs(images, output, kinds, bool(cfg.overwrite))
    if model is None:
        model = load_model(
            ckpt=cfg.get("ckpt"),
            model=_plain(cfg.get("model")),
            weights=cfg.get("weights"),
            image_size=_plain(cfg.get("image_size")),
            normalization=cfg.get("normalization"),
            device=cfg.get("device", "cpu"),
        )
    log.info("Predicting %d images with %s (%s) at %s, normalisation %s.", len(images), model.name, model.source,
             "x".join(map(str, model.input_size)), model.normalization)
    for k in kinds:
        (output / OUTPUT_FOLDERS[k]).mkdir(parents=True, exist_ok=True)

    summary = PredictSummary(written={k: [] for k in kinds}, ignored=ignored)
    loader = DataLoader(_ImageFiles(images), batch_size=int(cfg.batch_size), num_workers=int(cfg.num_workers),
                        collate_fn=_collate)
    from rich.progress import Progress

    with Progress(transient=False) as progress:
        task = progress.add_task("predicting", total=len(images))
        for batch in loader:
            for item in batch:
                if item["error"]:
                    log.error("Skipping '%s': %s", item["path"], item["error"])
                    summary.failed.append((item["path"], item["error"]))
            good = [item for item in batch if not item["error"]]
            if good:
                masks = model.predict([item["image"] for item in good])
                for item, mask in zip(good, masks):
                    _write(item, mask, plan[item["path"]], cfg, background, sky, summary)
            progress.advance(task, len(batch))
    return summary


def _write(item: dict, mask: np.ndarray, outputs: dict[str, Path], cfg: DictConfig, background: Any, sky: Any,
           summary: PredictSummary) -> None:
    """Write the outputs of one image."""
    image = np.asarray(item["image"], dtype=np.uint8)
    Image.fromarray(compose.mask_to_uint8(mask), mode="L").save(outputs["mask"])
    summary.written["mask"].append(outputs["mask"])
    # The input's own transparency stays transparent in the cut-out and the composite.
    alpha = mask if item["alpha"] is None else mask * item["alpha"]
    if "cutout" in outputs:
        Image.fromarray(compose.cutout(image, alpha), mode="RGBA").save(outputs["cutout"])
        summary.written["cutout"].append(outputs["cutout"])
    if "composite" in outputs:
        bg = compose.cover(background, image.shape[:2]) if isinstance(background, Image.Image) else background
        Image.fromarray(compose.composite(image, alpha, bg), mode="RGB").save(outputs["composite"])
        summary.written["composite"].append(outputs["composite"])
    if "sky" in outputs:
        # A salient-object model's mask is the foreground: with sky_invert the rest of the photo is the "sky".
        sky_alpha = 1.0 - mask if cfg.sky_invert else mask
        if cfg.refine:
            sky_alpha = compose.refine_mask(image, sky_alpha, int(cfg.refine_radius), float(cfg.refine_eps))
        new_sky = compose.cover(sky, image.shape[:2]) if isinstance(sky, Image.Image) else \
            np.broadcast_to(np.asarray(sky, np.uint8), image.shape).copy()
        Image.fromarray(compose.sky_replace(image, sky_alpha, new_sky), mode="RGB").save(outputs["sky"])
        summary.written["sky"].append(outputs["sky"])


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def report(summary: PredictSummary, output: str | Path) -> int:
    """Log what was written and list the unreadable files; returns the exit status (1 if any file failed)."""
    counts = ", ".join(f"{len(v)} {OUTPUT_FOLDERS[k]}" for k, v in summary.written.items())
    log.info("Wrote %s under %s.", counts, output)
    if summary.ignored:
        log.warning("%d entries of the input folder were not images and were ignored: %s", len(summary.ignored),
                    ", ".join(p.name for p in summary.ignored))
    if summary.failed:
        lines = "\n".join(f"  {p}: {reason}" for p, reason in summary.failed)
        log.error("%d files could not be read and were skipped (replace or delete them):\n%s", len(summary.failed),
                  lines)
        return 1
    return 0


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def main(cfg: DictConfig) -> None:
    """Hydra entry point; exits with status 1 when any input could not be read."""
    summary = predict(cfg)
    status = report(summary, cfg.output)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
