"""Datasets and loaders: ISIC 2016, CIFAR-10, any folder of images, the offline synthetic lesions.

- :class:`ISIC2016`: the ISBI 2016 challenge, Part 3 (lesion classification; Gutman et al. 2016,
  arXiv:1605.01397, CC-0): 900 training and 379 test dermoscopy JPEGs with benign/malignant labels.
  ``ISIC2016(download=True)`` (:mod:`vqlesson.data.download`) fetches it into ``data/isic2016``.
- :class:`ImageFolderDataset`: every image below a folder, so students can bring their own.
- :class:`~vqlesson.data.synthetic.SyntheticLesions`: procedural dermoscopy-like lesions; needs nothing
  downloaded and is the default when ISIC 2016 is not on disk.
- :func:`make_loaders`: loaders for any of them (and CIFAR-10, :mod:`vqlesson.data.cifar`), by profile.

Every item is ``(image, label)``: image ``(3, S, S)`` float32 in [-1, 1], label int64
(0 benign, 1 malignant; -1 for unlabelled folders). One range, end to end: the VQ-VAE's decoder
ends in tanh and produces [-1, 1] too.

Real files are decoded, cleaned and resized once, into a cache beside the data
(:mod:`vqlesson.data.image_files`); an unreadable file raises
:class:`~vqlesson.data.image_files.CorruptImageError`, or with ``on_error="skip"`` is left out with
one warning.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..augment import AugmentConfig, build_transforms
from .cifar import cifar10_splits
from .paths import default_isic_root
from .image_files import CACHE_DIRNAME, IMAGE_EXTENSIONS, cached_images, warn_skipped
from ..metrics import to_unit_range
from ..runtime import loader_workers, worker_init_fn
from ..profiles import Profile, get_profile
from .synthetic import SyntheticLesions
from ..validate import check_choice, check_int, check_number

__all__ = [
    "CLASSES", "DatasetNotFoundError", "ISIC2016", "ImageFolderDataset",
    "SyntheticLesions", "Loaders", "make_loaders", "default_isic_root",
    "to_model_range", "to_unit_range",
]

LOGGER = logging.getLogger("vqlesson")
CLASSES = ("benign", "malignant")
SYNTHETIC_GPU_SIZE = 4000  # synthetic training images when the profile says "all" (gpu)

ISIC_FILES = {
    "train": ("ISBI2016_ISIC_Part3_Training_Data", "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"),
    "test": ("ISBI2016_ISIC_Part3_Test_Data", "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"),
}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder that is missing or holds no data."""


