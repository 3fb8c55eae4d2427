"""The course's models at the sizes of a profile: one function per model config.

Every size lives in the profile (:class:`vqlesson.profiles.Profile`: image size, widths, K, D, the
prior's channels and layers); these functions only copy the profile's fields into a model's
dataclass config, then apply the caller's overrides. ``None`` leaves a field at the profile's
value (so an unset command-line option keeps it), except in a field where ``None`` is itself a
setting: ``restart_dead_after=None`` turns dead-code restarts off. The quantiser's settings
(``beta``, ``ema``, ``decay``, ``eps``, ``init``, ``restart_dead_after``, ``kmeans_iters``) are
given flat, like the model's own fields, and go into the config's nested
:class:`~vqlesson.quantize.QuantizerConfig`. The model files know nothing of profiles.

    >>> config = vqvae_config("cpu", codebook_size=128)   # the cpu profile's VQ-VAE, K = 128
    >>> config = vqvae_config("ci", ema=False)            # config.quantizer.ema is False
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .pixelcnn import PriorConfig
from .profiles import Profile, get_profile
from .quantize import QuantizerConfig
from .transformer_prior import TransformerPriorConfig
from .validate import check_choice
from .vqvae import VQVAEConfig
from .vqvae2 import VQVAE2Config


#: The priors :func:`prior_config_for` builds: the Gated PixelCNN, the plain PixelCNN, the
#: causal transformer.
PRIOR_ARCHS = ("gated", "plain", "transformer")


def _overrides(config_class: type, overrides: dict[str, Any]) -> dict[str, Any]:
    """The given overrides: ``None`` only where the field's type admits it (``int | None``, also
    among the quantiser's settings)."""
    fields = dataclasses.fields(config_class) + dataclasses.fields(QuantizerConfig)
    optional = {f.name for f in fields if "None" in str(f.type)}
    return {k: v for k, v in overrides.items() if v is not None or k in optional}


def _autoencoder(config_class: type, fields: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """``config_class`` from a profile's ``fields`` and the caller's ``overrides``; the
    quantiser's settings among them (``beta``, ``ema``...) go into its ``quantizer`` field, on
    top of a ``quantizer=QuantizerConfig(...)`` override when one is given."""
    given = _overrides(config_class, overrides)
    names = {f.name for f in dataclasses.fields(QuantizerConfig)}
    settings = {name: given.pop(name) for name in list(given) if name in names}
    quantizer = dataclasses.replace(given.pop("quantizer", QuantizerConfig()), **settings)
    return config_class(**{**fields, **given}, quantizer=quantizer)


def _autoencoder_fields(profile: Profile) -> dict[str, int]:
    """The fields both autoencoders take from a profile: image size, widths and D."""
    return dict(image_size=profile.image_size, hidden_channels=profile.hidden_channels,
                residual_channels=profile.residual_channels, code_dim=profile.code_dim)


def vqvae_config(profile: Profile | str | None = None, **overrides: Any) -> VQVAEConfig:
    """The course's VQ-VAE for a profile (a :class:`~vqlesson.profiles.Profile`, its name
    ``ci``/``cpu``/``gpu``, or ``None`` for the current one): image size, widths, K and D from
    the profile; ``overrides`` replace any field (``None`` keeps the profile's value, except
    ``restart_dead_after=None``: no dead-code restarts; module docstring).

    Raises:
        ValueError: an unknown profile name, or a resulting field out of range.
        TypeError: an unknown field.
    """
    prof = get_profile(profile)
    fields = dict(_autoencoder_fields(prof), codebook_size=prof.codebook_size)
    return _autoencoder(VQVAEConfig, fields, overrides)


def vqvae2_config(profile: Profile | str | None = None, **overrides: Any) -> VQVAE2Config:
    """The course's VQ-VAE-2 for a profile (see :func:`vqvae_config`): both codebooks (top and
    bottom levels) get the profile's K.

    Raises:
        ValueError: an unknown profile name, or a resulting field out of range.
        TypeError: an unknown field.
    """
    prof = get_profile(profile)
    fields = dict(_autoencoder_fields(prof), codebook_size_top=prof.codebook_size,
                  codebook_size_bottom=prof.codebook_size)
    return _autoencoder(VQVAE2Config, fields, overrides)


def prior_config_for(profile: Profile | str | None, codebook_size: int, arch: str = "gated",
                     **overrides: Any) -> PriorConfig | TransformerPriorConfig:
    """The course's prior for a profile: a Gated PixelCNN with position and dilated blocks
    (``ci`` tiny: 16 channels, 2 layers; ``cpu`` 64 channels, 8 layers; ``gpu`` 128 channels,
    12 layers), the plain PixelCNN (``arch="plain"``: no dilation), or the causal transformer
    (``arch="transformer"``: the profile's ``transformer_*`` sizes).

    Args:
        profile: a :class:`~vqlesson.profiles.Profile`, its name, or ``None`` (the current one).
        codebook_size: K of the codes the prior models.
        arch: ``"gated"``, ``"plain"`` or ``"transformer"``.
        overrides: any field of the config (``None`` values are ignored), e.g.
            ``num_classes=2``, ``cond_codebook_size=K_top``, ``dropout=0.1``,
            ``position=False`` (the prior of before issue 24: also ``dilations=(1,)``), or
            ``position_grid=8`` (a transformer's learnt position map).

    Returns:
        :class:`~vqlesson.pixelcnn.PriorConfig` or
        :class:`~vqlesson.transformer_prior.TransformerPriorConfig`.

    Raises:
        ValueError: an unknown profile or arch, or a field out of range.
        TypeError: an unknown field.
    """
    prof = get_profile(profile)
    check_choice(arch, "arch", PRIOR_ARCHS)
    if arch == "transformer":
        fields = dict(codebook_size=codebook_size, embed_dim=prof.transformer_width,
                      num_layers=prof.transformer_layers, num_heads=prof.transformer_heads,
                      cond_layers=prof.prior_cond_layers)
        return TransformerPriorConfig(**{**fields, **_overrides(TransformerPriorConfig, overrides)})
    fields = dict(codebook_size=codebook_size, embed_dim=prof.prior_embed_dim,
                  channels=prof.prior_channels, num_layers=prof.prior_layers,
                  cond_layers=prof.prior_cond_layers, arch=arch, position=prof.prior_position,
                  dilations=prof.prior_dilations if arch == "gated" else (1,))
    return PriorConfig(**{**fields, **_overrides(PriorConfig, overrides)})
