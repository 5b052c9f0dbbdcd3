"""Evaluate saved saliency maps against ground-truth masks, as SOD evaluation toolkits do.

Several methods (folders of grey PNG/JPG maps) against several data sets at once; every number is computed by
:class:`sod_lightning.metrics.SODMetrics` (identical to pysodmetrics 1.6) at each mask's original size.

Usage::

    python -m sod_lightning.evaluate \\
        methods='{mine: outputs/maps, u2net: /data/maps/u2net}' \\
        datasets='{PASCAL-S: {mask_dir: ../shared/data/PASCAL-S/masks}, ECSSD: {mask_dir: /data/ECSSD/masks}}' \\
        output=eval_results

Keys (``conf/evaluate.yaml``):

* ``methods``: ``{name: folder}``. Predictions of data set ``D`` are read from ``<folder>/<D>/`` when that
  sub-folder exists, else from ``<folder>/`` itself (handy for a single data set). A prediction and a mask are
  paired by file stem (``0001.png`` <-> ``0001.jpg`` too); extra predictions are ignored.
* ``datasets``: ``{name: {mask_dir: folder}}`` (or ``{name: folder}``); every image file of ``mask_dir`` is
  evaluated.
* ``output``: folder for ``results.csv`` (one row per data set x method, scalar metrics), ``results.json``
  (scalars and the 256-value curves with their thresholds) and ``curves/<dataset>/<method>.csv`` (columns
  ``threshold, precision, recall, f, e``, thresholds ascending, ready to plot PR / F / E curves), plus
  ``evaluate.log``.
* ``resize_pred`` (default ``false``): a prediction whose size differs from its mask is an error; with ``true``
  it is resized to the mask (bilinear, on [0, 1] values, then re-quantised to 8 bits like any float map) and a
  warning counts such files. Published numbers evaluate at the mask's size, never on resized masks.
* ``metrics`` (default ``null`` = all): a subset of result keys, e.g. ``[mae, maxf, sm]``.
* ``device`` (default ``cpu``): ``cpu``, ``cuda`` or ``auto``.

Reading: predictions are 8-bit grey bytes (colour maps are converted to grey, 16-bit maps scaled to [0, 1]);
masks are read like the DataModule reads them (0/255, 0/1 and 16-bit masks all work) and binarised as
``gt255 > 128``.

The same is available from Python: :func:`evaluate` returns ``{dataset: {method: {key: value}}}``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from sod_lightning.data.imageio import IMAGE_EXTENSIONS, read_mask
from sod_lightning.metrics import SODMetrics, thresholds
from sod_lightning.metrics.functional.collection import SCALAR_KEYS

log = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """A bad evaluation input (missing folder or prediction, size mismatch); the message names it."""


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise EvaluationError(f"evaluate: {what} folder '{folder}' does not exist. Check the path (relative paths "
                              f"are taken from the directory you run the command in).")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
            if path.stem in files:
                raise EvaluationError(
                    f"evaluate: {what} folder '{folder}' holds two files with stem '{path.stem}' "
                    f"('{files[path.stem].name}' and '{path.name}'); pairing is by stem, so keep one of them."
                )
            files[path.stem] = path
    return files


def read_prediction(path: Path) -> torch.Tensor:
    """A saved saliency map as a ``(H, W)`` tensor: uint8 bytes for 8-bit files, float in [0, 1] for 16-bit."""
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            return torch.from_numpy(read_mask(path))
        return torch.from_numpy(np.array(img.convert("L"), dtype=np.uint8))


def _dataset_mask_dir(name: str, spec) -> Path:
    if isinstance(spec, (str, Path)):
        return Path(spec)
    if isinstance(spec, Mapping) and "mask_dir" in spec:
        return Path(spec["mask_dir"])
    raise EvaluationError(
        f"evaluate: datasets.{name} must be a folder or {{mask_dir: folder}}, got {spec!r}. Example: "
        f"datasets='{{{name}: {{mask_dir: data/{name}/masks}}}}'."
    )


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_method(
    pred_dir: Path,
    masks: Mapping[str, Path],
    *,
    resize_pred: bool = False,
    metrics: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    label: str = "",
) -> dict[str, torch.Tensor]:
    """Evaluate one folder of predictions against masks paired by stem.

    Args:
        pred_dir: folder of prediction maps.
        masks: ``{stem: mask path}``.
        resize_pred: resize mismatched predictions to the mask (with a warning) instead of failing.
        metrics: result keys (default all).
        device: where the metrics run.
        label: ``method/dataset`` for messages.

    Returns:
        ``SODMetrics.compute()``'s dict.

    Raises:
        EvaluationError: a prediction is missing, or has another size while ``resize_pred`` is false.
    """
    device = _device(str(device)) if not isinstance(device, torch.device) else device
    preds = _images_by_stem(pred_dir, f"{label} prediction")
    missing = [stem for stem in masks if stem not in preds]
    if missing:
        example = masks[missing[0]]
        raise EvaluationError(
            f"evaluate: {label}: no prediction for mask '{example}' (looked for '{pred_dir / missing[0]}' with "
            f"any of {', '.join(IMAGE_EXTENSIONS)}); {len(missing)} of {len(masks)} masks have none. Predictions "
            f"are paired with masks by file stem: predict every image of the set, or point the method at the "
            f"folder that holds them."
        )
    metric = SODMetrics(metrics=metrics).to(device)
    resized = 0
    for stem, mask_path in masks.items():
        pred = read_prediction(preds[stem]).to(device)
        target = torch.from_numpy(read_mask(mask_path)).to(device)
        if pred.shape != target.shape:
            if not resize_pred:
                raise EvaluationError(
                    f"evaluate: {label}: prediction '{preds[stem]}' is {tuple(pred.shape)} (H, W) but mask "
                    f"'{mask_path}' is {tuple(target.shape)}. Save predictions at the mask's size, or pass "
                    f"resize_pred=true to resize them to the mask (bilinear; numbers then differ slightly from "
                    f"an evaluation at the original size)."
                )
            values = pred.float() / 255 if pred.dtype == torch.uint8 else pred.float()
            pred = F.interpolate(values[None, None], size=target.shape, mode="bilinear", align_corners=False)
            pred = pred[0, 0].clamp_(0, 1)
            resized += 1
        metric.update(pred[None], target[None])
    if resized:
        message = f"evaluate: {label}: resized {resized} of {len(masks)} predictions to their mask's size."
        warnings.warn(message, stacklevel=2)
        log.warning(message)
    return metric.compute()


def _to_plain(value: torch.Tensor) -> float | list[float]:
    value = value.detach().cpu().double()
    return float(value) if value.ndim == 0 else [float(v) for v in value]


def evaluate(
    methods: Mapping[str, str | Path],
    datasets: Mapping[str, object],
    output: str | Path | None = None,
    *,
    resize_pred: bool = False,
    metrics: Sequence[str] | None = None,
    device: str = "cpu",
) -> dict[str, dict[str, dict[str, float | list[float]]]]:
    """Evaluate every method on every data set; print a table and write CSV / JSON / curves to ``output``.

    Args:
        methods: ``{method: folder}`` (``folder/<dataset>/`` is used when it exists).
        datasets: ``{dataset: {"mask_dir": folder}}`` or ``{dataset: folder}``.
        output: results folder (``None``: write nothing).
        resize_pred: resize mismatched predictions to the mask instead of failing.
        metrics: result keys (default all).
        device: ``cpu``, ``cuda`` or ``auto``.

    Returns:
        ``{dataset: {method: {key: float or list of 256 floats}}}``.

    Example:
        >>> evaluate({"mine": "maps"}, {"PASCAL-S": "data/PASCAL-S/masks"}, "eval")  # doctest: +SKIP
    """
    if not methods or not datasets:
        raise EvaluationError(
            "evaluate: give at least one method and one data set, e.g. methods='{mine: outputs/maps}' "
            "datasets='{PASCAL-S: {mask_dir: ../shared/data/PASCAL-S/masks}}'."
        )
    results: dict[str, dict[str, dict[str, float | list[float]]]] = {}
    for dataset, spec in datasets.items():
        mask_dir = _dataset_mask_dir(dataset, spec)
        masks = _images_by_stem(mask_dir, f"data set '{dataset}' mask")
        if not masks:
            raise EvaluationError(
                f"evaluate: datasets.{dataset}.mask_dir '{mask_dir}' holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}). Point it at the folder of ground-truth masks."
            )
        results[dataset] = {}
        for method, folder in methods.items():
            folder = Path(folder)
            pred_dir = folder / dataset if (folder / dataset).is_dir() else folder
            computed = evaluate_method(
                pred_dir, masks, resize_pred=resize_pred, metrics=metrics, device=device, label=f"{method}/{dataset}"
            )
            results[dataset][method] = {key: _to_plain(value) for key, value in computed.items()}
            results[dataset][method]["n_images"] = float(len(masks))
    print(format_table(results))
    if output is not None:
        write_results(results, Path(output))
    return results


def format_table(results: Mapping[str, Mapping[str, Mapping[str, object]]]) -> str:
    """A plain-text table: one row per data set x method, one column per scalar metric (4 decimals)."""
    keys = [k for k in SCALAR_KEYS if any(k in r for per in results.values() for r in per.values())]
    header = ["dataset", "method", *keys]
    rows = [
        [dataset, method, *(f"{r[k]:.4f}" if k in r and not math.isnan(r[k]) else "-" for k in keys)]
        for dataset, per in results.items()
        for method, r in per.items()
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(results: Mapping[str, Mapping[str, Mapping[str, object]]], output: Path) -> None:
    """Write ``results.csv``, ``results.json`` and ``curves/<dataset>/<method>.csv`` under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    keys = [k for k in SCALAR_KEYS if any(k in r for per in results.values() for r in per.values())]
    with open(output / "results.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dataset", "method", "n_images", *keys])
        for dataset, per in results.items():
            for method, r in per.items():
                writer.writerow([dataset, method, int(r["n_images"]), *(repr(r[k]) if k in r else "" for k in keys)])
    payload = {
        "thresholds": [float(t) for t in thresholds()],
        "note": "curves are indexed by threshold t (ascending): binarisation trunc(255 x) >= t",
        "results": results,
    }
    with open(output / "results.json", "w") as f:
        json.dump(payload, f, indent=1)
    ts = thresholds().tolist()
    columns = [("precision", "pr_precision"), ("recall", "pr_recall"), ("f", "f_curve"), ("e", "em_curve")]
    for dataset, per in results.items():
        for method, r in per.items():
            present = [(name, key) for name, key in columns if key in r]
            if not present:
                continue
            folder = output / "curves" / dataset
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"{method}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["threshold", *(name for name, _ in present)])
                for i, t in enumerate(ts):
                    writer.writerow([repr(t), *(repr(r[key][i]) for _, key in present)])
    log.info("evaluate: wrote %s", output)


def _main(cfg) -> dict:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    return evaluate(
        plain.get("methods") or {},
        plain.get("datasets") or {},
        plain.get("output"),
        resize_pred=bool(plain.get("resize_pred", False)),
        metrics=plain.get("metrics"),
        device=str(plain.get("device", "cpu")),
    )


def main() -> None:
    """Hydra entry point (``python -m sod_lightning.evaluate key=value ...``)."""
    import hydra

    hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")(_main)()


if __name__ == "__main__":
    main()