# --------------------------------------------------------------------------------------------
# Helpers: ranges, argument checks, items
# --------------------------------------------------------------------------------------------
def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1] -> [-1, 1]`` (clamped first), the range every model of the course uses."""
    return x.clamp(0.0, 1.0) * 2.0 - 1.0


def _check_on_error(on_error: str) -> None:
    check_choice(on_error, "on_error", ("raise", "skip"))


def _check_image_size(image_size: int) -> None:
    check_int(image_size, "image_size", 8, note="pixels")


def _make_item(image: torch.Tensor, label: torch.Tensor, transform: Callable | None):
    """(3, S, S) uint8 -> float [0, 1] -> transform -> float [-1, 1]; returns (image, label)."""
    x = image.float() / 255.0  # (3, S, S) in [0, 1]
    if transform is not None:
        x = transform(x)
    return to_model_range(x), label


class _CachedImageDataset(Dataset):
    """Datasets whose resized images sit in memory as one uint8 tensor."""

    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    transform: Callable | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        return _make_item(self.images[index], self.labels[index], self.transform)


# --------------------------------------------------------------------------------------------
# ISIC 2016
# --------------------------------------------------------------------------------------------
def _parse_label(value: str, csv_path: Path, line: int) -> int:
    text = value.strip().lower()
    if text in CLASSES:
        return CLASSES.index(text)
    try:
        number = float(text)
    except ValueError:
        number = None
    if number in (0.0, 1.0):
        return int(number)
    raise ValueError(
        f"{csv_path}, line {line}: label {value!r} is not benign/malignant or 0/1. Check the file "
        "or re-run data_download.sh."
    )


def read_isic_labels(csv_path: Path) -> list[tuple[str, int]]:
    """Rows ``(image_id, label)`` of an ISIC 2016 Part 3 ground-truth CSV.

    Accepts word labels (``benign``/``malignant``), integers and floats (``0``, ``1.0``), and an
    optional header row. Raises ValueError naming the file and line for anything else.
    """
    rows: list[tuple[str, int]] = []
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{csv_path}, line {line}: expected 'image_id,label', got {row!r}")
            try:
                label = _parse_label(row[1], csv_path, line)
            except ValueError:
                if line == 1 and not rows:
                    continue  # a header row such as "image_id,melanoma"
                raise
            rows.append((row[0].strip(), label))
    return rows


def _not_found(root: Path, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"ISIC 2016 not found in {root}: {what}. Pass download=True (or run `bash data_download.sh "
        f"{root}`) to download it (about 830 MB, CC-0), or use the offline synthetic set, "
        "which needs no download: SyntheticLesions(n, image_size) or "
        "make_loaders(source='synthetic')."
    )


def isic_available(root: str | os.PathLike | None = None) -> bool:
    """True when both ISIC 2016 image folders and CSVs are present under ``root``."""
    root = Path(root) if root is not None else default_isic_root()
    return all(
        (root / folder).is_dir() and any((root / folder).iterdir()) and (root / csv_name).is_file()
        for folder, csv_name in ISIC_FILES.values()
    )


def _stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list, list]:
    """Indices (train, val): ``val_fraction`` of each class, drawn with a fixed seed."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train_idx, val_idx = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        n_val = int(round(len(members) * val_fraction))
        val_idx.extend(members[:n_val].tolist())
        train_idx.extend(members[n_val:].tolist())
    return sorted(train_idx), sorted(val_idx)


class _ListedImages(NamedTuple):
    """The CSV rows of an ISIC split matched to image files (``missing``: ids without one)."""

    files: list[Path]
    labels: list[int]
    ids: list[str]
    missing: list[str]


def _isic_rows(root: Path, split: str) -> tuple[Path, Path, list[tuple[str, int]]]:
    """``(image folder, label CSV, its rows)`` of an ISIC 2016 split under ``root``.

    Raises:
        DatasetNotFoundError: ``root`` missing or empty, the folder or CSV missing, no rows.
    """
    if not root.is_dir() or not any(root.iterdir()):
        raise _not_found(root, "the folder is missing or empty")
    folder_name, csv_name = ISIC_FILES["test" if split == "test" else "train"]
    folder, csv_path = root / folder_name, root / csv_name
    if not folder.is_dir():
        raise _not_found(root, f"the image folder {folder_name}/ is missing")
    if not csv_path.is_file():
        raise _not_found(root, f"the label file {csv_name} is missing")
    rows = read_isic_labels(csv_path)
    if not rows:
        raise _not_found(root, f"{csv_name} holds no rows")
    return folder, csv_path, rows


def _match_isic_images(folder: Path, csv_path: Path, rows: Sequence[tuple[str, int]],
                       on_error: str) -> _ListedImages:
    """Each row's image file in ``folder`` (.jpg, .jpeg, .JPG or .png).

    Raises:
        ValueError: rows without an image, with ``on_error="raise"`` (says how to fix it).
    """
    files, labels, ids, missing = [], [], [], []
    for image_id, label in rows:
        path = next(
            (folder / f"{image_id}{ext}" for ext in (".jpg", ".jpeg", ".JPG", ".png")
             if (folder / f"{image_id}{ext}").is_file()),
            None,
        )
        if path is None:
            missing.append(image_id)
            continue
        files.append(path)
        labels.append(label)
        ids.append(image_id)
    if missing and on_error == "raise":
        raise ValueError(
            f"{len(missing)} image(s) listed in {csv_path} are missing from {folder}: "
            f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. Re-run "
            "data_download.sh, or pass on_error='skip'."
        )
    return _ListedImages(files, labels, ids, missing)


