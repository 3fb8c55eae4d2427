"""Image-quality and codebook metrics for the course's autoencoders.

Reconstruction quality (MSE, PSNR, SSIM, a Laplacian sharpness score for the VAE-vs-VQ-VAE blur
comparison) and the discrete-code statistics of a VQ-VAE: codebook perplexity and active-code
fraction (the "codebook usage" diagnostics that van den Oord et al. 2017, "Neural Discrete
Representation Learning", and Razavi et al. 2019, "Generating Diverse High-Fidelity Images with
VQ-VAE-2", use to detect codebook collapse), and the size of the discrete latent code in bits
(van den Oord et al. 2017, section 4.1 compares 128x128x3x8 bits with 32x32x9 bits), beside a
lossless codec's size (:func:`png_bits_per_image`) and how many 8-bit values a reconstruction
gets exactly right (:func:`exact_8bit_fraction`): a VQ-VAE is lossy by design.

Conventions:

- Images enter in the model's range: ``(B, C, H, W)`` float in ``[-1, 1]``. PSNR, SSIM and
  sharpness first map them to ``[0, 1]`` with :func:`to_unit_range` (clamped), so that PSNR uses a
  peak value (data range) of 1. :func:`mse` is computed on the tensors exactly as given (in the
  ``[-1, 1]`` range that is the models' ``recon_loss`` scale; divide by 4 for ``[0, 1]`` units).
- ``reduction="mean"`` returns a Python ``float`` (the mean over images of the per-image value);
  ``reduction="none"`` returns a ``(B,)`` float tensor, one value per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from .validate import check_choice, check_codebook_size, check_image_pair, check_images

#: Smallest image side for which SSIM's 11x11 Gaussian window (sigma 1.5) is defined.
SSIM_MIN_SIZE = 11

_REDUCTIONS = ("mean", "none")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _reduce(per_image: torch.Tensor, reduction: str) -> float | torch.Tensor:
    """(B,) per-image values -> float mean (``"mean"``) or the (B,) tensor (``"none"``)."""
    if check_choice(reduction, "reduction", _REDUCTIONS) == "mean":
        return float(per_image.mean().item())
    return per_image


def _check_counts(counts: torch.Tensor) -> None:
    """Raise a ValueError unless ``counts`` is a non-empty (K,) of finite counts >= 0."""
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(
            f"counts must be a non-empty 1-D tensor of per-code counts (K,), got shape "
            f"{tuple(counts.shape)}"
        )
    if bool((counts < 0).any()) or not bool(torch.isfinite(counts).all()):
        raise ValueError("counts must be finite and non-negative (how often each code was used)")


# --------------------------------------------------------------------------------------------
# Reconstruction quality
# --------------------------------------------------------------------------------------------
def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Map images from ``[-1, 1]`` to ``[0, 1]``: ``(x + 1) / 2``, clamped to ``[0, 1]``.

    Args:
        x: any-shape float tensor in ``[-1, 1]`` (values outside are clamped after mapping).

    Returns:
        Tensor of the same shape and dtype, in ``[0, 1]``.
    """
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def mse(x: torch.Tensor, x_hat: torch.Tensor, reduction: str = "mean") -> float | torch.Tensor:
    """Mean squared error per image, on the tensors as given (no range mapping).

    Args:
        x, x_hat: ``(B, C, H, W)`` float images of the same shape (normally in ``[-1, 1]``).
        reduction: ``"mean"`` -> float averaged over images; ``"none"`` -> ``(B,)`` tensor.

    Raises:
        ValueError: shapes differ or are not ``(B, C, H, W)``; unknown ``reduction``.
    """
    check_image_pair(x, x_hat)
    per_image = (x.float() - x_hat.float()).pow(2).flatten(1).mean(dim=1)  # (B, C*H*W) -> (B,)
    return _reduce(per_image, reduction)


