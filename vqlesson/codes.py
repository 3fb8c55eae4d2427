"""The codes a prior learns from: encode a split once with a frozen VQ-VAE, keep the code maps.

van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation Learning*, §3.2
("Prior") and §4.2: once the VQ-VAE is trained it is frozen, and every training image is encoded
once into its map of codes (indices in [0, K)); the prior (:mod:`vqlesson.prior`) is then fitted
to those maps. For the two-level VQ-VAE-2 (Razavi et al. 2019, §3.2) each image gives a top and a
bottom code map.

:class:`CodeDataset` holds the code maps of one split in memory (items ``(codes, label)`` or
``(top, bottom, label)``); :func:`extract_codes` makes one and keeps it in ONE file with a
fingerprint of the model's weights and of the data (:func:`model_fingerprint`), so the file is
reused while both are the same and rebuilt, never reused, when either changes.
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
from .validate import split_batch
from .vqvae import VQVAE
from .vqvae2 import VQVAE2

LOGGER = logging.getLogger("vqlesson")

CODES_FORMAT_TAG = "vqlesson-codes"
CODES_FORMAT_VERSION = 1
#: Level names of a code data set: one level (VQ-VAE) or two (VQ-VAE-2).
SINGLE_LEVEL = ("codes",)
TWO_LEVELS = ("top", "bottom")
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


def _model_levels(model: nn.Module) -> tuple[tuple[str, ...], dict[str, int]]:
    """Level names and codebook sizes of a VQ-VAE or VQ-VAE-2.

    Raises:
        TypeError: another kind of model.
    """
    if isinstance(model, VQVAE2):
        c = model.config
        return TWO_LEVELS, {"top": c.codebook_size_top, "bottom": c.codebook_size_bottom}
    if isinstance(model, VQVAE):
        return SINGLE_LEVEL, {"codes": model.config.codebook_size}
    raise TypeError(
        f"model must be a VQVAE or a VQVAE2 (vqlesson.vqvae / vqlesson.vqvae2), got "
        f"{type(model).__name__}"
    )



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


class CodeDataset(Dataset):
    """The code maps of a frozen VQ-VAE (or VQ-VAE-2) over a data split, held in memory.

    Items are :class:`CodeItem` ``(codes, label)`` for one level or :class:`TwoLevelCodeItem`
    ``(top, bottom, label)`` for two; the default ``DataLoader`` collate keeps these NamedTuples
    and stacks their fields. Whole levels are attributes: ``.codes`` (one level) or ``.top`` and
    ``.bottom`` (two levels), each (N, h, w) int64.

    Args:
        levels: ``{"codes": (N, H, W)}`` or ``{"top": (N, h, w), "bottom": (N, 2h, 2w)}``,
            integer tensors with values in ``[0, codebook_sizes[level])``.
        labels: (N,) integer class indices (-1: unlabelled).
        codebook_sizes: K of each level.
        image_shape: (C, H, W) of the images the codes were made from (for bits per dim).
        classes: class names, index -> name (may be empty).
        fingerprint: the model and data fingerprint the codes were made with ("" if unknown).
        passes: how many passes over the loader produced them (augmented copies per image).

    Raises:
        ValueError: unknown level names, shapes that disagree, codes out of range.
        TypeError: non-integer codes or labels.
    """

    def __init__(self, levels: Mapping[str, Tensor], labels: Tensor,
                 codebook_sizes: Mapping[str, int], image_shape: Sequence[int],
                 classes: Sequence[str] = (), fingerprint: str = "", passes: int = 1) -> None:
        names = tuple(levels)
        if names not in (SINGLE_LEVEL, TWO_LEVELS):
            raise ValueError(
                f"levels must be named {SINGLE_LEVEL} (VQ-VAE) or {TWO_LEVELS} (VQ-VAE-2), "
                f"got {names}"
            )
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
            raise TypeError("labels must be a (N,) integer tensor (-1 for unlabelled images)")
        n = labels.shape[0]
        self.levels: tuple[str, ...] = names
        self._codes: dict[str, Tensor] = {}
        self.codebook_sizes: dict[str, int] = {}
        for name in names:
            codes = levels[name]
            if not isinstance(codes, Tensor) or codes.is_floating_point() or codes.dim() != 3:
                raise TypeError(
                    f"level {name!r} must be a (N, H, W) integer tensor of code indices"
                )
            if codes.shape[0] != n:
                raise ValueError(
                    f"level {name!r} holds {codes.shape[0]} code maps but there are {n} labels"
                )
            if name not in codebook_sizes:
                raise ValueError(f"codebook_sizes has no entry for level {name!r}")
            k = int(codebook_sizes[name])
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
                raise ValueError(
                    f"level {name!r} has codes in [{int(codes.min())}, {int(codes.max())}], "
                    f"outside [0, {k}) (codebook_size)"
                )
            self._codes[name] = codes.long()  # (N, H, W) int64
            self.codebook_sizes[name] = k
        if names == TWO_LEVELS:
            (ht, wt), (hb, wb) = self.grid("top"), self.grid("bottom")
            if hb % ht or wb % wt:
                raise ValueError(
                    f"the bottom grid ({hb}, {wb}) must be a whole multiple of the top grid "
                    f"({ht}, {wt})"
                )
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

    @property
    def codes(self) -> Tensor:
        """(N, H, W) int64, the codes of a one-level (VQ-VAE) set.

        Raises:
            AttributeError: a two-level set (use ``.top`` / ``.bottom``).
        """
        if self.levels != SINGLE_LEVEL:
            raise AttributeError("these are VQ-VAE-2 codes: use .top and .bottom, not .codes")
        return self._codes["codes"]

    @property
    def top(self) -> Tensor:
        """(N, H/8, W/8) int64, the top codes of a two-level (VQ-VAE-2) set."""
        if self.levels != TWO_LEVELS:
            raise AttributeError("these are one-level VQ-VAE codes: use .codes, not .top")
        return self._codes["top"]

    @property
    def bottom(self) -> Tensor:
        """(N, H/4, W/4) int64, the bottom codes of a two-level (VQ-VAE-2) set."""
        if self.levels != TWO_LEVELS:
            raise AttributeError("these are one-level VQ-VAE codes: use .codes, not .bottom")
        return self._codes["bottom"]

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

    def __getitem__(self, index: int) -> CodeItem | TwoLevelCodeItem:
        if self.levels == SINGLE_LEVEL:
            return CodeItem(self._codes["codes"][index], self.labels[index])
        return TwoLevelCodeItem(self._codes["top"][index], self._codes["bottom"][index],
                                self.labels[index])

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
    levels, codebook_sizes = _model_levels(model)
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ValueError(f"passes must be an int >= 1, got {passes!r}")
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
    first = next(iter(model.parameters()), None)
    device = first.device if first is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {name: [] for name in levels}
    labels: list[Tensor] = []
    image_shape: tuple[int, ...] = ()
    try:
        for pass_index in range(passes):
            bar = tqdm(loader, desc=f"codes, pass {pass_index + 1}/{passes}",
                       disable=not progress, unit="batch")
            for batch in bar:
                x, y = split_batch(batch, "loader")
                image_shape = tuple(x.shape[1:])
                out = model.encode(x.to(device, non_blocking=True))
                maps = (out,) if isinstance(out, Tensor) else (out.top, out.bottom)
                for name, m in zip(levels, maps):
                    parts[name].append(m.cpu())  # (B, h, w)
                labels.append(torch.full((x.shape[0],), -1, dtype=torch.int64) if y is None
                              else y.long().cpu())  # (B,)
    finally:
        model.train(was_training)
    if not labels:
        raise ValueError("the loader yielded no batches; give it at least one image")
    dataset = CodeDataset(
        {name: torch.cat(parts[name]) for name in levels},  # (N, h, w) each
        torch.cat(labels), codebook_sizes, image_shape, classes, fingerprint, passes,
    )
    if file is not None:
        atomic_torch_save(dataset.to_payload(), file)
    return dataset
