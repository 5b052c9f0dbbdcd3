"""Trained networks ready for inference: one loader for every entry point (predict, export, benchmarks).

A network comes from one of two sources:

* one of this suite's Lightning checkpoints (``ckpt=PATH``, a ``.ckpt`` file or a run folder): the network is
  rebuilt from the checkpoint's plain-data ``hyper_parameters["model"]`` and filled with its ``net.*`` weights; the
  input size and normalisation are the DataModule's (``datamodule_hyper_parameters``: ``image_size`` and
  ``normalization``);
* a published state dict with its architecture's name (``model=u2net weights=u2net.pth``): the network is built
  from ``conf/model/<name>.yaml`` and the file loaded strictly. The preprocessing is the official one for the
  published models (:data:`PUBLISHED_PREPROCESSING`; U^2-Net: 320x320, divide by the image maximum, ImageNet
  mean/std) and must be given (``image_size=``, ``normalization=``) for any other.

Every file is read with ``torch.load(weights_only=True)``: nothing in it is executed.

Preprocessing matches training exactly: PIL bilinear resize of the 8-bit RGB image to the input size, division
by 255, then :class:`~sod_lightning.data.augment.Normalize`. The final logit map goes through a sigmoid and is
resized (bilinear, ``align_corners=False``, as the evaluation in :class:`~sod_lightning.module.SODModule` does) back
to each image's original size.

Example:
    >>> from PIL import Image
    >>> model = load_model(model="u2netp", image_size=64)           # random weights: no file given
    >>> [m.shape for m in model.predict([Image.new("RGB", (50, 30))])]
    [(30, 50)]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image
from torch import Tensor, nn

from sod_lightning.config import to_plain
from sod_lightning.data.augment import NORMALIZATIONS, Normalize
from sod_lightning.models.weights import NET_PREFIX, load_weights, read_torch_file

log = logging.getLogger(__name__)

# conf/ at the top of the repository (the package is installed in editable mode), as in train.py.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"

# The official test-time preprocessing of published weights: model config name -> (input (H, W), normalisation).
# U^2-Net (u2net_test.py) and BASNet (basnet_test.py) both rescale to a square and use ToTensorLab(flag=0):
# divide by the image's maximum, then ImageNet mean/std.
PUBLISHED_PREPROCESSING: dict[str, tuple[tuple[int, int], str]] = {
    "u2net": ((320, 320), "imagenet_max"),
    "u2netp": ((320, 320), "imagenet_max"),
    "basnet": ((256, 256), "imagenet_max"),
}

# Model-config keys that point at *initial* weights (conf/backbone's pretrained/weights, the model's weights). A
# checkpoint already holds every weight, so these are switched off when rebuilding: nothing is downloaded and the
# files used at training time need not exist on the machine that predicts.
_INITIAL_WEIGHT_KEYS = {"weights": None, "pretrained": False, "encoder_weights": None}


@dataclass
class LoadedModel:
    """A network in eval mode with the preprocessing it was trained with.

    Attributes:
        net: the network (``forward`` returns a list of logit maps, the final one first).
        name: the architecture's name (config name such as ``u2netp``, else the class name).
        input_size: the network's input ``(H, W)``.
        normalization: a key of :data:`~sod_lightning.data.augment.NORMALIZATIONS`.
        source: where the weights came from (for messages and export metadata).
        model_config: the plain ``_target_`` config the network was built from.
    """

    net: nn.Module
    name: str
    input_size: tuple[int, int]
    normalization: str
    source: str
    model_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.net.eval()
        self.normalize = Normalize(self.normalization)

    @property
    def device(self) -> torch.device:
        """The device the network's parameters are on."""
        return next(self.net.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        """Move the network to ``device`` (``cpu``, ``cuda``, ``auto`` = CUDA when available); returns ``self``."""
        self.net.to(resolve_device(device))
        return self

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """Resize and normalise RGB images into the network's input batch.

        Args:
            images: 8-bit RGB PIL images of any sizes.

        Returns:
            ``(B, 3, H, W)`` float32 on the network's device, ``(H, W) = input_size``.
        """
        h, w = self.input_size
        # PIL bilinear, as the training data sets resize (FolderDataset), so the network sees what it learnt on.
        arrays = [np.asarray(im.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32) for im in images]
        batch = torch.from_numpy(np.stack(arrays) / np.float32(255.0)).permute(0, 3, 1, 2).contiguous()
        return self.normalize(batch.to(self.device))

    @torch.inference_mode()
    def probabilities(self, batch: Tensor) -> Tensor:
        """Sigmoid of the final logit map of a normalised batch ``(B, 3, H, W)``: ``(B, 1, H, W)`` in [0, 1]."""
        return torch.sigmoid(self.net(batch)[0].float())

    def predict(self, images: Sequence[Image.Image]) -> list[np.ndarray]:
        """Masks of RGB images at their original sizes.

        Args:
            images: 8-bit RGB PIL images (apply EXIF orientation first: :func:`sod_lightning.data.imageio.read_image`).

        Returns:
            One float32 ``(h, w)`` array in [0, 1] per image, ``(h, w)`` its original size.
        """
        probs = self.probabilities(self.preprocess(images))
        return resize_to_originals(probs, [(im.height, im.width) for im in images])


def resize_to_originals(probs: Tensor | np.ndarray, sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Resize a batch of probability maps ``(B, 1, H, W)`` to each image's ``(h, w)`` (bilinear, ``align_corners=False``).

    Args:
        probs: probabilities from PyTorch or onnxruntime.
        sizes: one ``(h, w)`` per map.

    Returns:
        float32 ``(h, w)`` arrays clipped to [0, 1] (bilinear interpolation of values in [0, 1] stays there up to
        rounding).

    Example:
        >>> [m.shape for m in resize_to_originals(np.zeros((2, 1, 4, 4), np.float32), [(3, 5), (8, 2)])]
        [(3, 5), (8, 2)]
    """
    probs = torch.as_tensor(probs).float()
    if probs.ndim != 4 or probs.shape[1] != 1 or probs.shape[0] != len(sizes):
        raise ValueError(f"expected probabilities (B, 1, H, W) with B = {len(sizes)}, got {tuple(probs.shape)}.")
    out = []
    for p, size in zip(probs, sizes):
        if tuple(p.shape[-2:]) != tuple(size):
            p = F.interpolate(p[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
        out.append(p[0].clamp(0, 1).cpu().numpy())
    return out


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` means CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device} is not a device name ({err}); use cpu, cuda, cuda:1 or auto.") from err


def compose_model_config(name: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The plain config of ``conf/model/<name>.yaml``, composed with the suite's defaults (for ``${backbone...}``).

    Args:
        name: a file name of ``conf/model`` without ``.yaml``.
        overrides: further Hydra overrides (``backbone=resnet18``).

    Returns:
        The resolved ``_target_`` dict.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    available = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
    if name not in available:
        raise ValueError(
            f"model={name}: there is no conf/model/{name}.yaml. Use one of {', '.join(available)} (the architecture "
            "that the weights file was saved from)."
        )
    args = {"config_name": "predict", "overrides": [f"model={name}", *overrides]}
    try:
        if GlobalHydra.instance().is_initialized():  # inside a @hydra.main app: its search path includes conf/
            cfg = compose(**args)
        else:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose(**args)
    except HydraException as err:
        raise ValueError(f"model={name} with overrides {list(overrides)}: cannot compose the config ({err}).") from err
    return to_plain(cfg.model)


def _read_checkpoint(path: Path) -> Mapping[str, Any]:
    """The checkpoint as plain data (``torch.load(weights_only=True)``), or one clear error."""
    obj = read_torch_file(path, "ckpt")
    if not isinstance(obj, Mapping):
        raise ValueError(f"ckpt={path} holds a {type(obj).__name__}, not a checkpoint; pass a .ckpt from training.")
    return obj


def _checkpoint_path(ckpt: str | Path) -> Path:
    """A run folder means its ``checkpoints/best.ckpt`` (else ``last.ckpt``); a file is itself."""
    path = Path(ckpt)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise FileNotFoundError(
            f"ckpt={ckpt} is a folder without checkpoints/best.ckpt or checkpoints/last.ckpt. Pass a .ckpt file or "
            "a training run folder."
        )
    return path


def _config_name(net: nn.Module) -> str:
    """The model's conf/model name where the class declares it (U^2-Net), else its class name."""
    return getattr(net, "config_name", None) or type(net).__name__


def load_model(
    ckpt: str | Path | None = None,
    model: str | Mapping[str, Any] | None = None,
    weights: str | Path | None = None,
    image_size: int | Sequence[int] | None = None,
    normalization: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Build a network for inference from a checkpoint, or from a model name and a published state dict.

    Args:
        ckpt: one of this suite's Lightning checkpoints, or a run folder (its best, else last, checkpoint).
        model: with ``weights``: the architecture, a ``conf/model`` name (``u2netp``) or a composed config dict.
            Without ``weights`` the network keeps its random initialisation (benchmarks, export tests).
        weights: a state-dict file (``.pth``/``.pt``) for ``model``, loaded strictly.
        image_size: the input size, ``int`` or ``(H, W)``; overrides the checkpoint's or the published default.
        normalization: a key of ``NORMALIZATIONS``; overrides the checkpoint's or the published default.
        device: ``cpu``, ``cuda``, ``auto``...

    Returns:
        The network in eval mode on ``device`` with its preprocessing.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: an unreadable file, a file that is not a checkpoint, a state dict that does not fit the model, or
            a contradictory or incomplete choice of keys; every message names the key and the fix.
    """
    if ckpt is not None and (model is not None or weights is not None):
        raise ValueError(
            f"ckpt={ckpt} was given together with model=/weights=. A checkpoint of this suite already names its "
            "model; use ckpt= alone for a training checkpoint, or model=<name> weights=<file> for a published state "
            "dict."
        )
    data_hparams: Mapping[str, Any] = {}
    if ckpt is not None:
        path = _checkpoint_path(ckpt)
        obj = _read_checkpoint(path)
        state, hparams = obj.get("state_dict"), obj.get("hyper_parameters")
        if not isinstance(state, Mapping) or not isinstance(hparams, Mapping) or "model" not in hparams:
            plain = bool(obj) and all(isinstance(v, Tensor) for v in obj.values())
            hint = (
                "It is a plain state dict without hyper-parameters: pass it as weights= together with the model it "
                f"was saved from, e.g. model=u2net weights={ckpt}."
                if plain
                else "It lacks 'state_dict' or 'hyper_parameters.model', so it was not written by this suite's "
                "training (SODModule)."
            )
            raise ValueError(f"ckpt={ckpt} is not a checkpoint of this suite. {hint}")
        model_config = {**dict(hparams["model"]), **{k: v for k, v in _INITIAL_WEIGHT_KEYS.items()
                                                      if k in hparams["model"]}}
        net = instantiate(model_config)
        # SODModule keeps the network as ``net``: its keys carry that prefix; other entries (loss buffers) are not ours.
        net_state = {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)}
        try:
            load_weights(net, net_state)
        except ValueError as err:
            raise ValueError(f"ckpt={ckpt}: {err}") from err
        data_hparams = obj.get("datamodule_hyper_parameters") or {}
        source, default_size, default_norm = str(path), data_hparams.get("image_size"), data_hparams.get("normalization")
        missing_hint = "the checkpoint has no datamodule_hyper_parameters (it was saved without a DataModule)"
    else:
        if model is None:
            raise ValueError(
                "No network given: pass ckpt=<checkpoint of this suite> (or a run folder), or model=<name> "
                "weights=<state dict file> for published weights (e.g. model=u2net weights=u2net.pth)."
            )
        name = model if isinstance(model, str) else None
        model_config = compose_model_config(model) if isinstance(model, str) else to_plain(dict(model))
        if weights is not None and "weights" in model_config:
            model_config = {**model_config, "weights": None}  # loaded below, with the key named in errors
        net = instantiate(model_config)
        if weights is not None:
            try:
                load_weights(net, Path(weights))
            except (ValueError, FileNotFoundError) as err:
                raise type(err)(f"weights={weights} (model={name or _config_name(net)}): {err}") from err
        else:
            log.warning("model=%s without weights=: the network keeps its random initialisation.", name)
        name = name or _config_name(net)
        source = str(weights) if weights is not None else "random initialisation"
        default_size, default_norm = PUBLISHED_PREPROCESSING.get(name, (None, None))
        missing_hint = f"model={name} has no known official preprocessing"
    if image_size is None and default_size is None or normalization is None and default_norm is None:
        raise ValueError(
            f"The input size or normalisation is unknown: {missing_hint}. Pass image_size=<int or [H, W]> and "
            f"normalization=<{'|'.join(NORMALIZATIONS)}> as the network was trained with."
        )
    size = _pair(image_size if image_size is not None else default_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size={image_size}: expected a positive int or [H, W].")
    check = getattr(net, "check_input_size", None)
    if check is not None:
        try:
            check(*size)
        except ValueError as err:
            raise ValueError(f"image_size={list(size)} does not fit the network: {err}") from err
    norm = normalization if normalization is not None else default_norm
    if norm not in NORMALIZATIONS:
        raise ValueError(f"normalization={norm} is unknown; use one of {', '.join(NORMALIZATIONS)}.")
    if ckpt is not None and (image_size is not None and size != _pair(default_size)
                             or normalization is not None and norm != default_norm):
        log.warning("Overriding the checkpoint's preprocessing (%s, %s) with image_size=%s normalization=%s.",
                    default_size, default_norm, list(size), norm)
    name = _config_name(net) if ckpt is not None else name
    loaded = LoadedModel(net, name, size, norm, source, to_plain(model_config))
    return loaded.to(device)


def _pair(size: Any) -> tuple[int, ...] | None:
    """``int`` or ``[H, W]`` as a tuple of ints; ``None`` stays ``None``."""
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
