"""Priors over VQ-VAE codes: code extraction, training, evaluation and sampling of images.

The second stage of the VQ-VAE recipe. van den Oord, Vinyals & Kavukcuoglu (2017), *Neural
Discrete Representation Learning*, §3.2 ("Prior") and §4.2: once the VQ-VAE is trained it is
frozen, every training image is encoded once into its map of code indices, and an autoregressive
prior ``p(z)`` (a PixelCNN) is fitted to those maps; new images are made by sampling a code map
from the prior and decoding it (ancestral sampling).

For the two-level VQ-VAE-2, Razavi, van den Oord & Vinyals (2019), *Generating Diverse
High-Fidelity Images with VQ-VAE-2*, §3.2 and Algorithm 2: a **top prior** models the top code
map, and a **bottom prior** models the bottom code map *conditioned on the top one*; sampling
runs top first, then bottom, then the decoder. (The paper's top prior adds self-attention layers;
the course uses the Gated PixelCNN for both.) Class conditioning (benign/malignant) and the
spatial conditioning on the top codes are those of the Gated PixelCNN, van den Oord et al.
(2016), *Conditional Image Generation with PixelCNN Decoders*, §2.3; the networks themselves are
in :mod:`vqlesson.pixelcnn`.

This module reads top to bottom: helpers (fingerprints, argument checks), the code data set and
its extraction (:class:`CodeDataset`, :func:`extract_codes`), the training configuration,
evaluation and loop (:class:`PriorTrainConfig`, :func:`evaluate_prior`, :func:`train_prior`),
the profile-sized prior (:func:`prior_config_for`) and image sampling (:func:`sample_images`).

Units: the prior's loss is the categorical cross-entropy in **bits per code** (log2 K for a
uniform guess); **bits per dim** spreads the bits of one image's code map over the 3·H·W
sub-pixels of the image (the likelihood literature's unit; it counts the prior only, not the
decoder).

Data-parallel training (``torchrun``, :mod:`vqlesson.distributed`): under a process group
:func:`train_prior` gives each process its share of every epoch's permutation (the batch size is
per process), wraps the prior in ``DistributedDataParallel``, logs the global batch's loss,
evaluates a disjoint share of the validation codes per process and sums the bits (so early
stopping decides the same everywhere), and writes checkpoints from rank 0 only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .checkpoint import (
    atomic_torch_save,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .distributed import (
    all_reduce_sum_,
    barrier,
    check_resume_everywhere,
    gather_rng_states,
    is_distributed,
    is_main_process,
    process_device,
    rank,
    reseed_for_rank,
    rng_state_for_this_rank,
    shard_order,
    world_size,
    wrap_ddp,
)
from .pixelcnn import PriorConfig
from .pixelcnn_prior import LN2, PixelCNNPrior, nll
from .runtime import Profile, eval_mode, get_device, get_profile, given, seed_everything
from .train import _amp_settings, optimizer_step
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
#: Prior network sizes per profile (``ci`` seconds, ``cpu`` minutes, ``gpu`` the real run).
PRIOR_SIZES: dict[str, dict[str, int]] = {
    "ci": {"embed_dim": 16, "channels": 16, "num_layers": 2, "cond_layers": 1},
    "cpu": {"embed_dim": 64, "channels": 64, "num_layers": 8, "cond_layers": 2},
    "gpu": {"embed_dim": 128, "channels": 128, "num_layers": 12, "cond_layers": 2},
}


# --------------------------------------------------------------------------------------------
# Helpers: fingerprints, model levels, checks
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
        digest.update(json.dumps(dataclasses.asdict(config), sort_keys=True, default=str).encode())
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


def _split_batch(batch: Any, loader_name: str) -> tuple[Tensor, Tensor | None]:
    """``(images (B, C, H, W) float, labels (B,) int64 or None)`` of a loader batch."""
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
    else:
        x, y = batch, None
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise TypeError(
            f"{loader_name} must yield (image, label) batches with image a (B, C, H, W) float "
            f"tensor in [-1, 1], got "
            + (f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
               if isinstance(x, Tensor) else type(x).__name__)
        )
    if y is not None and (not isinstance(y, Tensor) or y.shape != (x.shape[0],)):
        raise TypeError(
            f"{loader_name}'s labels must be a (B,) integer tensor, got "
            + (f"shape {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__)
        )
    return x, y


def _check_prior(prior: object) -> PixelCNNPrior:
    if not isinstance(prior, PixelCNNPrior):
        raise TypeError(
            f"prior must be a vqlesson.pixelcnn.PixelCNNPrior, got {type(prior).__name__}"
        )
    return prior


def best_checkpoint_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where :func:`train_prior` keeps the best-validation weights beside ``checkpoint_path``:
    ``runs/x/prior.pt`` -> ``runs/x/prior_best.pt`` (``prior_top.pt`` -> ``prior_top_best.pt``)."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}_best{path.suffix or '.pt'}")


# --------------------------------------------------------------------------------------------
# Code data set and extraction
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
                f"no code file at {str(path)!r}; make it with vqlesson.prior.extract_codes "
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
                x, y = _split_batch(batch, "loader")
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


# --------------------------------------------------------------------------------------------
# Training configuration and level selection
# --------------------------------------------------------------------------------------------
@dataclass
class PriorTrainConfig:
    """Settings of one prior training run (:func:`train_prior`).

    Attributes:
        epochs: total epochs (a resumed run continues up to this number), >= 0.
        batch_size: code maps per step, >= 1.
        lr: AdamW learning rate (> 0).
        weight_decay: AdamW's decoupled weight decay, >= 0.
        amp: mixed precision on CUDA (bf16 where supported, else fp16 with a ``GradScaler``);
            ignored on CPU and MPS.
        grad_clip: clip the global gradient norm to this value; ``None`` or 0 disables it.
        seed: seeds ``random``, NumPy, torch and the shuffling at the start of a fresh run.
        checkpoint_path: file saved after every epoch (atomic); the best-validation weights go
            to :func:`best_checkpoint_path` beside it. ``None``: no files.
        resume: continue from ``checkpoint_path`` when it exists (same prior config and level).
        progress: show a tqdm bar per epoch with the running bits per code.
        device: ``"cpu"``, ``"cuda"``, ``"mps"``...; ``None`` picks one (``get_device``).
        early_stopping_patience: stop after this many epochs without a validation NLL
            improvement; ``None`` disables early stopping.
        early_stopping_min_delta: an improvement must lower the validation bits per code by more
            than this, >= 0.
        restore_best: with a validation set, end with the weights of the best validation epoch
            (not the last one).
        level: which level of VQ-VAE-2 codes the prior models, ``"top"`` or ``"bottom"``;
            ``None`` for VQ-VAE codes.

    Raises:
        ValueError: a value out of range, an unknown level, or ``resume`` without a
            ``checkpoint_path``.
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    amp: bool = True
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_path: str | None = None
    resume: bool = False
    progress: bool = True
    device: str | None = None
    early_stopping_patience: int | None = 5
    early_stopping_min_delta: float = 0.0
    restore_best: bool = True
    level: str | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            low = 0 if name == "epochs" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and self.grad_clip < 0:
            raise ValueError(
                f"grad_clip must be > 0, 0 or None (no clipping), got {self.grad_clip!r}"
            )
        patience = self.early_stopping_patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 1):
            raise ValueError(
                f"early_stopping_patience must be an int >= 1 or None (no early stopping), got "
                f"{patience!r}"
            )
        if self.early_stopping_min_delta < 0:
            raise ValueError(
                f"early_stopping_min_delta must be >= 0, got {self.early_stopping_min_delta!r}"
            )
        if self.level not in (None, *TWO_LEVELS):
            raise ValueError(
                "level must be None (VQ-VAE codes), 'top' or 'bottom' (VQ-VAE-2), got "
                f"{self.level!r}"
            )
        if self.resume and self.checkpoint_path is None:
            raise ValueError("resume=True needs a checkpoint_path to resume from")
        if self.checkpoint_path is not None:
            self.checkpoint_path = str(self.checkpoint_path)


