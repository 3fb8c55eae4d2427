"""New images from a trained VQ-VAE and its prior(s): sample code maps, then decode them.

Ancestral sampling, van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation
Learning*, §3.2: draw a code map from the prior ``p(z)`` position by position (raster order),
then decode it with the frozen VQ-VAE decoder. For the two-level VQ-VAE-2, Razavi, van den Oord
& Vinyals (2019), *Generating Diverse High-Fidelity Images with VQ-VAE-2*, Algorithm 2: the top
code map first, then the bottom map conditioned on it, then the decoder. The samplers of one
prior (naive and cached) are :meth:`vqlesson.pixelcnn_prior.PixelCNNPrior.sample`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from .pixelcnn_prior import PixelCNNPrior
from .prior import check_prior
from .runtime import eval_mode
from .vqvae import VQVAE
from .vqvae2 import VQVAE2


def _label_for(prior: PixelCNNPrior, label: int | Tensor | None) -> int | Tensor | None:
    return label if prior.config.num_classes else None


def _two_priors(priors: object) -> tuple[PixelCNNPrior, PixelCNNPrior]:
    if isinstance(priors, Mapping):
        pair = (priors.get("top"), priors.get("bottom"))
    elif isinstance(priors, (tuple, list)) and len(priors) == 2:
        pair = tuple(priors)
    else:
        pair = (None, None)
    if not all(isinstance(p, PixelCNNPrior) for p in pair):
        raise TypeError(
            "a VQ-VAE-2 needs two priors: priors=(top_prior, bottom_prior) or "
            "{'top': top_prior, 'bottom': bottom_prior}, PixelCNNPrior each"
        )
    return pair  # type: ignore[return-value]


def _sample_two_levels(vqvae: VQVAE2, priors: Any, n: int, label: int | Tensor | None,
                       options: dict[str, Any]) -> dict[str, Tensor]:
    """Top codes, then bottom codes conditioned on them: {"top": (n, S/8, S/8), "bottom":
    (n, S/4, S/4)} int64."""
    top_prior, bottom_prior = _two_priors(priors)
    c = vqvae.config
    for name, prior, k in (("top", top_prior, c.codebook_size_top),
                           ("bottom", bottom_prior, c.codebook_size_bottom)):
        if prior.config.codebook_size != k:
            raise ValueError(
                f"the {name} prior models K = {prior.config.codebook_size} codes, the VQ-VAE-2's "
                f"{name} codebook has {k}"
            )
    if bottom_prior.config.cond_codebook_size not in (0, c.codebook_size_top):
        raise ValueError(
            f"the bottom prior is conditioned on K = {bottom_prior.config.cond_codebook_size} "
            f"codes, the VQ-VAE-2's top codebook has {c.codebook_size_top}"
        )
    if label is not None and not (top_prior.config.num_classes or bottom_prior.config.num_classes):
        raise ValueError("neither prior is class-conditional (num_classes = 0); leave label=None")
    top_shape, bottom_shape = vqvae.latent_shapes()
    top = top_prior.sample(n, top_shape, label=_label_for(top_prior, label), **options)
    cond = top if bottom_prior.config.cond_codebook_size else None  # (n, S/8, S/8)
    bottom = bottom_prior.sample(n, bottom_shape, label=_label_for(bottom_prior, label),
                                 cond_map=cond, **options)  # (n, S/4, S/4)
    return {"top": top, "bottom": bottom}


@torch.no_grad()
def sample_codes(vqvae: VQVAE | VQVAE2, priors: Any, n: int, label: int | Tensor | None = None,
                 temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, *, fast: bool = True,
                 progress: bool = False) -> dict[str, Tensor]:
    """New code maps from the prior(s), not yet decoded (see :func:`sample_images`).

    Returns:
        ``{"codes": (n, S/f, S/f)}`` for a VQ-VAE, ``{"top": (n, S/8, S/8), "bottom":
        (n, S/4, S/4)}`` for a VQ-VAE-2; int64 codes on the priors' device.

    Raises:
        TypeError, ValueError: as :func:`sample_images`.
    """
    if not isinstance(vqvae, (VQVAE, VQVAE2)):
        raise TypeError(f"vqvae must be a VQVAE or a VQVAE2, got {type(vqvae).__name__}")
    options = dict(temperature=temperature, top_k=top_k, generator=generator, fast=fast,
                   progress=progress)
    if isinstance(vqvae, VQVAE2):
        return _sample_two_levels(vqvae, priors, n, label, options)
    prior = priors[0] if isinstance(priors, (tuple, list)) and len(priors) == 1 else priors
    check_prior(prior)
    if prior.config.codebook_size != vqvae.config.codebook_size:
        raise ValueError(
            f"the prior models K = {prior.config.codebook_size} codes, the VQ-VAE's codebook "
            f"has {vqvae.config.codebook_size}"
        )
    if label is not None and not prior.config.num_classes:
        raise ValueError(
            "the prior is not class-conditional (num_classes = 0); leave label=None"
        )
    codes = prior.sample(n, vqvae.latent_shape(), label=_label_for(prior, label), **options)
    return {"codes": codes}  # (n, S/f, S/f)


@torch.no_grad()
def decode_codes(vqvae: VQVAE | VQVAE2, codes: Mapping[str, Tensor]) -> Tensor:
    """Decode code maps as :func:`sample_codes` returns them (eval mode, no_grad).

    Args:
        vqvae: the :class:`~vqlesson.vqvae.VQVAE` or :class:`~vqlesson.vqvae2.VQVAE2` they belong to.
        codes: ``{"codes": (n, S/f, S/f)}`` or ``{"top": (n, S/8, S/8), "bottom": (n, S/4, S/4)}``
            int64 (any device).

    Returns:
        (n, C, S, S) float in [-1, 1] on the VQ-VAE's device.
    """
    device = next(vqvae.parameters()).device
    with eval_mode(vqvae):
        return vqvae.decode_indices(*(c.to(device) for c in codes.values()))  # (n, C, S, S)


@torch.no_grad()
def sample_images(vqvae: VQVAE | VQVAE2, priors: Any, n: int, label: int | Tensor | None = None,
                  temperature: float = 1.0, top_k: int | None = None,
                  generator: torch.Generator | None = None, *, fast: bool = True,
                  progress: bool = False) -> Tensor:
    """New images: sample code maps from the prior(s), then decode them with the VQ-VAE.

    VQ-VAE: one prior on the (S/f, S/f) grid. VQ-VAE-2 (Razavi et al. 2019, Algorithm 2): the
    top prior on the (S/8, S/8) grid first, then the bottom prior on the (S/4, S/4) grid
    conditioned on those top codes; then ``decode_indices``. S is ``vqvae.config.image_size``.

    Args:
        vqvae: a trained :class:`~vqlesson.vqvae.VQVAE` or :class:`~vqlesson.vqvae2.VQVAE2`.
        priors: a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` for a VQ-VAE;
            ``(top_prior, bottom_prior)`` or ``{"top": ..., "bottom": ...}`` for a VQ-VAE-2.
        n: number of images (>= 1).
        label: class index (int) or (n,) int64, given to every class-conditional prior.
        temperature: divides the logits; 1 samples the model, < 1 is sharper, 0 is greedy.
        top_k: keep only the k most likely codes at each position (``None``: all).
        generator: ``torch.Generator`` for reproducible samples.
        fast: the fast sampler (the naive one gives the same samples, slower).
        progress: tqdm bars over the rows of each grid.

    Returns:
        (n, C, S, S) float in [-1, 1] on the VQ-VAE's device.

    Raises:
        TypeError: a model or prior of the wrong kind.
        ValueError: priors whose K does not fit the VQ-VAE's codebooks, a ``label`` that no prior
            uses, a missing label for a class-conditional prior, bad sampling arguments.
    """
    codes = sample_codes(vqvae, priors, n, label, temperature, top_k, generator, fast=fast,
                         progress=progress)
    return decode_codes(vqvae, codes)
