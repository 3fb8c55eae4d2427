"""VQ-VAE speed and quality figures (a script that prints numbers; no assertions).

Speed, for the chosen profile's model on this machine:
  - training images per second (forward + backward + AdamW step),
  - encode and decode images per second (eval mode, no grad),
  - nearest-code search: the quantizer's expanded squared distance (one matmul) against a
    torch.cdist + argmin baseline, with a check that both pick the same codes.
VQ-VAE-2 (--model vqvae2 or both): the same speed figures for the two-level model.
Rate-distortion (--rate-distortion): the points of notebook 03 (VQ-VAE f=8, f=4 with K=16 and
the profile's K, VQ-VAE-2 with K=16 and the profile's K), each trained for a fifth of the profile's
epochs on synthetic data, with validation PSNR/SSIM against bits per image, as a Markdown table.
Quality (--quality): trains the profile's model with the main job
(`python -m vqlesson train-vqvae --data synthetic`) and prints its test PSNR, SSIM, perplexity and
active-code fraction (no codebook collapse means at least half of the codes active).

Usage: python benchmarks/bench_vqvae.py [--profile cpu] [--device cpu] [--model both]
                                       [--rate-distortion] [--quality]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from vqlesson.quantize import squared_distances
from vqlesson.configs import vqvae_config, vqvae2_config
from vqlesson.runtime import get_device, seed_everything
from vqlesson.profiles import get_profile
from vqlesson.vqvae import VQVAE
from vqlesson.vqvae2 import VQVAE2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_speed(profile_name: str, device: torch.device, amp: bool, which: str = "vqvae") -> None:
    profile = get_profile(profile_name)
    seed_everything(0)
    if which == "vqvae2":
        model = VQVAE2(vqvae2_config(profile)).to(device)
    else:
        model = VQVAE(vqvae_config(profile)).to(device)
    b, s = profile.batch_size, profile.image_size
    x = torch.rand(b, 3, s, s, device=device) * 2 - 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4)
    use_amp = amp and device.type == "cuda"
    dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    def train_step():
        with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            loss = model(x).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    t_train = timed(train_step, device, 10)
    model.eval()
    with torch.no_grad():
        codes = tuple(model.encode(x))  # one code map per level
        t_enc = timed(lambda: model.encode(x), device, 10)
        t_dec = timed(lambda: model.decode_indices(*codes), device, 10)
    indices = codes[-1]  # the finest grid
    params = sum(p.numel() for p in model.parameters()) / 1e6
    grids = " + ".join(str(tuple(c.shape[1:])) for c in codes)
    print(f"{type(model).__name__} of profile {profile.name}: {params:.2f} M parameters, {s} px, "
          f"batch {b}, grid {grids}, D={model.config.code_dim}, "
          f"AMP {'on (' + str(dtype).split('.')[-1] + ')' if use_amp else 'off'}")
    print(f"  training:  {b / t_train:8.0f} images/s")
    print(f"  encode:    {b / t_enc:8.0f} images/s")
    print(f"  decode:    {b / t_dec:8.0f} images/s")

    if which == "vqvae2":
        return
    k, d = model.config.codebook_size, model.config.code_dim
    n = b * indices.shape[1] * indices.shape[2]
    z = torch.randn(n, d, device=device)
    codes = torch.randn(k, d, device=device)
    with torch.no_grad():
        ours = squared_distances(z, codes).argmin(1)
        base = torch.cdist(z, codes).argmin(1)
        t_ours = timed(lambda: squared_distances(z, codes).argmin(1), device, 20)
        t_cdist = timed(lambda: torch.cdist(z, codes).argmin(1), device, 20)
    agree = float((ours == base).float().mean())
    print(f"  nearest-code search, {n} vectors x {k} codes x {d} dims: expanded distance "
          f"{t_ours * 1e3:.2f} ms, torch.cdist {t_cdist * 1e3:.2f} ms "
          f"({t_cdist / t_ours:.1f}x), same codes for {agree:.2%} of vectors")


def bench_rate_distortion(profile_name: str) -> None:
    from vqlesson.data import make_loaders
    from vqlesson.experiments import rate_distortion_point
    from vqlesson.train import TrainConfig

    profile = get_profile(profile_name)
    loaders = make_loaders("synthetic", profile=profile)
    budget = TrainConfig(epochs=max(1, profile.epochs // 5), progress=False)
    settings = [
        vqvae_config(profile, downsample=8),
        vqvae_config(profile, downsample=4, codebook_size=16),
        vqvae_config(profile, downsample=4),
        vqvae2_config(profile, codebook_size_top=16, codebook_size_bottom=16),
        vqvae2_config(profile),
    ]
    points = sorted((rate_distortion_point(c, loaders.train, loaders.val, budget) for c in settings),
                    key=lambda p: p.bits_per_image)
    print(f"rate-distortion, profile {profile.name}, synthetic {profile.image_size} px, "
          f"{budget.epochs} epochs each, validation split:")
    print("| setting | bits/image | PSNR (dB) | SSIM | perplexity (mean over levels) | active codes | train s |")
    print("|---|---|---|---|---|---|---|")
    for p in points:
        print(f"| {p.label} | {p.bits_per_image:.0f} | {p.psnr:.2f} | {p.ssim:.3f} | "
              f"{p.perplexity:.1f} | {p.active_fraction:.0%} | {p.seconds:.0f} |")


def bench_quality(profile_name: str, device: str | None) -> None:
    from vqlesson.runs import DataChoice, VQVAERunConfig, train_vqvae_run

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = train_vqvae_run(Path(tmp) / "run", DataChoice(source="synthetic", profile=profile_name),
                              VQVAERunConfig(device=device))
        wall = time.perf_counter() - start
        summary = json.loads(run.files[0].read_text())  # metrics.json
    test = summary["test"]
    print(f"quality, profile {profile_name} on synthetic data ({summary['data']}):")
    print(f"  {summary['epochs']} epochs in {summary['train_seconds']:.0f} s of training "
          f"({wall:.0f} s wall with evaluation)")
    print(f"  test PSNR {test['psnr']:.2f} dB, SSIM {test['ssim']:.3f}, MSE {test['mse']:.4f}")
    print(f"  perplexity {test['perplexity']:.1f} of K={summary['config']['codebook_size']}, "
          f"active codes {test['active_fraction']:.1%}, {test['bits_per_image']:.0f} bits/image, "
          f"compression {test['compression_ratio']:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default=None)
    parser.add_argument("--no-amp", action="store_true")
    parser.add_argument("--model", choices=("vqvae", "vqvae2", "both"), default="both")
    parser.add_argument("--rate-distortion", action="store_true",
                        help="also train the rate-distortion points of notebook 03")
    parser.add_argument("--quality", action="store_true", help="also train the profile's model")
    args = parser.parse_args()
    device = get_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for which in (("vqvae", "vqvae2") if args.model == "both" else (args.model,)):
        bench_speed(args.profile, device, amp=not args.no_amp, which=which)
    if args.rate_distortion:
        bench_rate_distortion(args.profile)
    if args.quality:
        bench_quality(args.profile, args.device)


if __name__ == "__main__":
    main()
