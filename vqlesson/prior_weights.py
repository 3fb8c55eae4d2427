"""A PixelCNN prior as a data-only file: its config and its weights in an ``.npz`` (numbers
and JSON text, never a pickle), and the careful reader that rebuilds it.

A ``torch.save`` checkpoint is a pickle: loading one from an untrusted source can run code
(``weights_only=True`` narrows that, but the grader keeps to data it can check). When a prior
crosses the grading sandbox's wall (the open exercise of notebooks 04-05,
:mod:`vqlesson.exercises_heldout`), it travels as this file, and the trusted side rebuilds it
from the library's own classes (:class:`~vqlesson.pixelcnn_prior.PixelCNNPrior`,
:class:`~vqlesson.pixelcnn.PriorConfig`) after checking, in this order: the file's size, that it
is an ``.npz`` archive of the expected members and no pickle, its header, every config value
against :data:`CONFIG_LIMITS` (before anything is built, so that a hostile config cannot make the
reader allocate gigabytes), then every tensor's name, shape and dtype against a prior built on
PyTorch's ``meta`` device (which allocates no memory), and that every weight is finite. Only
then is the prior built and its weights loaded.

Format, version 1: ``__prior__``, a 0-dim unicode array holding the JSON header
``{"format": "vqlesson-prior-weights", "version": 1, "config": {PriorConfig's fields},
"tensors": [the state_dict's names, in order]}``, and ``w0``, ``w1``, ...: those tensors as
float32 arrays (the prior's ``state_dict()``, on the CPU).

This module is the one place of the grading path that touches the prior classes: their
constructor, ``config``, ``state_dict`` and ``load_state_dict``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .check_core import read_npz_bytes
from .checkpoint import atomic_write
from .pixelcnn import PriorConfig
from .pixelcnn_prior import PixelCNNPrior
from .validate import check_choice, check_int, check_number

FORMAT, VERSION = "vqlesson-prior-weights", 1
HEADER_KEY = "__prior__"
MEMBER_NAME = re.compile(r"(__prior__|w[0-9]{1,4})\.npy")
MAX_HEADER_CHARS = 200_000
# The int fields of a PriorConfig a weights file may hold, and their ranges: a prior of the
# largest allowed sizes is built on the meta device only; the file's size limit bounds the rest.
CONFIG_LIMITS = {"codebook_size": (2, 4096), "embed_dim": (1, 256), "channels": (1, 256),
                 "num_layers": (1, 16), "kernel_size": (3, 7), "first_kernel_size": (3, 9),
                 "num_classes": (0, 64), "cond_codebook_size": (0, 4096), "cond_layers": (0, 4)}
ARCHS = ("gated", "plain")
NOT_A_PRIOR = ("return the trained PixelCNNPrior itself (or the path of a file written by "
               "vqlesson.prior_weights.save_prior_weights), got {}")


class WeightsError(ValueError):
    """A weights file that cannot be used; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def weights_file_bytes(prior: PixelCNNPrior) -> bytes:
    """The weights file of ``prior`` (see the module docstring), as bytes.

    Raises:
        TypeError: ``prior`` is not a :class:`PixelCNNPrior`.
    """
    if not isinstance(prior, PixelCNNPrior):
        raise TypeError(NOT_A_PRIOR.format(type(prior).__name__))
    state = prior.state_dict()
    header = {"format": FORMAT, "version": VERSION,
              "config": dataclasses.asdict(prior.config), "tensors": list(state)}
    arrays = {HEADER_KEY: np.array(json.dumps(header))}
    for i, tensor in enumerate(state.values()):
        arrays[f"w{i}"] = tensor.detach().float().cpu().numpy()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def save_prior_weights(prior: PixelCNNPrior, path: str | os.PathLike) -> Path:
    """Write ``prior``'s weights file to ``path`` atomically (temporary file, fsync, rename);
    returns the path. Read it back with :func:`read_prior_weights`.

    Raises:
        TypeError: ``prior`` is not a :class:`PixelCNNPrior`.
    """
    data = weights_file_bytes(prior)
    return atomic_write(path, lambda handle: handle.write(data))


