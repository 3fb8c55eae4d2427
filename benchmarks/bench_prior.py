"""Prior benchmark: training throughput and sampling time of the ``cpu``-profile prior.

1. Training: :func:`vqlesson.prior.train_prior` on random code maps of the ``cpu`` profile's grid
   (64 px images / 4 = 16x16 codes, K = 256, batch 32) with the profile's prior
   (:func:`~vqlesson.prior.prior_config_for`: Gated PixelCNN, 64 channels, 8 layers); prints the
   training code positions per second of the last epoch (the first one includes warm-up).
2. Sampling: ``n`` code maps on each grid with the naive sampler (whole network per position)
   and the fast one (vertical stack once per row, horizontal stack per position), from the same
   generator seed; prints the seconds each took, the speed-up, and whether the samples are
   identical (they must be). The naive sampler's cost grows with (grid side)^4, so ``--naive-n``
   can give it fewer samples per grid; the fast sampler is then timed on the same smaller ``n``
   for the speed-up and comparison, and on the full ``n`` for its own time.

The weights are untrained: training and sampling cost do not depend on their values.

Usage: python benchmarks/bench_prior.py [--threads 1] [--n 64] [--grids 16 32]
       [--naive-n 64 8] [--train-maps 256] [--train-epochs 2] [--device cpu] [--skip-naive]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from vqlesson.pixelcnn_prior import PixelCNNPrior, SampleOptions
from vqlesson.codes import CodeDataset
from vqlesson.prior import PriorTrainConfig, train_prior
from vqlesson.configs import prior_config_for
from vqlesson.runtime import get_device, seed_everything
from vqlesson.profiles import get_profile


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_codes(n: int, side: int, k: int, seed: int) -> CodeDataset:
    """``n`` uniformly random (side, side) code maps, labels alternating 0/1."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(k, (n, side, side), generator=gen)  # (n, side, side)
    return CodeDataset({"codes": codes}, torch.arange(n) % 2, {"codes": k},
                       (3, 4 * side, 4 * side))


def timed_sample(prior: PixelCNNPrior, n: int, side: int, fast: bool,
                 device: torch.device) -> tuple[float, torch.Tensor]:
    """(seconds, samples) for ``n`` maps on a (side, side) grid, generator seed 0."""
    generator = torch.Generator(device=device).manual_seed(0)
    _sync(device)
    start = time.perf_counter()
    samples = prior.sample(n, (side, side), generator=generator,
                               options=SampleOptions(fast=fast))
    _sync(device)
    return time.perf_counter() - start, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="samples per grid (default 64)")
    parser.add_argument("--grids", type=int, nargs="+", default=[16, 32], help="grid sides")
    parser.add_argument("--naive-n", type=int, nargs="+", default=None,
                        help="samples for the naive sampler, one per grid (default: --n each)")
    parser.add_argument("--skip-naive", action="store_true", help="time the fast sampler only")
    parser.add_argument("--train-maps", type=int, default=256, help="training code maps")
    parser.add_argument("--train-epochs", type=int, default=2, help="training epochs (>= 2)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 is steadier on a "
                             "busy machine, where waiting threads can slow small kernels many-fold")
    args = parser.parse_args()
    naive_n = args.naive_n or [args.n] * len(args.grids)
    if len(naive_n) != len(args.grids):
        parser.error("--naive-n needs one value per grid")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        platform.processor() or platform.machine())
    print(f"device: {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")

    seed_everything(0)
    profile = get_profile("cpu")
    k = profile.codebook_size
    side = profile.image_size // 4
    config = prior_config_for(profile, k)
    prior = PixelCNNPrior(config)
    params = sum(p.numel() for p in prior.parameters()) / 1e6
    print(f"cpu-profile prior: {config.arch}, K={k}, channels {config.channels}, "
          f"{config.num_layers} layers, {params:.2f} M parameters")

    # ---- training throughput ------------------------------------------------------------------
    train = random_codes(args.train_maps, side, k, seed=0)
    val = random_codes(max(8, args.train_maps // 8), side, k, seed=1)
    history = train_prior(prior, train, val, PriorTrainConfig(
        epochs=args.train_epochs, batch_size=profile.batch_size, progress=False,
        device=str(device), early_stopping_patience=None))
    print(f"training on {args.train_maps} maps of {side}x{side}, batch {profile.batch_size}: "
          f"{history['codes_per_s'][-1]:,.0f} codes/s "
          f"({history['codes_per_s'][-1] / (side * side):.1f} maps/s), "
          f"epoch {history['epoch_time_s'][-1]:.2f} s incl. validation "
          f"(first epoch {history['codes_per_s'][0]:,.0f} codes/s, with warm-up)")

    # ---- sampling -----------------------------------------------------------------------------
    prior.eval()
    prior.sample(2, (4, 4), options=SampleOptions(fast=True))  # warm-up (allocator, kernel selection)
    prior.sample(2, (4, 4), options=SampleOptions(fast=False))
    for grid, n_naive in zip(args.grids, naive_n):
        t_fast, fast_full = timed_sample(prior, args.n, grid, True, device)
        print(f"  {grid:3d}x{grid:<3d} fast  {args.n:3d} samples {t_fast:8.2f} s "
              f"({args.n * grid * grid / t_fast:7.0f} codes/s)")
        if args.skip_naive:
            continue
        t_naive, naive = timed_sample(prior, n_naive, grid, False, device)
        t_same, fast = (timed_sample(prior, n_naive, grid, True, device) if n_naive != args.n
                        else (t_fast, fast_full))
        differing = int((naive != fast).sum())
        print(f"  {grid:3d}x{grid:<3d} naive {n_naive:3d} samples {t_naive:8.2f} s, fast "
              f"{t_same:6.2f} s: speed-up {t_naive / t_same:6.1f}x; samples identical: "
              f"{'yes' if differing == 0 else f'NO ({differing} codes differ)'}"
              + ("" if n_naive == args.n else f" (naive measured on {n_naive} samples)"))


if __name__ == "__main__":
    main()
