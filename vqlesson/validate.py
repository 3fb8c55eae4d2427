"""Input checks shared by the models, metrics and analyses: image batches, latents and code maps.

Every check raises at once with a message that names the argument, says what was expected and
what arrived, and where there is one, the fix. The conventions (see ``DEVELOPERS.md``):

- images are ``(B, C, H, W)`` float in ``[-1, 1]``;
- latents (encoder outputs, code vectors) are ``(B, D, h, w)`` float;
- a *code* is an index in ``[0, K)`` (K = ``codebook_size``), so a code map is an integer tensor
  ``(B, h, w)``; a *code vector* is a row ``e_k`` of the codebook.

A tensor of the wrong shape raises :class:`ShapeError`, which is both a ``ValueError`` and a
``TypeError``: it is the wrong value for a tensor argument, and not the kind of tensor the
function takes, so either ``except`` clause catches it. A wrong type or dtype raises
``TypeError``, a value out of range ``ValueError``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class ShapeError(ValueError, TypeError):
    """A tensor argument of the wrong shape (both a ``ValueError`` and a ``TypeError``)."""


class SettingTypeError(ValueError, TypeError):
    """A setting of the wrong type (a str or a float where an int belongs): a ``TypeError`` by
    the convention above, and a ``ValueError`` like every other failed setting check, so that
    either ``except`` clause catches it."""


def nearby_valid_sizes(size: int, multiple: int) -> list[int]:
    """Multiples of ``multiple`` closest to ``size`` (one below, one above; positive only)."""
    below = (size // multiple) * multiple
    return [s for s in (below, below + multiple) if s > 0]


# --------------------------------------------------------------------------------------------
# Settings: ints, numbers, choices
# --------------------------------------------------------------------------------------------
def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """`` >= 1``, `` in [0, 1)``, `` > 0``... the range part of a message."""
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def check_int(value: object, name: str, low: int | None = None, high: int | None = None, *,
              none_ok: bool = False, note: str = "") -> int | None:
    """``value`` as an int if it is an integer (Python or NumPy; a bool is not) in
    ``[low, high]`` (either bound may be ``None``), or ``None`` when ``none_ok``.

    Raises:
        ValueError: ``NAME must be an int >= LOW (or None NOTE), got VALUE``: the message names the
            argument, the range and what arrived; ``note`` says what a value means, e.g.
            ``"0 disables it"``. Not an int at all: :class:`SettingTypeError` (also a TypeError).
    """
    if value is None and none_ok:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and (low is None or value >= low) and (high is None or value <= high):
        return int(value)
    extra = " or None" if none_ok else ""
    hint = f" ({note})" if note else ""
    error = ValueError if ok else SettingTypeError
    raise error(f"{name} must be an int{_bounds(low, high, False, False)}{extra}{hint}, "
                f"got {value!r}")


def check_number(value: object, name: str, low: float | None = None, high: float | None = None,
                 *, low_open: bool = False, high_open: bool = False, note: str = "") -> float:
    """``float(value)`` if it is a finite real number (Python or NumPy; a bool is not) within the
    bounds (``low_open``/``high_open``: the bound itself is excluded).

    Raises:
        ValueError: ``NAME must be a number in [LOW, HIGH) (NOTE), got VALUE``. Not a real
            number at all: :class:`SettingTypeError` (also a TypeError).
    """
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if real and math.isfinite(value):
        above = low is None or (value > low if low_open else value >= low)
        below = high is None or (value < high if high_open else value <= high)
        if above and below:
            return float(value)
    hint = f" ({note})" if note else ""
    error = ValueError if real else SettingTypeError
    raise error(f"{name} must be a number{_bounds(low, high, low_open, high_open)}{hint}, "
                f"got {value!r}")


def check_choice(value: object, name: str, choices: Sequence[object], note: str = "") -> object:
    """``value`` if it is one of ``choices``.

    Raises:
        ValueError: ``NAME must be one of (...) (NOTE), got VALUE``.
    """
    if value in tuple(choices):
        return value
    hint = f" ({note})" if note else ""
    raise ValueError(f"{name} must be one of {tuple(choices)}{hint}, got {value!r}")


def check_multiple(value: int, factor: int, name: str, note: str = "") -> int:
    """``value`` if it is a multiple of ``factor`` (an image side and a downsampling factor).

    Raises:
        ValueError: ``NAME VALUE is not a multiple of FACTOR (NOTE); use e.g. A or B`` (the
            nearest valid sizes).
    """
    if value % factor == 0:
        return value
    hint = f" ({note})" if note else ""
    nearby = " or ".join(str(s) for s in nearby_valid_sizes(value, factor))
    raise ValueError(f"{name} {value} is not a multiple of {factor}{hint}; use e.g. {nearby}")


# --------------------------------------------------------------------------------------------
# Images and latents
# --------------------------------------------------------------------------------------------
def check_images(x: object, name: str = "x", *, channels: int | None = None,
                 multiple_of: int | None = None) -> None:
    """Check a batch of images: (B, C, H, W) float (values in [-1, 1] are not checked).

    Args:
        x: the argument to check.
        name: the argument's name in the messages.
        channels: the required C (e.g. ``in_channels``); ``None``: any.
        multiple_of: H and W must be multiples of this (an encoder's downsampling factor); the
            message lists the nearest valid sizes. ``None``: any size.

    Raises:
        TypeError: not a tensor, or not floating-point.
        ShapeError: not 4-D, or the wrong number of channels.
        ValueError: a side that is not a multiple of ``multiple_of``.
    """
    if not isinstance(x, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of float images (B, C, H, W) in [-1, 1], got "
            f"{type(x).__name__}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a float tensor in [-1, 1], got dtype {x.dtype} "
            f"(convert uint8 images with {name}.float() / 127.5 - 1)"
        )
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        layout = f"(B, {channels}, H, W) (in_channels = {channels})" if channels else "(B, C, H, W)"
        hint = (f"; add a batch dimension with {name}.unsqueeze(0) for a single image"
                if x.dim() == 3 else "")
        raise ShapeError(
            f"{name} must be a batch of float images {layout} in [-1, 1], got shape "
            f"{tuple(x.shape)}{hint}"
        )
    if multiple_of is None:
        return
    for side_name, side in (("height", x.shape[2]), ("width", x.shape[3])):
        if side % multiple_of != 0:
            raise ValueError(
                f"{name} {side_name} {side} is not divisible by the downsampling factor "
                f"{multiple_of}; resize or crop to a multiple of {multiple_of}, e.g. "
                f"{' or '.join(str(s) for s in nearby_valid_sizes(side, multiple_of))}"
            )


def check_image_pair(x: object, x_hat: object) -> None:
    """Check two image batches to compare (e.g. images and reconstructions): each as
    :func:`check_images`, and the same shape.

    Raises:
        TypeError, ShapeError: see :func:`check_images`.
        ValueError: the shapes differ.
    """
    check_images(x, "x")
    check_images(x_hat, "x_hat")
    if x.shape != x_hat.shape:
        raise ValueError(
            f"x and x_hat must have the same shape, got x {tuple(x.shape)} and "
            f"x_hat {tuple(x_hat.shape)}"
        )


def check_latents(z: object, channels: int, name: str = "z", *,
                  channels_name: str = "code_dim") -> None:
    """Check a batch of latent maps (encoder outputs or code vectors): (B, D, h, w) float.

    Args:
        z: the argument to check.
        channels: the required D.
        name: the argument's name in the messages.
        channels_name: the config field D comes from, for the messages (``code_dim``,
            ``latent_channels``).

    Raises:
        TypeError: not a tensor, or not floating-point.
        ShapeError: not (B, D, h, w) with D = ``channels``.
    """
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    if z.dim() != 4 or z.shape[1] != channels:
        raise ShapeError(
            f"{name} must have shape (B, {channels}, h, w), that is (B, D, H, W) with "
            f"D = {channels_name} = {channels}; got shape {tuple(z.shape)}"
        )


# --------------------------------------------------------------------------------------------
# Code maps and codebook sizes
# --------------------------------------------------------------------------------------------
def check_codes(codes: object, codebook_size: int | None = None, name: str = "codes", *,
                layout: str = "(B, H, W)", ndim: int | None = 3, int64: bool = False,
                nonempty: bool = False) -> None:
    """Check a batch of code maps: an integer tensor of codes in ``[0, codebook_size)``.

    Codes are categories (indices into the codebook), so floats and one-hot maps are rejected.

    Args:
        codes: the argument to check.
        codebook_size: K; ``None`` skips the range check.
        name: the argument's name in the messages.
        layout: the expected shape, for the messages (e.g. ``"(B, h, w)"``).
        ndim: the required number of dimensions; ``None``: 2 or more (a batch of maps of any
            rank, e.g. flattened (N, L)).
        int64: require int64 exactly (what ``nn.Embedding`` and the cross-entropy take), not
            just an integer dtype.
        nonempty: reject a tensor without elements.

    Raises:
        TypeError: not a tensor, not an integer dtype (or not int64 with ``int64=True``).
        ShapeError: the wrong number of dimensions.
        ValueError: empty (with ``nonempty``), or codes outside ``[0, codebook_size)``.
    """
    integer = isinstance(codes, Tensor) and not (codes.is_floating_point() or codes.is_complex())
    if not integer or (int64 and codes.dtype != torch.int64):
        got = f"dtype {codes.dtype}" if isinstance(codes, Tensor) else type(codes).__name__
        fix = f"; convert with {name}.long()" if isinstance(codes, Tensor) else ""
        raise TypeError(
            f"{name} must be an integer (int64) torch.Tensor of code indices, i.e. integer code "
            f"maps {layout} (categories, not floats or one-hot); got {got}{fix}"
        )
    if (codes.dim() != ndim) if ndim is not None else (codes.dim() < 2):
        raise ShapeError(f"{name} must have shape {layout}, got shape {tuple(codes.shape)}")
    if codes.numel() == 0:
        if nonempty:
            raise ValueError(f"{name} is empty (shape {tuple(codes.shape)})")
        return
    if codebook_size is not None:
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= codebook_size:
            raise ValueError(
                f"{name} must lie in [0, {codebook_size}) (codebook_size = {codebook_size}), "
                f"got values in [{low}, {high}]"
            )


def check_level_shapes(top: Tensor, bottom: Tensor, top_name: str, bottom_name: str,
                       factor: int) -> None:
    """Check that two levels of a hierarchy belong together (VQ-VAE-2: the bottom grid is the
    top grid upsampled by ``factor``, with the same batch size). ``top`` and ``bottom`` are
    already checked code maps (B, h, w) or latents (B, D, h, w); only the batch and the last two
    sides are compared.

    Raises:
        ValueError: another batch size, or a bottom grid that is not ``factor`` x the top grid.
    """
    bt, bb = top.shape[0], bottom.shape[0]
    top_hw, bottom_hw = tuple(top.shape[-2:]), tuple(bottom.shape[-2:])
    expected = (top_hw[0] * factor, top_hw[1] * factor)
    if bt != bb or bottom_hw != expected:
        raise ValueError(
            f"{top_name} and {bottom_name} do not belong together: the bottom grid must be "
            f"{factor}x the top grid with the same batch size, i.e. {bottom_name} of "
            f"(B={bt}, {expected[0]}, {expected[1]}) for {top_name} of spatial shape {top_hw}; "
            f"got {top_name} {tuple(top.shape)} and {bottom_name} {tuple(bottom.shape)}"
        )


def check_codebook_size(codebook_size: object, name: str = "codebook_size") -> int:
    """``codebook_size`` if it is a positive int (K), else a ValueError naming ``name``."""
    if isinstance(codebook_size, bool) or not isinstance(codebook_size, int) or codebook_size < 1:
        raise ValueError(f"{name} must be a positive int (K), got {codebook_size!r}")
    return codebook_size


def split_batch(batch: Any, loader_name: str) -> tuple[Tensor, Tensor | None]:
    """``(images (B, C, H, W) float, labels (B,) int64 or None)`` of a loader batch
    ``(image, label)`` (a bare image tensor: no labels).

    Raises:
        TypeError: not an image batch, or labels that are not a (B,) tensor (the loader named).
    """
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
