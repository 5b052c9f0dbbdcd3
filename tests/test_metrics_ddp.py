"""SODMetrics under DDP: 2 processes (gloo, CPU), each with half the images, equal a single process."""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sod_lightning.metrics import SODMetrics


def _pairs(n: int = 12) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    sizes = [(40, 56), (33, 21), (64, 48)]
    pairs = []
    for i in range(n):
        h, w = sizes[i % 3]
        yy, xx = np.mgrid[:h, :w]
        gt = (((yy - h / 2) / (h / 3)) ** 2 + ((xx - rng.uniform(0, w)) / (w / 4)) ** 2 < 1).astype(np.float32)
        if i == 5:
            gt[:] = 0  # an all-background mask on one rank
        pred = np.clip(gt * 0.7 + rng.normal(0.2, 0.2, (h, w)), 0, 1).astype(np.float32)
        pairs.append((torch.from_numpy(pred)[None, None], torch.from_numpy(gt)[None, None]))
    return pairs


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        metric = SODMetrics()
        for pred, gt in _pairs()[rank::world_size]:  # each rank sees a different half
            metric.update(pred, gt)
        result = metric.compute()  # torchmetrics all-gathers and sums the float64 states
        result["world_size"] = torch.tensor(dist.get_world_size())
        result["local_images"] = torch.tensor(len(_pairs()[rank::world_size]))
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_sync_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = SODMetrics()
    for pred, gt in _pairs():
        single.update(pred, gt)
    expected = single.compute()
    for rank in range(2):
        synced = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert int(synced["world_size"]) == 2 and int(synced["local_images"]) == 6  # really 2 halves
        for key, value in expected.items():
            diff = float((synced[key] - value).abs().max())
            assert diff <= 1e-9, f"rank {rank}: {key} differs from one process by {diff:.3g}"
    # Each half alone gives other numbers: the sync is what makes them equal.
    half = SODMetrics()
    for pred, gt in _pairs()[0::2]:
        half.update(pred, gt)
    assert abs(float(half.compute()["maxf"]) - float(expected["maxf"])) > 1e-6
