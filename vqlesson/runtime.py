"""Where and how things run: device selection, seeds, eval mode, threads, loader workers.

The course's size profiles (``ci``, ``cpu``, ``gpu``) are in :mod:`vqlesson.profiles`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from .validate import check_int

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


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters (its first one; the CPU for a model without any)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's ``random``, NumPy and PyTorch (all devices) for a reproducible run.

    Returns a CPU ``torch.Generator`` seeded with ``seed``, for data loaders and samplers.
    Bit-exact reproducibility on a GPU additionally needs deterministic kernels, which cost speed;
    the course does not force them.
    """
    seed = check_int(seed, "seed", 0)
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
    requested = check_int(requested, "num_workers", 0)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    return min(requested, cpus)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
def given(overrides: dict) -> dict:
    """The entries of ``overrides`` whose value is not ``None``: how every profile-sized config
    helper (and the command line, whose unset options are ``None``) applies its overrides."""
    return {k: v for k, v in overrides.items() if v is not None}


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch in this process (``None``: torch's choice). One
    thread can be much faster for small models on a busy machine.

    Raises:
        ValueError: ``threads`` < 1.
    """
    if threads is None:
        return
    torch.set_num_threads(check_int(threads, "--threads", 1))
