"""Training entry point: ``python -m sod_lightning [group=option ...] [key=value ...]``.

Seeds everything, builds the DataModule, the SODModule, callbacks, loggers and the Trainer from the config, fits,
tests the best checkpoint on every test set, writes ``metrics.json`` into the run folder and prints a table.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

import sod_lightning.config  # noqa: F401  (registers the config resolvers)
from sod_lightning.callbacks import TrainSpeed
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


def train(cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """Fit and test one configuration, recording the run in ``run.json`` whether it succeeds or fails.

    Returns:
        ``{"<test set>": {"mae": ..., "maxf": ..., ...}}`` plus ``"val"`` with the best validation score.
    """
    output_dir = _prepare_output_dir(cfg)
    record = RunRecord(output_dir, cfg)
    try:
        results = _train(cfg, output_dir, record)
    except BaseException as err:
        record.fail(err)
        raise
    record.finish(results)
    return results


def _prepare_output_dir(cfg: DictConfig) -> Path:
    """The run folder; ``ckpt_path=<run folder>`` resumes into that folder rather than a new one."""
    ckpt = cfg.get("ckpt_path")
    if ckpt and ckpt != "last" and Path(ckpt).is_dir():
        with open_dict(cfg):
            cfg.paths.output_dir = str(Path(ckpt).resolve())
        log.info("Resuming into the run folder %s", cfg.paths.output_dir)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def _train(cfg: DictConfig, output_dir: Path, record: RunRecord) -> dict[str, dict[str, Any]]:
    pl.seed_everything(cfg.seed, workers=True)
    _assign_gpu_for_parallel_jobs(cfg)
    previous = record.previous()
    if previous.get("wandb_id") and cfg.get("ckpt_path") and "wandb" in (cfg.get("logger") or {}):
        with open_dict(cfg):  # the resumed run continues the same wandb run
            cfg.logger.wandb.id = previous["wandb_id"]
            cfg.logger.wandb.resume = "allow"
    datamodule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks = _instantiate_dict(cfg.get("callbacks"))
    loggers = _instantiate_dict(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      default_root_dir=str(output_dir))
    record.started(module, loggers, trainer)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    try:
        results = _fit_and_test(cfg, trainer, module, datamodule, output_dir)
    finally:
        _finish_loggers(loggers, trainer)
    speed = next((cb for cb in callbacks if isinstance(cb, TrainSpeed)), None)
    record.speed = speed.images_per_s if speed is not None else None
    if trainer.is_global_zero:
        print(f"Run folder: {output_dir}")
    return results


def _assign_gpu_for_parallel_jobs(cfg: DictConfig) -> None:
    """Under the joblib launcher, single-GPU jobs go to GPU ``job number % GPU count`` instead of all to GPU 0."""
    import torch

    hc = HydraConfig.get() if HydraConfig.initialized() else None
    if hc is None or hc.mode != RunMode.MULTIRUN or "joblib" not in str(hc.runtime.choices.get("hydra/launcher")):
        return
    if cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") and str(cfg.trainer.get("devices")) == "1":
        count = torch.cuda.device_count()
        if count > 1:
            with open_dict(cfg):
                cfg.trainer.devices = [int(hc.job.num) % count]


class RunRecord:
    """``run.json`` in the run folder: what ran, its size and speed, and whether it finished or failed (and why).

    The comparison report reads it; a failed run of a sweep is listed with its error instead of vanishing.
    """

    def __init__(self, output_dir: Path, cfg: DictConfig) -> None:
        self.path = output_dir / "run.json"
        self.speed: float | None = None
        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
        self.data: dict[str, Any] = {
            "name": cfg.get("run_name"),
            "model": choices.get("model"),
            "backbone": choices.get("backbone"),
            "loss": choices.get("loss"),
            "data": choices.get("data"),
            "params": None,
            "train_images_per_s": None,
            "status": "running",
            "error": None,
            "output_dir": str(output_dir),
            "wandb_id": None,
        }
        self._is_zero = True

    def previous(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def started(self, module: SODModule, loggers: list[Any], trainer: pl.Trainer) -> None:
        from pytorch_lightning.loggers import WandbLogger

        self._is_zero = trainer.is_global_zero
        self.data["params"] = sum(p.numel() for p in module.net.parameters())
        for lg in loggers:
            if isinstance(lg, WandbLogger) and trainer.is_global_zero:
                self.data["wandb_id"] = _start_wandb(lg).id
        self._write()

    def finish(self, results: dict[str, dict[str, Any]]) -> None:
        self.data.update(status="ok", train_images_per_s=self.speed, best_val=results.get("val"))
        self._write()

    def fail(self, err: BaseException) -> None:
        self.data.update(status="failed", error=f"{type(err).__name__}: {err}", train_images_per_s=self.speed)
        self._write()

    def _write(self) -> None:
        if self._is_zero:
            self.path.write_text(json.dumps(self.data, indent=2))


def _start_wandb(logger: Any, wait_s: float = 60.0) -> Any:
    """Create the wandb run now (rank 0), waiting while an interrupted process's wandb service still holds its id.

    When a run is killed, its wandb service outlives it for a few seconds with the run id open; resuming into the
    same wandb run at once is refused ("run ID ... is in use"). The wait is bounded and logged.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return logger.experiment
        except Exception as err:  # wandb raises its own ServerResponseError
            if "is in use" not in str(err) or time.monotonic() > deadline:
                raise
            log.warning("wandb run %s is still held by the interrupted process's wandb service; waiting for it "
                        "to close (at most %.0f s).", logger._wandb_init.get("id"), wait_s)
            time.sleep(1.0)


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
            settings = getattr(lg.experiment, "settings", None)
            offline = getattr(settings, "_offline", None) or getattr(settings, "mode", "") in ("offline", "dryrun")
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
    """Hydra entry point; returns ``cfg.optimized_metric`` (for sweepers such as Optuna).

    In a multirun, a job that fails is recorded (``run.json``, the log) and the sweep goes on with the next job; a
    single run that fails exits non-zero.
    """
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        if multirun and needs_own_process(cfg):
            results = run_job_in_subprocess(cfg, hc)
        else:
            results = train(cfg)
    except Exception:
        if not multirun:
            raise
        log.exception("Job %s (%s) failed; the sweep goes on. Its run.json records the error.", hc.job.num,
                      " ".join(hc.overrides.task))
        return None
    metric = cfg.get("optimized_metric")
    if metric and metric.startswith("val/") and results.get("val"):
        return results["val"].get(metric.split("/", 1)[1])
    return None


