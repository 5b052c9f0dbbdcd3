"""The comparison report (``python -m sod_lightning.report``) on synthetic run folders.

The fixture builds a multirun folder the way ``python -m sod_lightning -m ...`` leaves it (``.hydra/``,
``run.json``, ``metrics.json``, ``curves.json``, ``samples/``): three finished runs (two sharing a name, as in a
learning-rate sweep), one failed run and one killed before testing. No model is trained.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sod_lightning import report as rp

SETS = ("ECSSD", "HKU-IS")
TAB10 = [(31, 119, 180), (255, 127, 14), (44, 160, 44)]
MAGENTA = (255, 0, 255)
# Prediction grey level of each finished run, so each run's panel can be told apart in the grid.
PRED_LEVEL = (96, 160, 224)
# Sample images of two shapes (H, W): rows of the grid keep each image's aspect.
SAMPLE_SIZES = {"0001": (48, 64), "0002": (64, 48)}


def _curves(quality: float) -> dict[str, list[float]]:
    """Plausible mean P/R/F curves (thresholds ascending): recall falls, precision rises with the threshold."""
    x = np.linspace(0, 1, 256)
    recall = 1 - x ** (1.5 + 6 * quality)
    precision = 0.45 + (0.5 + 0.04 * quality) * x ** 0.3
    # Nothing predicted above the highest score: both fall to 0 by the suite's convention.
    recall[-1] = precision[-1] = 0.0
    f = np.where(recall > 0, 1.3 * precision * recall / np.maximum(0.3 * precision + recall, 1e-12), 0.0)
    return {"pr_precision": precision.tolist(), "pr_recall": recall.tolist(), "f_curve": f.tolist(),
            "em_curve": (0.5 + 0.4 * f).tolist()}


# (folder, run.json name, model, backbone, loss, overrides, params, images/s, quality per set, scalars per set)
FINISHED = [
    ("0", "unet-resnet50-hybrid", "unet", "resnet50", "hybrid", ["optimizer.lr=0.001"], 32_521_000, 41.5,
     {"ECSSD": 0.8, "HKU-IS": 0.3},
     {"ECSSD": {"mae": 0.0412, "sm": 0.9001, "maxem": 0.93, "wfm": 0.85},
      "HKU-IS": {"mae": 0.0520, "sm": 0.8600, "maxem": 0.91, "wfm": 0.81}}),
    ("1", "basnet-resnet34-hybrid", "basnet", "resnet34", "hybrid", [], 87_060_000, 18.25,
     {"ECSSD": 0.5, "HKU-IS": 0.9},
     {"ECSSD": {"mae": 0.0450, "sm": 0.9100, "maxem": 0.92, "wfm": 0.84},
      "HKU-IS": {"mae": 0.0480, "sm": 0.8500, "maxem": 0.94, "wfm": 0.83}}),
    # Same name as job 0 (an lr sweep); ties job 0 on HKU-IS S-measure at the 4 decimals shown.
    ("2", "unet-resnet50-hybrid", "unet", "resnet50", "hybrid", ["optimizer.lr=0.01"], 32_521_000, 41.9,
     {"ECSSD": 0.2, "HKU-IS": 0.1},
     {"ECSSD": {"mae": 0.0700, "sm": 0.8000, "maxem": 0.88, "wfm": 0.70},
      "HKU-IS": {"mae": 0.0810, "sm": 0.86000004, "maxem": 0.85, "wfm": 0.70}}),
]


def _write_hydra(folder: Path, model: str, backbone: str, loss: str, overrides: list[str]) -> None:
    hydra = folder / ".hydra"
    hydra.mkdir(parents=True)
    # Hydra saves the config unresolved: run_name is still an interpolation here.
    (hydra / "config.yaml").write_text(
        "run_name: ${hydra:runtime.choices.model}-${hydra:runtime.choices.backbone}-${hydra:runtime.choices.loss}\n"
        "seed: 42\n")
    (hydra / "hydra.yaml").write_text(
        f"hydra:\n  runtime:\n    choices:\n      model: {model}\n      backbone: {backbone}\n      loss: {loss}\n")
    (hydra / "overrides.yaml").write_text("".join(f"- {o}\n" for o in [f"model={model}", *overrides]))


def _write_samples(folder: Path, level: int) -> None:
    for test_set in SETS:
        out = folder / "samples" / test_set
        out.mkdir(parents=True)
        for stem, (h, w) in SAMPLE_SIZES.items():
            yy, xx = np.mgrid[:h, :w]
            inside = ((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2) / (w / 3)) ** 2 < 1
            image = np.zeros((h, w, 3), np.uint8)
            image[:] = MAGENTA
            image[inside] = (250, 220, 30)
            Image.fromarray(image).save(out / f"{stem}_image.png")
            Image.fromarray((inside * 255).astype(np.uint8)).save(out / f"{stem}_gt.png")
            Image.fromarray((inside * level).astype(np.uint8)).save(out / f"{stem}_pred.png")


@pytest.fixture()
def sweep(tmp_path: Path) -> Path:
    """``multirun/<date>/<time>/`` with jobs 0-2 finished, 3 failed, 4 killed before testing."""
    root = tmp_path / "multirun" / "2024-05-01" / "12-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - model=unet,basnet\n    - optimizer.lr=0.001,0.01\n")
    for i, (folder, name, model, backbone, loss, overrides, params, ips, quality, scalars) in enumerate(FINISHED):
        run = root / folder
        _write_hydra(run, model, backbone, loss, overrides)
        (run / "run.json").write_text(json.dumps({
            "name": name, "model": model, "backbone": backbone, "loss": loss, "params": params,
            "train_images_per_s": ips, "status": "ok", "error": None, "output_dir": str(run)}))
        curves = {s: _curves(quality[s]) for s in SETS}
        metrics = {s: {**scalars[s], "maxf": max(curves[s]["f_curve"]), "meanf": float(np.mean(curves[s]["f_curve"])),
                       "adpf": 0.8, "meanem": 0.9, "adpem": 0.9, "relaxfb": 0.7} for s in SETS}
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / "curves.json").write_text(json.dumps(curves))
        _write_samples(run, PRED_LEVEL[i])
    failed = root / "3"
    _write_hydra(failed, "u2net", "resnet50", "bce", [])
    (failed / "run.json").write_text(json.dumps({
        "name": "u2net-resnet50-bce", "model": "u2net", "backbone": "resnet50", "loss": "bce", "params": 44_000_000,
        "train_images_per_s": None, "status": "failed",
        "error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "output_dir": str(failed)}))
    _write_hydra(root / "4", "gcn", "resnet50", "iou", [])
    return root


def _expected_metrics(folder: str) -> dict[str, dict[str, float]]:
    return json.loads((Path(folder) / "metrics.json").read_text())


def _md_table(text: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    split = [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]
    return split[0], split[2:]


def _colour_pixels(png: np.ndarray, rgb: tuple[int, int, int], tol: int = 12) -> np.ndarray:
    return np.all(np.abs(png[..., :3].astype(int) - rgb) <= tol, axis=-1)


def test_report_tables(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = rp.make_report([sweep], out=out)
    assert [r.path.name for r in report.runs] == ["0", "1", "2", "3", "4"]
    assert [r.status for r in report.runs] == ["ok", "ok", "ok", "failed", "incomplete"]

    # CSV: every metric at full precision, a row per run, failed/incomplete rows with their error.
    with report.csv.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["folder"] for r in rows] == [str(sweep / str(i)) for i in range(5)]
    names = [r["run"] for r in rows]
    assert names[0] == "unet-resnet50-hybrid (optimizer.lr=0.001)"
    assert names[2] == "unet-resnet50-hybrid (optimizer.lr=0.01)"
    assert names[1] == "basnet-resnet34-hybrid" and names[3] == "u2net-resnet50-bce"
    assert names[4] == "gcn-resnet50-iou"  # from .hydra/hydra.yaml's choices: no run.json there
    for row, spec in zip(rows, FINISHED):
        metrics = _expected_metrics(row["folder"])
        assert set(k for k in row if "/" in k) == {f"{s}/{m}" for s in SETS for m in rp.METRIC_ORDER}
        for s in SETS:
            for m, v in metrics[s].items():
                assert float(row[f"{s}/{m}"]) == v, (row["run"], s, m)
        assert int(row["params"]) == spec[6] and float(row["train_images_per_s"]) == spec[7]
        assert row["status"] == "ok" and row["error"] == ""
    assert rows[3]["status"] == "failed" and "CUDA out of memory" in rows[3]["error"]
    assert rows[3]["ECSSD/mae"] == "" and rows[3]["train_images_per_s"] == ""
    assert rows[4]["status"] == "incomplete" and "no metrics.json" in rows[4]["error"]

    # Markdown: the paper metrics, the best of each column (among finished runs) in bold, ties included.
    text = report.markdown.read_text()
    header, body = _md_table(text)
    assert len(body) == 5
    assert header[:6] == ["run", "model", "backbone", "loss", "params", "train img/s"] and header[-1] == "status"
    labels = {"mae": "MAE↓", "maxf": "maxF↑", "sm": "Sm↑", "maxem": "maxEm↑", "wfm": "wF↑"}
    assert header[6:-1] == [f"{s} {labels[m]}" for s in SETS for m in rp.PAPER_METRICS]
    metrics = [_expected_metrics(str(sweep / f[0])) for f in FINISHED]
    for s in SETS:
        for m in rp.PAPER_METRICS:
            col = header.index(f"{s} {labels[m]}")
            values = [round(mt[s][m], 4) for mt in metrics]
            best = (min if m == "mae" else max)(values)
            bold = [i for i, row in enumerate(body) if row[col].startswith("**")]
            assert bold == [i for i, v in enumerate(values) if v == best], (s, m, [row[col] for row in body])
            assert all(float(body[i][col].strip("*")) == pytest.approx(values[i], abs=5e-5) for i in range(3))
            assert body[3][col] == body[4][col] == "—"
    hku_sm = header.index("HKU-IS Sm↑")
    assert [row[hku_sm].startswith("**") for row in body[:3]] == [True, False, True]  # the tie
    # Fewest parameters and fastest training are marked too; the failed run's smaller count is not ranked.
    assert [row[4] for row in body] == ["**32.52M**", "87.06M", "**32.52M**", "44.00M", "—"]
    assert [row[5] for row in body] == ["41.5", "18.2", "**41.9**", "—", "—"]
    assert "Sweep: `model=unet,basnet optimizer.lr=0.001,0.01`" in text
    failed_section = text.split("## Failed or incomplete runs", 1)[1]
    assert "CUDA out of memory" in failed_section and str(sweep / "4") in failed_section
    for figs in report.figures.values():
        for path in figs.values():
            assert f"]({path.name})" in text


def test_report_figures(sweep: Path, tmp_path: Path) -> None:
    report = rp.make_report([sweep], out=tmp_path / "out", max_samples=2)
    assert set(report.figures) == set(SETS)
    for s in SETS:
        figs = report.figures[s]
        assert set(figs) == {"pr", "fmeasure", "samples"}
        assert figs["pr"].name == f"pr_{s}.png"
        for kind in ("pr", "fmeasure"):
            with Image.open(figs[kind]) as img:
                assert img.mode in ("RGB", "RGBA")
                assert 500 < img.width < 1400 and 400 < img.height < 1200, (kind, img.size)
                png = np.asarray(img.convert("RGB"))
            # A line per finished run, in the first three tab10 colours (legend swatches alone are ~60 pixels).
            for rgb in TAB10:
                assert _colour_pixels(png, rgb).sum() > 300, (s, kind, rgb)
        if s == "ECSSD":
            pr_square = Image.open(figs["pr"]).size
            assert 0.8 < pr_square[0] / pr_square[1] < 1.25  # the PR axes are square

        with Image.open(figs["samples"]) as img:
            assert img.mode in ("RGB", "RGBA")
            png = np.asarray(img.convert("RGB"))
        # Columns left to right: input (magenta), ground truth, then each run's prediction at its grey level.
        xs = {}
        for key, rgb in [("image", MAGENTA), *((f"pred{i}", (v, v, v)) for i, v in enumerate(PRED_LEVEL))]:
            mask = _colour_pixels(png, rgb, tol=2)
            assert mask.sum() > 1000, (s, key)
            # Percentiles, not min/max: anti-aliased title and label text has a few pixels of every grey.
            xs[key] = np.percentile(np.nonzero(mask)[1], [2, 98])
        assert xs["image"][1] < xs["pred0"][0]
        assert xs["pred0"][1] < xs["pred1"][0] and xs["pred1"][1] < xs["pred2"][0]
        # Two rows: the 64x48 (portrait) sample makes the grid taller than one row of squares.
        cols = 2 + len(PRED_LEVEL)
        assert png.shape[0] > 1.6 * png.shape[1] / cols
        # The ground truth (a white ellipse on black) fills the gap between the input and the first prediction.
        black_x = np.nonzero(_colour_pixels(png, (0, 0, 0), tol=2))[1]
        assert ((black_x > xs["image"][1]) & (black_x < xs["pred0"][0])).sum() > 1000

    one_row = rp.make_report([sweep], out=tmp_path / "one", max_samples=1).figures["ECSSD"]["samples"]
    assert Image.open(one_row).height < 0.7 * Image.open(report.figures["ECSSD"]["samples"]).height


def test_cli_default_output_and_errors(sweep: Path, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sod_lightning.report", str(sweep)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = sweep / "report"
    assert {p.name for p in out.iterdir()} == {
        "report.md", "report.csv", *(f"{k}_{s}.png" for k in ("pr", "fmeasure", "samples") for s in SETS)}
    assert "5 runs (3 ok)" in proc.stdout
    # The report folder now inside the sweep is not taken for a run; a run given twice counts once.
    runs = rp.load_runs([sweep / "1", sweep])
    assert [r.path.name for r in runs] == ["1", "0", "2", "3", "4"]
    # The default "paper" metrics take those the runs have; a run tested with fewer metrics still reports.
    (sweep / "1" / "metrics.json").write_text(json.dumps({"ECSSD": {"mae": 0.05, "maxf": 0.9}}))
    header, _ = _md_table(rp.markdown_table(rp.load_runs([sweep / "1"])))
    assert header[6:-1] == ["ECSSD MAE↓", "ECSSD maxF↑"]

    missing = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "sod_lightning.report", str(missing)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and str(missing) in proc.stderr and "multirun folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_inputs(sweep: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "a"
    empty.mkdir(parents=True)
    with pytest.raises(rp.ReportError, match=r"No run folder found in '.*empty'.*run\.json or metrics\.json"):
        rp.make_report([empty.parent])
    with pytest.raises(rp.ReportError, match="maxF not in any run's metrics.json.*mae, maxf"):
        rp.make_report([sweep], out=tmp_path / "out", metrics=["mae", "maxF"])
    # A truncated metrics.json makes a failed row naming the file, not a crash or a silent gap.
    (sweep / "1" / "metrics.json").write_text('{"ECSSD": {"mae": 0.04')
    report = rp.make_report([sweep / "0", sweep / "1"], metrics="all")
    assert report.out_dir == sweep / "0" / "report"
    assert [r.status for r in report.runs] == ["ok", "failed"]
    assert str(sweep / "1" / "metrics.json") in report.runs[1].error
    header, body = _md_table(report.markdown.read_text())
    assert len(header) == 7 + len(SETS) * len(rp.METRIC_ORDER)  # every metric
    assert body[1][-1] == "failed" and "**" not in body[0][6]  # one finished run: nothing to rank against
    # A run without curves.json still makes its table row; the note says why its line is missing.
    (sweep / "2" / "curves.json").unlink()
    report = rp.make_report([sweep / "0", sweep / "2"], out=tmp_path / "o2")
    assert any("no curves.json" in n and str(sweep / "2") in n for n in report.notes)
    assert "no curves.json" in report.markdown.read_text()


def test_markdown_marks(tmp_path: Path) -> None:
    """Bold: the best at the precision shown, every tie, lowest MAE; nothing when all values are equal."""
    runs = [rp.Run(path=tmp_path / str(i), name=f"r{i}", params=1000, images_per_s=ips,
                   metrics={"S": {"mae": mae, "maxf": maxf, "sm": 0.5}})
            for i, (ips, mae, maxf) in enumerate([(10.0, 0.05001, 0.8), (12.0, 0.05004, 0.9), (11.0, 0.06, 0.9)])]
    runs.append(rp.Run(path=tmp_path / "x", name="x|y", status="failed", metrics={"S": {"mae": 0.01}}))
    header, body = _md_table(rp.markdown_table(runs, ["mae", "maxf", "sm"]))
    assert header[6:9] == ["S MAE↓", "S maxF↑", "S Sm↑"]
    assert [row[6] for row in body] == ["**0.0500**", "**0.0500**", "0.0600", "0.0100"]  # failed: not ranked
    assert [row[7] for row in body] == ["0.8000", "**0.9000**", "**0.9000**", "—"]
    assert [row[8] for row in body] == ["0.5000", "0.5000", "0.5000", "—"]  # all equal: no mark
    assert [row[4] for row in body] == ["1.0K"] * 3 + ["—"] and body[1][5] == "**12.0**"
    assert body[3][0] == "x\\|y"  # a "|" in a name does not split the row


def test_metric_lists_match_the_suite() -> None:
    from sod_lightning.metrics.functional.collection import SCALAR_KEYS
    from sod_lightning.train import SUMMARY_METRICS

    assert rp.PAPER_METRICS == SUMMARY_METRICS
    assert rp.METRIC_ORDER == SCALAR_KEYS
