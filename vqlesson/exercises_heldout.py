"""The open exercise of notebooks 04 and 05, "a prior that generalises", judged by what the
grader measures, never by figures the student's code reports.

The exercise (van den Oord et al. 2017, *Neural Discrete Representation Learning*, §3.2 and §4:
the prior over the codes, fitted by maximum likelihood; van den Oord et al. 2016, *Conditional
Image Generation with PixelCNN Decoders*, §2.2: the Gated PixelCNN): the student's function
``fn(train, val)`` gets the training and validation code maps of a seeded family of lesion-like
maps (:func:`lesion_code_maps`: 24 + 24 maps of 8 x 8 codes, K = 16), trains a prior its own way
and returns it (the :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior`, or the path of its weights
file). The notebooks' template trains a large prior for 40 epochs and keeps its last weights: it
memorises its 24 maps and fails; early stopping, dropout, flipped copies of the maps or a smaller
prior make it pass.

What crosses the grading sandbox's wall is the prior's weights file, data only
(:mod:`vqlesson.prior_weights`: an ``.npz`` of its config and float32 tensors, at most
:data:`MAX_WEIGHTS_BYTES`, never a pickle). The judge believes no figure: it rebuilds the prior
from the library's own classes after checking the file, then measures it itself
(:func:`measure_prior`): the NLL in bits per code on :data:`N_HELDOUT` held-out maps of the same
family that were never given to the function (when grading, drawn from a generator seeded with
the autograder's secret, which no submission can know: :func:`exercise_maps`), the NLL on the training maps (the gap), and, on :data:`N_SAMPLES` samples it draws
with its own generator at temperature 1, the fraction that are near-copies of the maps the
function was given and their diversity (:mod:`vqlesson.memorisation`,
:func:`vqlesson.analysis.prior_bits_per_code`). It passes when the held-out NLL is below
:data:`HELDOUT_FRACTION` x log2 K, at most :data:`MAX_NEAR_COPIES` of the samples are
near-copies, and the samples are at least :data:`MIN_DIVERSITY` as diverse as held-out maps.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .analysis import prior_bits_per_code
from .check_core import (
    JUDGE_SECRET,
    NOT_DONE,
    Exercise,
    Mismatch,
    Opaque,
    Outputs,
    Verdict,
    generator,
)
from .codes import CodeDataset
from .memorisation import memorisation, pairwise_hamming
from .pixelcnn_prior import PixelCNNPrior, SampleOptions
from .prior_weights import (
    NOT_A_PRIOR,
    WeightsError,
    read_file_limited,
    read_prior_weights,
    weights_file_bytes,
)

GRID, CODEBOOK_SIZE = (8, 8), 16  # (H, W) of the exercise's code maps, K
N_TRAIN, N_VAL, N_HELDOUT = 24, 24, 64  # maps given to the function (train, val); kept back
N_SAMPLES, SAMPLE_SEED = 32, 5000  # the judge's samples, and its generator's seed offset
HELDOUT_FRACTION = 0.75  # the held-out NLL must be below this fraction of log2 K (3 bits)
MAX_NEAR_COPIES = 0.05  # at most this fraction of the samples near-copies of the given maps
NEAR_COPY_HAMMING = 0.1  # a near-copy differs from a given map in at most 10 % of positions
MIN_DIVERSITY = 0.5  # the samples' pairwise Hamming diversity, relative to held-out maps'
MAX_WEIGHTS_BYTES = 8 * 2**20  # the weights file: keeps the judge under 15 s (template: 1.8 MiB)
FIGURES = ("you returned {}: return the trained prior instead; the grader believes no figure "
           "and measures the prior on held-out code maps your function never sees.")
MEMORISED = 0.5  # bits per code by which the held-out NLL exceeds the training NLL: memorised


# --------------------------------------------------------------------------------------------
# The exercise's code maps
# --------------------------------------------------------------------------------------------
def lesion_code_maps(n: int, generator: torch.Generator, shape: tuple[int, int] = GRID
                     ) -> Tensor:
    """``n`` lesion-like code maps with K = 16 codes, drawn from ``generator``.

    Each map is skin with one lesion: the skin has a tone per map (codes 0-1, 2-3 or 4-5, one
    of the two at random at each position: texture); the lesion is an ellipse (centre at least
    2 positions from the edges, radii 1.5 to 3.2 positions) of a tone per map, its inside
    codes 6-7 or 10-11, its core (half the radius) 8-9 or 12-13, with texture, and a ragged
    border ring (codes 14-15) just outside it. Two maps differ in about 90 % of positions.

    Args:
        n: number of maps, >= 1.
        generator: a CPU ``torch.Generator``; the same state gives the same maps.
        shape: (H, W), each >= 6.

    Returns:
        (n, H, W) int64 codes in [0, 16).
    """
    height, width = shape
    rows = torch.arange(height).view(1, height, 1).float()  # (1, H, 1)
    cols = torch.arange(width).view(1, 1, width).float()  # (1, 1, W)

    def uniform(low: float, high: float) -> Tensor:  # (n, 1, 1), one value per map
        return low + (high - low) * torch.rand(n, 1, 1, generator=generator)

    def bits() -> Tensor:  # (n, H, W) of 0 and 1: texture
        return torch.randint(0, 2, (n, height, width), generator=generator)

    cy, cx = uniform(2.0, height - 3.0), uniform(2.0, width - 3.0)
    ry, rx = uniform(1.5, 3.2), uniform(1.5, 3.2)
    radius = (((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2).sqrt()  # (n, H, W), 1 = edge
    skin = torch.randint(0, 3, (n, 1, 1), generator=generator)
    codes = 2 * skin + bits()  # (n, H, W) in [0, 6)
    tone = 4 * torch.randint(0, 2, (n, 1, 1), generator=generator)
    texture = bits()
    codes = torch.where(radius < 1.0, 6 + tone + texture, codes)
    codes = torch.where(radius < 0.5, 8 + tone + texture, codes)
    ring = (radius >= 1.0) & (radius < 1.3)
    return torch.where(ring, 14 + bits(), codes).long()


def code_set(maps: Tensor) -> CodeDataset:
    """(N, H, W) maps of K = 16 as an unlabelled one-level :class:`CodeDataset` (image shape
    (1, H, W): bits per dimension equal bits per code)."""
    return CodeDataset({"codes": maps}, torch.full((maps.shape[0],), -1),
                       {"codes": CODEBOOK_SIZE}, image_shape=(1, *maps.shape[1:]))


def exercise_maps(seed: int, secret: str = "") -> tuple[Tensor, Tensor, Tensor]:
    """(train, val, held-out) maps of ``seed``: :data:`N_TRAIN` and :data:`N_VAL` maps from
    ``generator(seed)``, which reach the student's function, and :data:`N_HELDOUT` maps from a
    generator seeded by the SHA-256 of ``seed`` and ``secret``, which never do. The grader's
    judge passes the autograder's secret (:data:`vqlesson.check_core.JUDGE_SECRET`), so that a
    submission cannot draw the grader's held-out maps itself; the instant feedback has none."""
    g = generator(seed)
    train, val = lesion_code_maps(N_TRAIN, g), lesion_code_maps(N_VAL, g)
    digest = hashlib.sha256(f"heldout|{seed}|{secret}".encode()).digest()
    held = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return train, val, lesion_code_maps(N_HELDOUT, held)