class ISIC2016(_CachedImageDataset):
    """ISBI 2016 challenge, Part 3: 900 training and 379 test dermoscopy images (Gutman et al. 2016).

    The validation split is carved from the 900 training images: ``val_fraction`` (default 10 %,
    i.e. 90 images) of each class, drawn with ``numpy.random.default_rng(split_seed)``,
    ``split_seed=2016`` by default, so ``split="train"`` holds the other 810 (about 654 benign,
    156 malignant). ``val_fraction=0`` makes ``"train"`` the whole training set.

    Args:
        root: the folder ``data_download.sh`` filled (default :func:`default_isic_root`).
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: side S in pixels of the square images (centre crop, then resize).
        transform: applied to each image as ``(3, S, S)`` float in [0, 1], before the mapping
            to [-1, 1] (e.g. :func:`vqlesson.augment.build_transforms`).
        on_error: ``"raise"`` (default) or ``"skip"`` unreadable files, with one warning.
        val_fraction, split_seed: the validation split, see above.

    Items:
        ``(image, label)``: image (3, S, S) float32 in [-1, 1]; label int64, 0 benign,
        1 malignant. ``labels`` holds all labels (N,) int64; ``image_ids`` the ISIC ids.

    Raises:
        DatasetNotFoundError: ``root`` is missing, empty or lacks a file (says how to get it).
        ~vqlesson.data.image_files.CorruptImageError: an unreadable image (with ``on_error="raise"``).
        ValueError: a bad CSV row, a CSV row without its image, or a bad argument.
    """

    classes = CLASSES

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        image_size: int = 64,
        transform: Callable | None = None,
        on_error: str = "raise",
        val_fraction: float = 0.1,
        split_seed: int = 2016,
        download: bool = False,
    ) -> None:
        check_choice(split, "split", ("train", "val", "test"))
        check_number(val_fraction, "val_fraction", 0, 1, high_open=True)
        _check_image_size(image_size)
        _check_on_error(on_error)
        self.root = Path(root) if root is not None else default_isic_root()
        self.split, self.image_size, self.transform = split, image_size, transform
        if download:  # torchvision's convention: fetch when missing (a no-op when in place)
            from .download import download_isic2016
            download_isic2016(self.root)
        folder, csv_path, rows = _isic_rows(self.root, split)
        listed = _match_isic_images(folder, csv_path, rows, on_error)

        cached = cached_images(
            self.root, folder.name, listed.files, image_size, on_error,
            extra=csv_path.read_bytes(),
        )
        warn_skipped(list(cached["skipped"]) + listed.missing, folder)
        kept = list(cached["kept"])
        all_labels = [listed.labels[i] for i in kept]
        self.raw_sizes = list(cached["raw_sizes"])
        if split == "test":
            chosen = list(range(len(kept)))
        else:
            train_idx, val_idx = _stratified_split(all_labels, val_fraction, split_seed)
            chosen = train_idx if split == "train" else val_idx
        self.images = cached["images"][chosen]  # (N, 3, S, S) uint8
        self.labels = torch.tensor([all_labels[i] for i in chosen], dtype=torch.int64)
        self.image_ids = [listed.ids[kept[i]] for i in chosen]
        self.raw_sizes = [self.raw_sizes[i] for i in chosen]

    def __repr__(self) -> str:
        malignant = float(self.labels.float().mean()) if len(self) else 0.0
        return (f"ISIC2016(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, "
                f"image_size={self.image_size}, malignant={malignant:.1%})")


