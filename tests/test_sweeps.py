"""Sweeps, DDP, launchers, wandb records, resume and NaN handling, through the real CLI where it matters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import wandb
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sod_lightning.module import SODModule
from sod_lightning.train import train

from conftest import CONF_DIR, TINY, compose_config
from wandb_reader import read_run

TESTS = Path(__file__).resolve().parent


def run_cli(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    # WANDB_SERVICE: an in-process wandb run of an earlier test points children at this process's wandb service,
    # which would keep a killed child's run id "in use"; each command of a user gets its own service.
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(WANDB_MODE="offline", PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run([sys.executable, "-m", "sod_lightning", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _jobs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def test_sweep_records_failures_and_goes_on_and_reports(tmp_path):
    """3 jobs through `-m`: two train, one fails (negative LR); the sweep finishes and the report has both runs."""
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *[o for o in TINY if not o.startswith("logger=")], "trainer=debug",
                    "optimizer.lr=0.002,0.001,-1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _jobs(sweep)
    assert len(jobs) == 3
    runs = [json.loads((j / "run.json").read_text()) for j in jobs]
    assert [r["status"] for r in runs] == ["ok", "ok", "failed"]
    assert "Invalid learning rate" in runs[2]["error"]
    assert all((j / "metrics.json").is_file() for j in jobs[:2]) and not (jobs[2] / "metrics.json").exists()
    assert runs[0]["params"] > 0 and runs[0]["train_images_per_s"] is None or runs[0]["train_images_per_s"] >= 0
    # one wandb group named after the sweep, a run per job, tagged with model, backbone and loss
    groups, seen_ids = set(), set()
    for j in jobs[:2]:
        run = read_run(next((j / "wandb").glob("offline-run-*")))["run"]
        groups.add(run.run_group)
        seen_ids.add(run.run_id)
        assert list(run.tags) == ["unet_small", "mobilenet_v2", "hybrid"]
    assert len(groups) == 1 and next(iter(groups)).startswith("multirun-") and len(seen_ids) == 2
    # the report holds both runs' numbers
    from sod_lightning.report import main as report_main

    out = tmp_path / "report"
    report_main([str(sweep), "--out", str(out)])
    csv_text = next(out.glob("*.csv")).read_text()
    for j in jobs[:2]:
        maxf = json.loads((j / "metrics.json").read_text())["synthetic"]["maxf"]
        assert f"{maxf:.4f}" in csv_text or f"{maxf:.3f}" in csv_text


def _ddp_args(devices: int = 2) -> list[str]:
    # Evaluation one image per batch: CPU kernels may round differently for other batch shapes, which would move a
    # probability across a byte boundary and blur what is compared here (the metric's exactness under DDP).
    return ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={devices}", "trainer.sync_batchnorm=false",
            "data.synthetic.test_size=7", "data.synthetic.val_size=5", "data.eval_batch_size=1"]


def _single_process_eval(run_dir: Path) -> dict[str, float]:
    cfg = compose_config([*TINY, "data.synthetic.test_size=7", "data.synthetic.val_size=5", "data.eval_batch_size=1"],
                         output_dir=run_dir / "reeval")
    module = SODModule.load_from_checkpoint(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.test(module, datamodule=instantiate(cfg.data))
    return {k: float(v) for k, v in module.test_results["synthetic"].items() if v.ndim == 0}


def test_ddp_single_run_evaluates_like_one_process(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*TINY, *_ddp_args(), f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr  # two processes
    ddp = json.loads((run_dir / "metrics.json").read_text())["synthetic"]
    single = _single_process_eval(run_dir)
    assert ddp.keys() == single.keys()
    for k in ddp:  # 7 test images over 2 ranks: every image counted exactly once
        assert ddp[k] == pytest.approx(single[k], abs=1e-9), k
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith("outputs")) == []  # ranks share the folder


def test_ddp_inside_a_multirun_and_a_failed_ddp_job_does_not_end_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *TINY, *_ddp_args(), "optimizer.lr=0.002,-1", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _jobs(sweep)
    assert len(jobs) == 2  # the ranks did not start sweeps of their own
    assert json.loads((jobs[0] / "run.json").read_text())["status"] == "ok"
    assert json.loads((jobs[1] / "run.json").read_text())["status"] == "failed"
    ddp = json.loads((jobs[0] / "metrics.json").read_text())["synthetic"]
    single = _single_process_eval(jobs[0])
    for k in ddp:
        assert ddp[k] == pytest.approx(single[k], abs=1e-9), k


def test_joblib_launcher_runs_two_jobs_side_by_side(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", *TINY, "trainer=debug", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _jobs(sweep)
    assert [json.loads((j / "run.json").read_text())["status"] for j in jobs] == ["ok", "ok"]


def _compose_with_hydra(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_slurm_and_optuna_compose():
    cfg = _compose_with_hydra(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)
    cfg = _compose_with_hydra(["experiment=optuna_lr"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"optimizer.lr", "loss.loss.ssim_weight", "loss.loss.iou_weight"}
    assert cfg.optimized_metric == "val/maxf"


def test_wandb_offline_run_records_config_metrics_summary_images_and_pr_curve(tmp_path):
    cfg = compose_config([*[o for o in TINY if not o.startswith("logger=")], "trainer.max_epochs=2"],
                         output_dir=tmp_path)
    results = train(cfg)
    wandb.teardown()  # the service closes (flushes) the run file after finish() returns; wait for it
    run = read_run(next((tmp_path / "wandb").glob("offline-run-*")))
    assert run["config"]["model"]["_target_"] == "sod_lightning.models.smp.SMPModel"
    assert run["config"]["seed"] == cfg.seed
    val = [h["val/maxf"] for h in run["history"] if "val/maxf" in h]
    assert len(val) == 2  # per epoch
    assert run["summary"]["test/synthetic/maxf"] == pytest.approx(results["synthetic"]["maxf"], abs=1e-12)
    run_dir = next((tmp_path / "wandb").glob("offline-run-*"))
    # the prediction panel: 4 image | ground truth | prediction strips per validation epoch
    panels = [h for h in run["history"] if h.get("val/predictions/count")]
    assert len(panels) == 2 and all(h["val/predictions/count"] == 4 for h in panels)
    for name in panels[-1]["val/predictions/filenames"]:
        assert (run_dir / "files" / name).is_file()
    # the PR curve: a 256-row table of recall/precision, as logged
    table = next(h for h in run["history"] if "test/synthetic/pr_curve_table/path" in h)
    rows = json.loads((run_dir / "files" / table["test/synthetic/pr_curve_table/path"]).read_text())
    assert rows["columns"] == ["recall", "precision"] and len(rows["data"]) == 256
    assert rows["data"][0][0] == pytest.approx(1.0)  # threshold 0: everything predicted, recall 1
    run_json = json.loads((tmp_path / "run.json").read_text())
    assert run_json["wandb_id"] == run["run"].run_id


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    base = [*[o for o in TINY if not o.startswith("logger=")], "trainer.max_epochs=3", "data.synthetic.train_size=48",
            "data.batch_size=8"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert run_cli([*base, f"hydra.run.dir={straight}"], cwd=tmp_path).returncode == 0
    # 6 steps per epoch: step 8 is in the middle of the second epoch
    proc = run_cli([*base, f"hydra.run.dir={killed}", "+callbacks.kill._target_=sod_test_helpers.KillAtStep",
                    "+callbacks.kill.step=8"], cwd=tmp_path)
    assert proc.returncode != 0 and not (killed / "metrics.json").exists()
    assert (killed / "checkpoints" / "last.ckpt").is_file()
    proc = run_cli([*base, f"hydra.run.dir={tmp_path / 'resume_job'}", f"ckpt_path={killed}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((killed / "metrics.json").read_text())  # written into the interrupted run's folder
    assert resumed == json.loads((straight / "metrics.json").read_text())
    # ... and logged to the same wandb run (offline, each process writes its own folder; `wandb sync` joins them)
    # (the killed process may not have flushed its run record, so the id is read from the folder names)
    ids = [d.name.rsplit("-", 1)[1] for d in sorted((killed / "wandb").glob("offline-run-*"))]
    assert len(ids) == 2 and ids[0] == ids[1] == json.loads((killed / "run.json").read_text())["wandb_id"]
    assert read_run(sorted((killed / "wandb").glob("offline-run-*"))[1])["run"].run_id == ids[0]


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # 32 images / batch 8 = 4 steps per epoch; the 6th loss (step 5, epoch 1) is NaN
    cfg = compose_config([*TINY, "trainer.max_epochs=3", "~loss", "+loss._target_=sod_test_helpers.NaNAfter",
                          "+loss.after=6"], output_dir=tmp_path)
    with pytest.raises(FloatingPointError, match=r"became nan at epoch 1, global step 5"):
        train(cfg)
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 0 and all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "failed"


def test_resume_waits_while_the_killed_runs_wandb_service_holds_the_id():
    from sod_lightning.train import _start_wandb

    class Logger:  # a WandbLogger whose run id is held twice, then free
        _wandb_init = {"id": "abc"}
        tries = 0

        @property
        def experiment(self):
            Logger.tries += 1
            if Logger.tries < 3:
                raise RuntimeError("run ID abc is in use")
            return "run"

    assert _start_wandb(Logger(), wait_s=10) == "run" and Logger.tries == 3

    class Broken(Logger):
        @property
        def experiment(self):
            raise RuntimeError("network unreachable")

    with pytest.raises(RuntimeError, match="network unreachable"):  # other errors are not waited on
        _start_wandb(Broken(), wait_s=10)
