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
mean image), and how far swapping top codes between two lesions moves the coarse layout;
:func:`swap_layout` swaps the levels both ways between two image sets and measures which level
the decoded layout follows (notebook 06); :func:`top_level_use` trains a small VQ-VAE-2 with given settings and measures it (notebook
03's open exercise).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterable, NamedTuple

import torch
import torch.nn.functional as F

from .codes import CodeDataset
from .metrics import psnr
from .runtime import model_device, seed_everything
from .train import TrainConfig, evaluate_vqvae, train_vqvae
from .vqvae import VQVAE, DiscreteAutoencoder, VQVAEConfig
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


#: The autoencoder each configuration builds.
MODELS: dict[type, type] = {VQVAEConfig: VQVAE, VQVAE2Config: VQVAE2}


def describe(model: DiscreteAutoencoder) -> str:
    """A short label for a model: ``"VQ-VAE f=4 K=256 D=32"`` (one level) or
    ``"VQ-VAE-2 K=256/256 D=32"`` (two levels, K coarsest first)."""
    levels, d = model.levels, model.config.code_dim
    if len(levels) == 1:
        return f"VQ-VAE f={levels[0].downsample} K={levels[0].codebook_size} D={d}"
    sizes = "/".join(str(level.codebook_size) for level in levels)
    return f"VQ-VAE-{len(levels)} K={sizes} D={d}"


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
    if type(config) not in MODELS:
        raise TypeError(f"config must be a VQVAEConfig or VQVAE2Config, got {type(config).__name__}")
    seed_everything(train_config.seed)
    model = MODELS[type(config)](config)
    start = time.perf_counter()
    train_vqvae(model, train_loader, None, dataclasses.replace(train_config, checkpoint_path=None,
                                                               resume=False))
    seconds = time.perf_counter() - start
    results = evaluate_vqvae(model, eval_loader)
    levels = [k for k in results if k.endswith("perplexity") and "batch" not in k
              and not k.startswith(("top_", "bottom_"))]
    active = [k for k in results if k.endswith("active_fraction")]
    return RatePoint(
        label=describe(model), model=type(model).__name__,
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
def level_use(model: DiscreteAutoencoder, x: torch.Tensor) -> LevelUse:
    """Measure how much a VQ-VAE-2 relies on its top level (see :class:`LevelUse`).

    Args:
        model: a :class:`~vqlesson.vqvae2.VQVAE2` (put in eval mode; its device is used).
        x: (B, 3, H, W) float in [-1, 1], B >= 2 held-out images, H and W multiples of 8.

    Raises:
        TypeError: ``model`` has no top level above another (not a VQVAE2).
        ValueError: fewer than 2 images, or bad images (see ``VQVAE2.encode``).
    """
    if not isinstance(model, DiscreteAutoencoder) or len(model.levels) < 2:
        raise TypeError(f"model must be a VQVAE2 (a top level above a bottom level), got "
                        f"{type(model).__name__}")
    if x.dim() != 4 or x.shape[0] < 2:
        raise ValueError(f"x must be (B, 3, H, W) with B >= 2 images, got shape {tuple(x.shape)}")
    model.eval()
    x = x.to(model_device(model))
    top, *below = model.encode(x)  # (B, H/8, W/8), then the finer levels: (B, H/4, W/4)
    constant = [torch.full_like(c, int(torch.bincount(c.flatten()).argmax())) for c in below]
    recon = model.decode_indices(top, *below)  # (B, 3, H, W)
    top_only = model.decode_indices(top, *constant)  # every finer code: its most used one
    swapped = model.decode_indices(top.roll(-1, dims=0), *below)  # lesion i+1's top codes
    pool = x.shape[-1] // top.shape[-1]

    def coarse(images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images.float(), pool)  # (B, 3, H/8, W/8)

    d_own = (coarse(swapped) - coarse(recon)).pow(2).mean()
    d_donor = (coarse(swapped) - coarse(recon.roll(-1, dims=0))).pow(2).mean()
    mean_image = x.float().mean(dim=0, keepdim=True).expand_as(x)  # (1, 3, H, W) -> (B, 3, H, W)
    return LevelUse(
        psnr=float(psnr(x, recon)), top_only_psnr=float(psnr(x, top_only)),
        mean_image_psnr=float(psnr(x, mean_image)),
        swap_layout_shift=float(d_own / (d_own + d_donor).clamp_min(1e-12)),
        bottom_code=int(constant[-1].flatten()[0]),
    )


class SwapLayout(NamedTuple):
    """Two image sets decoded with their levels swapped, and which level the layout follows.

    Attributes:
        top_share: in [0, 1], the share of the swapped decodes' coarse layout (images
            average-pooled to the top grid) that follows the image whose *top* codes they got:
            ``d_bottom / (d_top + d_bottom)``, with ``d_top`` (``d_bottom``) the mean squared
            distance, over both swaps and the whole batch, between a swapped decode and the
            reconstruction of its top (bottom) donor. 1: the top level decides the layout,
            0: the bottom level does, 0.5: neither more than the other.
        a_top_b_bottom, b_top_a_bottom: (B, 3, S, S) float in [-1, 1], the two swapped decodes.
        recon_a, recon_b: (B, 3, S, S) float in [-1, 1], each set decoded from its own codes.
    """

    top_share: float
    a_top_b_bottom: torch.Tensor
    b_top_a_bottom: torch.Tensor
    recon_a: torch.Tensor
    recon_b: torch.Tensor


@torch.no_grad()
def swap_layout(model: DiscreteAutoencoder, a: torch.Tensor, b: torch.Tensor) -> SwapLayout:
    """Decode the top codes of ``a`` with the bottom codes of ``b`` and the reverse, and measure
    which level the decoded coarse layout follows (:class:`SwapLayout`; notebook 06).

    Args:
        model: a two-level :class:`~vqlesson.vqvae2.VQVAE2` (put in eval mode; its device is used).
        a, b: (B, 3, S, S) float in [-1, 1], the same shape, S a multiple of 8.

    Returns:
        :class:`SwapLayout`, images on the CPU.

    Raises:
        TypeError: ``model`` is not a two-level autoencoder.
        ValueError: ``a`` and ``b`` of different shapes, or bad images (see ``VQVAE2.encode``).
    """
    if not isinstance(model, DiscreteAutoencoder) or len(model.levels) != 2:
        raise TypeError(f"model must be a VQVAE2 (a top level above a bottom level), got "
                        f"{type(model).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    model.eval()
    device = model_device(model)
    (top_a, bottom_a), (top_b, bottom_b) = model.encode(a.to(device)), model.encode(b.to(device))
    decoded = [model.decode_indices(t, bm).float().cpu() for t, bm in
               ((top_a, bottom_b), (top_b, bottom_a), (top_a, bottom_a), (top_b, bottom_b))]
    ab, ba, recon_a, recon_b = decoded  # (B, 3, S, S) each
    pool = a.shape[-1] // top_a.shape[-1]  # pixels per top code

    def distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (F.avg_pool2d(x, pool) - F.avg_pool2d(y, pool)).pow(2).mean()  # (B, 3, S/8, S/8)

    d_top = (distance(ab, recon_a) + distance(ba, recon_b)) / 2
    d_bottom = (distance(ab, recon_b) + distance(ba, recon_a)) / 2
    share = float(d_bottom / (d_top + d_bottom).clamp_min(1e-12))
    return SwapLayout(share, ab, ba, recon_a, recon_b)


#: top_level_use: the ci-sized VQ-VAE-2 on synthetic lesions of TOP_SIZE px, TOP_TRAIN training
#: and TOP_HELD_OUT held-out images, TOP_EPOCHS epochs in batches of TOP_BATCH at rate TOP_LR.
TOP_SIZE, TOP_TRAIN, TOP_HELD_OUT, TOP_EPOCHS, TOP_BATCH, TOP_LR = 32, 192, 32, 15, 16, 2e-3


class SmallHierarchy(NamedTuple):
    """What :func:`train_small_vqvae2` returns: the trained model (eval mode, CPU) and its
    :data:`TOP_HELD_OUT` held-out lesions, (N, 3, TOP_SIZE, TOP_SIZE) float in [-1, 1]."""

    model: VQVAE2
    held_out: torch.Tensor


def train_small_vqvae2(bottom_dropout: float, codebook_size_bottom: int, seed: int = 0
                       ) -> SmallHierarchy:
    """Train the ``ci``-sized :class:`~vqlesson.vqvae2.VQVAE2` with these settings on
    ``seed``-drawn synthetic lesions (:data:`TOP_SIZE` px, :data:`TOP_TRAIN` images,
    :data:`TOP_EPOCHS` epochs, on the CPU; about 2 s) -> :class:`SmallHierarchy`. One thread,
    as in the checks (check_core): the same weights in every process; the caller's random
    generators and thread count are left as they were."""
    from torch.utils.data import DataLoader, TensorDataset

    from .checkpoint import get_rng_state, set_rng_state
    from .configs import vqvae2_config
    from .data.synthetic import SyntheticLesions

    lesions = SyntheticLesions(TOP_TRAIN + TOP_HELD_OUT, image_size=TOP_SIZE, seed=seed)
    x = torch.stack([lesions[i][0] for i in range(len(lesions))])  # (N, 3, S, S) in [-1, 1]
    loader = DataLoader(TensorDataset(x[:TOP_TRAIN]), batch_size=TOP_BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    state, threads = get_rng_state(), torch.get_num_threads()  # both restored after training
    try:
        torch.set_num_threads(1)  # as in the check (check_core): the same figures anywhere
        torch.manual_seed(seed)
        model = VQVAE2(vqvae2_config("ci", image_size=TOP_SIZE, bottom_dropout=bottom_dropout,
                                     codebook_size_bottom=codebook_size_bottom))
        train_vqvae(model, loader, None, TrainConfig(epochs=TOP_EPOCHS, lr=TOP_LR, seed=seed,
                                                     device="cpu", progress=False))
        return SmallHierarchy(model.eval(), x[TOP_TRAIN:])
    finally:
        set_rng_state(state)
        torch.set_num_threads(threads)


def top_level_use(bottom_dropout: float, codebook_size_bottom: int, seed: int = 0) -> LevelUse:
    """Train the small VQ-VAE-2 of :func:`train_small_vqvae2` with these settings and measure
    its level use on its :data:`TOP_HELD_OUT` held-out lesions -> :class:`LevelUse` (PSNR in
    dB; notebook 03's open exercise)."""
    small = train_small_vqvae2(bottom_dropout, codebook_size_bottom, seed)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        return level_use(small.model, small.held_out)
    finally:
        torch.set_num_threads(threads)


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