# --------------------------------------------------------------------------------------------
# Any folder of images
# --------------------------------------------------------------------------------------------
class ImageFolderDataset(_CachedImageDataset):
    """Every image below ``root`` (jpg, jpeg, png, bmp; recursive), cleaned like ISIC 2016.

    When every image lies in a sub-folder, labels come from the first-level sub-folder names
    (sorted; ``classes`` lists them, e.g. ``("benign", "malignant")``); otherwise every label
    is -1 and ``classes`` is empty.

    Args:
        root: the folder.
        image_size: side S in pixels (centre crop to a square, then resize).
        transform: applied to each (3, S, S) float image in [0, 1] before the mapping to [-1, 1].
        on_error: ``"raise"`` or ``"skip"`` unreadable files.

    Items: ``(image (3, S, S) float32 in [-1, 1], label int64)``.

    Raises:
        DatasetNotFoundError: the folder is missing or holds no image.
        ~vqlesson.data.image_files.CorruptImageError: an unreadable image (with ``on_error="raise"``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        image_size: int = 64,
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        _check_image_size(image_size)
        _check_on_error(on_error)
        self.root, self.image_size, self.transform = Path(root), image_size, transform
        if not self.root.is_dir():
            raise DatasetNotFoundError(
                f"image folder {self.root} does not exist; give a folder that holds .jpg/.jpeg/"
                ".png/.bmp files (sub-folders are searched), or use SyntheticLesions."
            )
        files = sorted(
            p for p in self.root.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            and CACHE_DIRNAME not in p.parts and not any(part.startswith(".") for part in
                                                          p.relative_to(self.root).parts)
        )
        if not files:
            raise DatasetNotFoundError(
                f"no images (.jpg, .jpeg, .png, .bmp) found below {self.root}; put your images "
                "there (one sub-folder per class for labels), or use SyntheticLesions."
            )
        relative = [p.relative_to(self.root) for p in files]
        labelled = all(len(r.parts) > 1 for r in relative)
        self.classes = tuple(sorted({r.parts[0] for r in relative})) if labelled else ()
        labels = [self.classes.index(r.parts[0]) if labelled else -1 for r in relative]

        cached = cached_images(self.root, "folder", files, image_size, on_error)
        warn_skipped(cached["skipped"], self.root)
        kept = list(cached["kept"])
        self.images = cached["images"]
        self.labels = torch.tensor([labels[i] for i in kept], dtype=torch.int64)
        self.files = [files[i] for i in kept]
        self.raw_sizes = list(cached["raw_sizes"])

    def __repr__(self) -> str:
        return (f"ImageFolderDataset(root={str(self.root)!r}, n={len(self)}, "
                f"image_size={self.image_size}, classes={self.classes})")


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------
class Loaders(NamedTuple):
    """What :func:`make_loaders` returns. ``source`` is ``"isic2016"``, ``"synthetic"``,
    ``"cifar10"`` or ``"folder"``; ``description`` says in words which data was chosen and why."""

    train: DataLoader
    val: DataLoader
    test: DataLoader
    source: str
    description: str
    classes: tuple[str, ...]


class _WithTransform(Dataset):
    """A view of a cached dataset (or subset) with its own transform."""

    def __init__(self, base: _CachedImageDataset, indices: Sequence[int], transform):
        self.base, self.indices, self.transform = base, list(indices), transform
        self.labels = base.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        i = self.indices[index]
        return _make_item(self.base.images[i], self.base.labels[i], self.transform)


def _folder_splits(dataset: ImageFolderDataset, seed: int) -> tuple[list, list, list]:
    """80 / 10 / 10 % of a folder, stratified when labelled, fixed seed."""
    rest, test = _stratified_split(dataset.labels.tolist(), 0.1, seed)
    rest_labels = dataset.labels[rest].tolist()
    train_i, val_i = _stratified_split(rest_labels, 1 / 9, seed + 1)
    return [rest[i] for i in train_i], [rest[i] for i in val_i], test


class _Splits(NamedTuple):
    """The three datasets of one data source and its class names."""

    train: Dataset
    val: Dataset
    test: Dataset
    classes: tuple[str, ...]


def _resolve_source(source: object, isic_root: Path) -> tuple[str, str]:
    """``(kind, why)``: the kind of ``source`` (``"auto"`` resolved to ISIC 2016 when it is on
    disk, else the synthetic set) and, in words, why.

    Raises:
        ValueError: an unknown source, or ``"folder:"`` without a path.
    """
    kind = source.split(":", 1)[0] if isinstance(source, str) else None
    if kind not in ("auto", "isic2016", "synthetic", "cifar10", "folder"):
        raise ValueError(f"unknown data source {source!r}; use 'auto', 'isic2016', 'synthetic', "
                         "'cifar10' or 'folder:PATH'.")
    if kind == "folder":
        folder = source.split(":", 1)[1] if ":" in source else ""
        if not folder:
            raise ValueError("source 'folder:PATH' needs a path, e.g. 'folder:data/my_images'")
        return kind, f"images from {folder}"
    if kind != "auto":
        return kind, f"source={source!r}"
    if isic_available(isic_root):
        return "isic2016", f"ISIC 2016 found in {isic_root}"
    return "synthetic", (f"ISIC 2016 not found in {isic_root} (run data_download.sh "
                         "to get it); using the offline synthetic lesions")


def _synthetic_splits(n_train: int | None, size: int, seed: int,
                      train_transform: Callable | None) -> _Splits:
    """Disjoint synthetic sets (seeds ``seed``, ``+ 1``, ``+ 2``); validation and test a fifth
    of the training size (at least 16)."""
    n = n_train if n_train is not None else SYNTHETIC_GPU_SIZE
    n_eval = max(16, n // 5)
    train = SyntheticLesions(n, size, seed=seed, transform=train_transform)
    val = SyntheticLesions(n_eval, size, seed=seed + 1)
    test = SyntheticLesions(n_eval, size, seed=seed + 2)
    return _Splits(train, val, test, tuple(train.classes))


def _isic_splits(isic_root: Path, n_train: int | None, size: int, seed: int,
                 train_transform: Callable | None, on_error: str) -> _Splits:
    """ISIC 2016's train/val/test splits; at most ``n_train`` training images (a seeded draw)."""
    train_base = ISIC2016(isic_root, "train", size, on_error=on_error)
    val = ISIC2016(isic_root, "val", size, on_error=on_error)
    test = ISIC2016(isic_root, "test", size, on_error=on_error)
    indices = np.arange(len(train_base))
    if n_train is not None and n_train < len(train_base):
        indices = np.sort(np.random.default_rng(seed).permutation(len(train_base))[:n_train])
    train = _WithTransform(train_base, indices.tolist(), train_transform)
    return _Splits(train, val, test, CLASSES)