def needs_own_process(cfg: DictConfig) -> bool:
    """Whether a multirun job must run in a process of its own: DDP that Lightning launches itself.

    Lightning re-launches the extra DDP ranks with the parent's command line, which in a multirun still holds
    ``-m`` (each rank would start the whole sweep), and it kills the parent when a rank fails (which would end the
    sweep). A job in its own process is a plain single run: ranks share its folder, and its failure stays its own.
    Under SLURM the ranks are created by srun, not by Lightning, so no boundary is needed there.
    """
    trainer = cfg.trainer
    strategy = str(trainer.get("strategy", "auto"))
    devices = trainer.get("devices", 1)
    n_devices = len(devices) if isinstance(devices, (list, tuple, ListConfig)) else (
        int(devices) if str(devices).isdigit() else 2 if str(devices) in ("-1", "auto") else 1)
    many = n_devices > 1 or int(trainer.get("num_nodes", 1) or 1) > 1
    return strategy.startswith("ddp") and "spawn" not in strategy and many and "SLURM_NTASKS" not in os.environ


def run_job_in_subprocess(cfg: DictConfig, hc: Any) -> dict[str, dict[str, Any]]:
    """Run this multirun job as ``python -m sod_lightning <its overrides>`` in its own folder and read its results.

    The job's own task overrides are replayed (the sweep's ``-m`` is not), so the child composes the same config,
    and ``hydra.run.dir`` points it at this job's folder.
    """
    output_dir = Path(hc.runtime.output_dir)
    command = [sys.executable, "-m", "sod_lightning", *hc.overrides.task, f"hydra.run.dir={output_dir}"]
    if "wandb" in (cfg.get("logger") or {}) and cfg.logger.wandb.get("group"):
        command.append(f"logger.wandb.group={cfg.logger.wandb.group}")  # keep the sweep's wandb group
    log.info("DDP job in its own process: %s", " ".join(command))
    proc = subprocess.run(command, cwd=hc.runtime.cwd)
    record = output_dir / "run.json"
    if proc.returncode != 0:
        raise RuntimeError(
            f"The DDP job in {output_dir} exited with status {proc.returncode}; see its log and run.json there."
        )
    results: dict[str, dict[str, Any]] = json.loads((output_dir / "metrics.json").read_text())
    best_val = json.loads(record.read_text()).get("best_val") if record.is_file() else None
    if best_val:
        results["val"] = best_val
    return results


if __name__ == "__main__":
    main()
