"""Training entry point: ``python -m sod_lightning [group=option ...] [key=value ...]``.

Seeds everything, builds the DataModule, the SODModule, callbacks, loggers and the Trainer from the config, fits,
tests the best checkpoint on every test set, writes ``metrics.json`` into the run folder and prints a table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sod_lightning.module import SODModule

log = logging.getLogger(__name__)

# conf/ at the top of the repository (the package is installed in editable mode).
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"

# The metrics printed at the end of a run and written to metrics.json (all are logged).
SUMMARY_METRICS = ("mae", "maxf", "sm", "maxem", "wfm")


def build_module(cfg: DictConfig) -> SODModule:
    """The LightningModule described by ``cfg`` (plain-data hyper-parameters)."""
    return SODModule(
        model=cfg.model,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.get("scheduler"),
        channels_last=cfg.get("channels_last", False),
    )


def _instantiate_dict(group: DictConfig | None) -> list[Any]:
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


def _resolve_ckpt(ckpt_path: str | None, output_dir: Path) -> str | None:
    """``last`` means this run folder's ``checkpoints/last.ckpt``; a run folder means its last checkpoint."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path)
    if ckpt_path == "last":
        path = output_dir / "checkpoints" / "last.ckpt"
    elif path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path}: no checkpoint at '{path}'. Give a .ckpt file, a run folder holding "
            "checkpoints/last.ckpt, or 'last' together with hydra.run.dir=<the interrupted run's folder>."
        )
    return str(path)


def train(cfg: DictConfig) -> dict[str, dict[str, float]]:
    """Fit and test one configuration.

    Returns:
        ``{"<test set>": {"mae": ..., "maxf": ..., ...}}`` plus ``"val"`` with the best validation scores.
    """
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      default_root_dir=str(output_dir))
    for lg in loggers:
        if hasattr(lg, "log_hyperparams"):
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        results = _fit_and_test(cfg, trainer, module, datamodule, output_dir)
    finally:
        _finish_loggers(loggers, trainer)
    if trainer.is_global_zero:
        print(f"Run folder: {output_dir}")
    return results


def _fit_and_test(cfg: DictConfig, trainer: pl.Trainer, module: SODModule, datamodule: pl.LightningDataModule,
                  output_dir: Path) -> dict[str, dict[str, Any]]:
    trainer.fit(module, datamodule=datamodule, ckpt_path=_resolve_ckpt(cfg.get("ckpt_path"), output_dir))
    results: dict[str, dict[str, Any]] = {}
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.best_model_score is not None:
        results["val"] = {"maxf": float(ckpt.best_model_score), "best_checkpoint": ckpt.best_model_path}
    if cfg.get("test", True):
        best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
        trainer.test(module, datamodule=datamodule, ckpt_path=best, weights_only=True)
        for name, values in module.test_results.items():
            results[name] = {k: float(v) for k, v in values.items() if v.ndim == 0}
        if trainer.is_global_zero:
            write_results(module.test_results, output_dir)
            print_table(results, module.test_set_names)
    return results


def _finish_loggers(loggers: list[Any], trainer: pl.Trainer) -> None:
    """Close wandb runs (one per job, so sweeps start a fresh run) and print how to upload offline ones."""
    from pytorch_lightning.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger) and lg._experiment is not None:
            run_dir = Path(lg.experiment.dir).parent
            offline = lg.experiment.settings.mode == "offline" if hasattr(lg.experiment, "settings") else True
            lg.experiment.finish()
            if offline and trainer.is_global_zero:
                print(f"wandb run saved offline; upload it later with: wandb sync {run_dir}")


def write_results(test_results: dict[str, dict[str, Any]], output_dir: Path) -> None:
    """``metrics.json`` (scalars per test set) and ``curves.json`` (PR, F and E curves per test set)."""
    scalars = {name: {k: float(v) for k, v in vals.items() if v.ndim == 0} for name, vals in test_results.items()}
    curves = {name: {k: v.tolist() for k, v in vals.items() if v.ndim == 1} for name, vals in test_results.items()}
    (output_dir / "metrics.json").write_text(json.dumps(scalars, indent=2))
    (output_dir / "curves.json").write_text(json.dumps(curves))


def print_table(results: dict[str, dict[str, float]], test_names: list[str]) -> None:
    """Print the test metrics, one row per test set."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Test metrics")
    table.add_column("test set")
    cols = [m for m in SUMMARY_METRICS if any(m in results.get(n, {}) for n in test_names)]
    for m in cols:
        table.add_column(m, justify="right")
    for name in test_names:
        table.add_row(name, *(f"{results[name][m]:.4f}" for m in cols))
    Console().print(table)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for sweepers."""
    results = train(cfg)
    metric = cfg.get("optimized_metric")
    if metric and metric.startswith("val/") and "val" in results:
        return results["val"].get(metric.split("/", 1)[1])
    return None


if __name__ == "__main__":
    main()
