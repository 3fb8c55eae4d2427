"""Data-parallel VQ-VAE training speed: one process against N processes under DDP.

Trains the profile's VQ-VAE with :func:`vqlesson.train.train_vqvae` (the same loop as
``python -m vqlesson train-vqvae``) on in-memory random images, and prints the training images
per second over all processes (the history's ``images_per_s``: global images / rank 0's epoch
time, median of the epochs after the first, which holds the warm-up and the k-means init).

Each N > 1 runs as N processes started here (``torch.multiprocessing``, spawn; the same process
group torchrun would give: gloo on the CPU, NCCL on GPUs, one GPU per process). N = 1 is the
plain single process (no process group) unless ``--ddp-for-one``, which wraps one process in
DDP to show the wrapper's own cost.

Two scalings: *weak* keeps the batch per process (the global batch grows with N: the command
line's meaning of --batch-size under torchrun) and *strong* keeps the global batch (each process
takes batch / N). On the CPU, threads per process matter as much as processes: by default
N processes get cores // N threads each, and the 1-process rows are shown with all cores and
with 1 thread.

Usage: python benchmarks/bench_ddp.py [--profile cpu] [--device cpu|cuda]
                                      [--processes 1 2] [--threads T] [--steps 20]
                                      [--epochs 3] [--ddp-for-one]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from vqlesson import distributed
from vqlesson.configs import vqvae_config
from vqlesson.runtime import get_device, seed_everything
from vqlesson.profiles import get_profile
from vqlesson.train import TrainConfig, train_vqvae
from vqlesson.vqvae import VQVAE


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(profile_name: str, device: str, batch: int, steps: int, epochs: int) -> dict:
    """Train for ``epochs`` epochs of ``steps`` steps per process; images/s over all processes."""
    profile = get_profile(profile_name)
    seed_everything(0)
    model = VQVAE(vqvae_config(profile))
    n = steps * batch * distributed.world_size()
    s = profile.image_size
    images = torch.rand(n, 3, s, s, generator=torch.Generator().manual_seed(0)) * 2 - 1
    loader = DataLoader(TensorDataset(images, torch.zeros(n, dtype=torch.int64)),
                        batch_size=batch, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    config = TrainConfig(epochs=epochs, lr=1e-3, amp=True, progress=False, device=device, seed=0)
    history = train_vqvae(model, loader, None, config)
    later = history["images_per_s"][1:] or history["images_per_s"]
    return {"images_per_s": statistics.median(later), "steps": len(history["step_loss"])}


def _worker(index: int, world: int, port: int, threads: int, options: dict, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(index))
    torch.set_num_threads(threads)
    info = distributed.init_distributed(options["device"])
    try:
        result = measure(options["profile"], str(info.device), options["batch"],
                         options["steps"], options["epochs"])
        if info.rank == 0:
            Path(out).write_text(json.dumps({**result, "backend": info.backend}))
    finally:
        distributed.destroy_distributed()


def run(processes: int, threads: int, batch: int, options: dict, ddp: bool) -> dict:
    """One row: ``processes`` processes of ``threads`` threads, ``batch`` images each."""
    options = {**options, "batch": batch}
    if processes == 1 and not ddp:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            result = measure(options["profile"], options["device"], batch, options["steps"],
                             options["epochs"])
        finally:
            torch.set_num_threads(previous)
        return {**result, "backend": "none (one process)"}
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "result.json")
        mp.start_processes(_worker, args=(processes, free_port(), threads, options, out),
                           nprocs=processes, start_method="spawn")
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: best available)")
    parser.add_argument("--processes", type=int, nargs="+", default=None,
                        help="process counts to compare (default: 1 2 on the CPU, 1 up to the "
                             "number of GPUs with CUDA)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (default: cores // processes, >= 1)")
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch per process")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ddp-for-one", action="store_true",
                        help="also run 1 process inside a process group (DDP's own cost)")
    args = parser.parse_args()
    device = get_device(args.device)
    cores = os.cpu_count() or 1
    if args.processes is None:
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        args.processes = list(range(1, gpus + 1)) if gpus else [1, 2]
    if device.type == "cuda" and max(args.processes) > torch.cuda.device_count():
        raise SystemExit(f"--processes {max(args.processes)} but only "
                         f"{torch.cuda.device_count()} GPU(s); one GPU per process")
    profile = get_profile(args.profile)
    options = {"profile": profile.name, "device": device.type, "steps": args.steps,
               "epochs": args.epochs}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"torch {torch.__version__}, {platform.machine()}, {cores} CPU cores, device "
          f"{device}{name}, load average {load:.2f} at the start")
    print(f"profile {profile.name}: VQ-VAE at {profile.image_size} px, hidden "
          f"{profile.hidden_channels}, K={profile.codebook_size}, D={profile.code_dim}; "
          f"{args.steps} steps per epoch per process, {args.epochs} epochs, AMP on CUDA\n")

    rows = []
    b = profile.batch_size
    for n in args.processes:
        threads = args.threads or max(1, cores // n)
        plans = [(n, threads, b, "weak")]
        if n == 1 and device.type == "cpu" and args.threads is None and threads > 1:
            plans.append((1, 1, b, "weak"))
        if n > 1 and b % n == 0:
            plans.append((n, threads, b // n, "strong"))
        ddp_variants = [False, True] if n == 1 and args.ddp_for_one else [n > 1]
        for processes, t, batch, scaling in plans:
            for ddp in ddp_variants:
                result = run(processes, t, batch, options, ddp)
                rows.append((processes, t, batch, scaling, result))
                print(f"  measured: {processes} process(es) x {t} thread(s), batch {batch} each "
                      f"({result['backend']}): {result['images_per_s']:.0f} images/s", flush=True)

    singles = [result["images_per_s"] for processes, _, _, _, result in rows
               if processes == 1 and result["backend"].startswith("none")]
    base = max(singles) if singles else rows[0][4]["images_per_s"]
    print("\n| processes | threads each | backend | batch per process | global batch | "
          "images/s | vs the fastest single process |")
    print("|---|---|---|---|---|---|---|")
    for processes, t, batch, scaling, result in rows:
        print(f"| {processes} | {t} | {result['backend']} | {batch} | {batch * processes} "
              f"({scaling}) | {result['images_per_s']:.0f} | "
              f"{result['images_per_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()
