"""Small experiments the notebooks and benchmarks share: rate-distortion points, level use,
blind-spot codes.

A *rate-distortion point* trains one autoencoder with a given configuration and budget and
measures its rate (bits per image: ``H' W' log2 K`` summed over the levels) against its
distortion on held-out images (PSNR in dB and SSIM on [0, 1] images). Comparing a VQ-VAE with a
VQ-VAE-2 (Razavi et al. 2019, §3.1) at equal rate shows what the hierarchy buys.

*Blind-spot codes* (:func:`blind_spot_codes`) are code maps whose only clue lies where a plain
PixelCNN cannot look, so the gated and plain priors must differ on them.

*Level use* (:func:`level_use`) measures whether a trained VQ-VAE-2 uses its top level: the
top-only reconstruction (every bottom code set to one code) against the best constant guess (the
mean image), and how far swapping top codes between two lesions moves the coarse layout.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterable, NamedTuple

import torch
import torch.nn.functional as F

from .codes import CodeDataset
from .metrics import psnr
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


class LevelUse(NamedTuple):
    """What the top level of a VQ-VAE-2 carries, measured on held-out images (PSNR in dB on
    [0, 1] images, averaged per image).

    Attributes:
        psnr: the full reconstruction (both levels).
        top_only_psnr: the decode of the top codes with every bottom code set to
            ``bottom_code`` (what the top level alone says).
        mean_image_psnr: the mean image of the evaluated set, the best input-independent guess
            under MSE; a top level that carries nothing scores about this.
        swap_layout_shift: in [0, 1], how far decoding lesion i's bottom codes with lesion
            i+1's top codes moves the coarse layout (images pooled to the top grid) from lesion
            i's reconstruction towards lesion i+1's: ``d_own / (d_own + d_donor)`` of the mean
            squared distances, 0 = unchanged (top bypassed), 1 = the donor's layout.
        bottom_code: the bottom code used for the top-only decode (the most used one).
    """

    psnr: float
    top_only_psnr: float
    mean_image_psnr: float
    swap_layout_shift: float
    bottom_code: int


@torch.no_grad()
def level_use(model: VQVAE2, x: torch.Tensor) -> LevelUse:
    """Measure how much a VQ-VAE-2 relies on its top level (see :class:`LevelUse`).

    Args:
        model: a :class:`~vqlesson.vqvae2.VQVAE2` (put in eval mode; its device is used).
        x: (B, 3, H, W) float in [-1, 1], B >= 2 held-out images, H and W multiples of 8.

    Raises:
        TypeError: ``model`` is not a VQVAE2.
        ValueError: fewer than 2 images, or bad images (see ``VQVAE2.encode``).
    """
    if not isinstance(model, VQVAE2):
        raise TypeError(f"model must be a VQVAE2, got {type(model).__name__}")
    if x.dim() != 4 or x.shape[0] < 2:
        raise ValueError(f"x must be (B, 3, H, W) with B >= 2 images, got shape {tuple(x.shape)}")
    model.eval()
    x = x.to(next(model.parameters()).device)
    top, bottom = model.encode(x)  # (B, H/8, W/8), (B, H/4, W/4)
    code = int(torch.bincount(bottom.flatten()).argmax())
    recon = model.decode_indices(top, bottom)  # (B, 3, H, W)
    top_only = model.decode_indices(top, torch.full_like(bottom, code))
    swapped = model.decode_indices(top.roll(-1, dims=0), bottom)  # lesion i+1's top codes
    pool = x.shape[-1] // top.shape[-1]

    def coarse(images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images.float(), pool)  # (B, 3, H/8, W/8)

    d_own = (coarse(swapped) - coarse(recon)).pow(2).mean()
    d_donor = (coarse(swapped) - coarse(recon.roll(-1, dims=0))).pow(2).mean()
    mean_image = x.float().mean(dim=0, keepdim=True).expand_as(x)  # (1, 3, H, W) -> (B, 3, H, W)
    return LevelUse(
        psnr=float(psnr(x, recon)), top_only_psnr=float(psnr(x, top_only)),
        mean_image_psnr=float(psnr(x, mean_image)),
        swap_layout_shift=float(d_own / (d_own + d_donor).clamp_min(1e-12)), bottom_code=code,
    )


def blind_spot_codes(n: int, shape: tuple[int, int], codebook_size: int, slope: int = 4,
                     generator: torch.Generator | None = None) -> CodeDataset:
    """Code maps whose only clue lies in a plain PixelCNN's blind spot (van den Oord et al.
    2016, *Conditional Image Generation with PixelCNN Decoders*, §2.2).

    Each map is made of straight stripes running up and to the right, ``slope`` columns per
    row: all positions with the same ``slope * row + column`` hold one code, drawn uniformly
    and independently per stripe and per map. The earlier positions of a position's own stripe
    lie ``slope`` columns to the right per row up. A plain stack of masked convolutions reaches
    at most ``first_kernel_size // 2`` columns to the right per row up (its k x k mask-A layer;
    each 3 x 3 mask-B layer adds one column per row only by using one more row), so with
    ``slope`` above that it never sees its own stripe, and every other earlier position is on
    another, independent stripe: a plain PixelCNN can do no better than ``log2 K`` bits per
    code, while a prior without a blind spot (the gated one) can predict every code whose
    stripe started earlier.

    Args:
        n: number of maps, >= 1.
        shape: (H, W) of each map, both >= 2.
        codebook_size: K >= 2, the number of stripe codes.
        slope: columns per row up, >= 2; above ``first_kernel_size // 2`` of the plain network
            compared (the default 4 suits the course's 7 x 7 first layer).
        generator: seeds the stripe codes.

    Returns:
        A one-level :class:`~vqlesson.codes.CodeDataset` of (n, H, W) int64 codes in [0, K),
        unlabelled, with ``image_shape`` (1, H, W) so that bits per dimension equal bits per
        code.

    Raises:
        ValueError: an argument out of range.
    """
    h, w = shape
    if n < 1 or h < 2 or w < 2 or codebook_size < 2 or slope < 2:
        raise ValueError(f"need n >= 1, H, W >= 2, codebook_size >= 2 and slope >= 2, got "
                         f"n={n}, shape={shape}, codebook_size={codebook_size}, slope={slope}")
    rows = torch.arange(h).unsqueeze(1)  # (H, 1)
    cols = torch.arange(w).unsqueeze(0)  # (1, W)
    stripe = slope * rows + cols  # (H, W): the stripe each position lies on
    stripe_codes = torch.randint(codebook_size, (n, int(stripe.max()) + 1), generator=generator)
    codes = stripe_codes[:, stripe.flatten()].view(n, h, w)  # (n, H·W) -> (n, H, W)
    return CodeDataset({"codes": codes}, torch.full((n,), -1), {"codes": codebook_size},
                       image_shape=(1, h, w))