def read_file_limited(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path`` if it holds at most ``max_bytes``.

    Raises:
        WeightsError: no such file, not a regular file, or larger than ``max_bytes``.
    """
    try:
        info = os.stat(path)
    except OSError as error:
        raise WeightsError(f"no weights file at {str(path)!r} ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise WeightsError(f"{str(path)!r} is not a regular file")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise WeightsError(f"the weights file {str(path)!r} holds more than {max_bytes} bytes, "
                           "over the limit: train a smaller prior (fewer channels or layers)")
    return data


# --------------------------------------------------------------------------------------------
# Reading, carefully
# --------------------------------------------------------------------------------------------
def _pickle_kind(data: bytes) -> str | None:
    """What kind of pickle ``data`` is (a PyTorch checkpoint, a plain pickle), or None."""
    if data[:1] == b"\x80":  # the PROTO opcode that starts every pickle of protocol 2 or later
        return "a pickle"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        return None
    if any(name.endswith(".pkl") for name in names):
        return "a PyTorch checkpoint (torch.save: a pickle)"
    return None


def _header(arrays: dict[str, np.ndarray]) -> dict:
    text = arrays.get(HEADER_KEY)
    if not isinstance(text, np.ndarray) or text.dtype.kind != "U" or text.shape != ():
        raise WeightsError(f"the weights file has no {HEADER_KEY} header: write it with "
                           "save_prior_weights")
    if len(str(text)) > MAX_HEADER_CHARS:
        raise WeightsError("the weights file's header is too long")
    try:
        header = json.loads(str(text))
    except ValueError:
        raise WeightsError("the weights file's header is not valid JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise WeightsError(f"the weights file's header is not a {FORMAT!r} header")
    if header.get("version") != VERSION:
        raise WeightsError(f"the weights file has format version {header.get('version')!r}; "
                           f"this vqlesson reads version {VERSION}")
    if not isinstance(header.get("config"), dict) or not isinstance(header.get("tensors"), list):
        raise WeightsError("the weights file's header needs a config object and a tensors list")
    return header


def check_config(config: Mapping, expect: Mapping[str, object] | None = None) -> PriorConfig:
    """A :class:`PriorConfig` from a weights file's config, every value checked first.

    Int fields must lie in :data:`CONFIG_LIMITS`, ``dropout`` in [0, 1), ``arch`` one of
    :data:`ARCHS`; a field this reader does not know must hold ``PriorConfig``'s default.
    ``expect`` names fields that must hold one value (e.g. ``{"codebook_size": 16}``).

    Raises:
        WeightsError: an unknown field, a value out of range, or one that differs from
            ``expect`` (the message names the field, its value and what is allowed).
    """
    defaults = {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
                for f in dataclasses.fields(PriorConfig)}
    defaults = json.loads(json.dumps(defaults))  # as a file holds them (tuples as lists)
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise WeightsError(f"the config has an unknown field {unknown[0][:40]!r}")
    values = {**defaults, **config}
    try:
        for name, (low, high) in CONFIG_LIMITS.items():
            check_int(values[name], f"config field {name}", low, high)
        check_number(values["dropout"], "config field dropout", 0, 1, high_open=True)
        check_choice(values["arch"], "config field arch", ARCHS)
        check_choice(values["skip_connections"], "config field skip_connections", (True, False))
    except ValueError as error:
        raise WeightsError(str(error)) from None
    known = set(CONFIG_LIMITS) | {"dropout", "arch", "skip_connections"}
    as_file = json.loads(json.dumps(values, default=str))  # tuples as lists, as a file holds them
    for name in sorted(set(values) - known):
        if as_file[name] != defaults[name]:
            raise WeightsError(f"config field {name} must keep its default "
                               f"{defaults[name]!r} here, got {values[name]!r}")
    for name, wanted in (expect or {}).items():
        if values[name] != wanted:
            raise WeightsError(f"the prior is for {name} = {values[name]!r}, but these code maps "
                               f"need {name} = {wanted!r}")
    try:
        return PriorConfig(**values)
    except (TypeError, ValueError) as error:
        raise WeightsError(f"the config is not a valid PriorConfig ({error})") from None


def _tensors(arrays: dict[str, np.ndarray], names: list, config: PriorConfig
             ) -> dict[str, torch.Tensor]:
    """The weights named in the header, checked against a prior of ``config`` built on the
    meta device (no memory): the same names, shapes and dtypes, every value finite."""
    with torch.device("meta"):
        expected = PixelCNNPrior(config).state_dict()
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise WeightsError("the header's tensor names are not distinct strings")
    missing, extra = sorted(set(expected) - set(names)), sorted(set(names) - set(expected))
    if missing or extra:
        what = (f"lacks {missing[0]!r}" if missing else f"has a tensor {extra[0][:60]!r}")
        raise WeightsError(f"the weights file {what} that a prior of its config "
                           f"{'has' if missing else 'does not have'} ({len(missing)} missing, "
                           f"{len(extra)} unexpected): weights for another architecture, K or "
                           "grid")
    state = {}
    for i, name in enumerate(names):
        array = arrays.get(f"w{i}")
        want = expected[name]
        if not isinstance(array, np.ndarray):
            raise WeightsError(f"the weights file has no array w{i} for {name!r}")
        if tuple(array.shape) != tuple(want.shape):
            raise WeightsError(f"{name} has shape {tuple(array.shape)}, but a prior of this "
                               f"config has {tuple(want.shape)}: weights for another K or "
                               "size than the config says")
        if array.dtype != np.float32:
            raise WeightsError(f"{name} has dtype {array.dtype}, expected float32")
        if not np.isfinite(array).all():
            raise WeightsError(f"{name} holds NaN or infinite values")
        state[name] = torch.from_numpy(np.array(array, copy=True))
    if len(arrays) != len(names) + 1:
        raise WeightsError(f"the weights file holds {len(arrays) - 1} arrays for "
                           f"{len(names)} tensors")
    return state


def read_prior_weights(data: bytes, max_bytes: int,
                       expect: Mapping[str, object] | None = None) -> PixelCNNPrior:
    """Rebuild a prior from the bytes of a weights file, checking everything first (the
    order is in the module docstring); the prior is on the CPU, in eval mode.

    Args:
        data: the file's bytes (untrusted).
        max_bytes: the most bytes the file, and the arrays it declares, may hold.
        expect: config fields that must hold one value, e.g. ``{"codebook_size": 16,
            "num_classes": 0}``.

    Raises:
        WeightsError: why the file cannot be used: too large, a pickle (a PyTorch
            checkpoint), not an ``.npz`` of the expected members, a bad header or config, a
            tensor of another name, shape or dtype, or non-finite weights.
    """
    if not isinstance(data, bytes):
        raise WeightsError(f"expected the weights file's bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise WeightsError(f"the weights file is {len(data)} bytes, over the limit of "
                           f"{max_bytes}: train a smaller prior (fewer channels or layers)")
    kind = _pickle_kind(data)
    if kind is not None:
        raise WeightsError(f"the weights file is {kind}, and pickles are never loaded here: "
                           "hand in the prior itself, or save it with save_prior_weights")
    try:
        arrays = read_npz_bytes(data, "the weights file", max_bytes, MEMBER_NAME,
                                max_members=10_000)
    except ValueError as error:
        raise WeightsError(str(error)) from None
    header = _header(arrays)
    config = check_config(header["config"], expect)
    state = _tensors(arrays, header["tensors"], config)
    prior = PixelCNNPrior(config)
    prior.load_state_dict(state, strict=True)
    return prior.eval()


def parameter_bytes(config: PriorConfig) -> int:
    """Bytes of ``config``'s prior's weights as float32 (built on the meta device)."""
    with torch.device("meta"):
        prior = PixelCNNPrior(config)
    return 4 * sum(math.prod(t.shape) for t in prior.state_dict().values())
