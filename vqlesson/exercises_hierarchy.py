"""The exercises of notebook 03 (a VQ-VAE-2 hierarchy), as :class:`vqlesson.check_core.Exercise`
objects: seeded inputs, the call of the student's function, and the comparison with the library's
reference with a hint for each known mistake (notebook 02's are in :mod:`vqlesson.exercises_vq`).

References, and the paper they implement (Razavi, van den Oord & Vinyals 2019, *Generating Diverse
High-Fidelity Images with VQ-VAE-2*, §3.1): the rate of a two-level code, PSNR and the perplexity
of a level's codes: :mod:`vqlesson.metrics`; the code maps of a top-only decode and whether a
trained hierarchy uses its top level: :func:`vqlesson.experiments.level_use` and
:func:`~vqlesson.experiments.top_level_use`.

Students call these through :mod:`vqlesson.checks` (``checks.check_hierarchy_bits(fn)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .check_core import (NOT_DONE, Exercise, Mismatch, Outputs, Verdict, as_float, as_sequence,
                         as_tensor, close, collect_settings, compare, compare_number,
                         equal_if_tensor, generator)
from .validate import check_int, check_number

HIERARCHY_FIXED = ((32, 64, 64), (64, 256, 256), (128, 512, 16), (256, 16, 512))  # (S, Kt, Kb)
HIERARCHY_DRAWN = 2  # more (S, K_top, K_bottom) drawn from the seed
PSNR_NOISE = (0.02, 0.05, 0.1, 0.3)  # noise std of each of the 4 images
TOP_ONLY_SIZE = (4, 3, 16, 12)  # (B, top side, K_top, K_bottom); the bottom grid is twice as fine
PERPLEXITY_K = 16
# Make a VQ-VAE-2 use its top level: measured by experiments.top_level_use (a small run).
TOP_MARGIN = 2.0  # dB by which the top-only reconstruction must beat the mean image
TOP_FULL_MARGIN = 0.5  # dB by which the full reconstruction must beat the top-only one


# --------------------------------------------------------------------------------------------
# Rate of a two-level code
# --------------------------------------------------------------------------------------------
def _hierarchy_inputs(seed: int) -> dict:
    g = generator(seed)
    sizes = list(HIERARCHY_FIXED)
    for _ in range(HIERARCHY_DRAWN):
        s = 8 * int(torch.randint(2, 33, (1,), generator=g))
        kt, kb = (2 ** int(torch.randint(1, 11, (1,), generator=g)) for _ in range(2))
        sizes.append((s, kt, kb))
    return {"sizes": torch.tensor(sizes, dtype=torch.int64)}  # (N, 3): S, K_top, K_bottom


def _hierarchy_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for i, (s, kt, kb) in enumerate(inputs["sizes"].tolist()):
        outputs.call(f"case{i}", fn, s, kt, kb)
    return outputs


def _hierarchy_judge(inputs: dict, outputs: Outputs) -> str:
    from .metrics import bits_per_image

    sizes = inputs["sizes"].tolist()
    for i, (s, kt, kb) in enumerate(sizes):
        expected = bits_per_image([((s // 8, s // 8), kt), ((s // 4, s // 4), kb)])
        value = as_float(outputs.got(f"case{i}"), "the result")
        top = (s // 8) ** 2 * math.log2(kt)
        bottom = (s // 4) ** 2 * math.log2(kb)
        if not close(value, expected):
            if close(value, top) or close(value, bottom):
                raise Mismatch(f"for S={s}, K_top={kt}, K_bottom={kb} you return the bits "
                               "of one level only; a VQ-VAE-2 stores both grids.")
            if close(value, (s // 4) ** 2 * math.log2(kt) + (s // 8) ** 2 * math.log2(kb)):
                raise Mismatch("the grids are swapped: the top grid is S/8 x S/8, the "
                               "bottom grid S/4 x S/4.")
            if close(value, (s // 8) ** 2 * kt + (s // 4) ** 2 * kb):
                raise Mismatch("each code costs log2 K bits, not K.")
            compare_number(value, expected, f"the rate for S={s}, K_top={kt}, K_bottom={kb}")
    return f"{len(sizes)} sizes"


HIERARCHY_BITS = Exercise("hierarchy_bits", _hierarchy_inputs, _hierarchy_collect,
                          _hierarchy_judge)


# --------------------------------------------------------------------------------------------
# Decode with the top level only: the code maps of a top-only decode
# --------------------------------------------------------------------------------------------
def _top_only_inputs(seed: int) -> dict:
    g = generator(seed)
    b, top_side, k_top, k_bottom = TOP_ONLY_SIZE
    top = torch.randint(k_top, (b, top_side, top_side), generator=g)
    weights = torch.rand(k_bottom, generator=g) ** 4  # skewed use: one code clearly most used
    weights[0] = 0.0  # code 0 is never used: a constant 0 is not the answer
    bottom = torch.multinomial(weights, b * 4 * top_side ** 2, replacement=True, generator=g)
    bottom = bottom.view(b, 2 * top_side, 2 * top_side)  # (B·Hb·Wb,) -> (B, Hb, Wb)
    bottom[0] = int(torch.multinomial(weights, 1, generator=g))  # image 0: one code everywhere
    return {"top": top, "bottom": bottom}


def _top_only_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    outputs.call("result", fn, inputs["top"].clone(), inputs["bottom"].clone())
    return outputs


def _top_only_judge(inputs: dict, outputs: Outputs) -> str:
    top, bottom = inputs["top"], inputs["bottom"]
    most = int(torch.bincount(bottom.flatten()).argmax())  # as experiments.level_use
    expected = (top, torch.full_like(bottom, most))
    got = as_sequence(outputs.got("result"), 2, "return two code maps, (top, bottom), the "
                      "pair that decode_indices(top, bottom) decodes.")
    new_top, new_bottom = got
    if equal_if_tensor(new_bottom, bottom.double()) and isinstance(new_top, Tensor) and \
            new_top.shape == top.shape and bool((new_top == new_top.flatten()[0]).all()):
        raise Mismatch("you kept the bottom codes and made the top level constant: that decodes "
                       "what the bottom level alone says. Keep the top codes; make every bottom "
                       "code one code.")
    if isinstance(new_bottom, Tensor) and new_bottom.shape == bottom.shape:
        per_image = torch.stack([torch.full_like(b, int(torch.bincount(b.flatten()).argmax()))
                                 for b in bottom])  # (B, Hb, Wb)
        if not torch.equal(per_image, expected[1]) and equal_if_tensor(new_bottom,
                                                                       per_image.double()):
            raise Mismatch("each image got its own most used bottom code; use one code for the "
                           "whole batch, the most used over all its bottom positions, so that "
                           "every image's bottom level says the same (nothing).")
        if bool((new_bottom == 0).all()):
            raise Mismatch("every bottom code is 0; code 0 is an arbitrary code (here never "
                           "used). Take the most used one: torch.bincount(bottom.flatten())"
                           ".argmax().")
    compare(new_top, top, "the top codes (they must come back unchanged)")
    compare(new_bottom, expected[1], "the bottom codes (all the batch's most used bottom code)")
    return f"top codes kept, every bottom code {most} (the most used)"


TOP_ONLY_CODES = Exercise("top_only_codes", _top_only_inputs, _top_only_collect,
                          _top_only_judge)


# --------------------------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------------------------
def _psnr_inputs(seed: int) -> dict:
    g = generator(seed)
    n = len(PSNR_NOISE)
    x = torch.rand(n, 3, 16, 16, generator=g) * 2 - 1
    levels = torch.tensor(PSNR_NOISE).view(n, 1, 1, 1)  # noise std per image
    noise = torch.randn(n, 3, 16, 16, generator=g) * levels
    return {"x": x, "x_hat": (x + noise).clamp(-1, 1)}


def _psnr_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    outputs.call("result", fn, inputs["x"].clone(), inputs["x_hat"].clone())
    return outputs


def _psnr_judge(inputs: dict, outputs: Outputs) -> str:
    from .metrics import psnr

    expected = psnr(inputs["x"], inputs["x_hat"], reduction="none")  # (B,)
    got = outputs.got("result")
    if got is None:
        raise Mismatch(NOT_DONE)
    if isinstance(got, (int, float)) or (isinstance(got, Tensor) and got.numel() == 1):
        mean = close(as_float(got, "it"), float(expected.mean()))
        hint = " (that is the mean over images)" if mean else ""
        raise Mismatch(f"you return one number{hint}; return one PSNR per image, shape "
                       f"(B,) = {tuple(expected.shape)}.")
    tensor = as_tensor(got, "the result")
    if tensor.shape == expected.shape and tensor.is_floating_point():
        shift = 20 * math.log10(2)
        if torch.allclose(tensor.double(), expected.double() - shift, atol=1e-3):
            raise Mismatch("every PSNR is 6.02 dB too low: the MSE was taken on [-1, 1] "
                           "images with peak 1. Map both images to [0, 1] first, "
                           "(x + 1) / 2, whose MSE is 4 times smaller.")
        if torch.allclose(tensor.double(), expected.double() * math.log(10), rtol=1e-3):
            raise Mismatch("decibels use log10, not the natural log.")
    compare(tensor, expected, "the PSNR per image (dB)", atol=1e-3, rtol=1e-4)
    return "4 images with different noise levels"


PSNR = Exercise("psnr", _psnr_inputs, _psnr_collect, _psnr_judge)


# --------------------------------------------------------------------------------------------
# Code perplexity
# --------------------------------------------------------------------------------------------
PERPLEXITY_CASES = ("skewed use with unused codes", "a collapsed codebook", "uniform use")


def _perplexity_inputs(seed: int) -> dict:
    g = generator(seed)
    k = PERPLEXITY_K
    weights = torch.rand(k, generator=g) ** 3
    weights[:4] = 0.0  # four codes never used
    skewed = torch.multinomial(weights, 5 * 4 * 4, replacement=True, generator=g).view(5, 4, 4)
    collapsed = torch.full((2, 4, 4), 3, dtype=torch.int64)
    uniform = torch.arange(k).repeat(2).view(2, 4, 4)
    return {"codes0": skewed, "codes1": collapsed, "codes2": uniform, "k": k}


def _perplexity_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for i in range(len(PERPLEXITY_CASES)):
        outputs.call(f"case{i}", fn, inputs[f"codes{i}"].clone(), inputs["k"])
    return outputs


def _perplexity_judge(inputs: dict, outputs: Outputs) -> str:
    from .metrics import perplexity_from_counts

    k = inputs["k"]
    for i, name in enumerate(PERPLEXITY_CASES):
        counts = torch.bincount(inputs[f"codes{i}"].flatten(), minlength=k)
        expected = perplexity_from_counts(counts)
        value = as_float(outputs.got(f"case{i}"), "the result")
        if math.isnan(value):
            raise Mismatch(f"NaN for {name}: 0 log 0 must count as 0 (drop unused codes, "
                           "or use torch.special.xlogy(p, p)).")
        if not close(value, expected):
            entropy = math.log(expected)
            if close(value, 1 / expected):
                raise Mismatch("the sign is wrong: the entropy is -sum p log p, and the "
                               "perplexity exp(entropy) is at least 1.")
            report_d = (2 * math.exp(-entropy / k), 2 * math.exp(-entropy))
            if any(close(value, v) for v in report_d):
                raise Mismatch("that looks like report D's `2 exp(mean p log p)`; the "
                               "perplexity is exp(-sum_k p_k log p_k).")
            if close(value, 2 ** entropy):
                raise Mismatch("2 ** (entropy in nats) mixes units: use exp(entropy in "
                               "nats), or 2 ** (entropy in bits).")
            compare_number(value, expected, f"the perplexity for {name}")
    return "skewed use with unused codes, a collapsed codebook (1), uniform use (K)"


CODE_PERPLEXITY = Exercise("code_perplexity", _perplexity_inputs, _perplexity_collect,
                           _perplexity_judge)


# --------------------------------------------------------------------------------------------
# An open exercise: make a VQ-VAE-2 use its top level (graded by a measured run)
# --------------------------------------------------------------------------------------------
def _top_level_inputs(seed: int) -> dict:
    generator(seed)  # validates the seed
    return {"data_seed": seed}


def _top_level_settings(got: Any) -> tuple[float, int]:
    """``(bottom_dropout, codebook_size_bottom)`` from what the student returned, or a hint."""
    dropout, k = as_sequence(
        got, 2, "return two values: (bottom_dropout, codebook_size_bottom), e.g. (0.0, 32).")
    try:
        dropout = check_number(dropout, "bottom_dropout", 0, 1, high_open=True)
        check_int(k, "codebook_size_bottom", 2, 1024)
    except ValueError as error:
        raise Mismatch(f"{error}.") from None
    return dropout, k


def _top_level_judge(inputs: dict, outputs: Outputs) -> Verdict:
    from .experiments import top_level_use

    dropout, k = _top_level_settings(outputs.got("settings"))
    use = top_level_use(dropout, k, seed=int(inputs["data_seed"]))
    gain = use.top_only_psnr - use.mean_image_psnr
    figures = {"top_only_psnr": use.top_only_psnr, "mean_image_psnr": use.mean_image_psnr,
               "psnr": use.psnr}
    measured = (f"top-only reconstruction {use.top_only_psnr:.1f} dB against "
                f"{use.mean_image_psnr:.1f} dB for the mean image (full {use.psnr:.1f} dB; "
                f"bottom_dropout={dropout}, codebook_size_bottom={k})")
    if gain < TOP_MARGIN:
        raise Mismatch(f"the top level is bypassed: {measured}; it must beat the mean image by "
                       f"{TOP_MARGIN:.0f} dB. The decoder must sometimes have to rebuild an image "
                       "from the top codes alone: drop the bottom level (more often).", figures)
    added = use.psnr - use.top_only_psnr
    if added < TOP_FULL_MARGIN:
        raise Mismatch(f"the bottom level adds almost nothing: {measured}; the full reconstruction "
                       f"must beat the top level alone by {TOP_FULL_MARGIN} dB, it does by "
                       f"{added:.2f} dB. The bottom level is dropped too often to learn, or has too "
                       "few codes to carry detail: a smaller bottom_dropout or a larger "
                       "codebook_size_bottom.", figures)
    return Verdict(measured, figures)


TOP_LEVEL = Exercise("top_level", _top_level_inputs, collect_settings, _top_level_judge)


EXERCISES = (HIERARCHY_BITS, TOP_ONLY_CODES, PSNR, CODE_PERPLEXITY, TOP_LEVEL)
