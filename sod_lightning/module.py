"""SODModule: the one LightningModule that trains any model with any loss and evaluates the SOD metrics."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn

from sod_lightning.config import to_plain
from sod_lightning.metrics import SODMetrics

log = logging.getLogger(__name__)

# Metrics cheap enough to compute at every validation epoch; the test runs the full set.
VAL_METRICS = ("mae", "maxf", "sm")


class SODModule(pl.LightningModule):
    """Network x loss x optimiser x metrics, all built from plain config dicts.

    The network, loss, optimiser and scheduler are given as ``_target_`` configs and instantiated here, so a
    checkpoint's hyper-parameters are enough to rebuild the module (:meth:`load_from_checkpoint` needs no Hydra).

    Args:
        model: config of the network (``conf/model``); it returns a list of logit maps, the final one first.
        loss: config of the criterion (``conf/loss``): ``criterion(outputs, target) -> {"loss": ..., ...}``.
        optimizer: partial config of a ``torch.optim`` optimiser (``_partial_: true``).
        scheduler: partial config of an LR scheduler, or ``None``.
        scheduler_interval: ``epoch`` or ``step``.
        channels_last: run the network in channels-last memory format (faster convolutions on GPUs with AMP).
        val_metrics: metric names computed at each validation epoch (``val/<name>``).
        test_metrics: metric names computed at test time (``test/<set>/<name>``); ``None`` for all.
    """

    def __init__(
        self,
        model: Mapping,
        loss: Mapping,
        optimizer: Mapping,
        scheduler: Mapping | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        val_metrics: Sequence[str] = VAL_METRICS,
        test_metrics: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({k: to_plain(v) for k, v in locals().items() if k not in ("self", "__class__")})
        self.net: nn.Module = instantiate(self.hparams.model)
        self.criterion: nn.Module = instantiate(self.hparams.loss)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.val_metrics = SODMetrics(metrics=list(val_metrics))
        self.test_metrics = nn.ModuleDict()
        self.test_set_names: list[str] = []
        self.test_results: dict[str, dict[str, Any]] = {}

    # ----------------------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> list[Tensor]:
        """Logit maps of ``(B, 3, H, W)`` normalised images, the final prediction first."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        check = getattr(self.net, "check_input_size", None)
        if check is not None:
            sizes = {tuple(dm.input_size)} | ({tuple(dm.train_input_size)} if stage == "fit" else set())
            for h, w in sorted(sizes):
                try:
                    check(h, w)
                except ValueError as err:
                    raise ValueError(
                        f"data.image_size/data.crop_size give the model an input of {h}x{w}, which "
                        f"model={type(self.net).__name__} does not accept: {err}"
                    ) from err
        if stage == "test" or stage is None:
            self.test_set_names = list(dm.test_set_names)
            metrics = self.hparams.test_metrics
            self.test_metrics = nn.ModuleDict(
                {
                    _key(name): SODMetrics(metrics=list(metrics)) if metrics else SODMetrics()
                    for name in self.test_set_names
                }
            ).to(self.device)

    # ----------------------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        outputs = self(batch["image"])
        losses = self.criterion(outputs, batch["mask"])
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The training loss became {loss.item()} at epoch {self.current_epoch}, global step "
                f"{self.global_step} (batch {batch_idx}). The last good checkpoint is kept in the run's checkpoints "
                "folder; lower optimizer.lr, enable gradient clipping (trainer.gradient_clip_val=1.0) or use "
                "precision 32 to find the cause, then resume with ckpt_path=last."
            )
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in losses.items():
            if k != "loss":
                self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def _update_metrics(self, metric: SODMetrics, batch: dict) -> Tensor:
        """Resize the final prediction to each mask's original size and update; returns the input-size probs."""
        probs = torch.sigmoid(self(batch["image"])[0].float())
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, m in enumerate(batch["mask_orig"]):
            groups[tuple(m.shape[-2:])].append(i)
        for size, idx in groups.items():
            p = probs[idx]
            if tuple(p.shape[-2:]) != size:
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            metric.update(p.clamp(0, 1), torch.stack([batch["mask_orig"][i] for i in idx]).to(p))
        return probs

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        return self._update_metrics(self.val_metrics, batch)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({f"val/{k}": v for k, v in values.items() if v.ndim == 0}, prog_bar=True, sync_dist=False)
        self.val_metrics.reset()

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return self._update_metrics(self.test_metrics[_key(self.test_set_names[dataloader_idx])], batch)

    def on_test_epoch_end(self) -> None:
        self.test_results = {}
        for name in self.test_set_names:
            metric = self.test_metrics[_key(name)]
            values = metric.compute()
            self.test_results[name] = {k: v.detach().cpu() for k, v in values.items()}
            self.log_dict({f"test/{name}/{k}": v for k, v in values.items() if v.ndim == 0}, add_dataloader_idx=False)
            metric.reset()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        return torch.sigmoid(self(batch["image"])[0])

    # ----------------------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict:
        # The configs are partial (``_partial_: true``): instantiate gives a factory that takes what only exists here.
        optimizer = instantiate(self.hparams.optimizer)([p for p in self.parameters() if p.requires_grad])
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler = instantiate(self.hparams.scheduler)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": self.hparams.scheduler_interval}}


def _key(name: str) -> str:
    """ModuleDict keys cannot contain dots."""
    return name.replace(".", "_")
