"""Loading state dicts from files: published weights, local backbones and the suite's own checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

# The LightningModule keeps the network under this attribute; its checkpoints prefix every key with it.
NET_PREFIX = "net."


def read_torch_file(path: str | Path, key: str) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, with one clear error for a missing or unreadable file.

    Args:
        path: the file.
        key: the config key that named it (``weights``, ``ckpt``), for the messages.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a complete PyTorch file of plain data (nothing in it is executed).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{key}={path}: no such file. Pass a state dict (.pth/.pt) or a checkpoint written by this suite's "
            "training (<run folder>/checkpoints/best.ckpt); relative paths are taken from the directory you run from."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types (UnpicklingError, RuntimeError, EOFError...)
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"{key}={path} is not a PyTorch checkpoint that can be read safely ({type(err).__name__}: {first}). It "
            "is read with torch.load(weights_only=True), so it must be a complete file of plain data: check that it "
            "is not truncated, an ONNX model or an image."
        ) from err


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a ``.pth``/``.pt`` file or one of the suite's Lightning checkpoints.

    Files are read with ``torch.load(weights_only=True)``: nothing in them is executed. A Lightning checkpoint
    (a dict with a ``state_dict`` entry) is unwrapped and, when all its network keys start with ``net.``, that
    prefix is removed so the result loads into the bare network.

    Args:
        path: the file.

    Returns:
        The state dict, a mapping from parameter names to tensors.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable PyTorch state dict or checkpoint.

    Example:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "w.pth"); torch.save(nn.Linear(2, 1).state_dict(), f)
        >>> sorted(load_state_dict_file(f))
        ['bias', 'weight']
    """
    obj = read_torch_file(path, "weights")
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
        net_keys = [k for k in obj if k.startswith(NET_PREFIX)]
        if net_keys:
            obj = {k[len(NET_PREFIX):]: v for k, v in obj.items() if k.startswith(NET_PREFIX)}
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"'{path}' holds a {type(obj).__name__}, not a state dict (a mapping of parameter names to tensors). "
            "Save weights with torch.save(model.state_dict(), path), or pass a checkpoint written by this suite."
        )
    return dict(obj)


def load_weights(
    module: nn.Module,
    state_or_path: str | Path | Mapping[str, Tensor],
    key_map: Mapping[str, str] | Callable[[str], str] | None = None,
    strict: bool = True,
) -> nn.Module:
    """Load weights into ``module``, renaming keys first, and explain any mismatch.

    Args:
        module: the network to fill.
        state_or_path: a state dict, or a file for :func:`load_state_dict_file`.
        key_map: renames each source key to the module's key, as a dict (keys absent from it keep their name)
            or a function.
        strict: when true, missing or unexpected keys and shape mismatches raise.

    Returns:
        ``module``, filled.

    Raises:
        ValueError: with ``strict``, listing missing and unexpected keys (up to 20 of each) and shape mismatches.
    """
    source = state_or_path if isinstance(state_or_path, Mapping) else load_state_dict_file(state_or_path)
    where = "the given state dict" if isinstance(state_or_path, Mapping) else f"'{state_or_path}'"
    if key_map is not None:
        rename = key_map if callable(key_map) else (lambda k, m=key_map: m.get(k, k))
        source = {rename(k): v for k, v in source.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in source]
    unexpected = [k for k in source if k not in own]
    wrong_shape = [
        f"{k}: file {tuple(source[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in source and source[k].shape != own[k].shape
    ]
    if strict and (missing or unexpected or wrong_shape):
        def head(items: list[str]) -> str:
            return ", ".join(items[:20]) + (f" ... (+{len(items) - 20} more)" if len(items) > 20 else "")

        raise ValueError(
            f"The weights in {where} do not fit {type(module).__name__}: {len(missing)} missing keys "
            f"[{head(missing)}], {len(unexpected)} unexpected keys [{head(unexpected)}], {len(wrong_shape)} shape "
            f"mismatches [{head(wrong_shape)}]. Check that the file was saved from the same architecture and "
            "configuration (model and backbone names, number of outputs)."
        )
    if not strict:
        source = {k: v for k, v in source.items() if k in own and v.shape == own[k].shape}
    module.load_state_dict(source, strict=strict)
    return module
