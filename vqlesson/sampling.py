"""New images from a trained VQ-VAE and its priors: sample code maps, then decode them.

Ancestral sampling, van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation
Learning*, §3.2: draw a code map from the prior ``p(z)`` position by position (raster order),
then decode it with the frozen VQ-VAE decoder. For the two-level VQ-VAE-2, Razavi, van den Oord
& Vinyals (2019), *Generating Diverse High-Fidelity Images with VQ-VAE-2*, Algorithm 2: the top
code map first, then the bottom map conditioned on it, then the decoder. The samplers of one
prior (naive and cached) are :meth:`vqlesson.pixelcnn_prior.AutoregressivePrior.sample`.

Priors travel as a tuple, one per level of the autoencoder, coarsest first: ``(prior,)`` for a
VQ-VAE, ``(top_prior, bottom_prior)`` for a VQ-VAE-2. Code maps travel as the autoencoder's
``Codes`` tuple (what its ``encode`` returns), one map per level in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .pixelcnn_prior import AutoregressivePrior, SampleOptions
from .runtime import eval_mode, model_device
from .vqvae import DiscreteAutoencoder, check_autoencoder


def check_priors(vqvae: DiscreteAutoencoder, priors: object) -> tuple[AutoregressivePrior, ...]:
    """``priors`` as a tuple, one prior (a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` or a
    :class:`~vqlesson.transformer_prior.TransformerPrior`) per level of
    ``vqvae``, each modelling that level's K (and conditioned on the level its ``Level``
    names, if at all, with that level's K).

    Raises:
        TypeError: not a tuple (or list) of one prior per level.
        ValueError: a prior whose K does not fit its level's codebook.
    """
    levels = vqvae.levels
    names = ", ".join(f"{level.name}_prior" for level in levels) + ("," if len(levels) == 1 else "")
    if (not isinstance(priors, (tuple, list)) or len(priors) != len(levels)
            or not all(isinstance(p, AutoregressivePrior) for p in priors)):
        raise TypeError(f"priors must be a tuple of {len(levels)} prior(s), one prior (PixelCNNPrior or "
                        f"TransformerPrior) per level of the {type(vqvae).__name__}: priors=({names}); got "
                        f"{type(priors).__name__}")
    sizes = {level.name: level.codebook_size for level in levels}
    for level, prior in zip(levels, priors):
        if prior.config.codebook_size != level.codebook_size:
            raise ValueError(f"the {level.name} prior models K = {prior.config.codebook_size} "
                             f"codes, the {level.name} codebook has {level.codebook_size}")
        cond = prior.config.cond_codebook_size
        if cond and (level.condition is None or cond != sizes[level.condition]):
            raise ValueError(f"the {level.name} prior is conditioned on K = {cond} codes, which "
                             f"no level above it has ({sizes})")
    return tuple(priors)


@torch.no_grad()
def sample_codes(vqvae: DiscreteAutoencoder, priors: Sequence[AutoregressivePrior], n: int,
                 label: int | Tensor | None = None, generator: torch.Generator | None = None,
                 options: SampleOptions = SampleOptions()) -> tuple[Tensor, ...]:
    """New code maps from the priors, level by level (coarsest first, each conditioned on the
    level its ``Level.condition`` names), not yet decoded (see :func:`sample_images`).

    Returns:
        ``vqvae.Codes``: ``(codes,)`` (n, S/f, S/f) for a VQ-VAE, ``(top, bottom)``
        (n, S/8, S/8) and (n, S/4, S/4) for a VQ-VAE-2; int64 codes on the priors' device.

    Raises:
        TypeError, ValueError: as :func:`sample_images`.
    """
    priors = check_priors(check_autoencoder(vqvae, "vqvae"), priors)
    if label is not None and not any(p.config.num_classes for p in priors):
        raise ValueError("the priors are not class-conditional (num_classes = 0 for each); "
                         "leave label=None")
    maps: dict[str, Tensor] = {}
    for level, prior, shape in zip(vqvae.levels, priors, vqvae.latent_shapes()):
        cond = maps[level.condition] if prior.config.cond_codebook_size else None
        maps[level.name] = prior.sample(  # (n, h, w)
            n, shape, label=label if prior.config.num_classes else None, cond_map=cond,
            generator=generator, options=options)
    return vqvae.Codes(*maps.values())


@torch.no_grad()
def decode_codes(vqvae: DiscreteAutoencoder, codes: Sequence[Tensor]) -> Tensor:
    """Decode code maps as :func:`sample_codes` (or ``encode``) returns them (eval mode,
    no_grad).

    Args:
        vqvae: the :class:`~vqlesson.vqvae.VQVAE` or :class:`~vqlesson.vqvae2.VQVAE2` they
            belong to.
        codes: one (n, h, w) int64 map per level, coarsest first, e.g. ``(top, bottom)``
            (any device).

    Returns:
        (n, C, S, S) float in [-1, 1] on the VQ-VAE's device.
    """
    device = model_device(vqvae)
    with eval_mode(vqvae):
        return vqvae.decode_indices(*(c.to(device) for c in codes))  # (n, C, S, S)


@torch.no_grad()
def sample_images(vqvae: DiscreteAutoencoder, priors: Sequence[AutoregressivePrior], n: int,
                  label: int | Tensor | None = None, generator: torch.Generator | None = None,
                  options: SampleOptions = SampleOptions()) -> Tensor:
    """New images: sample code maps from the priors, then decode them with the VQ-VAE.

    VQ-VAE: one prior on the (S/f, S/f) grid. VQ-VAE-2 (Razavi et al. 2019, Algorithm 2): the
    top prior on the (S/8, S/8) grid first, then the bottom prior on the (S/4, S/4) grid
    conditioned on those top codes; then ``decode_indices``. S is ``vqvae.config.image_size``.

    Args:
        vqvae: a trained :class:`~vqlesson.vqvae.VQVAE` or :class:`~vqlesson.vqvae2.VQVAE2`.
        priors: one prior (:class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` or
            :class:`~vqlesson.transformer_prior.TransformerPrior`) per level, as a tuple:
            ``(prior,)`` for a VQ-VAE, ``(top_prior, bottom_prior)`` for a VQ-VAE-2.
        n: number of images (>= 1).
        label: class index (int) or (n,) int64, given to every class-conditional prior.
        generator: ``torch.Generator`` for reproducible samples.
        options: :class:`~vqlesson.pixelcnn_prior.SampleOptions` (temperature: 1 samples the
            model, < 1 is sharper, 0 greedy; top_k; fast; progress bars over the rows).

    Returns:
        (n, C, S, S) float in [-1, 1] on the VQ-VAE's device.

    Raises:
        TypeError: a model or priors of the wrong kind.
        ValueError: priors whose K does not fit the VQ-VAE's codebooks, a ``label`` that no prior
            uses, a missing label for a class-conditional prior, bad sampling arguments.
    """
    return decode_codes(vqvae, sample_codes(vqvae, priors, n, label, generator, options))