class _LevelData(NamedTuple):
    """What a prior trains on: targets (N, H, W) int64, labels (N,) int64 or None, the
    conditioning map (N, h, w) int64 or None, and the image size for bits per dim."""

    target: Tensor
    labels: Tensor | None
    cond: Tensor | None
    image_dims: int


def _level_data(prior: PixelCNNPrior, codes: object, level: str | None,
                argument: str) -> _LevelData:
    """Select and check the codes, labels and conditioning a prior needs from a code set.

    Raises:
        TypeError: ``codes`` is not a :class:`CodeDataset`.
        ValueError: the level does not fit the codes, the prior's K or conditioning does not
            fit the codes, labels missing for a class-conditional prior, or no codes.
    """
    if not isinstance(codes, CodeDataset):
        raise TypeError(
            f"{argument} must be a CodeDataset (from vqlesson.prior.extract_codes), got "
            f"{type(codes).__name__}"
        )
    if len(codes) == 0:
        raise ValueError(f"{argument} holds no code maps")
    c = prior.config
    if codes.levels == SINGLE_LEVEL:
        if level not in (None, "codes"):
            raise ValueError(
                f"{argument} are one-level VQ-VAE codes; leave level=None (got level={level!r})"
            )
        name = "codes"
    else:
        if level not in TWO_LEVELS:
            raise ValueError(
                f"{argument} are VQ-VAE-2 codes: set level='top' or level='bottom' in "
                f"PriorTrainConfig (got level={level!r})"
            )
        name = level
    k = codes.codebook_sizes[name]
    if c.codebook_size != k:
        raise ValueError(
            f"the prior models K = {c.codebook_size} codes but level {name!r} of {argument} has "
            f"K = {k}; build the prior with codebook_size={k} (e.g. prior_config_for(profile, {k}))"
        )
    cond = None
    if c.cond_codebook_size:
        if name != "bottom":
            raise ValueError(
                "this prior is conditioned on a code map (cond_codebook_size > 0), which only "
                "the VQ-VAE-2 bottom prior has (conditioned on the top codes); use level='bottom' "
                "or build the prior with cond_codebook_size=0"
            )
        if c.cond_codebook_size != codes.codebook_sizes["top"]:
            raise ValueError(
                f"the prior's cond_codebook_size {c.cond_codebook_size} must equal the top "
                f"level's K = {codes.codebook_sizes['top']}"
            )
        cond = codes.top
    labels = None
    if c.num_classes:
        labels = codes.labels
        if int(labels.min()) < 0 or int(labels.max()) >= c.num_classes:
            raise ValueError(
                f"the prior is class-conditional (num_classes = {c.num_classes}) but {argument} "
                f"has labels in [{int(labels.min())}, {int(labels.max())}] (-1: unlabelled); "
                "use labelled data or build the prior with num_classes=0"
            )
    return _LevelData(codes.level(name), labels, cond, codes.image_dims)


