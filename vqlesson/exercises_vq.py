"""The exercises of notebook 02 (vector quantisation), as :class:`vqlesson.check_core.Exercise`
objects: seeded inputs, the call of the student's function, and the comparison with the library's
reference with a hint for each known mistake. Notebook 03's are in
:mod:`vqlesson.exercises_hierarchy`.

References, and the paper they implement: nearest-code lookup, straight-through estimator, the
training step's loss (eq. 3) and its gradients, EMA codebook update, reviving a collapsed codebook:
:class:`vqlesson.quantize.VectorQuantizer` (van den Oord, Vinyals & Kavukcuoglu 2017, *Neural
Discrete Representation Learning*, §3.1-3.2 and appendix A.1; k-means initialisation and
dead-code restarts as in the quantiser's module docstring).

Students call these through :mod:`vqlesson.checks` (``checks.check_nearest_code(fn)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .check_core import (NOT_DONE, Exercise, Mismatch, Outputs, Verdict, as_sequence, as_tensor,
                         collect_settings, compare, compare_number, equal_if_tensor,
                         generator)
from .validate import check_int, check_number

NEAREST_CODE_CASES = ((2, 4, 3, 3, 8), (1, 16, 4, 5, 32), (3, 2, 1, 1, 1))  # (B, D, H, W, K)
STRAIGHT_THROUGH_SIZE = (2, 4, 3, 3, 8)  # (B, D, H, W, K)
VQ_STEP_SIZE = (2, 4, 3, 3, 6)  # (B, D, h, w, K) of the training step; images are 2h x 2w
PAPER_BETA = 0.25  # the paper's commitment weight; the step's beta is drawn above it
EMA_SIZE, EMA_DECAY, EMA_EPS = (6, 3), 0.9, 0.1  # (K, D); a large eps, so the smoothing shows
# Revive a collapsed codebook: a quantiser of K codes of size D from init="random" trained on a
# stream of (STEPS x BATCH) vectors drawn around K centres that drift away from the origin.
REVIVE_SIZE, REVIVE_STEPS, REVIVE_BATCH, REVIVE_EVAL = (32, 8), 100, 128, 2048  # (K, D), ...
REVIVE_TARGET = 0.5  # fraction of codes in use on fresh vectors after training


def _quantizer(codebook: Tensor, *cluster_size: Tensor, ema: bool = False, **kwargs):
    """A :class:`VectorQuantizer` holding ``codebook`` (K, D) (and, for EMA, the cluster
    sizes (K,))."""
    from .quantize import QuantizerConfig, VectorQuantizer

    k, d = codebook.shape
    vq = VectorQuantizer(k, d, QuantizerConfig(ema=ema, init="random", **kwargs))
    vq.set_codebook(codebook, *cluster_size)
    return vq


# --------------------------------------------------------------------------------------------
# Nearest-code lookup
# --------------------------------------------------------------------------------------------
def _nearest_code_inputs(seed: int) -> dict:
    g = generator(seed)
    inputs = {}
    for i, (b, d, h, w, k) in enumerate(NEAREST_CODE_CASES):
        inputs[f"z_e{i}"] = torch.randn(b, d, h, w, generator=g)
        inputs[f"codebook{i}"] = torch.randn(k, d, generator=g)
    return inputs


def _nearest_code_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for i in range(len(NEAREST_CODE_CASES)):
        outputs.call(f"case{i}", fn, inputs[f"z_e{i}"].clone(), inputs[f"codebook{i}"].clone())
    return outputs


def _nearest_code_judge(inputs: dict, outputs: Outputs) -> str:
    from .quantize import squared_distances

    for i in range(len(NEAREST_CODE_CASES)):
        z_e, codebook = inputs[f"z_e{i}"], inputs[f"codebook{i}"]
        (b, d, h, w), k = z_e.shape, codebook.shape[0]
        expected = _quantizer(codebook).nearest_indices(z_e)  # (B, H, W)
        tensor = as_tensor(outputs.got(f"case{i}"), "the result")
        if tensor.numel() == expected.numel() and tensor.shape != expected.shape:
            raise Mismatch(f"the result has shape {tuple(tensor.shape)}; one index per "
                           f"position is right, but reshape it to (B, H, W) = "
                           f"{tuple(expected.shape)}.")
        if tensor.shape == expected.shape and not tensor.is_floating_point():
            no_permute = squared_distances(z_e.reshape(-1, d), codebook).argmin(1)
            farthest = squared_distances(
                z_e.permute(0, 2, 3, 1).reshape(-1, d), codebook).argmax(1)  # (B·H·W,)
            if k > 1 and torch.equal(tensor.long(), farthest.view(b, h, w)):
                raise Mismatch("these are the *farthest* codes: the nearest code has the "
                               "smallest distance (argmin).")
            if h * w > 1 and torch.equal(tensor.long(), no_permute.view(b, h, w)) and not \
                    torch.equal(expected, no_permute.view(b, h, w)):
                raise Mismatch("the indices match z_e reshaped without moving D last: "
                               "flatten with z_e.permute(0, 2, 3, 1).reshape(-1, D) so that "
                               "each row is one position's D-vector.")
        compare(tensor, expected, f"the result for z_e {tuple(z_e.shape)} and K = {k}")
    return "3 cases, including K = 1 on a 1x1 grid"


NEAREST_CODE = Exercise("nearest_code", _nearest_code_inputs, _nearest_code_collect,
                        _nearest_code_judge)


# --------------------------------------------------------------------------------------------
# Straight-through estimator
# --------------------------------------------------------------------------------------------
def _straight_through_inputs(seed: int) -> dict:
    g = generator(seed)
    b, d, h, w, k = STRAIGHT_THROUGH_SIZE
    z_data = torch.randn(b, d, h, w, generator=g)
    codes = torch.randn(k, d, generator=g)
    upstream = torch.randn(b, d, h, w, generator=g)  # the decoder's gradient dL/dz_q
    with torch.no_grad():
        indices = _quantizer(codes)(z_data.clone()).indices  # (B, H, W)
    return {"z_data": z_data, "codes": codes, "upstream": upstream, "indices": indices}


def _straight_through_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    codebook = inputs["codes"].clone().requires_grad_(True)
    z_e = inputs["z_data"].clone().requires_grad_(True)
    e = F.embedding(inputs["indices"], codebook)  # (B, H, W, D)
    e = e.permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)
    z_q = outputs.call("z_q", fn, z_e, e)
    if isinstance(z_q, Tensor) and z_q.requires_grad:
        try:
            (z_q * inputs["upstream"]).sum().backward()
            outputs.put("backward", None)
        except Exception as error:  # the hint names the failure
            outputs.fail("backward", f"backpropagating through z_q failed: {error}")
        outputs.put("z_e_grad", z_e.grad)
        outputs.put("codebook_grad", codebook.grad)
    return outputs


def _straight_through_judge(inputs: dict, outputs: Outputs) -> str:
    codes, upstream = inputs["codes"], inputs["upstream"]
    z_ref = inputs["z_data"].clone().requires_grad_(True)
    reference = _quantizer(codes)(z_ref)
    (reference.z_q * upstream).sum().backward()
    z_q = outputs.got("z_q")
    compare(z_q, reference.z_q, "the value of z_q (it must equal the chosen codes e)")
    if not getattr(z_q, "requires_grad", False):
        raise Mismatch("z_q carries no gradient: detach only the difference, "
                       "z_q = z_e + (e - z_e).detach(), so that gradients reach z_e.")
    outputs.got("backward")
    z_e_grad = outputs.got("z_e_grad")
    if z_e_grad is None:
        raise Mismatch("no gradient reached z_e: the straight-through estimator copies "
                       "dL/dz_q onto z_e.")
    compare(z_e_grad, z_ref.grad, "the gradient reaching z_e (it must equal dL/dz_q)")
    codebook_grad = outputs.got("codebook_grad")
    if isinstance(codebook_grad, Tensor) and bool(codebook_grad.abs().gt(0).any()):
        raise Mismatch("the codebook receives a gradient through z_q; in the VQ-VAE it "
                       "learns only from its own loss term (or EMA). Detach e's part: "
                       "z_e + (e - z_e).detach().")
    return "value = e, dL/dz_e = dL/dz_q, no gradient to the codebook through z_q"


STRAIGHT_THROUGH = Exercise("straight_through", _straight_through_inputs,
                            _straight_through_collect, _straight_through_judge)


# --------------------------------------------------------------------------------------------
# The training step: the three loss terms and the straight-through gradient
# --------------------------------------------------------------------------------------------
def _decoder(inputs: dict) -> nn.Module:
    """The exercise's tiny decoder, rebuilt from its weights in ``inputs``: one stride-2
    transposed 4x4 convolution (D -> 3 channels) and a tanh, (B, D, h, w) -> (B, 3, 2h, 2w)."""
    d = inputs["decoder_weight"].shape[0]
    conv = nn.ConvTranspose2d(d, 3, kernel_size=4, stride=2, padding=1)
    with torch.no_grad():
        conv.weight.copy_(inputs["decoder_weight"])
        conv.bias.copy_(inputs["decoder_bias"])
    return nn.Sequential(conv, nn.Tanh())


def _vq_step_inputs(seed: int) -> dict:
    g = generator(seed)
    b, d, h, w, k = VQ_STEP_SIZE
    return {"x": torch.rand(b, 3, 2 * h, 2 * w, generator=g) * 2 - 1,  # (B, 3, S, S) in [-1, 1]
            "z_e": torch.randn(b, d, h, w, generator=g),
            "codebook": torch.randn(k, d, generator=g),
            "decoder_weight": torch.randn(d, 3, 4, 4, generator=g) * 0.3,
            "decoder_bias": torch.randn(3, generator=g) * 0.1,
            "beta": round(0.3 + 0.5 * float(torch.rand(1, generator=g)), 2)}  # not PAPER_BETA


def _vq_step_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    z_e = inputs["z_e"].clone().requires_grad_(True)
    codebook = inputs["codebook"].clone().requires_grad_(True)
    decoder = _decoder(inputs)
    loss = outputs.call("loss", fn, inputs["x"].clone(), z_e, codebook, decoder, inputs["beta"])
    if isinstance(loss, Tensor) and loss.requires_grad and loss.numel() == 1:
        try:
            loss.reshape(()).backward()
            outputs.put("backward", None)
        except Exception as error:  # the hint names the failure
            outputs.fail("backward", f"backpropagating from your loss failed: {error}")
        outputs.put("z_e_grad", z_e.grad)
        outputs.put("codebook_grad", codebook.grad)
        outputs.put("decoder_grad", decoder[0].weight.grad)
    return outputs


def _vq_step_grads(inputs: dict, mistake: str | None = None) -> tuple[float, dict]:
    """The loss and its gradients (``z_e``, ``codebook``, ``decoder``) on ``inputs``: the
    library's (:class:`VectorQuantizer` without EMA, then the decoder) when ``mistake`` is
    ``None``, otherwise the known mistake of that name (:data:`VQ_STEP_MISTAKES`)."""
    x, beta = inputs["x"], inputs["beta"]
    z_e = inputs["z_e"].clone().requires_grad_(True)
    codebook = inputs["codebook"].clone()
    decoder = _decoder(inputs)
    if mistake is None:
        vq = _quantizer(codebook, beta=beta).eval()  # no state changes, same loss and estimator
        out = vq(z_e)
        loss = F.mse_loss(decoder(out.z_q), x) + out.loss
        codebook_leaf = vq.embedding
    else:
        codebook_leaf = codebook.requires_grad_(True)
        indices = _quantizer(codebook.detach()).nearest_indices(z_e.detach())  # (B, h, w)
        e = F.embedding(indices, codebook_leaf).permute(0, 3, 1, 2)  # (B, h, w, D) -> (B, D, h, w)
        loss = _mistaken_loss(mistake, x, z_e, e, decoder, beta)
    loss.backward()
    grads = {"z_e": z_e.grad, "codebook": codebook_leaf.grad, "decoder": decoder[0].weight.grad}
    return float(loss.detach()), {k: torch.zeros(0) if v is None else v for k, v in grads.items()}


def _mistaken_loss(mistake: str, x: Tensor, z_e: Tensor, e: Tensor, decoder: nn.Module,
                   beta: float) -> Tensor:
    """The loss as a known mistake writes it (names in :data:`VQ_STEP_MISTAKES`)."""
    z_q = e if mistake == "no straight-through" else z_e + (e - z_e).detach()
    if mistake == "sum, not mean":
        return ((decoder(z_q) - x).pow(2).sum() + (e - z_e.detach()).pow(2).sum()
                + beta * (z_e - e.detach()).pow(2).sum())
    recon = F.mse_loss(decoder(z_q), x)
    codebook_term, commitment = F.mse_loss(e, z_e.detach()), F.mse_loss(z_e, e.detach())
    return {
        "terms swapped": recon + beta * codebook_term + commitment,
        "beta on both terms": recon + beta * (codebook_term + commitment),
        "no stop-gradient": recon + (1 + beta) * F.mse_loss(z_e, e),
        "no codebook term": recon + beta * commitment,
        "no commitment term": recon + codebook_term,
        "no straight-through": recon + codebook_term + beta * commitment,
        "beta fixed": recon + codebook_term + PAPER_BETA * commitment,
    }[mistake]


VQ_STEP_MISTAKES = {
    "terms swapped": "beta weighs the wrong term (the codebook and commitment terms are swapped): "
                     "the codebook term ||sg[z_e] - e||² has weight 1 and moves the codes, "
                     "beta x the commitment term ||z_e - sg[e]||² moves the encoder.",
    "beta on both terms": "beta multiplies both quantiser terms: only the commitment term "
                          "||z_e - sg[e]||² is weighted by beta; the codebook term has weight 1.",
    "no stop-gradient": "a stop-gradient is missing: ||z_e - e||² without .detach() sends "
                        "(1 + beta) x the gradient to both sides. Detach z_e in the codebook "
                        "term and e in the commitment term.",
    "no codebook term": "the codebook gets no gradient: add the codebook term "
                        "||sg[z_e] - e||² = F.mse_loss(e, z_e.detach()) (here the codebook learns "
                        "by its loss, not by EMA).",
    "no commitment term": "the commitment term beta x ||z_e - sg[e]||² is missing: the encoder "
                          "gets only the reconstruction's gradient.",
    "no straight-through": "the encoder gets no gradient from the reconstruction: the decoder "
                           "reads e itself. Decode z_q = z_e + (e - z_e).detach(), whose gradient "
                           "goes straight through to z_e.",
    "beta fixed": f"the commitment weight is the paper's {PAPER_BETA}, not the `beta` argument: "
                  "use the beta you are given.",
    "sum, not mean": "every gradient is too large: the paper's terms are mean squared errors "
                     "(F.mse_loss averages), not sums.",
}


def _vq_step_judge(inputs: dict, outputs: Outputs) -> str:
    value, reference = _vq_step_grads(inputs)
    got = outputs.got("loss")
    if got is None:
        raise Mismatch(NOT_DONE)
    if not isinstance(got, Tensor):
        raise Mismatch("return the loss as a scalar tensor (recon + codebook + beta x "
                       f"commitment), so that it can be backpropagated; got "
                       f"{outputs.type_name('loss')}.")
    if got.numel() != 1:
        raise Mismatch(f"the loss has shape {tuple(got.shape)}; return one scalar tensor, the "
                       "sum of the three (mean squared) terms.")
    if not got.requires_grad:
        raise Mismatch("the loss carries no gradient: compute it from z_e, the codebook and the "
                       "decoder's output without torch.no_grad() or .detach() on the result.")
    outputs.got("backward")
    student = {name: outputs.got(f"{name}_grad") for name in reference}
    if all(equal_if_tensor(student[name], ref) or (ref.numel() == 0 and student[name] is None)
           for name, ref in reference.items()):
        return f"loss {value:.4f} and its gradients to z_e, the codebook and the decoder"
    for mistake, hint in VQ_STEP_MISTAKES.items():
        _, wrong = _vq_step_grads(inputs, mistake)
        if all(equal_if_tensor(student[n], wrong[n]) if wrong[n].numel()
               else student[n] is None or not bool(student[n].abs().gt(0).any())
               for n in wrong):
            raise Mismatch(hint)
    compare_number(got, value, "the loss value")
    for name, what in (("z_e", "the gradient reaching z_e (the encoder)"),
                       ("codebook", "the gradient reaching the codebook"),
                       ("decoder", "the gradient reaching the decoder's weights")):
        if student[name] is None:
            raise Mismatch(f"{what} is missing: no gradient reached it.")
        compare(student[name], reference[name], what)
    return "loss and gradients"  # not reached: some gradient differed above


VQVAE_LOSS = Exercise("vqvae_loss", _vq_step_inputs, _vq_step_collect, _vq_step_judge)


# --------------------------------------------------------------------------------------------
# EMA codebook update
# --------------------------------------------------------------------------------------------
def _ema_inputs(seed: int) -> dict:
    g = generator(seed)
    k, d = EMA_SIZE
    cluster_size = torch.rand(k, generator=g) * 4 + 0.5
    cluster_size[0] = 1e-3  # a code that has almost never been used ...
    embed_sum = torch.randn(k, d, generator=g) * cluster_size[:, None]
    counts = torch.randint(1, 5, (k,), generator=g).float()
    counts[0] = 0.0  # ... and is unused in this batch too
    sums = torch.randn(k, d, generator=g) * counts[:, None]
    return {"cluster_size": cluster_size, "embed_sum": embed_sum, "counts": counts,
            "sums": sums, "decay": EMA_DECAY, "eps": EMA_EPS}


def _ema_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    outputs.call("result", fn, inputs["cluster_size"].clone(), inputs["embed_sum"].clone(),
                 inputs["counts"].clone(), inputs["sums"].clone(), inputs["decay"],
                 inputs["eps"])
    return outputs


def _ema_judge(inputs: dict, outputs: Outputs) -> str:
    cluster_size, embed_sum = inputs["cluster_size"], inputs["embed_sum"]
    counts, decay = inputs["counts"], inputs["decay"]
    vq = _quantizer(embed_sum / cluster_size[:, None], cluster_size, ema=True, decay=decay,
                    eps=inputs["eps"])
    vq.ema_update(counts, inputs["sums"])
    expected = (vq.ema_cluster_size, vq.ema_embed_sum, vq.codebook)
    got = as_sequence(outputs.got("result"), 3,
                      "return three tensors: (cluster_size (K,), embed_sum (K, D), "
                      f"codebook (K, D)); got {outputs.type_name('result')}.")
    new_n, new_m, new_codes = got
    swapped = decay * counts + (1 - decay) * cluster_size
    if equal_if_tensor(new_n, swapped):
        raise Mismatch("the decay weights are swapped: the running average keeps `decay` "
                       "of its old value and takes `1 - decay` of the batch statistics.")
    compare(new_n, expected[0], "cluster_size (K,)")
    compare(new_m, expected[1], "embed_sum (K, D)")
    unsmoothed = expected[1] / expected[0][:, None]
    if not torch.allclose(unsmoothed, expected[2]) and equal_if_tensor(new_codes, unsmoothed):
        raise Mismatch("the codebook is embed_sum / cluster_size without Laplace smoothing: "
                       "use N~ = (N + eps) / (sum(N) + K eps) * sum(N), so that an unused "
                       "code never divides by zero.")
    compare(new_codes, expected[2], "codebook (K, D)")
    return "cluster sizes, sums and smoothed codebook, with an unused code"


EMA_UPDATE = Exercise("ema_update", _ema_inputs, _ema_collect, _ema_judge)


# --------------------------------------------------------------------------------------------
# An open exercise: revive a collapsed codebook (graded by a measured run, not a comparison)
# --------------------------------------------------------------------------------------------
def _revive_inputs(seed: int) -> dict:
    g = generator(seed)
    k, d = REVIVE_SIZE
    return {"centres": torch.randn(k, d, generator=g) * 2,  # (K, D) cluster centres
            "drift": torch.randn(d, generator=g) * 2,       # (D,) where the encoder drifts
            "stream_seed": seed}


def _revive_settings(got: Any) -> tuple[int | None, float]:
    """``(restart_dead_after, decay)`` from what the student returned, or a hint."""
    restart, decay = as_sequence(
        got, 2, "return two values: (restart_dead_after, decay), e.g. (None, 0.99).")
    try:
        check_int(restart, "restart_dead_after", 1, none_ok=True)
        decay = check_number(decay, "decay", 0, 1, high_open=True)
    except ValueError as error:
        raise Mismatch(f"{error}.") from None
    return restart, decay


def revive_active_fraction(inputs: dict, restart_dead_after: int | None, decay: float) -> float:
    """Train an EMA :class:`VectorQuantizer` from ``init="random"`` with these settings on the
    seeded drifting stream of ``inputs`` (:data:`REVIVE_STEPS` batches) and return the fraction
    of its K codes used on fresh vectors from the stream's end (in [0, 1])."""
    from .quantize import QuantizerConfig, VectorQuantizer

    k, d = REVIVE_SIZE
    g = generator(int(inputs["stream_seed"]))
    centres, drift = inputs["centres"], inputs["drift"]

    def batch(n: int, t: float) -> Tensor:
        chosen = torch.randint(k, (n,), generator=g)  # (n,)
        x = centres[chosen] + 0.2 * torch.randn(n, d, generator=g) + drift * (1 + t)  # (n, D)
        return x.view(n, d, 1, 1)  # (n, D, 1, 1): n positions of a 1x1 grid

    state = torch.random.get_rng_state()
    torch.manual_seed(int(inputs["stream_seed"]))  # the restarts draw from torch's generator
    try:
        config = QuantizerConfig(ema=True, decay=decay, init="random",
                                 restart_dead_after=restart_dead_after)
        vq = VectorQuantizer(k, d, config).train()
        for step in range(REVIVE_STEPS):
            vq(batch(REVIVE_BATCH, step / REVIVE_STEPS))
        vq.eval().reset_usage()
        vq(batch(REVIVE_EVAL, 1.0))
        return vq.active_fraction()
    finally:
        torch.random.set_rng_state(state)


def _revive_judge(inputs: dict, outputs: Outputs) -> Verdict:
    restart, decay = _revive_settings(outputs.got("settings"))
    active = revive_active_fraction(inputs, restart, decay)
    measured = {"active_fraction": active}
    if active < REVIVE_TARGET:
        cure = ("codes that no vector visits stay dead without restarts: set "
                "restart_dead_after" if restart is None else
                "restart dead codes sooner (a smaller restart_dead_after)")
        raise Mismatch(f"only {active:.0%} of the codes are in use after training from "
                       f"init='random' (target {REVIVE_TARGET:.0%}); {cure}.", measured)
    return Verdict(f"{active:.0%} of the codes in use from init='random' "
                   f"(restart_dead_after={restart}, decay={decay})", measured)


REVIVE_CODEBOOK = Exercise("revive_codebook", _revive_inputs, collect_settings, _revive_judge)


EXERCISES = (NEAREST_CODE, STRAIGHT_THROUGH, VQVAE_LOSS, EMA_UPDATE, REVIVE_CODEBOOK)
