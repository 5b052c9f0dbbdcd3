"""Comparison report of trained runs: the table and the figures an SOD paper shows.

Usage::

    python -m sod_lightning.report multirun/2024-05-01/12-00-00            # a sweep
    python -m sod_lightning.report outputs/2024-05-01/09-00-00 outputs/2024-05-02/10-30-00 --out report/
    python -m sod_lightning.report multirun/2024-05-01/12-00-00 --metrics all --max-samples 4

Each positional path is a run folder (it holds ``run.json``, ``metrics.json`` or ``.hydra/config.yaml``) or a
folder of run folders, such as a Hydra multirun folder ``multirun/<date>/<time>/`` with its numbered jobs ``0/``,
``1/``, ...; run folders are searched up to two levels below each path. The output folder (``--out``, default
``<first path>/report/``) receives:

* ``report.md``: a table with a row per run (name, model, backbone, loss, parameter count, training images/s, status)
  and a column per test set and metric, the best value of each column in **bold** (lowest for MAE and for the
  parameter count, highest otherwise; among the runs that finished), the failed or incomplete runs with their
  error, and the figures below, embedded.
* ``report.csv``: the same rows with every metric found, full precision, no formatting (for pandas and friends).
* ``pr_<test set>.png``: precision-recall curves, a line per run (mean per-image P and R over the 256
  thresholds, as written in each run's ``curves.json``).
* ``fmeasure_<test set>.png``: F-measure (beta^2 = 0.3) against the binarisation threshold 0..255, a line per run.
* ``samples_<test set>.png``: a row per sample image (input, ground truth, each run's prediction), from the runs'
  ``samples/<test set>/<stem>_{image,gt,pred}.png``.

A run that failed (``run.json`` says ``"status": "failed"``) or never wrote ``metrics.json`` is listed with its
status and error rather than left out. From Python, :func:`make_report` does the same and returns what it wrote.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# The metrics of the Markdown table by default: the ones SOD papers print, as in train.SUMMARY_METRICS (kept in
# sync by tests/test_report.py; importing train here would pull in Lightning for a plotting command).
PAPER_METRICS = ("mae", "maxf", "sm", "maxem", "wfm")
# Scalar metrics in the order the suite computes them (metrics.functional.collection.SCALAR_KEYS); metrics not
# listed here still appear, after these.
METRIC_ORDER = ("mae", "maxf", "meanf", "adpf", "sm", "maxem", "meanem", "adpem", "wfm", "relaxfb")
LOWER_IS_BETTER = frozenset({"mae"})
METRIC_LABELS = {
    "mae": "MAE", "maxf": "maxF", "meanf": "meanF", "adpf": "adpF", "sm": "Sm", "maxem": "maxEm",
    "meanem": "meanEm", "adpem": "adpEm", "wfm": "wF", "relaxfb": "relaxFb",
}
# Markers that make a folder a run folder; `.hydra/config.yaml` alone is a run that died before writing anything.
RUN_MARKERS = ("run.json", "metrics.json", ".hydra/config.yaml")
# How deep below a given path run folders are looked for: multirun/<date>/ -> <time>/ -> <job>/ is two levels.
SEARCH_DEPTH = 2
# The number of decimals in the Markdown table; ties at this precision are all marked best.
DECIMALS = 4


class ReportError(ValueError):
    """A bad report input (a missing folder, a folder without runs); the message names it and the fix."""


@dataclass
class Run:
    """One run folder, read.

    Attributes:
        path: the run folder.
        name: the row label (``run.json``'s name, made unique within the report).
        model, backbone, loss: the config choices (empty when unknown).
        params: number of parameters of the network, or ``None``.
        images_per_s: training throughput in images per second, or ``None``.
        status: ``ok``, ``failed`` (the run raised, or a result file is unreadable) or ``incomplete`` (no
            ``metrics.json``: killed, still running, or trained without ``test=true``).
        error: why the run is not ``ok``.
        metrics: ``{test set: {metric: value}}``.
        curves: ``{test set: {"pr_precision": array, "pr_recall": array, "f_curve": array, ...}}``.
        overrides: the command-line overrides of the run (``.hydra/overrides.yaml``).
        notes: problems that do not invalidate the run (e.g. an unreadable ``curves.json``).
    """

    path: Path
    name: str
    model: str = ""
    backbone: str = ""
    loss: str = ""
    params: int | None = None
    images_per_s: float | None = None
    status: str = "ok"
    error: str | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Report:
    """What :func:`make_report` wrote.

    Attributes:
        out_dir: the output folder.
        runs: every run found, in table order.
        markdown, csv: the two tables.
        figures: ``{test set: {"pr": path, "fmeasure": path, "samples": path}}`` (a kind is absent when no run
            had the data for it).
        notes: what was left out of a figure and why.
    """

    out_dir: Path
    runs: list[Run]
    markdown: Path
    csv: Path
    figures: dict[str, dict[str, Path]]
    notes: list[str]


# ------------------------------------------------------------------------------------------------------------
# Finding and reading runs
# ------------------------------------------------------------------------------------------------------------
def _natural_key(path: Path) -> list[Any]:
    # Job folders are numbered: 10/ after 9/, not after 1/.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _is_run(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in RUN_MARKERS)


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders under ``paths``, in argument order, each folder's runs in natural order, without duplicates.

    Args:
        paths: run folders, folders of run folders (a multirun folder), or a run's ``run.json``/``metrics.json``.

    Raises:
        ReportError: a path does not exist, or holds no run folder.
    """
    if not paths:
        raise ReportError("No folder given: name a multirun folder (multirun/<date>/<time>/) or run folders.")
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name in ("run.json", "metrics.json"):
            path = path.parent
        if not path.exists():
            raise ReportError(
                f"'{path}' does not exist. Give a multirun folder (multirun/<date>/<time>/, holding the numbered "
                "job folders 0/, 1/, ...) or run folders (outputs/<date>/<time>/), as printed by "
                "'python -m sod_lightning' at the end of a run ('Run folder: ...')."
            )
        if not path.is_dir():
            raise ReportError(
                f"'{path}' is a file, not a folder. Give the run folder that holds it, or the multirun folder "
                "above the run folders."
            )
        runs = _search(path, SEARCH_DEPTH)
        if not runs:
            raise ReportError(
                f"No run folder found in '{path}' or in its sub-folders (down to {SEARCH_DEPTH} levels). A run "
                f"folder holds run.json or metrics.json (written by 'python -m sod_lightning') or "
                f".hydra/config.yaml. Give the multirun folder multirun/<date>/<time>/ of a sweep or the run "
                f"folders themselves; if the runs were started with another hydra.run.dir/hydra.sweep.dir, look "
                f"there."
            )
        for run in runs:
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                found.append(run)
    return found


def _search(folder: Path, depth: int) -> list[Path]:
    if _is_run(folder):
        # A run's own sub-folders (checkpoints, wandb, samples) are never runs.
        return [folder]
    if depth == 0:
        return []
    runs: list[Path] = []
    for child in sorted((c for c in folder.iterdir() if c.is_dir() and not c.name.startswith(".")), key=_natural_key):
        runs.extend(_search(child, depth - 1))
    return runs


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(
            f"'{path}' cannot be read as JSON ({type(err).__name__}: {err}). The run was probably interrupted "
            "while writing it: test the run's best checkpoint again, or delete the run folder to leave it out."
        ) from err


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 -- these files only supply fallback labels; a broken one is not fatal
        return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_metrics(path: Path) -> dict[str, dict[str, float]]:
    data = _read_json(path)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ReportError(
            f"'{path}' is not a metrics file: expected {{\"<test set>\": {{\"mae\": 0.05, \"maxf\": 0.9, ...}}}}, "
            f"got {type(data).__name__}. It is written by 'python -m sod_lightning' after testing; test the run's "
            "best checkpoint again, or delete the file."
        )
    # Non-numeric entries (a checkpoint path, say) are not table cells.
    return {name: {k: float(v) for k, v in vals.items() if _is_number(v)} for name, vals in data.items()}


def _read_curves(path: Path, run: Run) -> dict[str, dict[str, np.ndarray]]:
    try:
        data = _read_json(path)
    except ReportError as err:
        run.notes.append(str(err))
        return {}
    curves: dict[str, dict[str, np.ndarray]] = {}
    if not isinstance(data, dict):
        run.notes.append(f"'{path}' is not a curves file (expected {{\"<test set>\": {{\"pr_precision\": [...]}}}}).")
        return {}
    for name, vals in data.items():
        if not isinstance(vals, dict):
            continue
        arrays = {}
        for key, values in vals.items():
            try:
                arr = np.asarray(values, dtype=float)
            except (TypeError, ValueError):
                continue
            if arr.ndim == 1 and arr.size > 1:
                arrays[key] = arr
        pr = [arrays.get("pr_precision"), arrays.get("pr_recall")]
        if pr[0] is not None and pr[1] is not None and pr[0].shape != pr[1].shape:
            run.notes.append(
                f"'{path}': {name} pr_precision has {pr[0].size} values and pr_recall {pr[1].size}; the PR curve "
                "is left out."
            )
            arrays.pop("pr_precision")
            arrays.pop("pr_recall")
        curves[name] = arrays
    return curves


def load_run(path: str | Path) -> Run:
    """Read one run folder (``run.json``, ``metrics.json``, ``curves.json``, ``.hydra``).

    A folder without ``metrics.json`` is an ``incomplete`` run; a ``failed`` status in ``run.json`` or an
    unreadable ``run.json``/``metrics.json`` makes a ``failed`` one. Neither raises: the report lists them.
    """
    path = Path(path)
    hydra = _read_yaml(path / ".hydra" / "hydra.yaml") or {}
    choices = ((hydra.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
    overrides = _read_yaml(path / ".hydra" / "overrides.yaml")
    config = _read_yaml(path / ".hydra" / "config.yaml") or {}
    run_name = config.get("run_name") if isinstance(config, dict) else None
    model, backbone, loss = (str(choices.get(k) or "") for k in ("model", "backbone", "loss"))
    if isinstance(run_name, str) and run_name and "${" not in run_name:
        name = run_name
    elif model:
        name = "-".join(x for x in (model, backbone, loss) if x)
    else:
        name = path.name
    run = Run(path=path, name=name, model=model, backbone=backbone, loss=loss,
              overrides=[str(o) for o in overrides] if isinstance(overrides, list) else [])

    info_path = path / "run.json"
    if info_path.is_file():
        try:
            info = _read_json(info_path)
            if not isinstance(info, dict):
                raise ReportError(f"'{info_path}' holds {type(info).__name__}, expected an object with name, "
                                  "model, params, status, ...; delete it or the run folder.")
        except ReportError as err:
            run.status, run.error = "failed", str(err)
            info = {}
        run.name = str(info.get("name") or run.name)
        run.model = str(info.get("model") or run.model)
        run.backbone = str(info.get("backbone") or run.backbone)
        run.loss = str(info.get("loss") or run.loss)
        run.params = int(info["params"]) if _is_number(info.get("params")) else None
        ips = info.get("train_images_per_s")
        run.images_per_s = float(ips) if _is_number(ips) and math.isfinite(ips) else None
        if info.get("status", "ok") != "ok":
            run.status = str(info["status"])
            run.error = str(info.get("error") or f"run.json says status '{run.status}' without an error message")

    metrics_path = path / "metrics.json"
    if metrics_path.is_file():
        try:
            run.metrics = _read_metrics(metrics_path)
        except ReportError as err:
            run.status = "failed"
            run.error = f"{run.error}; {err}" if run.error else str(err)
    elif run.status == "ok":
        run.status = "incomplete"
        run.error = (f"no metrics.json in '{path}': the run was interrupted, is still running, or ran with "
                     "test=false. Resume it with ckpt_path=last hydra.run.dir=<this folder>.")
    curves_path = path / "curves.json"
    if curves_path.is_file():
        run.curves = _read_curves(curves_path, run)
    elif run.metrics:
        run.notes.append(f"no curves.json in '{path}': the run is left out of the PR and F-measure figures.")
    return run


def _unique_names(runs: list[Run]) -> None:
    """Make row labels unique: sweeps over e.g. the learning rate share model, backbone and loss."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.name, []).append(run)
    for group in groups.values():
        if len(group) < 2:
            continue
        shared = set.intersection(*(set(r.overrides) for r in group))
        for run in group:
            extra = [o for o in run.overrides if o not in shared and o.split("=", 1)[-1] not in run.name]
            if extra:
                run.name = f"{run.name} ({' '.join(extra)})"
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        common = Path(os.path.commonpath([str(r.path.resolve()) for r in runs]))
        for run in runs:
            if names.count(run.name) > 1:
                rel = run.path.resolve().relative_to(common) if run.path.resolve() != common else run.path.name
                run.name = f"{run.name} [{rel}]"


def load_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Every run under ``paths`` (see :func:`find_runs`), read and uniquely named."""
    runs = [load_run(p) for p in find_runs(paths)]
    _unique_names(runs)
    return runs


# ------------------------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------------------------
def _ordered(keys: Iterable[str], order: Sequence[str]) -> list[str]:
    keys = list(dict.fromkeys(keys))
    return [k for k in order if k in keys] + [k for k in keys if k not in order]


def _test_sets(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(name for r in runs for name in r.metrics))


def _columns(runs: Sequence[Run], metrics: Sequence[str] | str) -> list[tuple[str, str]]:
    """``(test set, metric)`` columns of ``metrics`` (``"paper"``, ``"all"`` or keys) that some run has."""
    if metrics == "paper":
        metrics = PAPER_METRICS
    cols = []
    for name in _test_sets(runs):
        found = [k for r in runs for k in r.metrics.get(name, {})]
        keys = _ordered(found, METRIC_ORDER) if metrics == "all" else [m for m in metrics if m in found]
        cols.extend((name, k) for k in keys)
    return cols


def _best(values: list[float | None], lower_is_better: bool, decimals: int | None) -> set[int]:
    """Indices of the best values (all ties, at the precision shown).

    None when fewer than two values or when all are equal: a mark that singles out nothing is noise.
    """
    present = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    key = (lambda v: round(v, decimals)) if decimals is not None else (lambda v: v)
    if len({key(v) for _, v in present}) < 2:
        return set()
    target = (min if lower_is_better else max)(key(v) for _, v in present)
    return {i for i, v in present if key(v) == target}


def _fmt_params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_csv(runs: Sequence[Run], path: Path) -> None:
    """A row per run: labels, status, params, images/s, ``<set>/<metric>`` for every metric found, folder, error."""
    cols = _columns(runs, "all")
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "model", "backbone", "loss", "status", "params", "train_images_per_s",
                         *(f"{s}/{m}" for s, m in cols), "folder", "error"])
        for r in runs:
            writer.writerow([
                r.name, r.model, r.backbone, r.loss, r.status,
                "" if r.params is None else r.params,
                "" if r.images_per_s is None else repr(r.images_per_s),
                *("" if (v := r.metrics.get(s, {}).get(m)) is None else repr(v) for s, m in cols),
                str(r.path), r.error or "",
            ])


def markdown_table(runs: Sequence[Run], metrics: Sequence[str] | str = "paper") -> str:
    """The Markdown table: a row per run, a column per test set and metric, the best of each column in bold.

    Args:
        runs: the runs, in row order.
        metrics: the metric keys to show, ``"paper"`` (:data:`PAPER_METRICS`) or ``"all"`` (every one found).
    """
    cols = _columns(runs, metrics)
    ok = [r.ok for r in runs]

    def marked(values: list[float | None], lower: bool, decimals: int | None, fmt) -> list[str]:
        # Only finished runs compete for the mark: a failed run's partial numbers are shown but not ranked.
        best = _best([v if good else None for v, good in zip(values, ok)], lower, decimals)
        return [("—" if v is None else (f"**{fmt(v)}**" if i in best else fmt(v))) for i, v in enumerate(values)]

    body_cols = [
        marked([r.params for r in runs], True, None, _fmt_params),
        marked([r.images_per_s for r in runs], False, 1, lambda v: f"{v:.1f}"),
    ]
    for s, m in cols:
        body_cols.append(marked([r.metrics.get(s, {}).get(m) for r in runs], m in LOWER_IS_BETTER, DECIMALS,
                                lambda v: f"{v:.{DECIMALS}f}"))
    header = ["run", "model", "backbone", "loss", "params", "train img/s",
              *(f"{s} {METRIC_LABELS.get(m, m)}{'↓' if m in LOWER_IS_BETTER else '↑'}" for s, m in cols), "status"]
    align = [":--"] * 4 + ["--:"] * (2 + len(cols)) + [":--"]
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    for i, r in enumerate(runs):
        cells = [r.name, r.model or "—", r.backbone or "—", r.loss or "—", *(c[i] for c in body_cols), r.status]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------------------
LINESTYLES = ("-", "--", "-.", ":")


def _style(index: int) -> dict[str, Any]:
    """The colour and dash of run ``index``, the same in every figure: tab10 colours, then new dashes."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"].colors
    return {"color": colors[index % len(colors)], "linestyle": LINESTYLES[(index // len(colors)) % len(LINESTYLES)]}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "set"


def _lower_limit(values: Iterable[np.ndarray]) -> float:
    # Zoom like papers do (PR plots rarely start at 0), at a tenth below the lowest meaningful value.
    lows = [float(np.nanmin(v)) for v in values if v.size and np.isfinite(v).any()]
    return max(0.0, min(0.9, math.floor(min(lows) * 10) / 10)) if lows else 0.0


def _legend(ax, n: int) -> None:
    if n > 8:
        # Many runs: a legend inside would hide the curves; put it under the axes.
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=7, frameon=False)
    else:
        ax.legend(loc="best", fontsize=8, framealpha=0.9)


def _label(run: Run, test_set: str) -> str:
    maxf = run.metrics.get(test_set, {}).get("maxf")
    return f"{run.name}: maxF {maxf:.3f}" if maxf is not None else run.name


def plot_pr(runs: Sequence[Run], styles: Sequence[dict], test_set: str, path: Path) -> bool:
    """Precision against recall on ``test_set``, a line per run; ``False`` when no run has the curve."""
    # Figure without pyplot: no global backend or figure registry, so the report is safe to make from a notebook
    # or a headless server alike.
    from matplotlib.figure import Figure

    lines = [(r, s) for r, s in zip(runs, styles) if "pr_precision" in r.curves.get(test_set, {})]
    if not lines:
        return False
    fig = Figure(figsize=(5.2, 5.2))
    ax = fig.subplots()
    shown = []
    for run, style in lines:
        c = run.curves[test_set]
        # Where nothing is predicted (recall 0) precision is 0 by convention, not a measurement: drawing that
        # point would add a vertical drop to the origin that SOD papers' curves do not have.
        keep = c["pr_recall"] > 0
        ax.plot(c["pr_recall"][keep], c["pr_precision"][keep], lw=1.6, label=_label(run, test_set), **style)
        # The zoom ignores the few nearly-empty thresholds at the left end, as papers' figures do.
        shown.append(c["pr_precision"][c["pr_recall"] >= 0.05])
    ax.set(xlim=(0, 1), ylim=(_lower_limit(shown), 1.0), xlabel="Recall", ylabel="Precision",
           title=f"{test_set}: precision-recall")
    ax.set_box_aspect(1)
    ax.grid(True, alpha=0.3)
    _legend(ax, len(lines))
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return True


def plot_fmeasure(runs: Sequence[Run], styles: Sequence[dict], test_set: str, path: Path) -> bool:
    """F-measure against threshold 0..255 on ``test_set``, a line per run; ``False`` when no run has the curve."""
    from matplotlib.figure import Figure

    lines = [(r, s) for r, s in zip(runs, styles) if "f_curve" in r.curves.get(test_set, {})]
    if not lines:
        return False
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    shown = []
    for run, style in lines:
        f = run.curves[test_set]["f_curve"]
        # Index t is threshold t when there are 256 values; spread other lengths over the same 0..255 axis.
        ax.plot(np.linspace(0, 255, f.size), f, lw=1.6, label=_label(run, test_set), **style)
        shown.append(f[5:-5] if f.size > 20 else f)
    ax.set(xlim=(0, 255), ylim=(_lower_limit(shown), 1.0), xlabel="Threshold", ylabel="F-measure (β² = 0.3)",
           title=f"{test_set}: F-measure by threshold")
    ax.set_xticks([0, 32, 64, 96, 128, 160, 192, 224, 255])
    ax.grid(True, alpha=0.3)
    _legend(ax, len(lines))
    fig.savefig(path, dpi=150, bbox_inches="tight")
    return True


def _sample_stems(folder: Path) -> list[str]:
    return sorted((p.name[: -len("_pred.png")] for p in folder.glob("*_pred.png")), key=_natural_key)


def _open_image(path: Path, mode: str, size: tuple[int, int] | None = None) -> np.ndarray | None:
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None and img.size != size:
                # Display only: the panels of a row must line up even if a run saved another size.
                img = img.resize(size, Image.BILINEAR)
            return np.asarray(img)
    except (OSError, ValueError):
        return None


def plot_samples(runs: Sequence[Run], test_set: str, path: Path, max_samples: int, notes: list[str]) -> bool:
    """The qualitative grid: a row per image (input, ground truth, each run's prediction); ``False`` if no samples."""
    from matplotlib.figure import Figure

    runs = [r for r in runs if (r.path / "samples" / test_set).is_dir()]
    stems = list(dict.fromkeys(s for r in runs for s in _sample_stems(r.path / "samples" / test_set)))
    stems = stems[:max_samples]
    if not stems:
        return False
    rows = []
    for stem in stems:
        image = gt = None
        for r in runs:
            folder = r.path / "samples" / test_set
            if image is None:
                image = _open_image(folder / f"{stem}_image.png", "RGB")
            if gt is None:
                gt = _open_image(folder / f"{stem}_gt.png", "L")
        size = None if image is None else (image.shape[1], image.shape[0])
        if gt is not None and size is not None and gt.shape[:2] != image.shape[:2]:
            gt = _open_image(next(r.path / "samples" / test_set / f"{stem}_gt.png" for r in runs
                                  if (r.path / "samples" / test_set / f"{stem}_gt.png").is_file()), "L", size)
        preds = []
        for r in runs:
            pred_path = r.path / "samples" / test_set / f"{stem}_pred.png"
            pred = _open_image(pred_path, "L", size) if pred_path.is_file() else None
            if pred is None:
                notes.append(f"{test_set}: no readable '{pred_path.name}' in run {r.name}; its panel is blank.")
            preds.append(pred)
        ref = next((a for a in (image, gt, *preds) if a is not None), None)
        aspect = 1.0 if ref is None else ref.shape[0] / ref.shape[1]
        rows.append((stem, aspect, [image, gt, *preds]))

    titles = ["Image", "Ground truth", *(r.name for r in runs)]
    cell = 1.9
    ratios = [min(max(a, 0.25), 4.0) for _, a, _ in rows]
    fig = Figure(figsize=(cell * len(titles), cell * sum(ratios) + 0.5))
    axes = fig.subplots(len(rows), len(titles), squeeze=False,
                        gridspec_kw={"height_ratios": ratios, "wspace": 0.04, "hspace": 0.06})
    for i, (stem, _, panels) in enumerate(rows):
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is None:
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.5, "missing", ha="center", va="center", transform=ax.transAxes, color="0.4")
            elif panel.ndim == 2:
                ax.imshow(panel, cmap="gray", vmin=0, vmax=255, aspect="auto", interpolation="antialiased")
            else:
                ax.imshow(panel, aspect="auto", interpolation="antialiased")
            for spine in ax.spines.values():
                spine.set_visible(False)
            if i == 0:
                # Wrap at spaces and hyphens only: a run name broken mid-word is hard to read.
                ax.set_title(textwrap.fill(titles[j], 24, break_long_words=False), fontsize=8)
            if j == 0:
                ax.set_ylabel(stem, fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return True


# ------------------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------------------
def _sweep_overrides(paths: Sequence[str | Path]) -> list[str]:
    lines = []
    for raw in paths:
        data = _read_yaml(Path(raw) / "multirun.yaml")
        if not isinstance(data, dict):
            continue
        task = ((data.get("hydra") or {}).get("overrides") or {}).get("task")
        if task:
            lines.append(" ".join(str(t) for t in task))
    return lines


def make_report(paths: Sequence[str | Path], out: str | Path | None = None,
                metrics: Sequence[str] | str = "paper", max_samples: int = 6) -> Report:
    """Write the comparison report of the runs under ``paths``.

    Args:
        paths: a multirun folder, run folders, or a mix (see :func:`find_runs`).
        out: the output folder; default ``<first path>/report/``.
        metrics: the Markdown table's metric keys, ``"paper"`` (:data:`PAPER_METRICS`, those the runs have) or
            ``"all"`` (every metric found); the CSV always has every metric.
        max_samples: at most this many rows in each qualitative grid.

    Returns:
        The :class:`Report`: the runs and the paths written.

    Raises:
        ReportError: a path does not exist or holds no run, ``out`` is a file, or a metric named in
            ``metrics`` is in no run's ``metrics.json``.
    """
    runs = load_runs(paths)
    found = {k for r in runs for vals in r.metrics.values() for k in vals}
    # Named metrics must exist (a typo would silently drop a column); "paper" takes those present.
    unknown = [] if isinstance(metrics, str) else [m for m in metrics if m not in found]
    if isinstance(metrics, str) and metrics not in ("paper", "all"):
        raise ReportError(f"metrics='{metrics}': give 'paper', 'all' or a list of metric keys such as "
                          f"{list(PAPER_METRICS)}.")
    if found and unknown:
        raise ReportError(
            f"--metrics: {', '.join(unknown)} not in any run's metrics.json; the runs have "
            f"{', '.join(_ordered(found, METRIC_ORDER))}. Name some of these (comma-separated), or 'all'."
        )
    first = Path(paths[0])
    out_dir = Path(out) if out is not None else (first.parent if first.is_file() else first) / "report"
    if out_dir.exists() and not out_dir.is_dir():
        raise ReportError(f"--out '{out_dir}' is a file; give a folder (it is created if missing).")
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = [n for r in runs for n in r.notes]

    csv_path = out_dir / "report.csv"
    write_csv(runs, csv_path)

    good = [r for r in runs if r.ok]
    # Only finished runs are drawn; each keeps one colour and dash (by row order) in every figure.
    styles = [_style(i) for i in range(len(good))]
    figures: dict[str, dict[str, Path]] = {}
    test_sets = _test_sets(good) + [s for r in good if (r.path / "samples").is_dir()
                                    for s in sorted(p.name for p in (r.path / "samples").iterdir() if p.is_dir())]
    for test_set in dict.fromkeys(test_sets):
        figs: dict[str, Path] = {}
        stem = _safe(test_set)
        if plot_pr(good, styles, test_set, out_dir / f"pr_{stem}.png"):
            figs["pr"] = out_dir / f"pr_{stem}.png"
        if plot_fmeasure(good, styles, test_set, out_dir / f"fmeasure_{stem}.png"):
            figs["fmeasure"] = out_dir / f"fmeasure_{stem}.png"
        if plot_samples(good, test_set, out_dir / f"samples_{stem}.png", max_samples, notes):
            figs["samples"] = out_dir / f"samples_{stem}.png"
        if figs:
            figures[test_set] = figs

    md_path = out_dir / "report.md"
    md_path.write_text(_markdown(runs, paths, metrics, figures, notes, out_dir))
    return Report(out_dir=out_dir, runs=runs, markdown=md_path, csv=csv_path, figures=figures, notes=notes)


def _markdown(runs: Sequence[Run], paths: Sequence[str | Path], metrics: Sequence[str] | str,
              figures: dict[str, dict[str, Path]], notes: list[str], out_dir: Path) -> str:
    counts = {s: sum(r.status == s for r in runs) for s in dict.fromkeys(r.status for r in runs)}
    parts = [
        "# Comparison report",
        "",
        f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}) from "
        + ", ".join(f"`{p}`" for p in paths) + ".",
    ]
    parts += [f"Sweep: `{line}`" for line in _sweep_overrides(paths)]
    parts += [
        "",
        "## Metrics",
        "",
        "Best of each column in **bold** among the finished runs (lowest for MAE↓ and parameters, highest "
        "otherwise). Metrics are computed at each mask's original resolution; every metric is in "
        "[`report.csv`](report.csv).",
        "",
        markdown_table(runs, metrics),
    ]
    bad = [r for r in runs if not r.ok]
    if bad:
        parts += ["", "## Failed or incomplete runs", ""]
        parts += [f"- **{_md_escape(r.name)}** (`{r.path}`), {r.status}: {_md_escape(r.error or '')}" for r in bad]
    for test_set, figs in figures.items():
        parts += ["", f"## {test_set}", ""]
        if "pr" in figs or "fmeasure" in figs:
            parts.append(" ".join(f"![{test_set} {k}]({figs[k].relative_to(out_dir)})" for k in ("pr", "fmeasure")
                                  if k in figs))
        if "samples" in figs:
            parts += ["", f"![{test_set} samples]({figs['samples'].relative_to(out_dir)})"]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {_md_escape(n)}" for n in notes]
    return "\n".join(parts) + "\n"


