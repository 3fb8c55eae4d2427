"""CIFAR-10, the VQ-VAE paper's own image benchmark, as a course data source.

Van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning" (arXiv:1711.00937,
2017), Sec. 4.1 compare VQ-VAE with a continuous VAE on CIFAR-10 (Krizhevsky 2009: 50 000 training
and 10 000 test images of 32 x 32 pixels, 10 classes), which report E of the assignment used too;
``make_loaders("cifar10")`` puts the course's models next to those figures. The files are read with
torchvision's ``CIFAR10`` (``ROOT/cifar-10-batches-py/``, MD5-checked by torchvision); nothing is
downloaded here: :func:`vqlesson.data.download.download_cifar10` (``python -m vqlesson.data.download
--dataset cifar10``) fetches them.

Items are the course's: ``(image (3, S, S) float32 in [-1, 1], label int64 in [0, 10))``. Images
are stored at their native 32 px and resized (bicubic) to S on the fly when S differs; the
paper's setting is S = 32 (``image_size=32``, ``--image-size 32``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..augment import AugmentConfig, build_transforms
from .paths import default_data_root

__all__ = ["CIFAR_AUGMENT", "CIFAR10Images", "CifarSplits", "cifar10_splits", "load_cifar10"]

NATIVE_SIZE = 32
VAL_FRACTION = 0.1  # of the 50 000 training images: 5 000 for validation
# Natural images have an up and a down: only horizontal flips (the dermoscopy defaults of
# AugmentConfig also flip vertically, rotate and jitter colour).
CIFAR_AUGMENT = replace(AugmentConfig.none(), hflip=True)


class CIFAR10Images(Dataset):
    """CIFAR-10 images as course items.

    Args:
        images: (N, 3, 32, 32) uint8.
        labels: (N,) int64 in [0, 10).
        classes: the class names, e.g. ``("airplane", "automobile", ...)``.
        image_size: side S of the items in pixels (bicubic resize when it is not 32).
        transform: applied to each (3, S, S) float image in [0, 1] before the mapping to [-1, 1].

    Items: ``(image (3, S, S) float32 in [-1, 1], label int64)``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                 image_size: int = NATIVE_SIZE, transform: Callable | None = None) -> None:
        self.images, self.labels, self.classes = images, labels, tuple(classes)
        self.image_size, self.transform = image_size, transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[index].float() / 255.0  # (3, 32, 32) in [0, 1]
        if self.image_size != NATIVE_SIZE:
            x = TF.resize(x, [self.image_size, self.image_size],
                          interpolation=v2.InterpolationMode.BICUBIC, antialias=True)
            x = x.clamp(0.0, 1.0)  # bicubic overshoots
        if self.transform is not None:
            x = self.transform(x)
        return x.clamp(0.0, 1.0) * 2.0 - 1.0, self.labels[index]


def _not_found(root: Path, why: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"CIFAR-10 not found in {root}: {why}. Download it (about 170 MB) with `python -m "
        f"vqlesson download --dataset cifar10 {root}` or, in Python, "
        f"vqlesson.data.download.download_cifar10({str(root)!r}); or pass root= (--data-root) the "
        "folder that holds cifar-10-batches-py/.")


def load_cifar10(
    root: str | os.PathLike | None, train: bool
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """One CIFAR-10 split from disk: ``(images (N, 3, 32, 32) uint8, labels (N,) int64, classes)``.

    Args:
        root: the folder holding ``cifar-10-batches-py/`` (default ``$VQLESSON_DATA_DIR/cifar10``
            or ``data/cifar10``).
        train: the 50 000 training images, else the 10 000 test images.

    Raises:
        FileNotFoundError: the files are missing or fail torchvision's MD5 check (the message
            says how to download them).
    """
    from torchvision.datasets import CIFAR10

    root = Path(root) if root is not None else default_data_root("cifar10")
    if not (root / CIFAR10.base_folder).is_dir():
        raise _not_found(root, f"there is no {CIFAR10.base_folder}/ folder")
    try:
        dataset = CIFAR10(str(root), train=train, download=False)
    except RuntimeError as err:  # torchvision: missing or corrupted files
        raise _not_found(root, f"torchvision says: {err}") from err
    images = torch.from_numpy(np.ascontiguousarray(dataset.data))  # (N, 32, 32, 3) uint8
    images = images.permute(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return images.contiguous(), labels, tuple(dataset.classes)


class CifarSplits(NamedTuple):
    """What :func:`cifar10_splits` returns: three datasets and the class names."""

    train: CIFAR10Images
    val: CIFAR10Images
    test: CIFAR10Images
    classes: tuple[str, ...]


def cifar10_splits(
    root: str | os.PathLike | None,
    image_size: int,
    dataset_size: int | None = None,
    seed: int = 0,
    augment: AugmentConfig | bool | None = True,
) -> CifarSplits:
    """Train, validation and test sets of CIFAR-10 for :func:`vqlesson.data.make_loaders`.

    Validation is 10 % (5 000 images) of the training set, drawn with
    ``numpy.random.default_rng(seed)``; training is the other 45 000; test is CIFAR's test set.
    With ``dataset_size`` (the ``ci`` and ``cpu`` profiles' cap) training keeps the first
    ``dataset_size`` of its images, and validation and test the first ``max(16, dataset_size // 5)``
    of theirs (test in an order drawn with ``seed``), so that small runs stay small.

    Args:
        root: the folder holding ``cifar-10-batches-py/`` (see :func:`load_cifar10`).
        image_size: side S of the items in pixels (32 is the paper's; else resized).
        dataset_size: a cap on the training images, or ``None`` for all of them.
        seed: the validation split and the test subset.
        augment: ``True`` for :data:`CIFAR_AUGMENT` (horizontal flips), an ``AugmentConfig``, or
            ``False``/``None``. Only the training split is augmented.

    Raises:
        FileNotFoundError: CIFAR-10 is not in ``root`` (says how to download it).
    """
    train_images, train_labels, classes = load_cifar10(root, train=True)
    test_images, test_labels, _ = load_cifar10(root, train=False)
    rng = np.random.default_rng(seed)
    order = torch.from_numpy(rng.permutation(len(train_labels)))
    n_val = int(round(len(order) * VAL_FRACTION))
    val_idx, train_idx = order[:n_val], order[n_val:]
    test_idx = torch.arange(len(test_labels))
    if dataset_size is not None:
        n_eval = max(16, dataset_size // 5)
        train_idx, val_idx = train_idx[:dataset_size], val_idx[:n_eval]
        test_idx = torch.from_numpy(rng.permutation(len(test_labels)))[:n_eval]
    config = augment if isinstance(augment, AugmentConfig) else (CIFAR_AUGMENT if augment else None)
    transform = build_transforms(config, image_size)

    def subset(images, labels, idx, tf=None) -> CIFAR10Images:
        return CIFAR10Images(images[idx], labels[idx], classes, image_size, tf)

    return CifarSplits(
        train=subset(train_images, train_labels, train_idx, transform),
        val=subset(train_images, train_labels, val_idx),
        test=subset(test_images, test_labels, test_idx),
        classes=classes,
    )
