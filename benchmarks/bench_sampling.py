"""Prior sampling speed: the naive sampler (whole network per position) against the fast one.

For a prior of the ``cpu`` profile's size (K = 256 codes, 64 channels, 8 gated blocks; an
untrained model: sampling cost does not depend on the weights), draws ``n`` code maps on each grid
with both samplers from the same generator seed, prints the seconds each took, the speed-up, and
whether the samples are identical (they must be). ``--arch plain`` measures the plain PixelCNN.

Usage: python benchmarks/bench_sampling.py [--arch gated|plain] [--n 16] [--grids 8 16]
       [--device cpu] [--repeats 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from vqlesson.pixelcnn import PriorConfig
from vqlesson.pixelcnn_prior import PixelCNNPrior, SampleOptions
from vqlesson.runtime import get_device, seed_everything
from vqlesson.profiles import get_profile


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_sample(prior: PixelCNNPrior, n: int, grid: int, fast: bool, device: torch.device,
                 repeats: int) -> tuple[float, torch.Tensor]:
    """Fastest of ``repeats`` runs (seconds) and the samples of the last one (seed 0 each time)."""
    best, samples = float("inf"), None
    for _ in range(repeats):
        generator = torch.Generator(device=device).manual_seed(0)
        _sync(device)
        start = time.perf_counter()
        samples = prior.sample(n, (grid, grid), generator=generator,
                               options=SampleOptions(fast=fast))
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="gated", choices=("gated", "plain"))
    parser.add_argument("--n", type=int, default=16, help="samples per call")
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 16], help="grid sides")
    parser.add_argument("--device", default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 is steadier on a "
                             "busy machine, where waiting threads can slow small kernels many-fold")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")

    seed_everything(0)
    profile = get_profile("cpu")
    config = PriorConfig(codebook_size=profile.codebook_size, embed_dim=64, channels=64,
                         num_layers=8, arch=args.arch)
    prior = PixelCNNPrior(config).to(device).eval()
    params = sum(p.numel() for p in prior.parameters()) / 1e6
    print(f"{args.arch} prior: K={config.codebook_size}, channels {config.channels}, "
          f"{config.num_layers} layers, kernel {config.kernel_size} "
          f"(first {config.first_kernel_size}), "
          f"{params:.2f} M parameters; n = {args.n} samples per call")
    prior.sample(2, (4, 4), options=SampleOptions(fast=True))  # warm-up (allocator, kernel selection)
    prior.sample(2, (4, 4), options=SampleOptions(fast=False))
    for grid in args.grids:
        t_naive, naive = timed_sample(prior, args.n, grid, False, device, args.repeats)
        t_fast, fast = timed_sample(prior, args.n, grid, True, device, args.repeats)
        same = torch.equal(naive, fast)
        differing = int((naive != fast).sum())
        print(f"  {grid:3d}x{grid:<3d} naive {t_naive:7.2f} s  fast {t_fast:7.2f} s  "
              f"speed-up {t_naive / t_fast:5.1f}x  "
              f"({args.n * grid * grid / t_fast:7.0f} codes/s fast)  "
              f"samples identical: {'yes' if same else f'NO ({differing} codes differ)'}")


if __name__ == "__main__":
    main()