# --------------------------------------------------------------------------------------------
# The three steps
# --------------------------------------------------------------------------------------------
def _inputs(seed: int) -> dict:
    train, val, _ = exercise_maps(seed)  # the held-out maps stay with the judge
    return {"train": train, "val": val, "seed": seed}


def _collect(fn: Callable, inputs: dict) -> Outputs:
    """Call ``fn(train, val)`` and record its prior's weights file (the only thing judged)."""
    outputs = Outputs()
    result = outputs.call("result", fn, code_set(inputs["train"].clone()),
                          code_set(inputs["val"].clone()))
    if result is None:
        return outputs
    try:
        if isinstance(result, (str, os.PathLike)):
            data = read_file_limited(result, MAX_WEIGHTS_BYTES)
        else:
            data = weights_file_bytes(result)
    except (TypeError, WeightsError) as error:
        outputs.fail("weights", str(error))
        return outputs
    if len(data) > MAX_WEIGHTS_BYTES:
        outputs.fail("weights", f"the prior's weights file is {len(data)} bytes, over the "
                                f"limit of {MAX_WEIGHTS_BYTES}: train a smaller prior")
    else:
        outputs.put_bytes("weights", data)
    return outputs


def _figures(value: Any) -> str | None:
    """How ``value`` reads if it is figures (a number, or a sequence of numbers), else None."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    numbers = [v.number if isinstance(v, Opaque) else v for v in items]
    if items and all(isinstance(v, (int, float)) or (isinstance(v, Tensor) and v.numel() == 1)
                     for v in numbers):
        shown = ", ".join(f"{float(v):.4g}" for v in numbers)
        return f"figures ({shown})" if len(numbers) > 1 else f"a figure ({shown})"
    return None


def rebuilt_prior(outputs: Outputs) -> PixelCNNPrior:
    """The prior whose weights file ``outputs`` recorded, rebuilt after every check of
    :func:`vqlesson.prior_weights.read_prior_weights`.

    Raises:
        Mismatch: nothing usable was returned (not done, figures, another type) or the file
            cannot be used (the message says why).
    """
    result = outputs.got("result")
    if result is None:
        raise Mismatch(NOT_DONE)
    figures = _figures(result)
    if figures is not None:
        raise Mismatch(FIGURES.format(figures))
    data = outputs.got("weights")
    if not isinstance(data, bytes):
        raise Mismatch(NOT_A_PRIOR.format(outputs.type_name("result")) + ".")
    try:
        return read_prior_weights(data, MAX_WEIGHTS_BYTES, expect={
            "codebook_size": CODEBOOK_SIZE, "num_classes": 0, "cond_codebook_size": 0})
    except WeightsError as error:
        raise Mismatch(f"the prior cannot be used: {error}.") from None


def measure_prior(prior: PixelCNNPrior, seed: int, secret: str = "") -> dict[str, float]:
    """What the judge measures of ``prior`` for the maps of ``seed`` and ``secret``
    (:func:`exercise_maps`), all floats:
    ``heldout_bits_per_code`` and ``train_bits_per_code`` (NLL, bits per code),
    ``near_copy_fraction`` (of :data:`N_SAMPLES` samples at temperature 1, drawn from a
    generator seeded with ``SAMPLE_SEED + seed``, against the maps given to the function, in
    [0, 1]), ``sample_diversity`` and ``heldout_diversity`` (mean pairwise Hamming fraction,
    in [0, 1]) and ``bound_bits_per_code`` (the pass mark)."""
    train, val, heldout = exercise_maps(seed, secret)
    samples = prior.sample(N_SAMPLES, GRID, generator=torch.Generator().manual_seed(
        SAMPLE_SEED + seed), options=SampleOptions(temperature=1.0)).cpu()  # (N_SAMPLES, H, W)
    copies = memorisation(samples, torch.cat([train, val]), near_copy_hamming=NEAR_COPY_HAMMING)
    return {"heldout_bits_per_code": prior_bits_per_code((prior,), code_set(heldout)),
            "train_bits_per_code": prior_bits_per_code((prior,), code_set(train)),
            "near_copy_fraction": copies.near_copy_fraction,
            "sample_diversity": pairwise_hamming(samples),
            "heldout_diversity": pairwise_hamming(heldout),
            "bound_bits_per_code": HELDOUT_FRACTION * math.log2(CODEBOOK_SIZE)}


def verdict(measured: dict[str, float]) -> Verdict:
    """Pass or fail on the measured figures (see :func:`measure_prior`).

    Raises:
        Mismatch: the held-out NLL, the near-copies or the diversity misses its mark (the
            figures travel with it).
    """
    m = measured
    seen = (f"{m['heldout_bits_per_code']:.2f} bits per code on {N_HELDOUT} held-out maps your "
            f"function never saw ({m['train_bits_per_code']:.2f} on its {N_TRAIN} training maps)")
    if not m["heldout_bits_per_code"] < m["bound_bits_per_code"]:  # NaN fails too
        memorised = m["train_bits_per_code"] < m["heldout_bits_per_code"] - MEMORISED
        cure = ("the prior learnt its training maps, not lesions. Keep the best validation "
                "epoch (early stopping), add dropout, train on flipped copies too, or use a "
                "smaller prior" if memorised else "the prior has not learnt the maps it was "
                "given either: train it (longer, or with a larger learning rate)")
        raise Mismatch(f"measured by the check: {seen}, not below {m['bound_bits_per_code']:.2f} "
                       f"({HELDOUT_FRACTION:g} x log2 K): {cure}.", m)
    if m["near_copy_fraction"] > MAX_NEAR_COPIES:
        raise Mismatch(f"measured by the check: {m['near_copy_fraction']:.0%} of {N_SAMPLES} "
                       f"samples are near-copies of the maps your function was given (at most "
                       f"{MAX_NEAR_COPIES:.0%} allowed; {seen}): the prior memorised them.", m)
    if m["sample_diversity"] < MIN_DIVERSITY * m["heldout_diversity"]:
        raise Mismatch(f"measured by the check: the samples are alike (diversity "
                       f"{m['sample_diversity']:.2f} against {m['heldout_diversity']:.2f} for "
                       f"held-out maps; {seen}).", m)
    return Verdict(f"measured by the check: {seen} < {m['bound_bits_per_code']:.2f}; "
                   f"{m['near_copy_fraction']:.0%} near-copies among {N_SAMPLES} samples, "
                   f"diversity {m['sample_diversity']:.2f} (held-out maps "
                   f"{m['heldout_diversity']:.2f})", m)


def _judge(inputs: dict, outputs: Outputs) -> Verdict:
    prior = rebuilt_prior(outputs)
    try:
        measured = measure_prior(prior, int(inputs["seed"]), str(inputs.get(JUDGE_SECRET, "")))
    except (RuntimeError, ValueError) as error:  # e.g. weights so large that sampling breaks
        raise Mismatch(f"the prior could not be measured: {type(error).__name__}: "
                       f"{str(error)[:200]}") from None
    return verdict(measured)


HELDOUT_PRIOR = Exercise("heldout_prior", _inputs, _collect, _judge)
EXERCISES = (HELDOUT_PRIOR,)
