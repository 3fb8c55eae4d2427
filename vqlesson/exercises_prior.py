"""The exercises of notebooks 04 (PixelCNN prior) and 05 (test-set failure analysis), as
:class:`vqlesson.check_core.Exercise` objects: seeded inputs, the call of the student's function,
and the comparison with the library's reference with a hint for each known mistake.

References, and the papers they implement:

- mask A/B, the masked convolution, the gated block, bits per code, the sampling loop:
  :mod:`vqlesson.pixelcnn` (van den Oord et al. 2016, *Pixel Recurrent Neural Networks* §3.4,
  and *Conditional Image Generation with PixelCNN Decoders* §2.2);
- (the open exercise of both notebooks, a prior that generalises, judged by what the grader
  measures of the student's prior: :mod:`vqlesson.exercises_heldout`);
- pairwise Hamming diversity, nearest neighbours in code space, surprise maps:
  :mod:`vqlesson.analysis`.

A prior given to a student's function travels as data: its config (a JSON-able dict) and its
weights (tensors), rebuilt by :func:`prior_from_inputs` on each side.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .check_core import (Exercise, Mismatch, Outputs, as_float, as_sequence, as_tensor, close,
                         compare, compare_number, equal_if_tensor, generator)

MASK_SIZES = (1, 3, 5, 7)
BITS_CASES = ((2, 8, 3, 4), (1, 32, 5, 5))  # (B, K, H, W)
SMALL_PRIOR = dict(embed_dim=4, channels=8, num_layers=2, kernel_size=3, first_kernel_size=3)
PEAKED_K, PEAKED_SCALE, PEAKED_SEED = 6, 50.0, 1000  # sharp softmaxes for the sampling loop
SAMPLES, SAMPLE_SHAPE = 3, (3, 4)  # n, (H, W)
COLD, HOT = 1e-3, 1e3  # temperatures
SURPRISE_K, SURPRISE_SEED = 5, 2000
PRIOR_KEY = "prior."  # inputs under this prefix hold a prior's weights


# --------------------------------------------------------------------------------------------
# A prior as data
# --------------------------------------------------------------------------------------------
def prior_to_inputs(prior) -> dict:
    """A :class:`PixelCNNPrior` as inputs: ``prior_config`` (dict) and ``prior.NAME`` tensors."""
    inputs = {"prior_config": dataclasses.asdict(prior.config)}
    for name, tensor in prior.state_dict().items():
        inputs[PRIOR_KEY + name] = tensor.detach().clone()
    return inputs


def prior_from_inputs(inputs: dict):
    """The :class:`PixelCNNPrior` held by ``inputs`` (see :func:`prior_to_inputs`), in eval
    mode."""
    from .pixelcnn_prior import PixelCNNPrior
    from .pixelcnn import PriorConfig

    prior = PixelCNNPrior(PriorConfig(**inputs["prior_config"]))
    state = {k[len(PRIOR_KEY):]: v for k, v in inputs.items() if k.startswith(PRIOR_KEY)}
    prior.load_state_dict(state)
    return prior.eval()


def _seeded_prior(seed: int, codebook_size: int, scale: float = 1.0):
    """A small unconditional Gated PixelCNN prior, built without touching the global random
    state; ``scale`` multiplies its output layer (large: sharp softmaxes)."""
    from .pixelcnn_prior import PixelCNNPrior
    from .pixelcnn import PriorConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prior = PixelCNNPrior(PriorConfig(codebook_size=codebook_size, **SMALL_PRIOR))
    with torch.no_grad():
        prior.net.head.out.weight.mul_(scale)
        prior.net.head.out.bias.mul_(scale)
    return prior.eval()


# --------------------------------------------------------------------------------------------
# Masks A and B
# --------------------------------------------------------------------------------------------
def _mask_inputs(seed: int) -> dict:
    generator(seed)  # validates the seed; the cases are exhaustive
    return {}


def _mask_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for k in MASK_SIZES:
        for kind in "AB":
            outputs.call(f"{k}{kind}", fn, k, kind)
    return outputs


def _mask_judge(inputs: dict, outputs: Outputs) -> str:
    from .pixelcnn import causal_mask

    for k in MASK_SIZES:
        for kind in "AB":
            expected = causal_mask(k, kind)
            tensor = as_tensor(outputs.got(f"{k}{kind}"),
                               f"the mask for kernel_size={k}, type {kind}")
            if tensor.shape == expected.shape and not tensor.is_complex():
                tensor = tensor.double()
                other = causal_mask(k, "B" if kind == "A" else "A").double()
                if k > 1 and torch.equal(tensor, expected.double().T):
                    raise Mismatch("the mask is transposed: keep the rows *above* the "
                                   "centre, and in the centre row the columns left of it.")
                if k > 1 and torch.equal(tensor, expected.double().flip(0, 1)):
                    raise Mismatch("the mask looks at later positions: causal means the rows "
                                   "above and the columns to the left (raster order).")
                if torch.equal(tensor, other):
                    raise Mismatch(f"that is mask {'B' if kind == 'A' else 'A'}: mask A "
                                   "(first layer) hides the centre, mask B keeps it.")
            compare(tensor, expected, f"the mask for kernel_size={k}, type {kind}",
                    integer=False)
    return "kernel sizes 1, 3, 5, 7, types A and B"


CAUSAL_MASK = Exercise("causal_mask", _mask_inputs, _mask_collect, _mask_judge)


# --------------------------------------------------------------------------------------------
# The masked convolution and the gated block
# --------------------------------------------------------------------------------------------
CONV_CASES = ((3, "A"), (3, "B"), (5, "A"), (5, "B"))  # (kernel_size, mask type)
CONV_SHAPE, CONV_OUT = (2, 3, 6, 5), 4  # x (B, C_in, H, W), C_out
BLOCK_CASES = ((4, 6, 5, False), (6, 6, 3, True))  # (C_in, C, kernel_size, residual)
BLOCK_KEY = "block{}."  # inputs under this prefix hold a gated block's weights


def _conv_inputs(seed: int) -> dict:
    g = generator(seed)
    inputs = {"x": torch.randn(*CONV_SHAPE, generator=g)}
    for k, _ in CONV_CASES:
        inputs[f"weight{k}"] = torch.randn(CONV_OUT, CONV_SHAPE[1], k, k, generator=g)
        inputs[f"bias{k}"] = torch.randn(CONV_OUT, generator=g)
    return inputs


def _conv_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for k, kind in CONV_CASES:
        outputs.call(f"{k}{kind}", fn, inputs["x"].clone(), inputs[f"weight{k}"].clone(),
                     inputs[f"bias{k}"].clone(), kind)
    return outputs


def _conv_judge(inputs: dict, outputs: Outputs) -> str:
    from .pixelcnn import causal_mask

    x = inputs["x"]
    for k, kind in CONV_CASES:
        weight, bias = inputs[f"weight{k}"], inputs[f"bias{k}"]
        what = f"the output for kernel_size={k}, mask type {kind}"
        tensor = as_tensor(outputs.got(f"{k}{kind}"), what)
        expected = F.conv2d(x, weight * causal_mask(k, kind), bias, padding=k // 2)
        if tensor.shape == expected.shape[:2] + (x.shape[2] - k + 1, x.shape[3] - k + 1):
            raise Mismatch("the output is smaller than the input: pad by kernel_size // 2 "
                           "(padding=kernel_size // 2) so that position (r, c) stays (r, c).")
        if tensor.shape == expected.shape and tensor.is_floating_point():
            other = "B" if kind == "A" else "A"
            wrong = {"the mask is not applied: multiply the weight by the mask first (the "
                     "output then sees later positions)": weight,
                     f"that is mask {other}: mask A hides the centre, mask B keeps it":
                         weight * causal_mask(k, other),
                     "the mask is upside down: keep the rows above the centre and the "
                     "columns left of it": weight * causal_mask(k, kind).flip(0, 1)}
            for hint, w in wrong.items():
                if torch.allclose(tensor.double(), F.conv2d(x, w, bias, padding=k // 2).double(),
                                  rtol=1e-4, atol=1e-4):
                    raise Mismatch(hint + ".")
        compare(tensor, expected, what, atol=1e-4, rtol=1e-4)
    return "kernel sizes 3 and 5, mask types A and B"


MASKED_CONV = Exercise("masked_conv", _conv_inputs, _conv_collect, _conv_judge)


def _block(case: tuple, state: dict | None = None):
    """A :class:`~vqlesson.pixelcnn.GatedBlock` of one of :data:`BLOCK_CASES` (no skip, no
    conditioning, no dropout), with ``state`` loaded when given."""
    from .pixelcnn import GatedBlock

    c_in, channels, k, residual = case
    block = GatedBlock(c_in, channels, k, residual=residual, skip=False, dropout=0.0,
                       num_classes=0, spatial_channels=0)
    if state is not None:
        block.load_state_dict(state)
    return block.eval()


def _block_inputs(seed: int) -> dict:
    g = generator(seed)
    inputs = {}
    for i, case in enumerate(BLOCK_CASES):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 10 + i)
            block = _block(case)
        for name, tensor in block.state_dict().items():
            inputs[BLOCK_KEY.format(i) + name] = tensor.detach().clone()
        inputs[f"v{i}"] = torch.randn(2, case[0], 5, 6, generator=g)
        inputs[f"h{i}"] = torch.randn(2, case[0], 5, 6, generator=g)
    return inputs


def block_from_inputs(inputs: dict, i: int):
    """The gated block of case ``i`` held by ``inputs`` (see :data:`BLOCK_CASES`), eval mode."""
    prefix = BLOCK_KEY.format(i)
    return _block(BLOCK_CASES[i], {k[len(prefix):]: v for k, v in inputs.items()
                                   if k.startswith(prefix)})


def _block_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for i in range(len(BLOCK_CASES)):
        block = block_from_inputs(inputs, i)
        with torch.no_grad():
            outputs.call(f"case{i}", fn, block, inputs[f"v{i}"].clone(), inputs[f"h{i}"].clone())
    return outputs


def _block_variants(block, v: Tensor, h: Tensor) -> dict[str, Tensor]:
    """The horizontal output of known mistakes, keyed by hint."""
    from .pixelcnn import gate

    p = block.pad
    v_pre = block.v_conv(F.pad(v, (p, p, p, 0)))
    h_conv = block.h_conv(F.pad(h, (p, 0, 0, 0)))
    residual = h if block.residual else 0
    a, b = (h_conv + block.v_to_h(v_pre)).chunk(2, dim=1)
    variants = {"the horizontal stack misses the vertical stack's link: add "
                "v_to_h(v_pre), the 1x1 convolution of the vertical pre-activation":
                    block.h_out(gate(h_conv)) + residual,
                "the gate is swapped: tanh of the first channel half times sigmoid of the "
                "second": block.h_out(torch.sigmoid(a) * torch.tanh(b)) + residual}
    if block.residual:
        variants["the residual connection is missing: blocks after the first return "
                 "h_out(gated) + h"] = block.h_out(gate(h_conv + block.v_to_h(v_pre)))
    return variants


def _block_judge(inputs: dict, outputs: Outputs) -> str:
    for i in range(len(BLOCK_CASES)):
        block = block_from_inputs(inputs, i)
        v, h = inputs[f"v{i}"], inputs[f"h{i}"]
        with torch.no_grad():
            v_out, h_out, _ = block(v, h, None)
            variants = _block_variants(block, v, h)
        got = as_sequence(outputs.got(f"case{i}"), 2, "return two tensors, (v_out, h_out); "
                          f"got {outputs.type_name(f'case{i}')}.")
        compare(got[0], v_out, f"v_out (vertical stack, case {i}: pad p rows on top and p "
                               "columns on each side, then v_conv and the gate)", atol=1e-4)
        got_h = as_tensor(got[1], "h_out")
        if got_h.shape == h_out.shape and got_h.is_floating_point():
            for hint, wrong in variants.items():
                if torch.allclose(got_h.double(), wrong.double(), rtol=1e-4, atol=1e-4):
                    raise Mismatch(hint + ".")
        compare(got_h, h_out, f"h_out (horizontal stack, case {i}: pad p columns on the "
                              "left, h_conv, plus the link)", atol=1e-4)
    return "a first block (no residual) and a later block"


GATED_BLOCK = Exercise("gated_block", _block_inputs, _block_collect, _block_judge)


# --------------------------------------------------------------------------------------------
# Bits per code
# --------------------------------------------------------------------------------------------
def _bits_inputs(seed: int) -> dict:
    g = generator(seed)
    inputs = {}
    for i, (b, k, h, w) in enumerate(BITS_CASES):
        inputs[f"logits{i}"] = torch.randn(b, k, h, w, generator=g) * 2
        inputs[f"codes{i}"] = torch.randint(0, k, (b, h, w), generator=g)
    return inputs


def _bits_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for i in range(len(BITS_CASES)):
        outputs.call(f"case{i}", fn, inputs[f"logits{i}"].clone(), inputs[f"codes{i}"].clone())
    return outputs


def _bits_judge(inputs: dict, outputs: Outputs) -> str:
    from .pixelcnn_prior import nll

    for i, (b, k, h, w) in enumerate(BITS_CASES):
        logits, codes = inputs[f"logits{i}"], inputs[f"codes{i}"]
        expected = float(nll(logits, codes))
        value = as_float(outputs.got(f"case{i}"), "the result")
        if not close(value, expected):
            if close(value, expected * math.log(2)):
                raise Mismatch("that is in nats: divide by ln 2 for bits.")
            if close(value, expected * b * h * w):
                raise Mismatch("that is the sum over positions: report the mean per code.")
            one_hot = F.one_hot(codes, k).permute(0, 3, 1, 2).float()  # (B,H,W,K) -> (B,K,H,W)
            binary = F.binary_cross_entropy_with_logits(logits, one_hot)
            if close(value, float(binary)) or close(value, float(binary) / math.log(2)):
                raise Mismatch("that is a binary cross-entropy (report D's mistake): each "
                               "position is *one* categorical variable with K classes; "
                               "use a softmax over K (F.cross_entropy).")
            compare_number(value, expected, f"the bits per code for logits {(b, k, h, w)}")
    return "2 cases"


BITS_PER_CODE = Exercise("bits_per_code", _bits_inputs, _bits_collect, _bits_judge)


# --------------------------------------------------------------------------------------------
# The sampling loop
# --------------------------------------------------------------------------------------------
def _sampling_inputs(seed: int) -> dict:
    generator(seed)
    prior = _seeded_prior(PEAKED_SEED + seed, PEAKED_K, PEAKED_SCALE)
    return {"seed": seed, **prior_to_inputs(prior)}


def _sampling_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    prior, seed = prior_from_inputs(inputs), inputs["seed"]
    outputs.call("cold", fn, prior, SAMPLES, SAMPLE_SHAPE, temperature=COLD,
                 generator=torch.Generator().manual_seed(seed))
    for i in (0, 1):  # two runs with equally seeded generators
        outputs.call(f"hot{i}", fn, prior, SAMPLES, SAMPLE_SHAPE, temperature=HOT,
                     generator=torch.Generator().manual_seed(seed))
    return outputs


def _sampling_judge(inputs: dict, outputs: Outputs) -> str:
    from .pixelcnn_prior import SampleOptions

    prior = prior_from_inputs(inputs)
    k = prior.config.codebook_size
    greedy = prior.sample(SAMPLES, SAMPLE_SHAPE, options=SampleOptions(temperature=0))  # (n, H, W)
    tensor = as_tensor(outputs.got("cold"), "the samples")
    if tensor.shape == greedy.shape and not tensor.is_floating_point() and \
            not tensor.is_complex() and tensor.numel():
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high >= k:
            raise Mismatch(f"codes must lie in [0, K) = [0, {k}), got values in "
                           f"[{low}, {high}].")
        if low == high == 0 and bool(greedy.any()):
            raise Mismatch("every code is still 0: inside the loop, draw a code for "
                           "position (r, c) and store it in codes[:, r, c].")
    compare(tensor, greedy, "the samples at temperature 1e-3 (they must equal the "
                            "library's greedy samples: is each code drawn from the "
                            "logits at its own position, after the codes before it?)")
    hot = [as_tensor(outputs.got(f"hot{i}"), "the samples") for i in (0, 1)]
    if not torch.equal(hot[0], hot[1]):
        raise Mismatch("two runs with equally seeded generators gave different samples: "
                       "pass `generator=generator` to torch.multinomial (or torch.rand).")
    if hot[0].shape == greedy.shape and not hot[0].is_complex() and \
            torch.equal(hot[0].long(), greedy):
        raise Mismatch("at temperature 1000 the samples still equal the greedy ones: "
                       "divide the logits by the temperature before the softmax.")
    return "greedy limit, reproducible with a generator, uses the temperature"


SAMPLING_LOOP = Exercise("sampling_loop", _sampling_inputs, _sampling_collect, _sampling_judge)


# --------------------------------------------------------------------------------------------
# Notebook 05: diversity, memorisation, surprise
# --------------------------------------------------------------------------------------------
HAMMING_CASES = ("6 random maps", "4 identical maps")


def _hamming_inputs(seed: int) -> dict:
    g = generator(seed)
    random_maps = torch.randint(0, 3, (6, 4, 4), generator=g)
    return {"codes0": random_maps, "codes1": random_maps[:1].repeat(4, 1, 1)}


def _hamming_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for i in range(len(HAMMING_CASES)):
        outputs.call(f"case{i}", fn, inputs[f"codes{i}"].clone())
    return outputs


def _hamming_judge(inputs: dict, outputs: Outputs) -> str:
    from .memorisation import pairwise_hamming as reference

    for i, name in enumerate(HAMMING_CASES):
        codes = inputs[f"codes{i}"]
        expected = reference(codes)
        n, positions = codes.shape[0], codes[0].numel()
        value = as_float(outputs.got(f"case{i}"), "the result")
        if not close(value, expected):
            if close(value, expected * (n - 1) / n):
                raise Mismatch("you average over all N x N pairs, a map against itself "
                               "included: average over the pairs i < j only.")
            if close(value, expected * positions):
                raise Mismatch("that is a count of positions: divide by H x W for the "
                               "fraction that differs.")
            compare_number(value, expected, f"the diversity of {name}")
    return "random and identical code maps"


PAIRWISE_HAMMING = Exercise("pairwise_hamming", _hamming_inputs, _hamming_collect,
                            _hamming_judge)


def _neighbours_inputs(seed: int) -> dict:
    g = generator(seed)
    references = torch.randint(0, 4, (7, 4, 4), generator=g)
    queries = torch.randint(0, 4, (5, 4, 4), generator=g)
    queries[1] = references[5]
    queries[3] = references[2]
    return {"queries": queries, "references": references}


def _neighbours_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    outputs.call("result", fn, inputs["queries"].clone(), inputs["references"].clone())
    return outputs


def _neighbours_judge(inputs: dict, outputs: Outputs) -> str:
    from .memorisation import nearest_neighbours as reference

    expected = reference(inputs["queries"], inputs["references"], metric="hamming")
    got = as_sequence(outputs.got("result"), 2, "return two tensors, (index (N,), distance "
                      f"(N,)); got {outputs.type_name('result')}.")
    index, distance = got
    counts = expected.distance * 16  # 16 = H x W positions
    if equal_if_tensor(distance, counts) and not torch.all(expected.distance == 0):
        raise Mismatch("the distances are counts of differing positions: divide by H x W.")
    compare(distance, expected.distance, "distance (N,)")
    compare(index, expected.index, "index (N,) (ties: the lowest reference index)")
    return "5 queries against 7 references, two exact copies"


NEAREST_NEIGHBOURS = Exercise("nearest_neighbours", _neighbours_inputs, _neighbours_collect,
                              _neighbours_judge)


def _surprise_inputs(seed: int) -> dict:
    g = generator(seed)
    prior = _seeded_prior(SURPRISE_SEED + seed, SURPRISE_K)
    codes = torch.randint(0, SURPRISE_K, (3, 4, 4), generator=g)
    return {"codes": codes, **prior_to_inputs(prior)}


def _surprise_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    outputs.call("result", fn, prior_from_inputs(inputs), inputs["codes"].clone())
    return outputs


def _surprise_judge(inputs: dict, outputs: Outputs) -> str:
    from .analysis import surprise_maps as reference

    expected = reference(prior_from_inputs(inputs), inputs["codes"])
    tensor = as_tensor(outputs.got("result"), "the surprise maps")
    if tensor.shape == expected.shape and tensor.is_floating_point():
        nats = expected.double() * math.log(2)
        if torch.allclose(tensor.double(), nats, rtol=1e-4, atol=1e-5):
            raise Mismatch("those are nats: divide by ln 2 for bits.")
        if torch.allclose(tensor.double(), -expected.double(), rtol=1e-4, atol=1e-5):
            raise Mismatch("the sign is wrong: surprise is -log2 p, which is >= 0.")
    compare(tensor, expected, "the surprise maps (bits)", atol=1e-4, rtol=1e-4)
    return "3 code maps under a small prior"


SURPRISE_MAPS = Exercise("surprise_maps", _surprise_inputs, _surprise_collect, _surprise_judge)

EXERCISES = (CAUSAL_MASK, MASKED_CONV, GATED_BLOCK, BITS_PER_CODE, SAMPLING_LOOP, PAIRWISE_HAMMING,
             NEAREST_NEIGHBOURS, SURPRISE_MAPS)