def _folder_splits_of(folder: str, n_train: int | None, size: int, seed: int,
                      train_transform: Callable | None, on_error: str) -> _Splits:
    """A folder of images split 80/10/10 (:func:`_folder_splits`); the first ``n_train``
    training images."""
    base = ImageFolderDataset(folder, size, on_error=on_error)
    train_i, val_i, test_i = _folder_splits(base, seed)
    if n_train is not None:
        train_i = train_i[:n_train]
    train = _WithTransform(base, train_i, train_transform)
    val, test = _WithTransform(base, val_i, None), _WithTransform(base, test_i, None)
    return _Splits(train, val, test, base.classes)


def _make_data_loaders(splits: _Splits, batch: int, workers: int, seed: int, kind: str,
                       details: str) -> Loaders:
    """The three ``DataLoader`` s (training shuffled by a generator seeded with ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    common = dict(
        batch_size=batch, num_workers=workers, worker_init_fn=worker_init_fn,
        pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
    )
    train, val, test = splits.train, splits.val, splits.test
    return Loaders(
        train=DataLoader(train, shuffle=True, drop_last=len(train) > batch, generator=generator,
                         **common),
        val=DataLoader(val, shuffle=False, **common),
        test=DataLoader(test, shuffle=False, **common),
        source=kind,
        description=(f"{kind}: {len(train)} train / {len(val)} val / {len(test)} test images at "
                     f"{details}"),
        classes=splits.classes,
    )


def make_loaders(
    source: str = "auto",
    root: str | os.PathLike | None = None,
    profile: Profile | str | None = None,
    image_size: int | None = None,
    batch_size: int | None = None,
    dataset_size: int | None = None,
    augment: AugmentConfig | bool | None = True,
    num_workers: int | None = None,
    seed: int = 0,
    on_error: str = "raise",
) -> Loaders:
    """Train, validation and test loaders for one data source.

    Args:
        source: ``"auto"`` (ISIC 2016 when it is on disk, else the synthetic set),
            ``"isic2016"``, ``"synthetic"``, ``"cifar10"`` or ``"folder:PATH"`` (any images).
        root: ISIC 2016 or CIFAR-10 folder (default ``data/isic2016``, ``data/cifar10``).
        profile: a :class:`~vqlesson.profiles.Profile` or its name; default ``$VQLESSON_PROFILE``.
        image_size, batch_size, dataset_size: override the profile's values. ``dataset_size``
            is the number of synthetic training images, or a cap on real training images.
        augment: ``True`` for the dermoscopy defaults of :class:`AugmentConfig`, an
            ``AugmentConfig``, or ``False``/``None`` for none. Only the training split is augmented.
        num_workers: ``DataLoader`` workers (default: the profile's), capped at the CPUs this
            process may use.
        seed: seeds the synthetic sets, the folder split and the training shuffle.
        on_error: ``"raise"`` or ``"skip"`` unreadable image files.

    Returns:
        :class:`Loaders` ``(train, val, test, source, description, classes)``; batches are
        ``(images (B, 3, S, S) float32 in [-1, 1], labels (B,) int64)``.

    Splits: ISIC 2016 uses its 379 test images and a stratified 10 % validation split of the
    training set (``split_seed=2016``); a folder is split 80/10/10 with ``seed``; the synthetic
    set draws train, validation and test from disjoint seeds (``seed``, ``seed + 1``,
    ``seed + 2``), with validation and test each a fifth of the training size (at least 16);
    CIFAR-10: see :func:`vqlesson.data.cifar.cifar10_splits` (never downloaded here).
    """
    prof = get_profile(profile)
    size = image_size or prof.image_size
    batch = batch_size or prof.batch_size
    n_train = dataset_size if dataset_size is not None else prof.dataset_size
    workers = loader_workers(prof.num_workers if num_workers is None else num_workers)
    if isinstance(augment, AugmentConfig):
        aug_config = augment
    else:
        aug_config = AugmentConfig() if augment else None
    train_transform = build_transforms(aug_config, size)

    isic_root = Path(root) if root is not None else default_isic_root()
    kind, why = _resolve_source(source, isic_root)
    if kind == "synthetic":
        splits = _synthetic_splits(n_train, size, seed, train_transform)
    elif kind == "isic2016":
        splits = _isic_splits(isic_root, n_train, size, seed, train_transform, on_error)
    elif kind == "cifar10":
        splits = _Splits(*cifar10_splits(root, size, n_train, seed, augment))
    else:
        splits = _folder_splits_of(source.split(":", 1)[1], n_train, size, seed,
                                   train_transform, on_error)
    loaders = _make_data_loaders(splits, batch, workers, seed, kind,
                                 f"{size} px, batch {batch} ({why})")
    LOGGER.info("data: %s", loaders.description)
    return loaders
