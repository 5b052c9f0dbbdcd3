"""Prediction speed and memory on the CPU: U^2-Netp at 320x320 over PASCAL-S, PyTorch against onnxruntime.

Each backend runs in its own process (so that peak memory is its own) over the same photos with the same pipeline
as ``python -m sod_lightning.predict``: read (EXIF, 8-bit RGB), resize to 320x320 and normalise
(``imagenet_max``), run the network, resize the mask back to the photo's size. Outputs are not written. The table
gives end-to-end images/s, the network's own time per image, the peak resident memory of the process and its rise
during prediction, and the largest difference between the two backends' masks.

Without ``--weights`` U^2-Netp keeps a seeded random initialisation: speed and memory do not depend on the values.

Usage (from the repository root, ``../shared/data`` beside it)::

    python benchmarks/predict.py                                  # 300 photos, batch 8, all cores
    python benchmarks/predict.py --weights u2netp.pth --threads 2 --batch-size 1 --limit 50
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "PASCAL-S" / "images"


def _rss_mib() -> float:
    """Current resident set size (Linux /proc), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _load(args: argparse.Namespace):
    import torch

    from sod_lightning.inference import load_model

    torch.manual_seed(0)
    return load_model(model="u2netp", weights=args.weights, image_size=320, normalization="imagenet_max")


def run_backend(args: argparse.Namespace) -> dict:
    """One backend over the photos; returns its figures (runs in a child process)."""
    import numpy as np
    import torch

    from sod_lightning.export import onnx_session
    from sod_lightning.inference import resize_to_originals
    from sod_lightning.predict import list_inputs, read_input

    torch.set_num_threads(args.threads)
    files = list_inputs(args.data)[0][: args.limit or None]
    model = _load(args)
    if args.backend == "onnxruntime":
        session = onnx_session(args.onnx, threads=args.threads)
        name = session.get_inputs()[0].name

        def infer(x):
            return session.run(None, {name: x.numpy()})[0]
    else:
        def infer(x):
            return model.probabilities(x)

    batches = [files[i:i + args.batch_size] for i in range(0, len(files), args.batch_size)]
    infer(model.preprocess([read_input(files[0])[0]]))  # warm-up: allocator, thread pools, lazy init
    baseline = _rss_mib()
    net_time, masks = 0.0, []
    start = time.perf_counter()
    for batch in batches:
        photos = [read_input(p)[0] for p in batch]
        x = model.preprocess(photos)
        t = time.perf_counter()
        probs = infer(x)
        net_time += time.perf_counter() - t
        masks += resize_to_originals(probs, [(p.height, p.width) for p in photos])
    total = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    np.save(args.masks_out, np.concatenate([m.ravel() for m in masks]))
    return {"backend": args.backend, "images": len(files), "batch": args.batch_size, "threads": args.threads,
            "seconds": total, "images_per_s": len(files) / total, "net_ms_per_image": 1000 * net_time / len(files),
            "peak_rss_mib": peak, "peak_rise_mib": peak - baseline}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of photos (default: PASCAL-S)")
    parser.add_argument("--weights", default=None, help="u2netp.pth (optional; random weights otherwise)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: all cores)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos (0: all)")
    parser.add_argument("--backend", choices=("torch", "onnxruntime"), help=argparse.SUPPRESS)
    parser.add_argument("--onnx", help=argparse.SUPPRESS)
    parser.add_argument("--masks-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"--data {args.data}: no such folder. The PASCAL-S photos live in ../shared/data beside the "
                 "repository; pass --data <folder of images> to use others.")
    if args.threads is None:
        import os

        args.threads = len(os.sched_getaffinity(0))
    if args.backend:
        print(json.dumps(run_backend(args)))
        return

    from sod_lightning.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(_load(args), Path(tmp) / "u2netp.onnx")
        rows, masks = [], {}
        for backend in ("torch", "onnxruntime"):
            masks[backend] = Path(tmp) / f"{backend}.npy"
            cmd = [sys.executable, __file__, "--backend", backend, "--onnx", str(onnx_path), "--data", str(args.data),
                   "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--limit", str(args.limit),
                   "--masks-out", str(masks[backend])] + (["--weights", args.weights] if args.weights else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                sys.exit(f"The {backend} run failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        import numpy as np

        diff = float(np.abs(np.load(masks["torch"]) - np.load(masks["onnxruntime"])).max())

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"u2netp 320x320 on the CPU, {rows[0]['images']} photos of {args.data.name if args.data.name != 'images' else args.data.parent.name}, "
                        f"batch {args.batch_size}, {args.threads} threads")
    for col in ("backend", "images/s", "network ms/image", "total s", "peak RSS MiB", "rise MiB"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in rows:
        table.add_row(r["backend"], f"{r['images_per_s']:.2f}", f"{r['net_ms_per_image']:.1f}", f"{r['seconds']:.1f}",
                      f"{r['peak_rss_mib']:.0f}", f"{r['peak_rise_mib']:.0f}")
    Console().print(table)
    print(f"max |torch - onnxruntime| over all masks at original size: {diff:.2e}")


if __name__ == "__main__":
    main()
