"""The official state dicts of ``tests/fixtures/reference``, rebuilt by the README's weight-fill rules A and B."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "reference"


def spec(name: str) -> dict:
    """``<name>.state_dict.json``: meta and every state-dict key in order with its shape and dtype."""
    return json.loads((REFERENCE / f"{name}.state_dict.json").read_text())


def official_state_dict(name: str, rule: str) -> dict[str, torch.Tensor]:
    """The official state dict of ``name`` filled by rule A or B (fixtures README, verbatim), in float32.

    A fresh generator seeded with the CRC32 of each key name draws float64 values, cast to the tensor's dtype.
    """
    state = {}
    for entry in spec(name)["entries"]:
        key, shape, dtype = entry["key"], tuple(entry["shape"]), getattr(torch, entry["dtype"])
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        if not dtype.is_floating_point:
            state[key] = torch.zeros(shape, dtype=dtype)
            continue
        if key.endswith(".running_var"):
            values = np.abs(rng.standard_normal(shape)) * 0.5 + 0.5
        elif rule == "B" and len(shape) == 1 and key.endswith(".weight"):
            values = 1.0 + rng.standard_normal(shape) * 0.1
        else:
            scale = 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 0.1
            values = rng.standard_normal(shape) * scale
        state[key] = torch.from_numpy(np.asarray(values)).to(dtype)
    return state
