"""The codes a prior learns from: encode a split once with a frozen VQ-VAE, keep the code maps.

van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation Learning*, §3.2
("Prior") and §4.2: once the VQ-VAE is trained it is frozen, and every training image is encoded
once into its map of codes (indices in [0, K)); the prior (:mod:`vqlesson.prior`) is then fitted
to those maps. For the two-level VQ-VAE-2 (Razavi et al. 2019, §3.2) each image gives a top and a
bottom code map.

:class:`CodeDataset` holds the code maps of one split in memory, one map per level of the model
(``.codes`` for a VQ-VAE, ``.top`` and ``.bottom`` for a VQ-VAE-2), coarsest level first;
:func:`extract_codes`, the one function that encodes a loader into code maps, makes one and keeps
it in ONE file with a fingerprint of the model's weights and of the data
(:func:`model_fingerprint`), so the file is reused while both are the same and rebuilt, never
reused, when either changes. Code values are range-checked here, where they enter, and nowhere
on the training path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .checkpoint import atomic_torch_save, config_record
from .runtime import eval_mode, model_device
from .validate import check_codes, check_int, split_batch
from .vqvae import DiscreteAutoencoder, check_autoencoder

LOGGER = logging.getLogger("vqlesson")

CODES_FORMAT_TAG = "vqlesson-codes"
CODES_FORMAT_VERSION = 1
#: State-dict entries that are statistics, not weights: they change when a model is merely
#: evaluated and never change its codes, so the fingerprint leaves them out.
STATISTICS_KEYS = ("usage_counts",)
#: Largest codebook stored as int16 in a code file (int64 above it).
INT16_MAX_CODES = 2**15


# --------------------------------------------------------------------------------------------
# Fingerprints, model levels, batches
# --------------------------------------------------------------------------------------------
def _hash_tensor(digest: Any, name: str, tensor: Tensor) -> None:
    """Feed a tensor's name, dtype, shape and raw bytes to a ``hashlib`` digest."""
    t = tensor.detach().cpu().contiguous().reshape(-1)  # (numel,)
    digest.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
    digest.update(t.view(torch.uint8).numpy().tobytes())  # (numel * itemsize,) raw bytes


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) over a model's class, its dataclass config and every weight/buffer.

    Usage statistics (``STATISTICS_KEYS``, e.g. the quantisers' ``usage_counts``) are left out:
    evaluating a model changes them but not its codes. Two models with the same fingerprint
    encode every image to the same codes.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    digest = hashlib.sha256()
    digest.update(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        digest.update(json.dumps(config_record(config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        if not name.endswith(STATISTICS_KEYS):
            _hash_tensor(digest, name, tensor)
    return digest.hexdigest()


def _data_fingerprint(loader: Any, passes: int, data_key: str | None) -> str:
    """SHA-256 (hex) of what is known about a loader's data without reading it: its length,
    its labels (when the data set has ``labels``), ``passes`` and the caller's ``data_key``."""
    digest = hashlib.sha256()
    dataset = getattr(loader, "dataset", None)
    size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else -1
    digest.update(f"n={size}|passes={passes}|key={data_key or ''}|".encode())
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, Tensor):
        _hash_tensor(digest, "labels", labels)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# The code data set
# --------------------------------------------------------------------------------------------
class CodeItem(NamedTuple):
    """One item of a one-level :class:`CodeDataset` (VQ-VAE).

    Attributes:
        codes: (H, W) int64 in [0, K).
        label: () int64 class index, -1 when the image has no label.
    """

    codes: Tensor
    label: Tensor


class TwoLevelCodeItem(NamedTuple):
    """One item of a two-level :class:`CodeDataset` (VQ-VAE-2).

    Attributes:
        top: (H/8, W/8) int64 in [0, K_top) (image sides H, W).
        bottom: (H/4, W/4) int64 in [0, K_bottom).
        label: () int64 class index, -1 when the image has no label.
    """

    top: Tensor
    bottom: Tensor
    label: Tensor


#: The item type of each level layout; any other layout gives plain ``(*maps, label)`` tuples.
ITEM_TYPES: dict[tuple[str, ...], type] = {("codes",): CodeItem,
                                           ("top", "bottom"): TwoLevelCodeItem}


class CodeDataset(Dataset):
    """The code maps of a frozen VQ-VAE (or VQ-VAE-2) over a data split, held in memory.

    One code map per image and level, the levels in the model's order (coarsest first; a
    level's prior may be conditioned on the level before it, as VQ-VAE-2's bottom prior on the
    top codes). Items are :class:`CodeItem` ``(codes, label)`` for a VQ-VAE and
    :class:`TwoLevelCodeItem` ``(top, bottom, label)`` for a VQ-VAE-2; the default
    ``DataLoader`` collate keeps these NamedTuples and stacks their fields. Whole levels are
    attributes named after the level: ``.codes`` (VQ-VAE) or ``.top`` and ``.bottom``
    (VQ-VAE-2), each (N, h, w) int64; :meth:`level` is the same by name.

    Args:
        levels: ``{name: (N, h, w)}`` integer tensors with values in
            ``[0, codebook_sizes[name])``, e.g. ``{"codes": ...}`` or ``{"top": ..., "bottom": ...}``.
        labels: (N,) integer class indices (-1: unlabelled).
        codebook_sizes: K of each level.
        image_shape: (C, H, W) of the images the codes were made from (for bits per dim).
        classes: class names, index -> name (may be empty).
        fingerprint: the model and data fingerprint the codes were made with ("" if unknown).
        passes: how many passes over the loader produced them (augmented copies per image).

    Raises:
        ValueError: no level, shapes that disagree, codes out of range (the only range check
            codes get: the training path does not check them again).
        TypeError: non-integer codes or labels.
    """

    def __init__(self, levels: Mapping[str, Tensor], labels: Tensor,
                 codebook_sizes: Mapping[str, int], image_shape: Sequence[int],
                 classes: Sequence[str] = (), fingerprint: str = "", passes: int = 1) -> None:
        if not levels:
            raise ValueError("levels must name at least one code map, e.g. {'codes': (N, H, W)}")
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
            raise TypeError("labels must be a (N,) integer tensor (-1 for unlabelled images)")
        self.levels: tuple[str, ...] = tuple(levels)
        self._codes: dict[str, Tensor] = {}
        self.codebook_sizes: dict[str, int] = {}
        for name, codes in levels.items():
            if name not in codebook_sizes:
                raise ValueError(f"codebook_sizes has no entry for level {name!r}")
            k = int(codebook_sizes[name])
            check_codes(codes, k, f"level {name!r}", layout="(N, H, W)")
            if codes.shape[0] != labels.shape[0]:
                raise ValueError(f"level {name!r} holds {codes.shape[0]} code maps but there "
                                 f"are {labels.shape[0]} labels")
            self._codes[name] = codes.long()  # (N, H, W) int64
            self.codebook_sizes[name] = k
        for coarse, fine in zip(self.levels, self.levels[1:]):  # coarsest first
            (hc, wc), (hf, wf) = self.grid(coarse), self.grid(fine)
            if hf % hc or wf % wc:
                raise ValueError(f"the {fine} grid ({hf}, {wf}) must be a whole multiple of the "
                                 f"{coarse} grid ({hc}, {wc})")
        self.labels: Tensor = labels.long()  # (N,)
        self.image_shape: tuple[int, ...] = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        self.classes: tuple[str, ...] = tuple(classes)
        self.fingerprint = fingerprint
        self.passes = int(passes)

    # ---- levels -----------------------------------------------------------------------------
    def level(self, name: str) -> Tensor:
        """The (N, h, w) int64 codes of level ``name``.

        Raises:
            ValueError: no such level (the message lists the levels there are).
        """
        if name not in self._codes:
            raise ValueError(f"no level {name!r} in these codes; levels: {self.levels}")
        return self._codes[name]

    def __getattr__(self, name: str) -> Tensor:
        """A level by attribute: ``.codes`` (VQ-VAE), ``.top`` / ``.bottom`` (VQ-VAE-2).

        Raises:
            AttributeError: no such level (the message names the ones there are).
        """
        codes = self.__dict__.get("_codes")
        if name.startswith("_") or codes is None:
            raise AttributeError(name)
        if name in codes:
            return codes[name]
        there = " and ".join(f".{n}" for n in codes)
        raise AttributeError(f"these codes have no level {name!r}: use {there}")

    def grid(self, name: str) -> tuple[int, int]:
        """(h, w) of level ``name``'s code map."""
        h, w = self.level(name).shape[1:]
        return int(h), int(w)

    @property
    def image_dims(self) -> int:
        """Sub-pixels per image, C·H·W (the denominator of bits per dim)."""
        return math.prod(self.image_shape)

    # ---- Dataset protocol -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> CodeItem | TwoLevelCodeItem | tuple:
        maps = tuple(self._codes[name][index] for name in self.levels)
        item = ITEM_TYPES.get(self.levels)
        return item(*maps, self.labels[index]) if item else (*maps, self.labels[index])

    def __repr__(self) -> str:
        grids = ", ".join(f"{n} {self.grid(n)} K={self.codebook_sizes[n]}" for n in self.levels)
        return f"CodeDataset({len(self)} code maps: {grids}; images {self.image_shape})"

    # ---- files ------------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """The dict stored in a code file: tensors and primitives only (``weights_only`` loads
        it); codes as int16 when every K <= 2**15, else int64."""
        small = max(self.codebook_sizes.values()) <= INT16_MAX_CODES
        dtype = torch.int16 if small else torch.int64
        return {
            "format": CODES_FORMAT_TAG,
            "format_version": CODES_FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "levels": {name: self._codes[name].to(dtype) for name in self.levels},
            "labels": self.labels.clone(),
            "codebook_sizes": dict(self.codebook_sizes),
            "image_shape": list(self.image_shape),
            "classes": list(self.classes),
            "passes": self.passes,
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], source: str = "payload") -> "CodeDataset":
        """Rebuild from :meth:`to_payload`'s dict.

        Raises:
            ValueError: not a vqlesson code payload, or a newer format version.
        """
        if not isinstance(payload, Mapping) or payload.get("format") != CODES_FORMAT_TAG:
            raise ValueError(f"{source} is not a vqlesson code file (no {CODES_FORMAT_TAG!r} tag)")
        version = payload.get("format_version")
        if not isinstance(version, int) or version > CODES_FORMAT_VERSION:
            raise ValueError(
                f"{source} has code file format version {version!r}; this vqlesson reads up to "
                f"{CODES_FORMAT_VERSION} (upgrade vqlesson or extract the codes again)"
            )
        return cls(payload["levels"], payload["labels"], payload["codebook_sizes"],
                   payload["image_shape"], payload.get("classes", ()),
                   payload.get("fingerprint", ""), payload.get("passes", 1))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CodeDataset":
        """Load a code file written by :func:`extract_codes` (``weights_only=True``), without
        checking which model made it (:func:`extract_codes` does that).

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: not a readable vqlesson code file.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no code file at {str(path)!r}; make it with vqlesson.codes.extract_codes "
                "(or python -m vqlesson train-prior)"
            )
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds for a corrupt file
            raise ValueError(
                f"{str(path)!r} is not a readable vqlesson code file ({type(error).__name__}: "
                f"{error}); delete it and extract the codes again"
            ) from error
        return cls.from_payload(payload, repr(str(path)))


def flat_codes(codes: object, name: str, codebook_size: int | None = None) -> Tensor:
    """Code maps as one row of codes per image, for distances between images' codes.

    Args:
        codes: (N, H, W) (or (N, L)) integer codes, a :class:`CodeDataset`, a
            ``{level: (N, h, w)}`` dict or a tuple of levels (as ``encode`` and
            :func:`~vqlesson.sampling.sample_codes` return them): several levels side by side.
        name: the argument's name in error messages.
        codebook_size: K; the codes must then lie in [0, K) (``None``: not checked).

    Returns:
        (N, L) int64, L the code positions of one image (all levels together).

    Raises:
        TypeError: codes that are not integers; ValueError: codes outside [0, K), or not a
            batch of maps (see :func:`~vqlesson.validate.check_codes`).
    """
    if isinstance(codes, CodeDataset):
        codes = {level: codes.level(level) for level in codes.levels}
    if isinstance(codes, tuple):  # one map per level, e.g. VQVAE2Codes(top, bottom)
        codes = dict(zip(getattr(codes, "_fields", range(len(codes))), codes))
    if isinstance(codes, Mapping):
        return torch.cat([flat_codes(c, f"{name}[{level!r}]", codebook_size)
                          for level, c in codes.items()], dim=1)  # (N, L_1 + L_2 + ...)
    check_codes(codes, codebook_size, name, layout="(N, H, W)", ndim=None)
    return codes.flatten(1).long()  # (N, H, W) -> (N, H*W)


def _fingerprint_of(model: nn.Module, loader: Any, passes: int, data_key: str | None) -> str:
    return f"model:{model_fingerprint(model)}|data:{_data_fingerprint(loader, passes, data_key)}"


def _cached_codes(path: Path, fingerprint: str) -> CodeDataset | None:
    """The code set at ``path`` when it was made with ``fingerprint``; ``None`` (logged) when
    the file is missing, unreadable or stale."""
    if not path.exists():
        return None
    try:
        cached = CodeDataset.load(path)
    except (ValueError, KeyError, TypeError) as error:
        LOGGER.warning("code file %s is unreadable (%s); extracting the codes again", path, error)
        return None
    if cached.fingerprint == fingerprint:
        return cached
    old_model, _, old_data = cached.fingerprint.partition("|")
    new_model, _, _ = fingerprint.partition("|")
    reason = "other VQ-VAE weights" if old_model != new_model else "other data"
    LOGGER.warning("code file %s was made from %s (stale); extracting the codes again",
                   path, reason)
    return None


@torch.no_grad()
def extract_codes(model: nn.Module, loader: Any, path: str | os.PathLike | None = None,
                  device: str | torch.device | None = None, passes: int = 1, *,
                  classes: Sequence[str] | None = None, data_key: str | None = None,
                  progress: bool = False) -> CodeDataset:
    """Encode every image of ``loader`` with a frozen VQ-VAE / VQ-VAE-2 into a code data set.

    Runs ``model.encode`` in eval mode under ``no_grad`` (no state changes; the mode is restored)
    ``passes`` times over the loader; with an augmenting training loader, each pass stores other
    code maps of the same images (augmentation at code-extraction time, a remedy against the
    prior overfitting a small data set).

    With ``path``, the codes, labels and a fingerprint (SHA-256 over the model's class, config
    and weights, see :func:`model_fingerprint`, plus the data set's length and labels,
    ``passes`` and ``data_key``) go into ONE file, written atomically, loadable with
    ``torch.load(..., weights_only=True)``. A later call with the same fingerprint reuses the
    file without running the model; a different fingerprint (another checkpoint, other data)
    means the file is stale: it is rebuilt (with a logged warning), never reused.

    Args:
        model: a :class:`~vqlesson.vqvae.VQVAE` or :class:`~vqlesson.vqvae2.VQVAE2`. Moved to
            ``device`` when one is given.
        loader: yields ``(images (B, C, H, W) float in [-1, 1], labels (B,) int64)`` (a bare
            image batch counts as unlabelled, label -1).
        path: the code file (e.g. ``runs/NAME/codes_train.pt``), or ``None`` to keep nothing.
        device: where to encode; ``None``: the model's device.
        passes: passes over the loader, >= 1.
        classes: class names stored with the codes (default: ``loader.dataset.classes`` if any).
        data_key: a string naming the data (e.g. source, split and seed); it is part of the
            fingerprint, so other data under the same file name is never mistaken for these.
        progress: show a tqdm bar over the batches.

    Returns:
        :class:`CodeDataset` of ``passes * len(dataset)`` items: codes (N, H/f, W/f) for a
        VQ-VAE, top (N, H/8, W/8) and bottom (N, H/4, W/4) for a VQ-VAE-2, int64.

    Raises:
        TypeError: ``model`` is not a VQ-VAE / VQ-VAE-2, or the loader yields something else
            than image batches.
        ValueError: ``passes`` < 1, or the loader yields no batch.
    """
    levels = check_autoencoder(model).levels
    check_int(passes, "passes", 1)
    if classes is None:
        classes = tuple(getattr(getattr(loader, "dataset", None), "classes", ()) or ())
    fingerprint = _fingerprint_of(model, loader, passes, data_key)
    file = Path(path) if path is not None else None
    if file is not None:
        cached = _cached_codes(file, fingerprint)
        if cached is not None:
            return cached
    if device is not None:
        model.to(device)
    maps, labels, image_shape = _encode_passes(model, loader, passes, progress)
    dataset = CodeDataset(
        {level.name: m for level, m in zip(levels, maps)},  # (N, h, w) each
        labels, {level.name: level.codebook_size for level in levels}, image_shape, classes,
        fingerprint, passes,
    )
    if file is not None:
        atomic_torch_save(dataset.to_payload(), file)
    return dataset


def _encode_passes(model: DiscreteAutoencoder, loader: Any, passes: int, progress: bool
                   ) -> tuple[list[Tensor], Tensor, tuple[int, ...]]:
    """``passes`` passes of ``model.encode`` over ``loader`` (eval mode, on the model's
    device): the code maps of each level (N, h, w), the labels (N,) (-1: none), (C, H, W).

    Raises:
        TypeError: the loader yields something else than image batches.
        ValueError: the loader yields no batch.
    """
    device = model_device(model)
    parts: list[list[Tensor]] = [[] for _ in model.levels]
    labels: list[Tensor] = []
    image_shape: tuple[int, ...] = ()
    with eval_mode(model):
        for pass_index in range(passes):
            bar = tqdm(loader, desc=f"codes, pass {pass_index + 1}/{passes}",
                       disable=not progress, unit="batch")
            for batch in bar:
                x, y = split_batch(batch, "loader")
                image_shape = tuple(x.shape[1:])
                for part, m in zip(parts, model.encode(x.to(device, non_blocking=True))):
                    part.append(m.cpu())  # (B, h, w)
                labels.append(torch.full((x.shape[0],), -1, dtype=torch.int64) if y is None
                              else y.long().cpu())  # (B,)
    if not labels:
        raise ValueError("the loader yielded no batches; give it at least one image")
    return [torch.cat(part) for part in parts], torch.cat(labels), image_shape
