"""ONNX export entry point: ``python -m sod_lightning.export ckpt=PATH out=model.onnx [key=value ...]``.

Config: ``conf/export.yaml``. The network comes from a checkpoint of this suite (``ckpt=``) or from published
weights (``model=u2net weights=u2net.pth``), as for prediction (:func:`sod_lightning.inference.load_model`).

The ONNX model:

* input ``input``: ``(B, 3, H, W)`` float32, **already normalised** the way the network was trained (the
  ``normalization`` written in the model's metadata: ``imagenet`` is ``(x / 255 - mean) / std``; ``imagenet_max``
  divides by the image's maximum instead of 255, the official U^2-Net/BASNet preprocessing);
* output ``mask``: ``(B, 1, H, W)`` float32, the **sigmoid** of the final logit map (a probability in [0, 1]);
* metadata (``onnx.load(path).metadata_props``): ``sod_lightning.model``, ``.input_size`` (``H,W``, the size it was
  trained at), ``.normalization``, ``.mean``, ``.std``, ``.source``.

Batch, height and width are dynamic (``dynamic=true``) where the architecture allows: U^2-Net and U^2-Netp take any
size; BASNet and the smp architectures that declare it (``check_input_size``) need H and W multiples of 32 (their
encoder's output stride); smp's U-Net pads any size itself. ``dynamic=false`` fixes the graph to batch 1 at ``image_size``. Every export is checked against eager
PyTorch with onnxruntime (``atol``, default 1e-4) on random inputs, at a second size and batch 2 when dynamic, and
on real photos with ``check_images=<file or folder>``; the export fails with the measured difference otherwise.

rembg: an exported U^2-Net or U^2-Netp is a custom model for rembg's ``u2net_custom`` session
(``rembg.new_session("u2net_custom", model_path="u2netp.onnx")`` or
``rembg i -m u2net_custom -x '{"model_path": "u2netp.onnx"}' in.jpg out.png``). rembg resizes every photo to
320x320 (LANCZOS), divides by the image maximum and applies ImageNet mean/std: the ``imagenet_max`` normalisation
at 320x320, which is exactly the official preprocessing of the published weights. A model trained with this
suite's default ``data.normalization=imagenet`` sees slightly different inputs under rembg (images whose maximum is
below 255 are brightened); train with ``data.normalization=imagenet_max data.image_size=320`` for an exact match.
rembg min-max scales the output, so the sigmoid's [0, 1] range is kept.

From a fresh clone, on the shared sky photos (``../shared/data/sky``; see :mod:`sod_lightning.predict` for the
training command that writes ``outputs/sky``)::

    python -m sod_lightning.export ckpt=outputs/sky out=sky.onnx check_images=../shared/data/sky/images
    python -m sod_lightning.export model=u2netp weights=u2netp.pth out=u2netp.onnx check_images=../shared/data/sky/images
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from sod_lightning.data.augment import NORMALIZATIONS
from sod_lightning.inference import CONFIG_DIR, LoadedModel, load_model

log = logging.getLogger(__name__)

INPUT_NAME, OUTPUT_NAME = "input", "mask"
META_PREFIX = "sod_lightning."


class ProbabilityHead(nn.Module):
    """The exported graph: the network's final logit map through a sigmoid (side outputs are not exported).

    Example:
        >>> class Zero(nn.Module):
        ...     def forward(self, x):
        ...         return [x[:, :1] * 0]
        >>> ProbabilityHead(Zero())(torch.ones(1, 3, 2, 2))[0, 0, 0, 0].item()
        0.5
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, 1, H, W)`` probabilities."""
        return torch.sigmoid(self.net(x)[0])


def export_onnx(
    model: LoadedModel,
    out: str | Path,
    dynamic: bool = True,
    opset: int = 17,
    dynamo: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as ONNX with its preprocessing in the metadata.

    Args:
        model: a loaded network (:func:`sod_lightning.inference.load_model`).
        out: the ``.onnx`` file to write.
        dynamic: dynamic batch, height and width; else batch 1 at ``model.input_size``.
        opset: ONNX opset version.
        dynamo: use the ``torch.export``-based exporter (about 40 s for U^2-Netp on a CPU) instead of the TorchScript
            tracer (a few seconds). Both give the same numbers; weights are kept inside the one file either way.
        overwrite: replace an existing file.

    Returns:
        The written path.
    """
    import onnx

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"out={out}: the file name must end in .onnx (e.g. out=model.onnx).")
    if out.exists() and not overwrite:
        raise FileExistsError(f"out={out} exists already; nothing was written. Choose another name or pass "
                              "overwrite=true to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    device = model.device
    head = ProbabilityHead(model.net).eval().cpu()
    example = torch.randn(1, 3, *model.input_size)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The tracer's deprecation notice and TracerWarnings about Python-side shape checks are expected here; the
        # onnxruntime comparison below is what establishes that the graph is right.
        warnings.simplefilter("ignore")
        if dynamo:
            dims = {"x": {i: torch.export.Dim(name, min=1) for i, name in axes.items()}} if dynamic else None
            torch.onnx.export(head, (example,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=max(opset, 18), dynamo=True, dynamic_shapes=dims, external_data=False)
        else:
            torch.onnx.export(head, (example,), str(out), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if dynamic else None)
    model.net.to(device)
    proto = onnx.load(str(out))
    mean, std, scale, bgr = NORMALIZATIONS[model.normalization]
    meta = {
        "model": model.name,
        "input_size": ",".join(map(str, model.input_size)),
        "normalization": model.normalization,
        "mean": ",".join(map(str, mean)),
        "std": ",".join(map(str, std)),
        "scale": str(scale),
        "bgr": str(bgr).lower(),
        "source": model.source,
        "output": "sigmoid probability of the final map, (B, 1, H, W)",
        "dynamic": str(dynamic).lower(),
    }
    onnx.helper.set_model_props(proto, {META_PREFIX + k: v for k, v in meta.items()})
    onnx.save(proto, str(out))
    return out


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads, default onnxruntime's)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model '{path}' does not exist; write it with python -m sod_lightning.export.")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``sod_lightning.*`` metadata of an exported model, without the prefix."""
    import onnx

    props = onnx.load(str(path), load_external_data=False).metadata_props
    return {p.key[len(META_PREFIX):]: p.value for p in props if p.key.startswith(META_PREFIX)}


def max_abs_diff(session: Any, model: LoadedModel, batch: Tensor) -> float:
    """``max |onnxruntime - PyTorch|`` of the probabilities for one normalised batch ``(B, 3, H, W)``."""
    ref = model.probabilities(batch.to(model.device)).cpu().numpy()
    got = session.run(None, {session.get_inputs()[0].name: batch.cpu().numpy().astype(np.float32)})[0]
    if got.shape != ref.shape:
        raise ValueError(f"onnxruntime returned {got.shape} where PyTorch returned {ref.shape}.")
    return float(np.abs(got - ref).max())


def second_size(model: LoadedModel) -> tuple[int, int]:
    """A different input size that the architecture accepts (for checking dynamic height and width).

    Adds 32 to H and 64 to W, which keeps multiples of any output stride up to 32.
    """
    h, w = model.input_size
    return h + 32, w + 64


def check_parity(
    path: str | Path,
    model: LoadedModel,
    atol: float = 1e-4,
    images: list[Path] | None = None,
    batch_size: int = 4,
    seed: int = 0,
) -> dict[str, float]:
    """Compare onnxruntime with eager PyTorch; raise when any difference exceeds ``atol``.

    Args:
        path: the exported model.
        model: the network it was exported from.
        atol: the largest accepted absolute difference of probabilities.
        images: real photos, preprocessed as for prediction and run in batches.
        batch_size: batch size for the photos.
        seed: seed of the random inputs.

    Returns:
        ``{case: max abs difference}`` for ``random``, ``random_batch2_<H>x<W>`` (dynamic models) and ``images``.

    Raises:
        ValueError: a difference above ``atol``, naming the case.
    """
    from sod_lightning.predict import read_input

    session = onnx_session(path)
    dynamic = onnx_metadata(path).get("dynamic") == "true"
    gen = torch.Generator().manual_seed(seed)
    results = {"random": max_abs_diff(session, model, torch.randn(1, 3, *model.input_size, generator=gen))}
    if dynamic:
        h, w = second_size(model)
        results[f"random_batch2_{h}x{w}"] = max_abs_diff(session, model, torch.randn(2, 3, h, w, generator=gen))
    if images:
        worst = 0.0
        for i in range(0, len(images), batch_size if dynamic else 1):
            photos = [read_input(p)[0] for p in images[i:i + (batch_size if dynamic else 1)]]
            worst = max(worst, max_abs_diff(session, model, model.preprocess(photos)))
        results["images"] = worst
    bad = {k: v for k, v in results.items() if not v <= atol}
    if bad:
        hint = " With dynamic=true, retry with dynamic=false (a fixed-size graph)." if dynamic else ""
        raise ValueError(
            f"The ONNX model '{path}' does not match PyTorch within atol={atol}: max abs differences {bad}. The "
            f"file is kept for inspection.{hint} Report the model and opset if the difference persists."
        )
    return results


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export and check the model described by ``cfg`` (``conf/export.yaml``); returns the path and differences."""
    from sod_lightning.predict import list_inputs

    if cfg.get("out") is None:
        raise ValueError("out= is required: python -m sod_lightning.export ckpt=... out=model.onnx")
    plain = lambda v: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v  # noqa: E731
    images = None
    if cfg.get("check_images"):
        images, ignored = list_inputs(cfg.check_images)
        for p in ignored:
            log.warning("check_images=%s: ignoring '%s' (not an image file).", cfg.check_images, p.name)
    model = load_model(ckpt=cfg.get("ckpt"), model=plain(cfg.get("model")), weights=cfg.get("weights"),
                       image_size=plain(cfg.get("image_size")), normalization=cfg.get("normalization"))
    path = export_onnx(model, cfg.out, dynamic=bool(cfg.dynamic), opset=int(cfg.opset), dynamo=bool(cfg.dynamo),
                       overwrite=bool(cfg.overwrite))
    result: dict[str, Any] = {"path": str(path), "model": model.name, "input_size": list(model.input_size),
                              "normalization": model.normalization}
    if cfg.check:
        result["max_abs_diff"] = check_parity(path, model, float(cfg.atol), images)
    log.info("Wrote %s (%s, input %s normalised with %s, %s): %s", path, model.name,
             "x".join(map(str, model.input_size)), model.normalization,
             "dynamic batch/height/width" if cfg.dynamic else "fixed batch 1", result.get("max_abs_diff", "unchecked"))
    return result


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="export")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    export(cfg)


if __name__ == "__main__":
    main()
