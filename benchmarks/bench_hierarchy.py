"""Does the course's VQ-VAE-2 use its top level? (a script, not a test)

Trains the profile's VQ-VAE-2 once per ``bottom_dropout`` value (0 = the paper's model; > 0 the
course's remedy, see ``vqlesson/vqvae2.py``) with the same seed and budget, then prints on the
test split: the full reconstruction's PSNR, the top-only PSNR (every bottom code set to the most
used one) against the mean image's PSNR (the best constant guess), and how far swapping the top
codes of two lesions moves their coarse layout (0 = not at all, 1 = the donor's layout).

    python benchmarks/bench_hierarchy.py [--profile cpu] [--dropout 0 0.5] [--epochs N]
"""

from __future__ import annotations

import argparse
import time

import torch

from vqlesson.configs import vqvae2_config
from vqlesson.data import make_loaders
from vqlesson.experiments import level_use
from vqlesson.runtime import seed_everything
from vqlesson.profiles import get_profile
from vqlesson.train import TrainConfig, train_vqvae
from vqlesson.vqvae2 import VQVAE2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--epochs", type=int, default=None, help="default: the profile's")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    loaders = make_loaders("auto", profile=profile)
    x = torch.cat([batch[0] for batch in loaders.test])  # (N, 3, S, S), the whole test split
    epochs = args.epochs or profile.epochs
    print(f"profile {profile.name}, {loaders.description}, {epochs} epochs, {len(x)} test images")
    print(f"{'bottom_dropout':>14s} {'PSNR':>6s} {'top-only':>8s} {'mean img':>8s} "
          f"{'swap shift':>10s} {'train s':>8s}")
    for p in args.dropout:
        seed_everything(args.seed)
        model = VQVAE2(vqvae2_config(profile, bottom_dropout=p))
        start = time.perf_counter()
        train_vqvae(model, loaders.train, None, TrainConfig(epochs=epochs, progress=False,
                                                            seed=args.seed))
        seconds = time.perf_counter() - start
        use = level_use(model, x)
        print(f"{p:14.2f} {use.psnr:6.2f} {use.top_only_psnr:8.2f} {use.mean_image_psnr:8.2f} "
              f"{use.swap_layout_shift:10.2f} {seconds:8.0f}", flush=True)


if __name__ == "__main__":
    main()