def _batch(data: _LevelData, index: Tensor, device: torch.device
           ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Targets (B, H, W), labels (B,) or None and conditioning (B, h, w) or None on ``device``."""
    target = data.target[index].to(device, non_blocking=True)
    label = data.labels[index].to(device) if data.labels is not None else None
    cond = data.cond[index].to(device, non_blocking=True) if data.cond is not None else None
    return target, label, cond


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def _evaluate(prior: PixelCNNPrior, data: _LevelData, device: torch.device, batch_size: int,
              amp: bool, distributed: bool = False) -> dict[str, float]:
    """NLL of ``data`` (see :func:`evaluate_prior`). With ``distributed`` under a process
    group, each process takes every W-th code map from its rank on and the bits are summed
    over the processes."""
    autocast, amp_dtype, _ = _amp_settings(device, amp)
    shard = distributed and is_distributed()
    was_training = prior.training
    prior.eval()
    total_bits = torch.zeros((), dtype=torch.float64, device=device)
    indices = torch.arange(len(data.target))  # (N,)
    if shard:
        indices = indices[rank()::world_size()]  # this process's disjoint share, no padding
    try:
        for index in indices.split(batch_size):
            target, label, cond = _batch(data, index, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
                logits = prior.logits(target, label, cond)  # (B, K, H, W)
            total_bits += nll(logits, target, reduction="none").double().sum()
    finally:
        prior.train(was_training)
    if shard:
        all_reduce_sum_(total_bits)
    n_images = int(data.target.shape[0])
    codes_per_image = int(data.target.shape[1] * data.target.shape[2])
    bits_per_image = float(total_bits) / n_images
    return {
        "bits_per_code": bits_per_image / codes_per_image,
        "bits_per_dim": bits_per_image / data.image_dims,
        "bits_per_image": bits_per_image,
        "num_images": float(n_images),
    }


def evaluate_prior(prior: PixelCNNPrior, codes: CodeDataset,
                   device: str | torch.device | None = None, *, level: str | None = None,
                   batch_size: int = 64, image_shape: Sequence[int] | None = None,
                   amp: bool = False, distributed: bool = False) -> dict[str, float]:
    """Negative log-likelihood of a split's code maps under the prior (eval mode, no_grad).

    Args:
        prior: a :class:`~vqlesson.pixelcnn.PixelCNNPrior` (moved to ``device`` if given).
        codes: the split's :class:`CodeDataset`.
        device: where to evaluate; ``None``: the prior's device.
        level: ``"top"``/``"bottom"`` for VQ-VAE-2 codes, ``None`` for VQ-VAE codes.
        batch_size: code maps per forward pass.
        image_shape: (C, H, W) of the images; default: the one stored with the codes.
        amp: autocast (bf16/fp16) on CUDA; the NLL is still summed in float64.
        distributed: under a ``torch.distributed`` process group, each process evaluates a
            disjoint share of the code maps and the bits are all-reduced, so every process
            returns the whole split's values; every process must then call it. Without a
            process group it changes nothing.

    Returns:
        ``bits_per_code`` (mean NLL per code position, bits; log2 K for a uniform guess),
        ``bits_per_dim`` (bits of one image's code map of this level / C·H·W of the image;
        for VQ-VAE-2 the two levels' values add up to the model's), ``bits_per_image`` (bits
        of one code map) and ``num_images``, all floats.

    Raises:
        TypeError, ValueError: see :func:`train_prior` (codes that do not fit the prior).
    """
    _check_prior(prior)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    data = _level_data(prior, codes, level, "codes")
    if image_shape is not None:
        dims = math.prod(int(s) for s in image_shape)
        if dims < 1:
            raise ValueError(
                f"image_shape must be (C, H, W) of positive sizes, got {image_shape!r}"
            )
        data = data._replace(image_dims=dims)
    if device is not None:
        prior.to(device)
    return _evaluate(prior, data, next(prior.parameters()).device, batch_size, amp, distributed)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def _train_one_epoch(prior: PixelCNNPrior, data: _LevelData, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, device: torch.device, autocast: bool,
                     amp_dtype: torch.dtype, config: PriorTrainConfig, shuffle: torch.Generator,
                     epoch: int, step: int, step_losses: list[float]) -> tuple[float, int, int]:
    """One pass in a random order. Returns (train bits per code, new global step, codes seen).

    Under a process group the permutation (the same on every process) is sharded with
    :func:`~vqlesson.distributed.shard_order`, and the logged loss and code counts are those of
    the global batch."""
    synced = is_distributed()
    prior.train()
    order = shard_order(torch.randperm(len(data.target), generator=shuffle))  # (N,) or a share
    total_bits, n_codes = 0.0, 0
    bar = tqdm(order.split(config.batch_size), desc=f"prior epoch {epoch}/{config.epochs}",
               disable=not config.progress or not is_main_process(), unit="batch")
    for batch_index, index in enumerate(bar):
        target, label, cond = _batch(data, index, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
            out = prior(target, label, cond)
        positions = target.numel()
        if synced:  # the global batch's mean loss: position-weighted over all processes
            packed = torch.stack([out.loss.detach().double() * positions,
                                  torch.tensor(float(positions), dtype=torch.float64,
                                               device=device)])
            all_reduce_sum_(packed)  # (2,) float64
            positions = int(packed[1].item())
            loss = float(packed[0] / packed[1])
        else:
            loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"non-finite prior loss ({loss}) at epoch {epoch} of {config.epochs}, step "
                f"{step + 1} (batch {batch_index + 1} of this epoch). Training stopped instead of "
                f"continuing with corrupt weights. Try a lower learning rate (lr={config.lr:g}), "
                "amp=False (full precision) or grad_clip=1.0."
            )
        optimizer_step(out.loss, prior, optimizer, scaler, config.grad_clip)
        step += 1
        total_bits += loss / LN2 * positions
        n_codes += positions
        step_losses.append(loss)
        bar.set_postfix({"bits/code": f"{loss / LN2:.3f}"}, refresh=False)
    bar.close()
    return total_bits / max(n_codes, 1), step, n_codes


def _early_stopped(history: dict[str, list], patience: int | None) -> bool:
    if patience is None or not history.get("best_epoch") or not history.get("val_bits_per_code"):
        return False
    return history["epoch"][-1] - history["best_epoch"][-1] >= patience


def train_prior(prior: PixelCNNPrior, train_codes: CodeDataset, val_codes: CodeDataset | None,
                config: PriorTrainConfig | None = None,
                callback: Callable[[dict[str, list]], None] | None = None) -> dict[str, list]:
    """Fit a PixelCNN prior to code maps by maximum likelihood (AdamW on the cross-entropy).

    Per epoch: a shuffled pass over ``train_codes`` (tqdm shows the running bits per code), then
    the validation NLL on ``val_codes``. The epoch with the lowest validation bits per code is
    the best one; its weights are kept (in memory, in the checkpoint, and in
    :func:`best_checkpoint_path`) and put back into ``prior`` at the end (``restore_best``).
    Early stopping ends the run after ``early_stopping_patience`` epochs without improvement.
    Conditioning follows the prior's config: the codes' labels when ``num_classes > 0``, the
    top codes for a VQ-VAE-2 bottom prior with ``cond_codebook_size > 0``.

    Checkpoints (``config.checkpoint_path``, after every epoch) hold the weights, optimiser,
    ``GradScaler``, counters, history, best weights and random-number-generator states (shuffle
    order and dropout included), so on the CPU a resumed run reproduces an uninterrupted one
    step for step (2 epochs + 1 resumed epoch == 3 epochs).

    Args:
        prior: a :class:`~vqlesson.pixelcnn.PixelCNNPrior` (moved to the chosen device).
        train_codes: :class:`CodeDataset` of the training split.
        val_codes: :class:`CodeDataset` of the validation split, or ``None`` (no validation,
            no early stopping, the last weights are kept).
        config: :class:`PriorTrainConfig` (defaults when ``None``); ``level`` picks the VQ-VAE-2
            level.
        callback: ``callback(history)`` after every epoch (e.g. a live plot); the
            random-number generators are restored after it, so it never changes training.

    Under torchrun (a ``torch.distributed`` process group) every process calls it with the same
    arguments: ``config.batch_size`` is per process, the history (the same on every process but
    for each one's timings) holds the global batch's losses, ``prior`` ends equal on every
    process, and only rank 0 writes checkpoints and calls ``callback``.

    Returns:
        History, per-epoch lists: ``epoch`` (1-based), ``lr``, ``train_bits_per_code``,
        ``val_bits_per_code`` and ``val_bits_per_dim`` (with ``val_codes``), ``best_epoch``
        (best so far), ``epoch_time_s`` (s), ``codes_per_s`` (training code positions per
        second); plus ``step_loss``, the loss of every step in nats per code.

    Raises:
        FloatingPointError: a non-finite loss (epoch and step named).
        TypeError: ``prior`` not a PixelCNNPrior, codes not a CodeDataset.
        ValueError: codes that do not fit the prior (K, level, labels, conditioning), or a
            checkpoint of another prior config or level, or trained on other codes, when
            resuming.
    """
    config = config if config is not None else PriorTrainConfig()
    if not isinstance(config, PriorTrainConfig):
        raise TypeError(f"config must be a PriorTrainConfig, got {type(config).__name__}")
    _check_prior(prior)
    train_data = _level_data(prior, train_codes, config.level, "train_codes")
    val_data = (_level_data(prior, val_codes, config.level, "val_codes")
                if val_codes is not None else None)
    device = process_device(get_device(config.device))
    seed_everything(config.seed + rank())  # dropout differs between processes; rank 0 = 1 process
    shuffle = torch.Generator().manual_seed(config.seed)  # the same permutations everywhere
    prior.to(device)
    autocast, amp_dtype, needs_scaler = _amp_settings(device, config.amp)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None

    history: dict[str, list] = {}
    step, start_epoch = 0, 0
    best_state: dict[str, Tensor] | None = None
    path = Path(config.checkpoint_path) if config.checkpoint_path is not None else None
    resuming = config.resume and path is not None and path.exists()
    if config.resume:
        check_resume_everywhere(resuming, path, device)
    if resuming:
        checkpoint = load_checkpoint(path, map_location="cpu", expected_class=PixelCNNPrior,
                                     expected_config=prior.config)
        stored_level = checkpoint.extra.get("level")
        if stored_level != config.level:
            raise ValueError(
                f"checkpoint {str(path)!r} holds a prior of level {stored_level!r}, this run "
                f"trains level {config.level!r}; use another checkpoint path"
            )
        stored_codes = checkpoint.extra.get("codes_fingerprint") or ""
        if stored_codes and train_codes.fingerprint and stored_codes != train_codes.fingerprint:
            raise ValueError(
                f"checkpoint {str(path)!r} was trained on other codes (another VQ-VAE checkpoint "
                "or other data) than train_codes; start without resume to train a new prior"
            )
        prior.load_state_dict(checkpoint.model.state_dict())
        prior.to(device)
        history = checkpoint.history
        step, start_epoch = checkpoint.step, checkpoint.epoch
        if checkpoint.optimizer_state is not None:
            optimizer.load_state_dict(checkpoint.optimizer_state)
        if scaler is not None and checkpoint.scaler_state:
            scaler.load_state_dict(checkpoint.scaler_state)
        best_state = checkpoint.extra.get("best_state") or None
        if checkpoint.rng_state is not None:
            rng_state, exact = rng_state_for_this_rank(checkpoint.rng_state)
            set_rng_state(rng_state, [shuffle])
            if not exact:  # written by another number of processes: fresh streams per rank
                reseed_for_rank(config.seed, start_epoch)
        del checkpoint

    # The last Gated PixelCNN block's horizontal output feeds nothing when skip connections are
    # on, so DDP must look for parameters without a gradient.
    trained = wrap_ddp(prior, device, find_unused_parameters=True)
    history.setdefault("step_loss", [])
    best_epoch = history["best_epoch"][-1] if history.get("best_epoch") else None
    best_val = math.inf  # the validation bits of the best epoch (min_delta: not always the min)
    if best_epoch is not None and history.get("val_bits_per_code"):
        best_val = history["val_bits_per_code"][history["epoch"].index(best_epoch)]
    patience = config.early_stopping_patience if val_data is not None else None
    extra_base = {
        "level": config.level,
        "classes": list(train_codes.classes),
        "image_shape": list(train_codes.image_shape),
        "codes_fingerprint": train_codes.fingerprint,
    }
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if _early_stopped(history, patience):
            break
        start = time.perf_counter()
        train_bits, step, n_codes = _train_one_epoch(
            trained, train_data, optimizer, scaler, device, autocast, amp_dtype, config, shuffle,
            epoch, step, history["step_loss"],
        )
        train_seconds = time.perf_counter() - start
        record: dict[str, float] = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"]),
                                    "train_bits_per_code": train_bits}
        improved = val_data is None
        if val_data is not None:
            val = _evaluate(prior, val_data, device, config.batch_size, config.amp,
                            distributed=True)
            record["val_bits_per_code"] = val["bits_per_code"]
            record["val_bits_per_dim"] = val["bits_per_dim"]
            improved = (best_epoch is None
                        or val["bits_per_code"] < best_val - config.early_stopping_min_delta)
            if improved:
                best_val = val["bits_per_code"]
                best_state = {k: v.detach().cpu().clone() for k, v in prior.state_dict().items()}
        if improved:
            best_epoch = epoch
        record["best_epoch"] = best_epoch
        record["epoch_time_s"] = time.perf_counter() - start
        record["codes_per_s"] = n_codes / max(train_seconds, 1e-9)
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        rng_state = get_rng_state([shuffle])  # the epoch boundary: what a resumed run restores
        if path is not None:
            every_rank = gather_rng_states(rng_state)  # collective: every rank's streams
            train_config = dataclasses.asdict(config)
            if is_main_process():
                save_checkpoint(
                    path, prior, optimizer=optimizer, scaler=scaler, step=step, epoch=epoch,
                    history=history, rng_state=every_rank,
                    extra={**extra_base, "train_config": train_config,
                           "best_state": dict(best_state) if best_state is not None else {}},
                )
                if improved and val_data is not None:
                    save_checkpoint(best_checkpoint_path(path), prior, step=step, epoch=epoch,
                                    history=history, rng_state=every_rank,
                                    extra={**extra_base, "train_config": train_config})
            barrier()  # the files are complete before any process may read them
        if callback is not None and is_main_process():
            callback(history)
            set_rng_state(rng_state, [shuffle])
    if config.restore_best and val_data is not None and best_state is not None:
        prior.load_state_dict(best_state)
    return history


# --------------------------------------------------------------------------------------------
# Profile-sized priors
# --------------------------------------------------------------------------------------------
def prior_config_for(profile: Profile | str | None, codebook_size: int,
                     **overrides: Any) -> PriorConfig:
    """The course's Gated PixelCNN prior for a profile: ``ci`` tiny (16 channels, 2 layers),
    ``cpu`` medium (64 channels, 8 layers), ``gpu`` larger (128 channels, 12 layers).

    Args:
        profile: a :class:`~vqlesson.runtime.Profile`, its name, or ``None`` (the current one).
        codebook_size: K of the codes the prior models.
        overrides: any :class:`~vqlesson.pixelcnn.PriorConfig` field (``None`` values are
            ignored), e.g. ``num_classes=2``, ``cond_codebook_size=K_top``, ``dropout=0.1``.

    Raises:
        ValueError: an unknown profile, or a field out of range.
        TypeError: an unknown field.
    """
    prof = get_profile(profile)
    if prof.name not in PRIOR_SIZES:
        raise ValueError(
            f"no prior sizes for profile {prof.name!r}; use one of {', '.join(PRIOR_SIZES)}"
        )
    return PriorConfig(**{"codebook_size": codebook_size, **PRIOR_SIZES[prof.name],
                          **given(overrides)})


# --------------------------------------------------------------------------------------------
# Sampling images
# --------------------------------------------------------------------------------------------
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
    _check_prior(prior)
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
        priors: a :class:`~vqlesson.pixelcnn.PixelCNNPrior` for a VQ-VAE;
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
