"""The main command end to end: training, checkpoints, metrics.json, loggers, reloading, folder data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from sod_lightning.module import SODModule
from sod_lightning.train import train

from conftest import TINY, compose_config


def test_main_command_end_to_end(tmp_path):
    """`python -m sod_lightning` through the real CLI, with the default wandb (offline) logger."""
    run_dir = tmp_path / "run"
    overrides = [o for o in TINY if not o.startswith("logger=")] + [f"hydra.run.dir={run_dir}"]
    env = {**{k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "sod_lightning", *overrides], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run_dir / "checkpoints" / "best.ckpt").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == {"synthetic"} and {"mae", "maxf", "sm"} <= set(metrics["synthetic"])
    assert all(0.0 <= v <= 1.0 for v in metrics["synthetic"].values())
    curves = json.loads((run_dir / "curves.json").read_text())
    assert len(curves["synthetic"]["pr_precision"]) == 256
    assert list((run_dir / "wandb").glob("offline-run-*")), "no offline wandb run was written"
    assert "Test metrics" in proc.stdout and "synthetic" in proc.stdout
    assert "wandb sync" in proc.stdout + proc.stderr
    assert str(run_dir) in proc.stdout  # the run folder is printed


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A short real training run: the default recipe (64 px, U-Net, hybrid loss) with fewer images and epochs."""
    out = tmp_path_factory.mktemp("learn")
    cfg = compose_config(
        ["data.synthetic.train_size=640", "data.synthetic.val_size=64", "data.synthetic.test_size=100",
         "trainer.max_epochs=9", "trainer.enable_progress_bar=false",
         "trainer.enable_model_summary=false", "logger=csv"],
        output_dir=out,
    )
    return cfg, train(cfg), out


def test_default_recipe_really_learns(learned):
    _, results, out = learned
    assert results["synthetic"]["maxf"] >= 0.90, results
    assert results["synthetic"]["mae"] < 0.05, results
    assert json.loads((out / "metrics.json").read_text())["synthetic"]["maxf"] == pytest.approx(
        results["synthetic"]["maxf"], abs=0
    )


def test_reloaded_checkpoint_reproduces_test_metrics_exactly(learned):
    from hydra.utils import instantiate

    cfg, results, out = learned
    ckpt = out / "checkpoints" / "best.ckpt"
    torch.load(ckpt, map_location="cpu", weights_only=True)  # plain data only
    module = SODModule.load_from_checkpoint(ckpt, weights_only=True)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(module, datamodule=instantiate(cfg.data))
    again = {k: float(v) for k, v in module.test_results["synthetic"].items() if v.ndim == 0}
    assert again == {k: v for k, v in results["synthetic"].items()}


@pytest.mark.parametrize("logger", ["csv", "tensorboard"])
def test_other_loggers(tmp_path, logger):
    cfg = compose_config([*TINY, "trainer=debug", f"logger={logger}"], output_dir=tmp_path)
    train(cfg)
    if logger == "csv":
        text = (tmp_path / "csv" / "metrics.csv").read_text()
        assert "val/maxf" in text and "test/synthetic/mae" in text
    else:
        assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_seed_makes_runs_reproducible(tmp_path):
    a = train(compose_config([*TINY, "trainer=debug", "seed=7"], output_dir=tmp_path / "a"))
    b = train(compose_config([*TINY, "trainer=debug", "seed=7"], output_dir=tmp_path / "b"))
    assert a["synthetic"] == b["synthetic"]


def test_folder_data_with_mixed_sizes_and_two_test_sets(tmp_path):
    rng = np.random.default_rng(0)
    for name, sizes in {"A": [(40, 30), (30, 40), (64, 48), (48, 64)], "B": [(50, 50), (20, 36)]}.items():
        for i, (w, h) in enumerate(sizes):
            for sub in ("images", "masks"):
                (tmp_path / name / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name / "images" / f"{i}.jpg")
            mask = np.zeros((h, w), np.uint8)
            mask[h // 3 :, : w // 2] = 255
            Image.fromarray(mask).save(tmp_path / name / "masks" / f"{i}.png")
    out = tmp_path / "run"
    cfg = compose_config(
        ["data=folders", f"data.train=[{{name: A, root: {tmp_path / 'A'}}}]",
         f"data.test=[{{name: A, root: {tmp_path / 'A'}}}, {{name: B-set, root: {tmp_path / 'B'}}}]",
         "data.image_size=32", "data.crop_size=null", "data.batch_size=2", "data.num_workers=0", "data.val_split=0.25",
         "trainer=debug", "logger=csv", "trainer.limit_test_batches=null", "trainer.enable_progress_bar=false"],
        output_dir=out,
    )
    results = train(cfg)
    assert set(json.loads((out / "metrics.json").read_text())) == {"A", "B-set"}
    assert {"A", "B-set"} <= set(results)
    text = (out / "csv" / "metrics.csv").read_text()
    assert "test/A/maxf" in text and "test/B-set/sm" in text
