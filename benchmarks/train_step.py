"""Training-step throughput and peak memory of the models, each at its paper's training input size.

One step is forward + backward of the summed BCE-with-logits over every output the model returns (what deep
supervision costs; the optimiser step is left out, it is the same for any loss). Each (model, precision) runs in a
fresh subprocess so that peak memory is its own:

* CPU: peak resident memory over the training steps minus the resident memory before the first one (activations,
  gradients and allocator slack; the weights themselves are in "params").
* CUDA: ``torch.cuda.max_memory_allocated`` over the steps (weights included).

Precisions: ``fp32`` (PyTorch defaults, so cuDNN convolutions may use TF32 on Ampere+ GPUs; the flag is printed) and,
on CUDA, ``bf16-mixed`` = ``torch.autocast(dtype=bfloat16)`` with ``channels_last`` weights and inputs, as Lightning's
``precision="bf16-mixed"`` does.

Usage::

    python benchmarks/train_step.py                      # basnet u2net u2netp on the CPU, batch 4
    python benchmarks/train_step.py basnet u2netp "unet:backbone=resnet50" "unet:backbone=vgg16"
    python benchmarks/train_step.py --device cuda --steps 20 basnet u2net u2netp

A model is a ``conf/model`` name, optionally followed by ``:`` and comma-separated Hydra overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Training crop of each paper: BASNet resizes to 256 and crops 224, U^2-Net resizes to 320 and crops 288. The U-Net
# baselines of the Keras_BASNet seed train on 256x256 letterboxed images.
PAPER_SIZE = {"basnet": 224, "u2net": 288, "u2netp": 288}
DEFAULT_SIZE = 256


def build_model(spec: str):
    """Instantiate ``conf/model/<name>.yaml`` (with optional overrides) through the suite's Hydra config."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    name, _, extra = spec.partition(":")
    overrides = [f"model={name}"] + [o for o in extra.split(",") if o]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    return instantiate(cfg.model)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(job: dict) -> dict:
    """Time ``job["steps"]`` training steps after ``job["warmup"]`` untimed ones; return the measurements."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    device = torch.device(job["device"])
    bf16 = job["precision"] == "bf16-mixed"
    model = build_model(job["model"]).to(device).train()
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = model.to(memory_format=fmt)
    size = job["size"]
    x = torch.randn(job["batch"], 3, size, size, device=device).contiguous(memory_format=fmt)
    target = (torch.rand(job["batch"], 1, size, size, device=device) > 0.5).float()

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            outputs = model(x)
        # The loss in fp32 from logits, as the suite's losses do under mixed precision.
        loss = sum(F.binary_cross_entropy_with_logits(o.float(), target) for o in outputs)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    # The CPU baseline is taken before any step: ru_maxrss is a lifetime peak, and the allocator keeps freed
    # activations resident, so a baseline after the warm-up would hide them.
    rss_before = _rss_bytes()
    for _ in range(job["warmup"]):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(job["steps"]):
        step()
    sync()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before  # ru_maxrss is in KiB
    return {
        "images_per_s": job["batch"] * job["steps"] / seconds,
        "s_per_step": seconds / job["steps"],
        "peak_mib": peak / 2**20,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=["basnet", "u2net", "u2netp"], help="conf/model names")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=None, help="square input size for every model (default: paper)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 2 on cpu, 20 on cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on cpu, 3 on cuda)")
    parser.add_argument("--precision", nargs="+", default=None, choices=["fp32", "bf16-mixed"],
                        help="default: fp32 on cpu; fp32 and bf16-mixed on cuda")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        try:
            print(json.dumps(worker(json.loads(args.worker))))
        except Exception as err:  # reported in the table; the other models still run
            cause = err.__cause__ or err  # Hydra wraps constructor errors in InstantiationException
            print(json.dumps({"error": f"{type(cause).__name__}: {str(cause).splitlines()[0]}"}))
        return []

    cuda = args.device == "cuda"
    precisions = args.precision or (["fp32", "bf16-mixed"] if cuda else ["fp32"])
    steps = args.steps or (20 if cuda else 2)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but torch.cuda.is_available() is False on this machine.")
        print(f"# {torch.cuda.get_device_name()}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}")
    else:
        threads = os.environ.get("OMP_NUM_THREADS")
        load = os.getloadavg()[0]
        print(f"# CPU, {os.cpu_count()} cores visible, OMP_NUM_THREADS={threads}, load average {load:.1f}")
    rows = []
    for spec in args.models:
        size = args.size or PAPER_SIZE.get(spec.partition(":")[0], DEFAULT_SIZE)
        for precision in precisions:
            job = {"model": spec, "device": args.device, "precision": precision, "batch": args.batch,
                   "size": size, "steps": steps, "warmup": warmup}
            proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True,
                                  text=True)
            lines = proc.stdout.strip().splitlines()
            # A failed model is reported and the table goes on (one error should not lose the others' rows).
            result = json.loads(lines[-1]) if proc.returncode == 0 and lines else {
                "error": f"exit status {proc.returncode}: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"}
            if "error" in result:
                print(f"# {spec} {precision}: FAILED: {result['error']}", file=sys.stderr)
            rows.append({**job, **result})
    memory = "peak MiB (alloc)" if cuda else "peak MiB (RSS delta)"
    print(f"| model | precision | input | batch | params (M) | images/s | s/step | {memory} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | {r['precision']} | {r['size']}x{r['size']} | {r['batch']} | failed: {r['error']} "
                  "| | | |")
            continue
        print(f"| {r['model']} | {r['precision']} | {r['size']}x{r['size']} | {r['batch']} | {r['params_m']:.2f} | "
              f"{r['images_per_s']:.2f} | {r['s_per_step']:.3f} | {r['peak_mib']:.0f} |")
    return rows


if __name__ == "__main__":
    main()
