"""The exercises of notebook 06 (the hierarchy's prior), as :class:`vqlesson.check_core.Exercise`
objects: seeded inputs, the call of the student's function, and the comparison with the library's
reference with a hint for each known mistake (notebook 03's are in
:mod:`vqlesson.exercises_hierarchy`, 04-05's in :mod:`vqlesson.exercises_prior`).

References, and the paper they implement (Razavi, van den Oord & Vinyals 2019, *Generating
Diverse High-Fidelity Images with VQ-VAE-2*, §3.2 and Algorithm 2):

- level-by-level sampling, top codes from the top prior, then bottom codes conditioned on them,
  then the decoder: :func:`vqlesson.sampling.sample_codes` and
  :func:`~vqlesson.sampling.decode_codes`;
- which level decides the layout, measured from swapped code maps:
  :func:`vqlesson.experiments.swap_layout`.

Models given to a student's function travel as data: each one's config (a JSON-able dict) and
its weights (tensors), rebuilt on each side; the weights are drawn from the seed (small, untrained
networks: both checks repeat what the library does with them, whatever they learnt).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .check_core import (
    Exercise,
    Mismatch,
    Outputs,
    as_float,
    as_sequence,
    as_tensor,
    close,
    compare,
    compare_number,
)
from .validate import check_int

IMAGE_SIZE = 32  # px: a 4 x 4 top grid and an 8 x 8 bottom grid
K_TOP, K_BOTTOM = 8, 12  # the two codebooks
SAMPLES = 3  # code maps drawn per call
PEAKED = 100.0  # multiplies both priors' output layers: nearly one likely code per position
COND_GAIN = 30.0  # multiplies the bottom prior's top-code embedding: the top codes matter
NLL_MARGIN = 1.0  # bits per code above the library's sample: not drawn given these top codes
SWAP_BATCH = 4  # image pairs of the swap exercise
SWAP_DROPOUT, SWAP_K_BOTTOM = 0.3, 32  # the swap exercise's small VQ-VAE-2 (notebook 03's check)
MODEL_KEY, TOP_KEY, BOTTOM_KEY = "model.", "top.", "bottom."


# --------------------------------------------------------------------------------------------
# Models as data
# --------------------------------------------------------------------------------------------
def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` with weights drawn from ``seed``, the global random state left alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def _to_inputs(module: torch.nn.Module, key: str) -> dict:
    from .checkpoint import config_record

    inputs = {key + "config": config_record(module.config)}
    for name, tensor in module.state_dict().items():
        inputs[key + "w." + name] = tensor.detach().clone()
    return inputs


def _from_inputs(inputs: dict, key: str, model_cls: type, config_cls: type) -> torch.nn.Module:
    from .checkpoint import config_from_record

    module = model_cls(config_from_record(config_cls, inputs[key + "config"]))
    prefix = key + "w."
    module.load_state_dict({k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)})
    return module.eval()


def _vqvae2(inputs: dict):
    from .vqvae2 import VQVAE2, VQVAE2Config

    return _from_inputs(inputs, MODEL_KEY, VQVAE2, VQVAE2Config)


def _priors(inputs: dict) -> tuple:
    from .pixelcnn import PriorConfig
    from .pixelcnn_prior import PixelCNNPrior

    return tuple(_from_inputs(inputs, key, PixelCNNPrior, PriorConfig) for key in (TOP_KEY, BOTTOM_KEY))


def _model_inputs(seed: int, images: Tensor) -> dict:
    """A small VQ-VAE-2 with seeded weights whose codebooks are initialised (k-means, one
    forward pass in training mode, no optimiser step) on ``images`` (N, 3, S, S)."""
    from .configs import vqvae2_config
    from .vqvae2 import VQVAE2

    config = vqvae2_config("ci", image_size=IMAGE_SIZE, codebook_size_top=K_TOP,
                           codebook_size_bottom=K_BOTTOM, bottom_dropout=0.0)

    def build() -> torch.nn.Module:
        model = VQVAE2(config)
        with torch.no_grad():
            model.train()(images)  # the quantisers' k-means initialisation on these images
        return model

    return _to_inputs(_seeded(seed, build), MODEL_KEY)


def _lesions(n: int, seed: int) -> Tensor:
    """(n, 3, S, S) float in [-1, 1]: synthetic lesions of :data:`IMAGE_SIZE` px."""
    from .data.synthetic import SyntheticLesions

    lesions = SyntheticLesions(n, image_size=IMAGE_SIZE, seed=seed)
    return torch.stack([lesions[i][0] for i in range(n)])


# --------------------------------------------------------------------------------------------
# Level-by-level sampling (Algorithm 2)
# --------------------------------------------------------------------------------------------
def _sampling_inputs(seed: int) -> dict:
    from .pixelcnn import PriorConfig
    from .pixelcnn_prior import PixelCNNPrior

    check_int(seed, "seed", 0)
    small = {"embed_dim": 8, "channels": 16, "num_layers": 2, "kernel_size": 3,
             "first_kernel_size": 3}
    top = _seeded(3000 + seed, lambda: PixelCNNPrior(PriorConfig(codebook_size=K_TOP, **small)))
    bottom = _seeded(4000 + seed, lambda: PixelCNNPrior(PriorConfig(
        codebook_size=K_BOTTOM, cond_codebook_size=K_TOP, cond_layers=1, **small)))
    with torch.no_grad():
        for prior in (top, bottom):
            prior.net.head.out.weight.mul_(PEAKED)
            prior.net.head.out.bias.mul_(PEAKED)
        bottom.net.cond_stack.embedding.weight.mul_(COND_GAIN)
    return {"seed": seed, **_model_inputs(1000 + seed, _lesions(16, 1000 + seed)),
            **_to_inputs(top, TOP_KEY),
            **_to_inputs(bottom, BOTTOM_KEY)}


def _sampling_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    model, (top, bottom) = _vqvae2(inputs), _priors(inputs)
    for key in ("result", "again"):  # two calls with equally seeded generators
        outputs.call(key, fn, model, top, bottom, SAMPLES,
                     torch.Generator().manual_seed(int(inputs["seed"])))
    return outputs


def _bits_per_map(prior, codes: Tensor, cond_map: Tensor) -> Tensor:
    """(n,) mean bits per code of each (n, H, W) map under a conditioned prior."""
    with torch.no_grad():
        logits = prior.logits(codes, cond_map=cond_map)  # (n, K, H, W)
    return F.cross_entropy(logits, codes, reduction="none").flatten(1).mean(1) / torch.log(
        torch.tensor(2.0))


def _sampled(outputs: Outputs, key: str) -> Any:
    """The recorded result, an exception of the priors translated into its hint."""
    try:
        return outputs.got(key)
    except Mismatch as error:
        message = str(error)
        if "pass cond_map" in message:
            raise Mismatch("the bottom prior was sampled without the top codes: it models "
                           "p(c_bottom | c_top), so pass cond_map=top (the top codes you just "
                           f"drew). ({message})") from None
        if "cannot be upsampled" in message or "must divide the code grid" in message:
            raise Mismatch("the levels are swapped: the top prior draws the coarse grid "
                           "(model.latent_shapes()[0]), the bottom prior the finer one "
                           f"([1]) given the top codes. ({message})") from None
        raise


def _check_conditioning(inputs: dict, priors: tuple, codes: Tensor, expected: tuple) -> None:
    """Raise the conditioning's hint when the bottom ``codes`` (n, 2h, 2w) were not drawn given
    the expected top codes: drawn given a map of zeros, or unlikely given the top codes."""
    top_prior, bottom_prior = priors
    g = torch.Generator().manual_seed(int(inputs["seed"]))
    top = top_prior.sample(SAMPLES, tuple(expected.top.shape[1:]), generator=g)
    zeros = bottom_prior.sample(SAMPLES, tuple(codes.shape[1:]), cond_map=torch.zeros_like(top),
                                generator=g)
    if torch.equal(codes, zeros):
        raise Mismatch("the bottom codes were drawn given a map of zeros, not the top codes: "
                       "the bottom prior models p(c_bottom | c_top), so pass cond_map=top, the "
                       "top codes you just drew.")
    mine = float(_bits_per_map(bottom_prior, codes, expected.top).mean())
    reference = float(_bits_per_map(bottom_prior, expected.bottom, expected.top).mean())
    if mine > reference + NLL_MARGIN:
        raise Mismatch(f"the bottom codes were not drawn given these top codes: the bottom "
                       f"prior, given them, finds your bottom codes {mine:.1f} bits per code "
                       f"unlikely against {reference:.1f} for its own draws. Pass "
                       "cond_map=top, the top codes you return.")


def _sampling_judge(inputs: dict, outputs: Outputs) -> str:
    from .sampling import decode_codes, sample_codes

    model, priors = _vqvae2(inputs), _priors(inputs)
    expected = sample_codes(model, priors, SAMPLES, generator=torch.Generator().manual_seed(
        int(inputs["seed"])))  # (top (n, h, w), bottom (n, 2h, 2w))
    got = as_sequence(_sampled(outputs, "result"), 3, "return three values: (top, bottom, "
                      "images), the two code maps and their decode.")
    top, bottom, images = (as_tensor(v, what) for v, what in
                           zip(got, ("the top codes", "the bottom codes", "the images")))
    if top.shape == expected.bottom.shape and bottom.shape == expected.top.shape:
        raise Mismatch("the levels are swapped: return (top, bottom, images) with top on the "
                       f"coarse grid {tuple(expected.top.shape)} and bottom on the finer grid "
                       f"{tuple(expected.bottom.shape)}.")
    again = as_sequence(_sampled(outputs, "again"), 3, "return three values.")
    if not all(isinstance(x, Tensor) and x.shape == y.shape and torch.equal(x, y)
               for x, y in zip(again[:2], got[:2])):
        raise Mismatch("two calls with equally seeded generators drew different codes: pass "
                       "generator=generator to both priors' sample().")
    compare(top, expected.top, "the top codes (draw them first, from the top prior, with the "
                               "generator)")
    if bottom.shape == expected.bottom.shape and not torch.equal(bottom, expected.bottom):
        _check_conditioning(inputs, priors, bottom.long().clamp(0, K_BOTTOM - 1), expected)
    compare(bottom, expected.bottom, "the bottom codes (drawn right after the top codes, "
                                     "with the same generator)")
    compare(images, decode_codes(model, (top.long(), bottom.long())).cpu(),
            "the images (decode both levels: model.decode_indices(top, bottom))", atol=1e-4)
    return f"{SAMPLES} samples: top first, bottom given them, both decoded"


SAMPLE_HIERARCHY = Exercise("sample_hierarchy", _sampling_inputs, _sampling_collect,
                            _sampling_judge)


# --------------------------------------------------------------------------------------------
# Which level decides the layout: swapped code maps
# --------------------------------------------------------------------------------------------
def _swap_inputs(seed: int) -> dict:
    from .experiments import train_small_vqvae2

    check_int(seed, "seed", 0)
    small = train_small_vqvae2(SWAP_DROPOUT, SWAP_K_BOTTOM, seed=7000 + seed)  # about 2 s
    x = small.held_out[:2 * SWAP_BATCH]  # (2B, 3, S, S) in [-1, 1]
    return {"a": x[:SWAP_BATCH], "b": x[SWAP_BATCH:], **_to_inputs(small.model, MODEL_KEY)}


def _swap_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    outputs.call("result", fn, _vqvae2(inputs), inputs["a"].clone(), inputs["b"].clone())
    return outputs


def _swap_variants(model, a: Tensor, b: Tensor) -> list[tuple[str, float]]:
    """The known mistakes' figures on the same inputs: [(hint, value)]."""
    with torch.no_grad():
        (ta, ba), (tb, bb) = model.encode(a), model.encode(b)
        ab, ba_, ra, rb = (model.decode_indices(t, m) for t, m in
                           ((ta, bb), (tb, ba), (ta, ba), (tb, bb)))
    pool = a.shape[-1] // ta.shape[-1]

    def share(pairs: list, pooled: bool = True) -> float:
        def d(x: Tensor, y: Tensor) -> Tensor:
            if pooled:
                x, y = F.avg_pool2d(x, pool), F.avg_pool2d(y, pool)
            return (x - y).pow(2).mean()
        d_top = sum(d(h, top) for h, top, _ in pairs) / len(pairs)
        d_bottom = sum(d(h, bot) for h, _, bot in pairs) / len(pairs)
        return float(d_bottom / (d_top + d_bottom))

    both = [(ab, ra, rb), (ba_, rb, ra)]
    one_swap = ("only one swap is measured: average the distances over both, (top of a, bottom "
                "of b) and (top of b, bottom of a)")
    return [
        (("without pooling: the layout is the coarse picture, so average-pool each image to the "
          "top grid (F.avg_pool2d by S / top side) before the distances"), share(both, False)),
        (("measured against the original images: compare with the reconstructions (each set "
          "decoded from its own codes), so that the decoder's own error does not count"),
         share([(ab, a, b), (ba_, b, a)])),
        (("that is the share that follows the *bottom* donor: return d_bottom / (d_top + "
          "d_bottom), 1 when the decode takes the layout of the image whose top codes it got"),
         1 - share(both)),
        (one_swap, share(both[:1])),
        (one_swap, share(both[1:])),
    ]


def _swap_judge(inputs: dict, outputs: Outputs) -> str:
    from .experiments import swap_layout

    model, a, b = _vqvae2(inputs), inputs["a"], inputs["b"]
    expected = swap_layout(model, a, b).top_share
    value = as_float(outputs.got("result"), "the share")
    if not close(value, expected, rel=1e-3, abs_=1e-4):
        for hint, variant in _swap_variants(model, a, b):
            if close(value, variant, rel=1e-3, abs_=1e-4) and not close(variant, expected, 1e-2):
                raise Mismatch(hint + ".")
        compare_number(value, expected, "the share of the layout that follows the top codes",
                       rel=1e-3)
    return f"{SWAP_BATCH} image pairs swapped both ways: top share {expected:.3f}"


SWAP_LEVELS = Exercise("swap_levels", _swap_inputs, _swap_collect, _swap_judge)


EXERCISES = (SAMPLE_HIERARCHY, SWAP_LEVELS)
