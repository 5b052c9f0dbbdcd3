"""Config helpers shared by the entry points and the modules."""

from __future__ import annotations

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
