"""Notebook 04's assembly exercise: the Gated PixelCNN's forward pass, as a
:class:`vqlesson.check_core.Exercise` (seeded inputs, the call of the student's function, the
judging with a hint for each known mistake).

Reference: :class:`vqlesson.pixelcnn.GatedPixelCNN` (van den Oord et al. 2016, *Conditional Image
Generation with PixelCNN Decoders*, §2.2 and Figure 2: the vertical stack, shifted down one row
before the first block, feeds the horizontal stack, shifted right one column; §2.1 of *Pixel
Recurrent Neural Networks*: mask A in the first layer, mask B after).

The student writes ``gated_forward(net, codes) -> logits`` with the blocks of a library network.
Two checks grade it, both computed by the judge from what the function returned, never from
figures it reports:

1. **causality** (trusted, the definition of an autoregressive model): the function is also
   called on code maps with one position changed; no logit at that position or earlier in raster
   order may move (:func:`leaked_positions`);
2. **the same function as the library's**: on fixed weights its logits must equal
   ``net(codes)``.

The classic mistakes (the vertical stack not shifted down, the horizontal one not shifted right or
shifted in every block: mask A/B confused, the horizontal stack fed from the future) are
recomputed from the library's blocks and get their own hint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .check_core import Exercise, Mismatch, Outputs, as_tensor, compare, generator

#: (num_layers, dilations): a plain three-block network and a dilated four-block one.
FORWARD_CASES = ((3, (1,)), (4, (1, 2)))
FORWARD_K, FORWARD_SHAPE = 6, (2, 5, 6)  # K, codes (B, H, W)
FORWARD_NET = {"embed_dim": 4, "channels": 6, "kernel_size": 3, "first_kernel_size": 3,
               "skip_connections": False}
PROBES = ((2, 3), (1, 0), (4, 5))  # positions (r, c) whose code is changed
LEAK_TOLERANCE = 1e-5  # a logit that moves by more than this has seen the change
NET_KEY = "net{}."  # inputs under this prefix hold a network's weights


def forward_net(case: int, state: dict | None = None):
    """The unconditional :class:`~vqlesson.pixelcnn.GatedPixelCNN` of :data:`FORWARD_CASES`
    ``[case]`` (no skip outputs, so the head reads the last horizontal stack), with ``state``
    loaded when given, in eval mode."""
    from .pixelcnn import GatedPixelCNN, PriorConfig

    layers, dilations = FORWARD_CASES[case]
    net = GatedPixelCNN(PriorConfig(codebook_size=FORWARD_K, num_layers=layers,
                                    dilations=dilations, **FORWARD_NET))
    if state is not None:
        net.load_state_dict(state)
    return net.eval()


def perturbed(codes: Tensor, position: tuple[int, int], codebook_size: int) -> Tensor:
    """A copy of ``codes`` (B, H, W) int64 with the code at ``position`` changed in every map
    (to the next code, modulo K)."""
    out = codes.clone()
    r, c = position
    out[:, r, c] = (out[:, r, c] + 1) % codebook_size
    return out


def leaked_positions(base: Tensor, changed: Tensor, position: tuple[int, int],
                     tolerance: float = LEAK_TOLERANCE) -> Tensor:
    """Where a network's logits broke causality: the positions at or before ``position`` in
    raster order whose logits moved when the code at ``position`` changed.

    Args:
        base, changed: (B, K, H, W) float logits on the codes and on the codes with the one at
            ``position`` changed.
        position: (row, col) of the changed code.
        tolerance: a logit that moves by more than this counts as moved.

    Returns:
        (H, W) bool, True where a logit moved that must not have (all False: causal).
    """
    height, width = base.shape[-2:]
    moved = (changed.double() - base.double()).abs().amax(dim=(0, 1)) > tolerance  # (H, W)
    order = torch.arange(height * width).view(height, width)  # raster index of each position
    return moved & (order <= position[0] * width + position[1])


# --------------------------------------------------------------------------------------------
# The exercise
# --------------------------------------------------------------------------------------------
def _forward_inputs(seed: int) -> dict:
    g = generator(seed)
    inputs: dict = {}
    for i in range(len(FORWARD_CASES)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 10 + i)
            net = forward_net(i)
        for name, tensor in net.state_dict().items():
            inputs[NET_KEY.format(i) + name] = tensor.detach().clone()
        inputs[f"codes{i}"] = torch.randint(0, FORWARD_K, FORWARD_SHAPE, generator=g)
    return inputs


def net_from_inputs(inputs: dict, i: int):
    """The network of case ``i`` held by ``inputs`` (see :data:`FORWARD_CASES`), eval mode."""
    prefix = NET_KEY.format(i)
    return forward_net(i, {k[len(prefix):]: v for k, v in inputs.items() if k.startswith(prefix)})


def _forward_collect(fn: Callable, inputs: dict) -> Outputs:
    outputs = Outputs()
    for i in range(len(FORWARD_CASES)):
        net, codes = net_from_inputs(inputs, i), inputs[f"codes{i}"]
        with torch.no_grad():
            outputs.call(f"case{i}", fn, net, codes.clone())
            for j, position in enumerate(PROBES):
                outputs.call(f"case{i}_probe{j}", fn, net, perturbed(codes, position, FORWARD_K))
    return outputs


def _run(net, v: Tensor, h: Tensor, shift_every_block: bool = False) -> Tensor:
    """The network's blocks and head on already shifted stack inputs ``v``, ``h``."""
    from .pixelcnn import shift_down, shift_right

    for i, block in enumerate(net.blocks):
        if shift_every_block and i > 0:
            v, h = shift_down(v), shift_right(h)
        v, h, _ = block(v, h, None)
    return net.head(h)  # (B, K, H, W)