def _parse_metrics(text: str) -> list[str] | str:
    if text.strip().lower() in ("all", "paper"):
        return text.strip().lower()
    return [m.strip() for m in text.split(",") if m.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m sod_lightning.report <folders> [--out DIR] [--metrics ...] [--max-samples N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m sod_lightning.report",
        description="Markdown and CSV tables, PR and F-measure curves and qualitative grids comparing trained runs.",
    )
    parser.add_argument("paths", nargs="+", help="a multirun folder (multirun/<date>/<time>/), run folders, or both")
    parser.add_argument("--out", default=None, help="output folder (default: <first path>/report/)")
    parser.add_argument("--metrics", default="paper",
                        help=f"metrics of the Markdown table: comma-separated keys, 'all', or 'paper' (default: "
                             f"those of {','.join(PAPER_METRICS)} the runs have); the CSV has every metric")
    parser.add_argument("--max-samples", type=int, default=6, help="rows of each qualitative grid (default: 6)")
    args = parser.parse_args(argv)
    if args.max_samples < 1:
        parser.error(f"--max-samples must be at least 1, got {args.max_samples}")
    try:
        report = make_report(args.paths, args.out, _parse_metrics(args.metrics), args.max_samples)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ok = sum(r.ok for r in report.runs)
    print(f"{len(report.runs)} runs ({ok} ok) -> {report.markdown}, {report.csv}")
    for test_set, figs in report.figures.items():
        print(f"  {test_set}: " + ", ".join(str(p) for p in figs.values()))
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
