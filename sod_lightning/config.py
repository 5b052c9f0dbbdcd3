"""Config helpers shared by the entry points and the modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(cfg: Any) -> Any:
    """Resolve an OmegaConf node into plain dicts and lists; other values pass through.

    Checkpoints store hyper-parameters, and ``torch.load(weights_only=True)`` refuses OmegaConf objects, so
    everything saved must be plain data.
    """
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, dict):
        return {k: to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(to_plain(v) for v in cfg)
    return cfg


def sweep_group() -> str | None:
    """The wandb group of a multirun's jobs: ``multirun-<date>_<time>`` from the sweep folder; None in a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None
    parts = Path(hc.sweep.dir).parts
    return "multirun-" + "_".join(parts[-2:]) if len(parts) >= 2 else f"multirun-{parts[-1]}"


OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
