"""Throughput of the SOD metrics against pysodmetrics on the same 400x300 maps.

Usage::

    python benchmarks/metrics.py                 # CPU, 60 maps, batch 1 (mixed-size validation, evaluate)
    python benchmarks/metrics.py --batch-size 16 --n 96   # same-size batches, as the module groups them
    python benchmarks/metrics.py --device cuda   # the torch side on a GPU (pysodmetrics stays on the CPU)
    python benchmarks/metrics.py --n 100 --batch-size 8 --threads 2

Prints images/s of each metric family and of the full set for both implementations, their ratio, and the
largest absolute difference between the two full-set results (a sanity check that the maps are comparable).
Each row alternates the two implementations ``--repeat`` times and keeps the best of each, so that a shared
machine's slow moments do not land on one side only.
The maps are synthetic (random ellipses, noisy predictions with smooth borders), generated with a fixed seed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch


def make_maps(n: int, height: int = 300, width: int = 400, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (pred, gt) uint8 pairs: ellipse masks, predictions = blurred mask + noise, clipped."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    maps = []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
        ry, rx = rng.uniform(0.1, 0.4) * height, rng.uniform(0.1, 0.4) * width
        r = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
        gt = (r < 1).astype(np.uint8) * 255
        soft = 1 / (1 + np.exp((r - rng.uniform(0.9, 1.1)) * 8))
        pred = np.clip(soft * 255 + rng.normal(0, 25, gt.shape), 0, 255).astype(np.uint8)
        maps.append((pred, gt))
    return maps


def _pysod_factories() -> dict[str, list]:
    import py_sod_metrics as psm

    return {
        "mae": [psm.MAE],
        "fmeasure": [psm.Fmeasure],
        "smeasure": [psm.Smeasure],
        "emeasure": [psm.Emeasure],
        "wfmeasure": [psm.WeightedFmeasure],
        "full set": [psm.MAE, psm.Fmeasure, psm.Smeasure, psm.Emeasure, psm.WeightedFmeasure],
        "full w/o wfm": [psm.MAE, psm.Fmeasure, psm.Smeasure, psm.Emeasure],
    }


def run_pysod(maps, classes) -> tuple[float, float]:
    """Seconds (wall clock, process CPU time) of one pass of pysodmetrics ``step`` over ``maps``."""
    metrics = [cls() for cls in classes]
    start, cpu = time.perf_counter(), time.process_time()
    for pred, gt in maps:
        for m in metrics:
            m.step(pred, gt)
    for m in metrics:
        m.get_results()
    return time.perf_counter() - start, time.process_time() - cpu


def run_ours(metric, preds, gts, batch_size: int) -> tuple[float, float, dict]:
    """Seconds (wall, CPU time) of one pass of ``metric.update`` over the maps, plus one ``compute``."""
    cuda = preds.device.type == "cuda"
    metric.reset()
    if cuda:
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(preds), batch_size):
        metric.update(preds[i : i + batch_size], gts[i : i + batch_size])
    result = metric.compute()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60, help="number of 400x300 maps (default 60)")
    parser.add_argument("--device", default="cpu", help="torch device for sod_lightning (default cpu)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per update (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement, the best is reported (a "
                        "shared machine's slow moments otherwise decide the ratio)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # pysodmetrics' Fmeasure deprecation notice

    from sod_lightning.metrics import EMeasure, FMeasure, MAE, RelaxedBoundaryFMeasure, SMeasure, SODMetrics
    from sod_lightning.metrics import WeightedFMeasure

    maps = make_maps(args.n)
    ours = {
        "mae": MAE,
        "fmeasure": FMeasure,
        "smeasure": SMeasure,
        "emeasure": EMeasure,
        "wfmeasure": WeightedFMeasure,
        "relaxfb": RelaxedBoundaryFMeasure,
        # pysodmetrics' five families (no relaxed boundary F there), then with it, then without weighted F.
        "full set": lambda: SODMetrics(metrics=[k for k in SODMetrics.KEYS if k != "relaxfb"]),
        "full + relaxfb": SODMetrics,
        "full w/o wfm": lambda: SODMetrics(metrics=[k for k in SODMetrics.KEYS if k not in ("wfm", "relaxfb")]),
    }
    reference = _pysod_factories()
    print(
        f"{args.n} maps 400x300, device={args.device}, batch={args.batch_size}, "
        f"torch threads={torch.get_num_threads()}"
    )
    print(f"images/s by wall clock, and by this process's CPU time (all threads), best of {args.repeat} runs")
    print(f"{'metric':<16}{'ours wall':>11}{'pysod wall':>12}{'ratio':>7}{'ours cpu':>11}{'pysod cpu':>11}{'ratio':>7}")
    preds = torch.from_numpy(np.stack([p for p, _ in maps])).to(args.device).float().div_(255)[:, None]
    gts = torch.from_numpy(np.stack([g for _, g in maps])).to(args.device).float().div_(255)[:, None]
    full_result = None
    n = len(maps)
    for name, factory in ours.items():
        metric = factory().to(args.device)
        metric.update(preds[: args.batch_size], gts[: args.batch_size])  # warm-up: allocations, compiled kernels
        # The two sides alternate, best of ``repeat`` each, so that both see the same moments of a shared machine.
        wall = cpu = ref_wall = ref_cpu = float("inf")
        for _ in range(args.repeat):
            w, c, result = run_ours(metric, preds, gts, args.batch_size)
            wall, cpu = min(wall, w), min(cpu, c)
            if name in reference:
                w, c = run_pysod(maps, reference[name])
                ref_wall, ref_cpu = min(ref_wall, w), min(ref_cpu, c)
        if name == "full + relaxfb":
            full_result = result
        rate, rate_cpu = n / wall, n / cpu
        row = f"{name:<16}{rate:11.1f}"
        if name in reference:
            ref, ref_cpu = n / ref_wall, n / ref_cpu
            row += f"{ref:12.1f}{rate / ref:6.1f}x{rate_cpu:11.1f}{ref_cpu:11.1f}{rate_cpu / ref_cpu:6.1f}x"
        else:
            row += f"{'-':>12}{'-':>7}{rate_cpu:11.1f}{'-':>11}{'-':>7}"
        print(row)

    import py_sod_metrics as psm

    ref_metrics = [psm.MAE(), psm.Fmeasure(), psm.Smeasure(), psm.Emeasure(), psm.WeightedFmeasure()]
    for pred, gt in maps:
        for m in ref_metrics:
            m.step(pred, gt)
    fm = ref_metrics[1].get_results()["fm"]
    em = ref_metrics[3].get_results()["em"]
    expected = {
        "mae": ref_metrics[0].get_results()["mae"],
        "maxf": fm["curve"].max(),
        "adpf": fm["adp"],
        "sm": ref_metrics[2].get_results()["sm"],
        "maxem": em["curve"].max(),
        "wfm": ref_metrics[4].get_results()["wfm"],
        "f_curve": np.flip(fm["curve"]),
        "em_curve": np.flip(em["curve"]),
    }
    diff = max(float(np.max(np.abs(full_result[k].cpu().numpy() - v))) for k, v in expected.items())
    print(f"max |sod_lightning - pysodmetrics| over {list(expected)}: {diff:.2e}")


if __name__ == "__main__":
    main()
