"""Shared test helpers: composing the real Hydra config, tiny overrides, paths to the shared data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"

# Small enough for CI's two cores: a few steps on 64x64 synthetic images.
TINY = [
    "data.image_size=64",
    "data.synthetic.train_size=32",
    "data.synthetic.val_size=8",
    "data.synthetic.test_size=8",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "logger=csv",
]

# Honour OMP_NUM_THREADS (one thread per process is much faster when several processes share two cores).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", min(2, os.cpu_count() or 1))))


def compose_config(overrides: Sequence[str] = (), output_dir: Path | None = None):
    """The config ``python -m sod_lightning <overrides>`` would run, with ``${hydra:...}`` resolvable.

    ``paths.output_dir`` points at ``output_dir`` (a test's tmp folder) instead of a dated run folder.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    if output_dir is not None:
        cfg.hydra.runtime.output_dir = str(output_dir)
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: the job's config has no hydra node (HydraConfig holds it)
    return cfg


def shared_data(name: str) -> Path:
    """A folder of ``../shared/data``, or skip: the photos are research-only and not part of the repository."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real photographs live in ../shared beside the repository, not in it")
    return path


# One epoch of two 64x64 batches with the real training function: a checkpoint with every key a run writes.
TRAIN_BRIEFLY = [
    "trainer=debug",
    "logger=none",
    "test=false",
    "callbacks.early_stopping=null",
    "data.image_size=64",
    "data.synthetic.train_size=16",
    "data.synthetic.val_size=4",
    "data.synthetic.test_size=4",
    "data.batch_size=8",
    "data.eval_batch_size=4",
]


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """A training run folder holding checkpoints/best.ckpt and last.ckpt (unet_small, 64 px, 2 steps)."""
    from sod_lightning.train import train

    out = tmp_path_factory.mktemp("run")
    train(compose_config(TRAIN_BRIEFLY, output_dir=out))
    assert (out / "checkpoints" / "best.ckpt").is_file()
    return out
