"""Lightning callbacks of the suite: reproducible epochs, training speed, saved samples and wandb extras."""

from __future__ import annotations

import logging
import time
from pathlib import Path


import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)


class EpochSeed(pl.Callback):
    """Reseed every RNG at the start of each training epoch with ``seed + epoch``.

    The shuffling order, the augmentation and dropout of an epoch then depend only on the seed and the epoch, so a
    run resumed from an epoch-end checkpoint after being killed mid-epoch replays that epoch exactly as the
    uninterrupted run did (Lightning does not restore the global RNG states on resume).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl.seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)


class TrainSpeed(pl.Callback):
    """Training throughput in images per second (forward, backward and optimiser step; data loading included).

    The first ``warmup`` batches of the run are left out (allocator and kernel warm-up).
    """

    def __init__(self, warmup: int = 3) -> None:
        self.warmup = warmup
        self.images = 0
        self.seconds = 0.0
        self._seen = 0
        self._start: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._seen += 1
        if self._start is not None and self._seen > self.warmup:
            if torch.cuda.is_available() and pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            self.seconds += time.perf_counter() - self._start
            self.images += batch["image"].shape[0] * trainer.world_size

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.seconds > 0 else None


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` or ``(1, H, W)`` in [0, 1] to an HWC / HW uint8 array (rounded as PNGs store maps)."""
    arr = (x.detach().float().clamp(0, 1) * 255).round().byte().cpu().numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)


class SaveSamples(pl.Callback):
    """Save input, ground truth and prediction of the first ``num_samples`` images of each test set.

    Files: ``<dirpath>/<test set>/<stem>_image.png`` (the model input, resized to the mask's size),
    ``<stem>_gt.png`` and ``<stem>_pred.png`` at the mask's original size. The comparison report builds its
    qualitative grid from them.
    """

    def __init__(self, dirpath: str, num_samples: int = 8) -> None:
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self._saved: dict[str, int] = {}

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._saved = {}

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.is_global_zero or outputs is None:
            return
        name = pl_module.test_set_names[dataloader_idx]
        done = self._saved.get(name, 0)
        if done >= self.num_samples:
            return
        folder = self.dirpath / name
        folder.mkdir(parents=True, exist_ok=True)
        images = trainer.datamodule.normalize.denormalize(batch["image"])
        for i in range(min(self.num_samples - done, len(batch["name"]))):
            size = tuple(batch["mask_orig"][i].shape[-2:])
            stem = batch["name"][i]
            img = F.interpolate(images[i : i + 1].float(), size=size, mode="bilinear", align_corners=False)[0]
            pred = F.interpolate(outputs[i : i + 1].float(), size=size, mode="bilinear", align_corners=False)[0]
            Image.fromarray(_to_uint8(img)).save(folder / f"{stem}_image.png")
            Image.fromarray(_to_uint8(batch["mask_orig"][i])).save(folder / f"{stem}_gt.png")
            Image.fromarray(_to_uint8(pred)).save(folder / f"{stem}_pred.png")
            done += 1
        self._saved[name] = done


class WandbExtras(pl.Callback):
    """What wandb shows beyond scalars: a prediction panel at each validation, PR curves and a test summary.

    Does nothing unless a ``WandbLogger`` is among the trainer's loggers.
    """

    def __init__(self, num_images: int = 4) -> None:
        self.num_images = num_images

    @staticmethod
    def _wandb(trainer: pl.Trainer):
        from pytorch_lightning.loggers import WandbLogger

        return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        logger = self._wandb(trainer)
        if logger is None or batch_idx != 0 or outputs is None or not trainer.is_global_zero:
            return
        n = min(self.num_images, batch["image"].shape[0])
        images = trainer.datamodule.normalize.denormalize(batch["image"][:n])
        panels = []
        for i in range(n):
            # image | ground truth | prediction, side by side at the model's input size
            gt = batch["mask"][i].expand(3, -1, -1)
            pred = outputs[i].float().expand(3, -1, -1)
            panels.append(_to_uint8(torch.cat([images[i].float(), gt.to(images), pred.to(images)], dim=-1)))
        logger.log_image(key="val/predictions", images=panels,
                         caption=[f"{nm}: image | ground truth | prediction" for nm in batch["name"][:n]],
                         step=trainer.global_step)

    def on_test_end(self, trainer, pl_module) -> None:
        logger = self._wandb(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        import wandb

        summary = {}
        for name, values in getattr(pl_module, "test_results", {}).items():
            summary.update({f"test/{name}/{k}": float(v) for k, v in values.items() if v.ndim == 0})
            if "pr_precision" in values:
                rows = [[float(r), float(p)] for r, p in zip(values["pr_recall"], values["pr_precision"])]
                table = wandb.Table(data=rows, columns=["recall", "precision"])
                logger.experiment.log({f"test/{name}/pr_curve": wandb.plot.line(
                    table, "recall", "precision", title=f"PR curve: {name}")})
        logger.experiment.summary.update(summary)