#: The known mistakes of the exercise, by name, and the hint each gets.
FORWARD_MISTAKES = {
    "no down-shift": "the vertical stack is not shifted down: at row r it sees code row r "
    "itself, so positions to the right of (r, c) leak into its logits (no blind spot, but a "
    "leak). Shift the vertical stack's input down one row before the first block",
    "no right-shift": "the horizontal stack is not shifted right: the first layer sees the code "
    "it must predict (mask B where mask A belongs). Shift the horizontal stack's input right "
    "one column before the first block",
    "shift in every block": "the stacks are shifted before every block: that is mask A in every "
    "layer, so each block loses the position next to it. Shift once, before the first block "
    "(mask A); the later blocks are mask B",
    "horizontal from the future": "the horizontal stack is fed from the future: shifting left "
    "puts column c+1 at column c. Shift right (zeros enter at the left)",
    "vertical from the future": "the vertical stack is shifted up: row r then holds row r+1, "
    "the future. Shift down (zeros enter at the top)",
    "stacks swapped": "the two stack inputs are swapped: the vertical stack gets the input "
    "shifted right, the horizontal one the input shifted down",
}


def mistaken_forward(net, codes: Tensor, mistake: str) -> Tensor:
    """A Gated PixelCNN's forward pass with one of :data:`FORWARD_MISTAKES` made (to show what
    it does beside the correct ``net(codes)``).

    Args:
        net: an unconditional :class:`~vqlesson.pixelcnn.GatedPixelCNN` without skip outputs
            and position (``skip_connections=False``, ``position=False``).
        codes: (B, H, W) int64 in [0, K).
        mistake: a key of :data:`FORWARD_MISTAKES`.

    Returns:
        (B, K, H, W) float logits.

    Raises:
        ValueError: an unknown ``mistake``.
    """
    from .pixelcnn import shift_down, shift_right
    from .validate import check_choice

    check_choice(mistake, "mistake", tuple(FORWARD_MISTAKES))
    x = net.embed(codes)  # (B, E, H, W)
    stacks = {  # (vertical input, horizontal input), each (B, E, H, W)
        "no down-shift": (x, shift_right(x)),
        "no right-shift": (shift_down(x), x),
        "shift in every block": (shift_down(x), shift_right(x)),
        "horizontal from the future": (shift_down(x), F.pad(x, (0, 1, 0, 0))[:, :, :, 1:]),
        "vertical from the future": (F.pad(x, (0, 0, 0, 1))[:, :, 1:, :], shift_right(x)),
        "stacks swapped": (shift_right(x), shift_down(x)),
    }
    v, h = stacks[mistake]
    return _run(net, v, h, shift_every_block=mistake == "shift in every block")


def forward_variants(net, codes: Tensor) -> dict[str, Tensor]:
    """The logits of the known mistakes on ``codes``, keyed by their hint."""
    return {hint: mistaken_forward(net, codes, name) for name, hint in FORWARD_MISTAKES.items()}


def _leak_hint(leaks: Tensor, position: tuple[int, int], case: int) -> str:
    r, c = position
    where = [tuple(p) for p in leaks.nonzero().tolist()]
    same_row_before = any(i == r and j < c for i, j in where)
    itself = (r, c) in where
    detail = ("the logits at the changed position itself moved: the first layer must not see "
              "the code it predicts (shift the horizontal stack right, mask A)" if itself
              and not same_row_before else
              "logits to the left of it in the same row moved: a stack sees the future (the "
              "vertical stack must be shifted down one row, the horizontal one right one "
              "column, each once, before the first block)")
    return (f"causality is broken (case {case}): changing the code at {position} moved the "
            f"logits at {where[:4]}{' ...' if len(where) > 4 else ''}, which come at or before "
            f"it in raster order; {detail}.")


def _forward_judge(inputs: dict, outputs: Outputs) -> str:
    for i in range(len(FORWARD_CASES)):
        net, codes = net_from_inputs(inputs, i), inputs[f"codes{i}"]
        with torch.no_grad():
            expected = net(codes)  # (B, K, H, W)
            got = as_tensor(outputs.got(f"case{i}"), "the logits")
            if got.shape == expected.shape and got.is_floating_point():
                for hint, wrong in forward_variants(net, codes).items():
                    if torch.allclose(got.double(), wrong.double(), rtol=1e-4, atol=1e-5):
                        raise Mismatch(hint + ".")
                for j, position in enumerate(PROBES):  # the trusted check: causality
                    changed = as_tensor(outputs.got(f"case{i}_probe{j}"), "the logits")
                    if changed.shape != got.shape or not changed.is_floating_point():
                        raise Mismatch(f"the logits with the code at {position} changed have "
                                       f"shape {tuple(changed.shape)} ({changed.dtype}), expected "
                                       f"{tuple(got.shape)}.")
                    leaks = leaked_positions(got, changed, position)
                    if bool(leaks.any()):
                        raise Mismatch(_leak_hint(leaks, position, i))
            compare(got, expected, f"the logits (B, K, H, W) of case {i} (against the "
                                   "library's network on the same weights)", atol=1e-4)
    return ("causal (no logit at or before a changed code moved) and equal to the library's "
            "network, with and without dilation")


GATED_FORWARD = Exercise("gated_forward", _forward_inputs, _forward_collect, _forward_judge)

EXERCISES = (GATED_FORWARD,)
