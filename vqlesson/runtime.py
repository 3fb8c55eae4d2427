"""Device selection, seeding and the course's size profiles.

One place decides how big everything is. A *profile* is a small dataclass of image size, dataset
size, batch size and epochs; the notebooks, the CLI and the tests all read it from here:

- ``ci``: seconds, for the test suite and nbval (tiny images, a few dozen of them, one epoch).
- ``cpu``: minutes on a laptop, still meaningful (64 px).
- ``gpu``: the real course run on one GPU (128 px, the whole of ISIC 2016).

The profile is chosen by the ``VQLESSON_PROFILE`` environment variable; when it is unset the
default is ``gpu`` if CUDA is present, else ``cpu``.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch

PROFILE_ENV = "VQLESSON_PROFILE"
DEVICE_ENV = "VQLESSON_DEVICE"


# --------------------------------------------------------------------------------------------
# Device and seeds
# --------------------------------------------------------------------------------------------
def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(prefer: str | None = None) -> torch.device:
    """The device to compute on: CUDA, else Apple MPS, else CPU.

    Args:
        prefer: force a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). When ``None`` the
            ``VQLESSON_DEVICE`` environment variable is read, then the hardware is probed.

    Raises:
        ValueError: a forced device that this machine does not have (the message says which
            devices are available).
    """
    choice = prefer if prefer is not None else os.environ.get(DEVICE_ENV) or None
    if choice is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {choice!r} was asked for (argument or ${DEVICE_ENV}) but CUDA is not available "
            f"here; use 'cpu'{' or mps' if _mps_available() else ''} or unset {DEVICE_ENV}."
        )
    if device.type == "mps" and not _mps_available():
        raise ValueError(
            f"device {choice!r} was asked for but Apple MPS is not available here; use 'cpu'."
        )
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and PyTorch (all devices) for a reproducible run.

    Returns a CPU ``torch.Generator`` seeded with ``seed``, for data loaders and samplers.
    Bit-exact reproducibility on a GPU additionally needs deterministic kernels, which cost speed;
    the course does not force them.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``module`` in eval mode for a block and restore its previous mode afterwards (also
    when the block raises): ``with eval_mode(model): x_hat = model(x).x_hat``."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def worker_init_fn(worker_id: int) -> None:
    """``DataLoader`` worker initialiser: derives each worker's NumPy/``random`` seed from torch's."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader_workers(requested: int) -> int:
    """``DataLoader`` workers to start: ``requested``, capped at the CPUs this process may use
    (free Colab has 2; more workers than CPUs only adds overhead, and PyTorch warns).

    Raises:
        ValueError: ``requested`` < 0.
    """
    if requested < 0:
        raise ValueError(f"num_workers must be >= 0, got {requested}")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return min(requested, cpus)


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------
def given(overrides: dict) -> dict:
    """The entries of ``overrides`` whose value is not ``None``: how every profile-sized config
    helper (and the command line, whose unset options are ``None``) applies its overrides."""
    return {k: v for k, v in overrides.items() if v is not None}


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
        prior_epochs: training epochs of the PixelCNN prior.
        hidden_channels: width of the VQ-VAE encoder/decoder (paper: 128 on CIFAR-10).
        codebook_size: K, number of codes.
        code_dim: D, length of each code vector.
        residual_channels: channels inside the autoencoders' residual blocks (a quarter of the
            width; paper: 32).
        prior_embed_dim: the prior's code embedding size.
        prior_channels: the prior's feature channels.
        prior_layers: the prior's masked (gated) layers.
        prior_cond_layers: layers of the VQ-VAE-2 bottom prior's stack over the top codes.
        num_workers: ``DataLoader`` worker processes (capped at the machine's CPU count by
            :func:`vqlesson.data.make_loaders`).
    """

    name: str
    image_size: int
    dataset_size: int | None
    batch_size: int
    epochs: int
    prior_epochs: int
    hidden_channels: int = 128
    codebook_size: int = 512
    code_dim: int = 64
    residual_channels: int = 32
    prior_embed_dim: int = 128
    prior_channels: int = 128
    prior_layers: int = 12
    prior_cond_layers: int = 2
    num_workers: int = 0

    def with_overrides(self, **changes) -> "Profile":
        """A copy with some fields changed (``None`` values are ignored)."""
        return replace(self, **given(changes))


PROFILES: dict[str, Profile] = {
    "ci": Profile("ci", image_size=32, dataset_size=64, batch_size=16, epochs=1, prior_epochs=1,
                  hidden_channels=32, codebook_size=64, code_dim=16, residual_channels=8,
                  prior_embed_dim=16, prior_channels=16, prior_layers=2, prior_cond_layers=1),
    "cpu": Profile("cpu", image_size=64, dataset_size=1200, batch_size=32, epochs=15, prior_epochs=10,
                   hidden_channels=64, codebook_size=256, code_dim=32, residual_channels=16,
                   prior_embed_dim=64, prior_channels=64, prior_layers=8, prior_cond_layers=2),
    "gpu": Profile("gpu", image_size=128, dataset_size=None, batch_size=64, epochs=60,
                   prior_epochs=60, hidden_channels=128, codebook_size=512, code_dim=64,
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


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch in this process (``None``: torch's choice). One
    thread can be much faster for small models on a busy machine.

    Raises:
        ValueError: ``threads`` < 1.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
