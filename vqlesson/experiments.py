"""Small experiments the notebooks and benchmarks share: rate-distortion points.

A *rate-distortion point* trains one autoencoder with a given configuration and budget and
measures its rate (bits per image: ``H' W' log2 K`` summed over the levels) against its
distortion on held-out images (PSNR in dB and SSIM on [0, 1] images). Comparing a VQ-VAE with a
VQ-VAE-2 (Razavi et al. 2019, §3.1) at equal rate shows what the hierarchy buys.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterable, NamedTuple

from .runtime import seed_everything
from .train import TrainConfig, evaluate_vqvae, train_vqvae
from .vqvae import VQVAE, VQVAEConfig
from .vqvae2 import VQVAE2, VQVAE2Config


class RatePoint(NamedTuple):
    """One trained setting. ``bits_per_image`` is the rate; ``psnr`` (dB) and ``ssim`` the
    quality on the evaluation loader; ``perplexity`` the mean over levels; ``seconds`` the
    training time; ``label`` a short description such as ``"VQ-VAE f=4 K=256"``."""

    label: str
    model: str
    bits_per_image: float
    psnr: float
    ssim: float
    perplexity: float
    active_fraction: float
    seconds: float


def describe(config: VQVAEConfig | VQVAE2Config) -> str:
    """A short label for a configuration: ``"VQ-VAE f=4 K=256 D=32"`` or ``"VQ-VAE-2 K=256/256 D=32"``."""
    if isinstance(config, VQVAE2Config):
        return (f"VQ-VAE-2 K={config.codebook_size_top}/{config.codebook_size_bottom} "
                f"D={config.code_dim}")
    return f"VQ-VAE f={config.downsample} K={config.codebook_size} D={config.code_dim}"


def rate_distortion_point(
    config: VQVAEConfig | VQVAE2Config,
    train_loader: Iterable,
    eval_loader: Iterable,
    train_config: TrainConfig,
) -> RatePoint:
    """Train a fresh model of ``config`` (seeded with ``train_config.seed``) and measure it.

    Raises:
        TypeError: ``config`` is neither a ``VQVAEConfig`` nor a ``VQVAE2Config``.
    """
    if isinstance(config, VQVAE2Config):
        make = VQVAE2
    elif isinstance(config, VQVAEConfig):
        make = VQVAE
    else:
        raise TypeError(f"config must be a VQVAEConfig or VQVAE2Config, got {type(config).__name__}")
    seed_everything(train_config.seed)
    model = make(config)
    start = time.perf_counter()
    train_vqvae(model, train_loader, None, dataclasses.replace(train_config, checkpoint_path=None,
                                                               resume=False))
    seconds = time.perf_counter() - start
    results = evaluate_vqvae(model, eval_loader)
    levels = [k for k in results if k.endswith("perplexity") and "batch" not in k
              and not k.startswith(("top_", "bottom_"))]
    active = [k for k in results if k.endswith("active_fraction")]
    return RatePoint(
        label=describe(config), model=type(model).__name__,
        bits_per_image=results["bits_per_image"], psnr=results["psnr"], ssim=results["ssim"],
        perplexity=sum(results[k] for k in levels) / max(1, len(levels)),
        active_fraction=sum(results[k] for k in active) / max(1, len(active)),
        seconds=seconds,
    )
