"""The course's size profiles: one place decides how big everything is.

A *profile* is a small dataclass of image size, dataset size, batch size, epochs and model widths;
the notebooks, the CLI and the tests all read it from here:

- ``ci``: seconds, for the test suite and nbval (tiny images, a few dozen of them, one epoch).
- ``cpu``: minutes on a laptop, still meaningful (64 px).
- ``gpu``: the real course run on one GPU (128 px, the whole of ISIC 2016).

The profile is chosen by the ``VQLESSON_PROFILE`` environment variable; when it is unset the
default is ``gpu`` if CUDA is present, else ``cpu``. The models never read a profile: the config
helpers of :mod:`vqlesson.configs` turn a profile's sizes into a model config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from .runtime import given

PROFILE_ENV = "VQLESSON_PROFILE"


@dataclass(frozen=True)
class Profile:
    """The sizes of one course run.

    Attributes:
        name: ``"ci"``, ``"cpu"`` or ``"gpu"``.
        image_size: side of the square images in pixels.
        dataset_size: number of synthetic training images; for real data, a cap on the number of
            training images used (``None``: all of them).
        batch_size: mini-batch size for every model.
        epochs: training epochs of the VQ-VAE / VQ-VAE-2.
        prior_epochs: training epochs of the prior in the command line and the pipeline (the
            run the gallery shows), enough for the validation NLL to level off.
        notebook_prior_epochs: the shorter budget of the priors the notebooks train (several
            each, within the notebook's run time; the notebooks say what the full run reaches).
        hidden_channels: width of the VQ-VAE encoder/decoder (paper: 128 on CIFAR-10).
        codebook_size: K, number of codes.
        code_dim: D, length of each code vector.
        residual_channels: channels inside the autoencoders' residual blocks (a quarter of the
            width; paper: 32).
        prior_embed_dim: the prior's code embedding size.
        prior_channels: the prior's feature channels.
        prior_layers: the prior's masked (gated) layers.
        prior_cond_layers: layers of the VQ-VAE-2 bottom prior's stack over the top codes.
        prior_dilations: the dilations of the gated blocks after the first, in turn, so that
            the receptive field covers the code grid (16 x 16 at ``cpu``, 32 x 32 at ``gpu``).
        prior_position: give the prior the position map (where on the grid each code lies).
        transformer_width: the transformer prior's width d (``--prior-arch transformer``).
        transformer_layers: the transformer prior's blocks.
        transformer_heads: the transformer prior's attention heads.
        num_workers: ``DataLoader`` worker processes (capped at the machine's CPU count by
            :func:`vqlesson.data.make_loaders`).
    """

    name: str
    image_size: int
    dataset_size: int | None
    batch_size: int
    epochs: int
    prior_epochs: int
    notebook_prior_epochs: int
    hidden_channels: int = 128
    codebook_size: int = 512
    code_dim: int = 64
    residual_channels: int = 32
    prior_embed_dim: int = 128
    prior_channels: int = 128
    prior_layers: int = 12
    prior_cond_layers: int = 2
    prior_dilations: tuple[int, ...] = (1, 2, 4, 8)
    prior_position: bool = True
    transformer_width: int = 128
    transformer_layers: int = 4
    transformer_heads: int = 4
    num_workers: int = 0

    def with_overrides(self, **changes) -> "Profile":
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **given(changes))


PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", image_size=32, dataset_size=64, batch_size=16, epochs=1, prior_epochs=1,
                  notebook_prior_epochs=1,
                  hidden_channels=32, codebook_size=64, code_dim=16, residual_channels=8,
                  prior_embed_dim=16, prior_channels=16, prior_layers=2, prior_cond_layers=1,
                  transformer_width=16, transformer_layers=1, transformer_heads=2),
    "cpu": Profile("cpu", image_size=64, dataset_size=1200, batch_size=32, epochs=15, prior_epochs=50,
                   notebook_prior_epochs=4,
                   hidden_channels=64, codebook_size=256, code_dim=32, residual_channels=16,
                   prior_embed_dim=64, prior_channels=64, prior_layers=8, prior_cond_layers=2),
    "gpu": Profile("gpu", image_size=128, dataset_size=None, batch_size=64, epochs=60,
                   prior_epochs=60, notebook_prior_epochs=60, hidden_channels=128, codebook_size=512, code_dim=64,
                   residual_channels=32, prior_embed_dim=128, prior_channels=128, prior_layers=12,
                   prior_cond_layers=2, num_workers=4),
}


def default_profile_name() -> str:
    """``gpu`` when CUDA is present, else ``cpu``."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def get_profile(name: "str | Profile | None" = None) -> Profile:
    """The profile named ``name``, else ``$VQLESSON_PROFILE``, else :func:`default_profile_name`.
    A :class:`Profile` is returned as it is, so every ``profile=`` argument of the course takes
    a profile, its name or ``None``.

    Raises:
        ValueError: an unknown name (the message lists the valid ones and says where the bad
            name came from).
    """
    if isinstance(name, Profile):
        return name
    source = "argument"
    if name is None:
        name = os.environ.get(PROFILE_ENV) or None
        source = f"${PROFILE_ENV}"
    if name is None:
        name = default_profile_name()
    key = name.strip().lower()
    if key not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} (from the {source}); choose one of {', '.join(PROFILES)}."
        )
    return PROFILES[key]
