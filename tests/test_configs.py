"""Every option of every config group composes, and the cheap ones instantiate."""

from __future__ import annotations

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict

from conftest import CONF_DIR, compose_config

GROUPS = ["data", "model", "backbone", "loss", "trainer", "logger", "callbacks", "experiment"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes(tmp_path, group, option):
    cfg = compose_config([f"{group}={option}"], output_dir=tmp_path)
    assert HydraConfig.get().runtime.choices[group] == option
    if group == "loss":
        assert callable(instantiate(cfg.loss))
    elif group in ("trainer",):
        with open_dict(cfg):  # gpu/ddp configs must still build on this CPU-only machine
            cfg.trainer.accelerator = "cpu"
            cfg.trainer.devices = 1
            cfg.trainer.pop("strategy", None)
            cfg.trainer.pop("sync_batchnorm", None)
        assert instantiate(cfg.trainer, logger=False).max_epochs == cfg.trainer.max_epochs
    elif group in ("logger", "callbacks"):
        for node in (cfg[group] or {}).values():
            assert instantiate(node) is not None
    elif group == "data" and option == "synthetic":
        assert instantiate(cfg.data).input_size == (64, 64)


def test_experiment_group_is_the_experiments_folder():
    assert (CONF_DIR / "experiment").resolve() == (CONF_DIR.parent / "experiments").resolve()


def test_data_presets_resolve_their_paths(tmp_path):
    cfg = compose_config(["data=duts", "paths.data_root=/data/sod"], output_dir=tmp_path)
    assert cfg.data.train[0].root == "/data/sod/DUTS-TR"
    assert [s.name for s in cfg.data.test] == ["DUTS-TE", "ECSSD", "HKU-IS", "PASCAL-S", "DUT-OMRON"]
