"""`python -m sod_lightning.evaluate`: saved maps vs masks, several methods and data sets, files written."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sod_lightning.evaluate import EvaluationError, evaluate
from sod_lightning.metrics import SODMetrics

REPO = Path(__file__).resolve().parents[1]


def _write_set(root: Path, n: int = 4, size=(48, 64), seed: int = 0):
    """Masks in root/masks, two methods' maps in root/<method>/<set>/ (PNG), returns the arrays."""
    rng = np.random.default_rng(seed)
    (root / "masks").mkdir(parents=True)
    arrays = {"good": [], "noisy": []}
    masks = []
    for i in range(n):
        h, w = size
        yy, xx = np.mgrid[:h, :w]
        gt = ((((yy - h / 2) / (h / 3)) ** 2 + ((xx - w / 2 - i) / (w / 4)) ** 2) < 1).astype(np.uint8) * 255
        Image.fromarray(gt).save(root / "masks" / f"img{i}.png")
        masks.append(gt)
        for method, noise in (("good", 10), ("noisy", 80)):
            pred = np.clip(gt * 0.8 + rng.normal(30, noise, gt.shape), 0, 255).astype(np.uint8)
            folder = root / method / "SET"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pred).save(folder / f"img{i}.png")
            arrays[method].append(pred)
    return masks, arrays


def _expected(preds, masks):
    metric = SODMetrics()
    for pred, gt in zip(preds, masks):
        metric.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    return metric.compute()


def test_evaluate_writes_table_csv_json_and_curves(tmp_path, capsys):
    masks, arrays = _write_set(tmp_path)
    out = tmp_path / "out"
    results = evaluate(
        {"good": tmp_path / "good", "noisy": tmp_path / "noisy"},
        {"SET": {"mask_dir": str(tmp_path / "masks")}},
        out,
    )
    printed = capsys.readouterr().out
    assert "maxf" in printed and "noisy" in printed
    for method in ("good", "noisy"):
        expected = _expected(arrays[method], masks)
        for key, value in expected.items():
            np.testing.assert_allclose(results["SET"][method][key], value.numpy(), atol=1e-12, rtol=0)
    assert results["SET"]["good"]["maxf"] > results["SET"]["noisy"]["maxf"]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["dataset"], r["method"]) for r in rows] == [("SET", "good"), ("SET", "noisy")]
    assert float(rows[0]["sm"]) == results["SET"]["good"]["sm"] and rows[0]["n_images"] == "4"
    payload = json.loads((out / "results.json").read_text())
    assert len(payload["thresholds"]) == 256 and len(payload["results"]["SET"]["noisy"]["f_curve"]) == 256
    curve = list(csv.DictReader(open(out / "curves" / "SET" / "good.csv")))
    assert len(curve) == 256 and float(curve[0]["threshold"]) == 0.0
    assert float(curve[10]["f"]) == pytest.approx(results["SET"]["good"]["f_curve"][10], abs=1e-15)


def test_missing_prediction_names_the_file(tmp_path):
    _write_set(tmp_path)
    (tmp_path / "good" / "SET" / "img2.png").unlink()
    with pytest.raises(EvaluationError, match=r"no prediction for mask '.*img2\.png'"):
        evaluate({"good": tmp_path / "good"}, {"SET": str(tmp_path / "masks")}, None)


def test_size_mismatch_errors_unless_resize_pred(tmp_path):
    masks, arrays = _write_set(tmp_path, n=2)
    big = np.array(Image.fromarray(arrays["good"][1]).resize((128, 96), Image.BILINEAR))
    Image.fromarray(big).save(tmp_path / "good" / "SET" / "img1.png")
    with pytest.raises(EvaluationError, match=r"img1\.png' is \(96, 128\).*resize_pred=true"):
        evaluate({"good": tmp_path / "good"}, {"SET": str(tmp_path / "masks")}, None)
    with pytest.warns(UserWarning, match="resized 1 of 2"):
        results = evaluate({"good": tmp_path / "good"}, {"SET": str(tmp_path / "masks")}, None, resize_pred=True)
    assert 0.5 < results["SET"]["good"]["maxf"] <= 1.0


def test_command_line_with_hydra_overrides(tmp_path):
    _write_set(tmp_path, n=2)
    out = tmp_path / "cli"
    cmd = [
        sys.executable, "-m", "sod_lightning.evaluate",
        f"methods={{good: {tmp_path / 'good'}}}",
        f"datasets={{SET: {{mask_dir: {tmp_path / 'masks'}}}}}",
        f"output={out}", "metrics=[mae,maxf,sm]",
    ]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert set(rows[0]) == {"dataset", "method", "n_images", "mae", "maxf", "sm"}
    assert "maxf" in done.stdout