def psnr(x: torch.Tensor, x_hat: torch.Tensor, reduction: str = "mean") -> float | torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image, on ``[0, 1]`` images (peak value 1).

    Inputs are given in ``[-1, 1]`` and mapped with :func:`to_unit_range` first, so
    ``psnr = 10 * log10(1 / mse01)`` with ``mse01`` the per-image MSE in ``[0, 1]`` units.
    Identical images give ``+inf`` (not capped); with ``reduction="mean"`` one identical image
    makes the mean ``inf`` too.

    Args:
        x, x_hat: ``(B, C, H, W)`` float images in ``[-1, 1]``.
        reduction: ``"mean"`` -> float (mean of the per-image PSNRs); ``"none"`` -> ``(B,)``.

    Raises:
        ValueError: shapes differ or are not ``(B, C, H, W)``; unknown ``reduction``.
    """
    check_image_pair(x, x_hat)
    diff = to_unit_range(x.float()) - to_unit_range(x_hat.float())
    mse01 = diff.pow(2).flatten(1).mean(dim=1)  # (B, C*H*W) -> (B,)
    per_image = -10.0 * torch.log10(mse01)  # mse01 == 0 -> +inf
    return _reduce(per_image, reduction)


def ssim(x: torch.Tensor, x_hat: torch.Tensor, reduction: str = "mean") -> float | torch.Tensor:
    """Structural similarity (Wang et al. 2004), per image, on ``[0, 1]`` images.

    Uses ``torchmetrics.functional.image.structural_similarity_index_measure`` with its standard
    Gaussian window (11x11, sigma 1.5) and ``data_range=1.0`` after :func:`to_unit_range`.
    1 means identical; lower is less similar (it can be negative).

    Args:
        x, x_hat: ``(B, C, H, W)`` float images in ``[-1, 1]``, ``H, W >= 11``.
        reduction: ``"mean"`` -> float; ``"none"`` -> ``(B,)`` tensor.

    Raises:
        ValueError: shapes differ, images smaller than 11x11, unknown ``reduction``.
    """
    check_image_pair(x, x_hat)
    if min(x.shape[-2:]) < SSIM_MIN_SIZE:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_MIN_SIZE}x{SSIM_MIN_SIZE} pixels (its Gaussian "
            f"window), got {tuple(x.shape[-2:])}; use psnr/mse for smaller images."
        )
    check_choice(reduction, "reduction", _REDUCTIONS)
    per_image = structural_similarity_index_measure(
        to_unit_range(x_hat.float()), to_unit_range(x.float()), data_range=1.0, reduction="none"
    )  # (B,)
    return _reduce(per_image, reduction)


def sharpness(x: torch.Tensor, reduction: str = "mean") -> float | torch.Tensor:
    """Variance of the Laplacian: a blur score (higher = sharper, more high-frequency detail).

    Each channel of the ``[0, 1]`` image is filtered with the 3x3 Laplacian
    ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]`` (no padding); the per-image score is the variance
    over pixels of the response, averaged over channels. Units: ``[0, 1]``-intensity squared.
    VAE reconstructions score lower than VQ-VAE ones because a Gaussian decoder averages modes.

    Args:
        x: ``(B, C, H, W)`` float images in ``[-1, 1]``, ``H, W >= 3``.
        reduction: ``"mean"`` -> float; ``"none"`` -> ``(B,)`` tensor.

    Raises:
        ValueError: not ``(B, C, H, W)``, images smaller than 3x3, unknown ``reduction``.
    """
    check_images(x, "x")
    if min(x.shape[-2:]) < 3:
        raise ValueError(f"sharpness needs images of at least 3x3 pixels, got {tuple(x.shape)}")
    b, c, h, w = x.shape
    kernel = torch.tensor(
        [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device
    ).view(1, 1, 3, 3)  # (out=1, in=1, 3, 3)
    channels = to_unit_range(x.float()).reshape(b * c, 1, h, w)  # (B, C, H, W) -> (B*C, 1, H, W)
    response = F.conv2d(channels, kernel)  # (B*C, 1, H-2, W-2)
    variance = response.flatten(1).var(dim=1, unbiased=False)  # (B*C,)
    per_image = variance.view(b, c).mean(dim=1)  # (B*C,) -> (B, C) -> (B,)
    return _reduce(per_image, reduction)


# --------------------------------------------------------------------------------------------
# Codebook usage
# --------------------------------------------------------------------------------------------
def perplexity_from_counts(counts, *, check: bool = True) -> torch.Tensor:
    """Codebook perplexity ``exp(-sum_k p_k log p_k)`` with ``p = counts / sum(counts)``.

    It is the "effective number of codes in use": ``K`` when all ``K`` codes are used equally
    often, 1 when a single code is used (codebook collapse). ``0 log 0`` is taken as 0. All-zero
    counts (nothing encoded yet) give 1. Computed in float64 (float32 on MPS) on the counts'
    device; the quantiser uses it for its per-batch perplexity.

    Args:
        counts: ``(K,)`` non-negative counts (tensor, array or list) of how often each code was
            chosen.
        check: validate ``counts`` (``False`` skips it, and with it a device synchronisation:
            the quantiser passes its own bincounts).

    Returns:
        0-dim float32 tensor in ``[1, K]`` on the counts' device (``float(...)`` for a number).

    Raises:
        ValueError: not 1-D, empty, negative or non-finite counts (with ``check``).
    """
    counts = torch.as_tensor(counts).detach()
    if check:
        _check_counts(counts)
    counts = counts.to(torch.float32 if counts.device.type == "mps" else torch.float64)  # (K,)
    p = counts / counts.sum().clamp(min=1.0)  # (K,)
    entropy = -torch.special.xlogy(p, p).sum()
    return entropy.exp().float()


def active_fraction(counts) -> float:
    """Fraction of the ``K`` codes used at least once, in ``[0, 1]``.

    Args:
        counts: ``(K,)`` non-negative per-code counts.

    Raises:
        ValueError: not 1-D, empty, negative or non-finite counts.
    """
    counts = torch.as_tensor(counts).detach()
    _check_counts(counts)
    return float((counts > 0).double().mean().item())


# --------------------------------------------------------------------------------------------
# Size of the discrete code
# --------------------------------------------------------------------------------------------
def _latent_positions(shape, argument: str) -> int:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        dims = [int(d) for d in shape]
    except TypeError as error:
        raise TypeError(
            f"{argument} must be a latent shape such as (H', W'), got {shape!r}"
        ) from error
    if not dims or any(d <= 0 for d in dims):
        raise ValueError(f"{argument} must be a non-empty shape of positive sizes, got {shape!r}")
    return math.prod(dims)


def bits_per_image(latent_shape, codebook_size: int | None = None) -> float:
    """Bits needed to store one image's discrete code: ``H' * W' * log2(K)``.

    Args:
        latent_shape: the code grid ``(H', W')`` of one image; or, with ``codebook_size=None``,
            a sequence of ``((H', W'), K)`` pairs, one per level of a hierarchical model
            (VQ-VAE-2's top and bottom codes), whose bits are summed.
        codebook_size: ``K``, the number of codes; ``None`` for the list-of-pairs form.

    Returns:
        float, bits (e.g. 16x16 codes of K=512: ``256 * 9 = 2304``).

    Raises:
        ValueError / TypeError: non-positive sizes, or a missing ``codebook_size``.
    """
    if codebook_size is not None:
        k = check_codebook_size(codebook_size, "codebook_size")
        return _latent_positions(latent_shape, "latent_shape") * math.log2(k)
    if not isinstance(latent_shape, Sequence) or not latent_shape or not all(
        isinstance(pair, Sequence) and len(pair) == 2 and not isinstance(pair[0], int)
        for pair in latent_shape
    ):
        raise ValueError(
            "bits_per_image needs codebook_size=K, or latent_shape given as a list of "
            f"((H', W'), K) pairs for a hierarchical model; got latent_shape={latent_shape!r}"
        )
    return sum(
        _latent_positions(shape, f"latent_shape[{i}]")
        * math.log2(check_codebook_size(k, f"codebook size of latent_shape[{i}]"))
        for i, (shape, k) in enumerate(latent_shape)
    )


def compression_ratio(image_shape, latent_bits: float, bits_per_value: int = 8) -> float:
    """How many times smaller the discrete code is than the raw image: ``C*H*W*8 / bits``.

    Args:
        image_shape: ``(C, H, W)`` of one image.
        latent_bits: bits of its code, from :func:`bits_per_image`.
        bits_per_value: bits of one raw pixel channel (8 for 8-bit images).

    Returns:
        float ratio (> 1 means the code is smaller than the image).

    Raises:
        ValueError: ``image_shape`` is not 3 positive sizes, or ``latent_bits <= 0``.
    """
    if len(tuple(image_shape)) != 3:
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
    values = _latent_positions(image_shape, "image_shape")
    if not latent_bits > 0:
        raise ValueError(f"latent_bits must be positive, got {latent_bits!r}")
    return values * bits_per_value / float(latent_bits)


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Images in ``[-1, 1]`` as stored 8-bit values: ``round(255 (x + 1) / 2)``, clamped.

    ``x`` any-shape float in [-1, 1] -> the same shape, uint8 in [0, 255].
    """
    return (to_unit_range(x.detach().float()) * 255).round().to(torch.uint8)


def exact_8bit_fraction(x: torch.Tensor, x_hat: torch.Tensor,
                        reduction: str = "mean") -> float | torch.Tensor:
    """The fraction of 8-bit values (pixel channels) a reconstruction reproduces exactly: 1.0
    for a lossless codec.

    Args:
        x, x_hat: (B, C, H, W) float in [-1, 1], the images and their reconstructions.
        reduction: ``"mean"`` (float) or ``"none"`` ((B,) float in [0, 1]).

    Raises:
        TypeError, ShapeError: not a pair of float image batches of one shape.
    """
    check_image_pair(x, x_hat)
    same = (to_8bit(x) == to_8bit(x_hat)).flatten(1).double().mean(dim=1)  # (B,)
    return _reduce(same.float(), reduction)


def png_bits_per_image(x: torch.Tensor, reduction: str = "mean") -> float | torch.Tensor:
    """Bits per image of a lossless codec: each image as 8-bit RGB (:func:`to_8bit`), compressed
    as PNG (Pillow, the highest zlib level). It reproduces every 8-bit value exactly; compare
    with a VQ-VAE's :func:`bits_per_image`.

    Args:
        x: (B, C, H, W) float in [-1, 1], C = 1 (greyscale) or 3 (RGB).
        reduction: ``"mean"`` (float) or ``"none"`` ((B,) float bits).

    Raises:
        TypeError, ShapeError: not a float image batch; ValueError: not 1 or 3 channels.
    """
    import io

    from PIL import Image

    check_images(x, "x")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x must have 1 or 3 channels for PNG, got {x.shape[1]}")
    pixels = to_8bit(x).cpu().permute(0, 2, 3, 1).numpy()  # (B, H, W, C) uint8
    sizes = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
            buffer, format="PNG", optimize=True, compress_level=9)
        sizes.append(8.0 * buffer.tell())  # bytes -> bits
    return _reduce(torch.tensor(sizes), reduction)
