"""The autoregressive prior over VQ-VAE code maps: likelihood in bits and sampling.

A trained VQ-VAE turns an image into a map of codes (B, H, W), integers in ``[0, K)``. The prior
models ``p(codes) = prod_i p(code_i | code_<i)`` in raster order (row by row, left to right) with
one of the networks of :mod:`vqlesson.pixelcnn`, so new code maps can be sampled position by
position and decoded into images.

Implements:

- van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016), *Conditional
  Image Generation with PixelCNN Decoders*, §2 and §3.1: the prior is trained by maximum
  likelihood, a softmax over the K codes at every position, and reported in bits (here bits per
  code, :func:`nll`, and bits per image dimension, :func:`bits_per_dim`); samples are drawn one
  position at a time from the conditional distributions, optionally given a class label or a
  conditioning map (§2.3).
- Ramachandran, Le Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell & Huang
  (2017), *Fast Generation for Convolutional Autoregressive Models*: recompute only what the next
  position can see. For the gated network the vertical stack is computed once per row (on the
  rows its receptive field reaches) and only the horizontal stack runs per position
  (:func:`cached_logits_fn`); for the plain network the network runs on the window of its
  receptive field (:func:`windowed_logits_fn`). The fast and the naive sampler
  (:func:`naive_logits_fn`, the whole network per position) draw the same random numbers in the
  same order, so with the same generator they give identical samples. (The two compute the same
  sums on differently sized inputs, for which PyTorch may pick kernels that round differently,
  e.g. for a batch of one on the CPU: the logits then agree to about 1e-7, and a sample could only
  differ on a tie that close.)

The loss is the categorical cross-entropy over the K codes (softmax over K logits per position).
Codes are *categories*: code 17 is not "close" to code 18, so regressing them with a mean squared
error would be wrong, and so would a binary cross-entropy (there are K classes per position, not
K independent yes/no variables).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .pixelcnn import GatedPixelCNN, PixelCNN, PriorConfig, PriorNetwork, check_condition
from .runtime import eval_mode, model_device
from .validate import check_codes, check_int, check_number

LN2 = math.log(2.0)

#: ``(codes (n, H, W), row, col) -> logits (n, K)`` at one position (see :func:`naive_logits_fn`).
LogitsAt = Callable[[Tensor, int, int], Tensor]


# --------------------------------------------------------------------------------------------
# The likelihood in bits
# --------------------------------------------------------------------------------------------
def nll(logits: Tensor, codes: Tensor, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of code maps in **bits per code**.

    The categorical cross-entropy (softmax over the K logits of each position) in nats, divided
    by ln 2. Codes are categories, so this, not a mean squared error on the codes, is the
    right loss; a model that predicts every code with probability 1/K scores log2 K bits.

    Args:
        logits: (B, K, H, W) float, unnormalised log-probabilities.
        codes: (B, H, W) int64 in [0, K), the observed codes.
        reduction: ``"mean"`` (scalar, mean over all positions and images) or ``"none"``
            ((B, H, W), bits for each position).

    Returns:
        Bits per code, >= 0 (differentiable).

    Raises:
        ValueError: mismatched shapes or an unknown ``reduction``.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if logits.dim() != 4 or codes.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits (B, K, H, W) and codes (B, H, W) do not match: logits {tuple(logits.shape)}, "
            f"codes {tuple(codes.shape)}"
        )
    nats = F.cross_entropy(logits.float(), codes, reduction=reduction)
    return nats / LN2


def bits_per_dim(bits_per_code: float | Tensor, codes_per_image: int,
                 image_dims: int | tuple[int, ...]) -> float | Tensor:
    """Bits per image dimension, the unit of the likelihood literature (e.g. PixelCNN on CIFAR-10).

    ``bits_per_code * codes_per_image / image_dims``: the bits the prior needs for one image's code
    map, spread over its sub-pixels. This counts the prior's cost only (the VQ-VAE decoder's
    reconstruction term is left out), so it is a lower bound on a full model's bits per dim.

    Args:
        bits_per_code: from :func:`nll` (float or scalar tensor).
        codes_per_image: H·W of the code map (for VQ-VAE-2, top plus bottom positions).
        image_dims: the number of sub-pixels 3·H·W of the image, or its shape, e.g. (3, 64, 64).

    Raises:
        ValueError: a count that is not positive.
    """
    is_shape = isinstance(image_dims, (tuple, list, torch.Size))
    dims = math.prod(image_dims) if is_shape else image_dims
    if not isinstance(codes_per_image, int) or codes_per_image < 1:
        raise ValueError(f"codes_per_image must be an int >= 1, got {codes_per_image!r}")
    if not isinstance(dims, int) or dims < 1:
        raise ValueError(
            f"image_dims must be a positive int or a shape like (3, H, W), got {image_dims!r}"
        )
    return bits_per_code * codes_per_image / dims


class PriorOutput(NamedTuple):
    """What :meth:`PixelCNNPrior.forward` returns.

    Attributes:
        logits: (B, K, H, W) float, unnormalised log-probabilities of each code at each position.
        loss: scalar, categorical cross-entropy in nats per code (minimise this).
        bits_per_code: scalar, the same in bits (``loss / ln 2``, detached: a metric); log2 K
            for a uniform guess.
    """

    logits: Tensor
    loss: Tensor
    bits_per_code: Tensor


# --------------------------------------------------------------------------------------------
# Per-position logits for the samplers: naive, windowed (plain), cached (gated)
# --------------------------------------------------------------------------------------------
def _crop(t: Tensor | None, rows: slice, cols: slice) -> Tensor | None:
    """Crop a per-block conditioning bias; a (B, C, 1, 1) label-only bias broadcasts as it is."""
    if t is None or (t.shape[-2] == 1 and t.shape[-1] == 1):
        return t
    return t[:, :, rows, cols]


def naive_logits_fn(net: PriorNetwork, block_conds: list[Tensor | None]) -> LogitsAt:
    """``(codes (n, H, W), row, col) -> (n, K)``: the whole network on the whole grid, the
    logits at (row, col). ``block_conds`` from ``net.block_conditions``."""
    def logits_at(codes: Tensor, row: int, col: int) -> Tensor:
        return net.run(net.embed(codes), block_conds)[:, :, row, col]

    return logits_at


def windowed_logits_fn(net: PriorNetwork, block_conds: list[Tensor | None]) -> LogitsAt:
    """Like :func:`naive_logits_fn`, but the network runs only on the window of the position's
    receptive field (rows ``[row - S, row]``, columns ``[col - S, col + S]``,
    S = ``config.receptive_reach``). Call in raster order with the codes before (row, col) final."""
    s = net.config.receptive_reach

    def logits_at(codes: Tensor, row: int, col: int) -> Tensor:
        r0, c0 = max(0, row - s), max(0, col - s)
        rows, cols = slice(r0, row + 1), slice(c0, col + s + 1)
        conds = [_crop(t, rows, cols) for t in block_conds]
        return net.run(net.embed(codes[:, rows, cols]), conds)[:, :, row - r0, col - c0]

    return logits_at


def cached_logits_fn(net: GatedPixelCNN, block_conds: list[Tensor | None]) -> LogitsAt:
    """Like :func:`naive_logits_fn` for the gated network, but the vertical stack (which only
    sees rows above) runs once per row on rows ``[row - S - 1, row]`` and is cached; per
    position only the horizontal stack runs, on columns ``[col - S - 1, col]`` of the current
    row (Ramachandran et al. 2017). Call in raster order with the codes before (row, col) final."""
    reach = net.config.receptive_reach + 1  # + 1: the input shift
    cache: dict[str, object] = {"row": None, "links": None}

    def logits_at(codes: Tensor, row: int, col: int) -> Tensor:
        if cache["row"] != row:  # codes of all rows above are final now
            rows = slice(max(0, row - reach), row + 1)
            conds = [_crop(t, rows, slice(None)) for t in block_conds]
            links = net.vertical_stack(net.embed(codes[:, rows]), conds)  # (n, 2C, rows, W) each
            cache["row"] = row
            cache["links"] = [link[:, :, -1:] for link in links]  # (n, 2C, 1, W) each
        # Columns [c0, c1): those col can see, at least two wide where the grid allows
        # (columns right of col cannot change it): PyTorch picks other kernels for tiny maps,
        # which round differently; two columns keep the logits equal to the full network's.
        c0 = max(0, col - reach)
        c1 = min(codes.shape[2], max(col + 1, c0 + 2))
        cols = slice(c0, c1)
        conds = [_crop(t, slice(row, row + 1), cols) for t in block_conds]
        links = [link[:, :, :, cols] for link in cache["links"]]  # (n, 2C, 1, c1 - c0)
        x = net.embed(codes[:, row:row + 1, cols])  # (n, E, 1, c1 - c0)
        return net.horizontal_stack(x, links, conds)[:, :, 0, col - c0]  # (n, K)

    return logits_at


def fast_logits_fn(net: PriorNetwork, block_conds: list[Tensor | None]) -> LogitsAt:
    """The fast per-position logits of ``net``: :func:`cached_logits_fn` for a
    :class:`~vqlesson.pixelcnn.GatedPixelCNN`, :func:`windowed_logits_fn` otherwise. Equal to
    :func:`naive_logits_fn` up to rounding."""
    if isinstance(net, GatedPixelCNN):
        return cached_logits_fn(net, block_conds)
    return windowed_logits_fn(net, block_conds)


def _choose_codes(logits: Tensor, uniforms: Tensor, temperature: float,
                  top_k: int | None) -> Tensor:
    """One categorical draw per row by the Gumbel-max trick.

    ``logits`` (n, K), ``uniforms`` (n, K) in [0, 1) -> (n,) int64. ``argmax(logits / T + g)``
    with Gumbel noise ``g = -log(-log(u))`` samples ``softmax(logits / T)``; ``T = 0`` is the
    argmax (greedy). ``top_k`` keeps the k largest logits (ties with the k-th are kept).
    """
    logits = logits.float()
    if top_k is not None and top_k < logits.shape[1]:
        kth = logits.topk(top_k, dim=1).values[:, -1:]  # (n, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if temperature == 0:
        return logits.argmax(dim=1)
    tiny = torch.finfo(torch.float32).tiny
    gumbel = -torch.log(-torch.log(uniforms.float().clamp(min=tiny)))  # (n, K)
    return (logits / temperature + gumbel).argmax(dim=1)


# --------------------------------------------------------------------------------------------
# The arguments of sample(): how to draw, what to keep
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleOptions:
    """How :meth:`PixelCNNPrior.sample` draws: ``temperature`` divides the logits (1: the
    model's distribution, < 1: sharper, 0: greedy argmax; a finite number >= 0), ``top_k``
    keeps the k most likely codes at each position (an int in [1, K]; ``None``: all K),
    ``fast`` runs only the receptive field per position (``False``: the whole network, the
    same samples, slower), ``progress`` shows a tqdm bar over the rows.

    Raises:
        ValueError: ``temperature`` or ``top_k`` out of range.
    """

    temperature: float = 1.0
    top_k: int | None = None
    fast: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        check_number(self.temperature, "temperature", 0,
                     note="1: the model's distribution, < 1: sharper, 0: greedy argmax")
        check_int(self.top_k, "top_k", 1, none_ok=True)


@dataclass(frozen=True)
class Completion:
    """Codes :meth:`PixelCNNPrior.sample` keeps (it samples only the other positions):
    ``prefix``, (n, H, W) int64 codes in [0, K), and either ``start=(row, col)`` (keep the codes
    before it in raster order; ``(H // 2, 0)`` keeps the top half) or ``known``, an (n, H, W) or
    (H, W) bool mask (keep the True positions)."""

    prefix: Tensor
    start: tuple[int, int] | None = None
    known: Tensor | None = None

    def mask(self, n: int, k: int) -> Tensor:
        """The (n, H, W) bool mask of the kept positions, the prefix checked against ``n``
        samples and K = ``k`` codes.

        Raises:
            ValueError, TypeError: a missing or bad ``prefix``, not exactly one of ``start`` and
                ``known``, ``start`` outside the grid, a ``known`` that is not a bool mask of
                the grid (each error names the field).
        """
        if self.prefix is None:
            raise ValueError("a Completion needs prefix=(n, H, W) codes to keep")
        check_codes(self.prefix, k, "prefix", int64=True, nonempty=True)
        (batch, height, width), start, known = self.prefix.shape, self.start, self.known
        if batch != n:
            raise ValueError(f"prefix must have shape (n, H, W) with n = {n}, got "
                             f"{(batch, height, width)}")
        if (start is None) == (known is None):
            raise ValueError("a Completion takes exactly one of start=(row, col) (keep the codes "
                             "before it) or known=(n, H, W) / (H, W) bool (keep the True ones)")
        if start is not None:
            if not (isinstance(start, (tuple, list)) and len(start) == 2
                    and all(isinstance(v, int) for v in start) and 0 <= start[1] < width
                    and 0 <= start[0] * width + start[1] <= height * width):
                raise ValueError(f"start must be (row, col) inside the grid ({height}, {width}), "
                                 f"got {start!r}")
            known = torch.arange(height * width).view(height, width) < start[0] * width + start[1]
        if not isinstance(known, Tensor) or known.dtype != torch.bool:
            raise TypeError("known must be a bool tensor of shape (n, H, W) or (H, W)")
        if known.shape not in ((height, width), (n, height, width)):
            raise ValueError(f"known must have shape ({n}, {height}, {width}) or ({height}, "
                             f"{width}), got {tuple(known.shape)}")
        return known.expand(n, height, width)  # (H, W) or (n, H, W) -> (n, H, W)


def _broadcast_condition(n: int, label: object, cond_map: object, device: torch.device
                         ) -> tuple[object, object]:
    """An int label becomes (n,) int64, a (1,) label (n,), a (h, w) or (1, h, w) map (n, h, w);
    tensors move to ``device``. Anything else is left for ``check_condition`` to reject."""
    if isinstance(label, int) and not isinstance(label, bool):
        label = torch.tensor([label])
    if isinstance(label, Tensor):
        label = (label.expand(n) if label.shape == (1,) else label).to(device)  # (n,)
    if isinstance(cond_map, Tensor):
        cond_map = cond_map[None] if cond_map.dim() == 2 else cond_map  # (h, w) -> (1, h, w)
        cond_map = cond_map.expand(n, -1, -1) if cond_map.shape[0] == 1 else cond_map
        cond_map = cond_map.to(device)  # (n, h, w)
    return label, cond_map


# --------------------------------------------------------------------------------------------
# The priors: what every autoregressive prior shares (loss, sampler), and the PixelCNN one
# --------------------------------------------------------------------------------------------
class AutoregressivePrior(nn.Module):
    """What every prior over code maps shares: the loss in bits and the sampler. A subclass
    (:class:`PixelCNNPrior`, :class:`~vqlesson.transformer_prior.TransformerPrior`) sets
    ``self.config`` (with ``codebook_size``, ``num_classes`` and ``cond_codebook_size``) and
    implements :meth:`logits` and :meth:`logits_fn`; training
    (:func:`~vqlesson.prior.train_prior`), sampling and checkpoints then work alike.

    ``forward(codes, label=None, cond_map=None)`` -> :class:`PriorOutput`;
    ``sample(n, shape, ...)`` -> (n, H, W) int64 codes.
    """

    config: object

    def logits(self, codes: Tensor, label: Tensor | None = None,
               cond_map: Tensor | None = None) -> Tensor:
        """(B, H, W) int64 codes -> (B, K, H, W) logits, position i seeing codes < i only."""
        raise NotImplementedError

    def logits_fn(self, label: Tensor | None, cond_map: Tensor | None, height: int, width: int,
                  fast: bool) -> LogitsAt:
        """The per-position logits :meth:`sample` calls in raster order, for checked
        conditioning on the model's device: the whole network per position (``fast=False``) or
        the model's fast path, which must give the same logits up to rounding."""
        raise NotImplementedError

    def forward(self, codes: Tensor, label: Tensor | None = None,
                cond_map: Tensor | None = None) -> PriorOutput:
        """Logits and the categorical cross-entropy of ``codes`` under the prior.

        Args:
            codes: (B, H, W) int64 in [0, K).
            label: (B,) int64 in [0, num_classes), iff the prior is class-conditional.
            cond_map: (B, h, w) int64 in [0, cond_codebook_size), iff spatially conditioned.

        Returns:
            :class:`PriorOutput` (loss in nats per code, bits_per_code in bits).

        Raises:
            TypeError, ValueError: codes or conditioning of the wrong dtype or shape. Values
                are checked where they enter (code sets, :meth:`sample`), not on this training
                path.
        """
        logits = self.logits(codes, label, cond_map)  # (B, K, H, W)
        loss = F.cross_entropy(logits.float(), codes)
        return PriorOutput(logits=logits, loss=loss, bits_per_code=loss.detach() / LN2)

    # ---- sampling ---------------------------------------------------------------------------
    def _sampling_inputs(self, n: object, shape: object, label: object, cond_map: object,
                         generator: object, options: object, completion: object
                         ) -> tuple[int, int, object, object, Tensor | None]:
        """Check :meth:`sample`'s arguments, each error naming its argument (the values of the
        conditioning and the prefix too: they enter here) -> ``(H, W, label, cond_map, known)``."""
        check_int(n, "n (number of samples)", 1)
        if not (isinstance(options, SampleOptions)
                and isinstance(completion, (Completion, type(None)))):
            raise TypeError(f"options must be a SampleOptions and completion a Completion or None, "
                            f"got {type(options).__name__} and {type(completion).__name__}")
        check_int(options.top_k, "top_k", 1, self.config.codebook_size, none_ok=True)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got "
                            f"{type(generator).__name__}")
        known = None if completion is None else completion.mask(n, self.config.codebook_size)
        grid = tuple(known.shape[1:]) if known is not None and shape is None else shape
        if (not isinstance(grid, (tuple, list)) or len(grid) != 2
                or not all(isinstance(s, int) and s >= 1 for s in grid)
                or (known is not None and tuple(grid) != tuple(known.shape[1:]))):
            raise ValueError(f"shape must be (H, W), two ints >= 1 (the prefix's grid with a "
                             f"completion), got {shape!r}")
        label, cond_map = _broadcast_condition(n, label, cond_map, model_device(self))
        check_condition(self.config, label, cond_map, n, *grid, ranges=True)
        return *grid, label, cond_map, known

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int] | None = None, *,
               label: int | Tensor | None = None, cond_map: Tensor | None = None,
               generator: torch.Generator | None = None,
               options: SampleOptions = SampleOptions(),
               completion: Completion | None = None) -> Tensor:
        """Draw code maps position by position in raster order.

        Per position, ``n`` x K uniforms are drawn from ``generator`` (always, also where the
        code is kept), and a code is chosen by the Gumbel-max trick: the same draws in the same
        order for ``options.fast`` True and False, so both give identical samples for the same
        generator state. The model is in eval mode (no dropout) while sampling.

        Args:
            n: number of code maps (>= 1).
            shape: (H, W) of the grid; may be left out with a ``completion``.
            label: class index (int) or (n,) int64, iff the prior is class-conditional.
            cond_map: (n, h, w) (or (h, w)) int64 conditioning codes, iff spatially conditioned.
            generator: a ``torch.Generator`` (CPU or the model's device) for reproducibility.
            options: :class:`SampleOptions` (temperature, top_k, fast, progress).
            completion: :class:`Completion`: prefix codes to keep, the rest is sampled.

        Returns:
            (n, H, W) int64 codes in [0, K) on the model's device.

        Raises:
            ValueError, TypeError: bad arguments (each names the argument), including label,
                conditioning or prefix values out of range.
        """
        height, width, label, cond_map, known = self._sampling_inputs(
            n, shape, label, cond_map, generator, options, completion)
        device = model_device(self)
        known = None if known is None else known.to(device)  # (n, H, W) bool
        codes = (completion.prefix.to(device).clone() if completion is not None
                 else torch.zeros(n, height, width, dtype=torch.int64, device=device))
        draw_device = generator.device if generator is not None else device
        with eval_mode(self):
            logits_at = self.logits_fn(label, cond_map, height, width, options.fast)
            for row in tqdm(range(height), desc="sampling rows", disable=not options.progress):
                for col in range(width):
                    uniforms = torch.rand((n, self.config.codebook_size), generator=generator,
                                          device=draw_device)
                    todo = None if known is None else ~known[:, row, col]  # (n,)
                    if todo is not None and not bool(todo.any()):
                        continue
                    new = _choose_codes(logits_at(codes, row, col), uniforms.to(device),
                                        options.temperature, options.top_k)  # (n,)
                    codes[:, row, col] = new if todo is None else torch.where(
                        todo, new, codes[:, row, col])
        return codes


class PixelCNNPrior(AutoregressivePrior):
    """The PixelCNN prior: :class:`~vqlesson.pixelcnn.GatedPixelCNN` (``arch="gated"``) or
    :class:`~vqlesson.pixelcnn.PixelCNN` (``arch="plain"``) as ``self.net``, with the loss and
    the samplers of :class:`AutoregressivePrior` (fast: :func:`fast_logits_fn`).

    ``forward(codes, label=None, cond_map=None)`` -> :class:`PriorOutput`;
    ``sample(n, shape, ...)`` -> (n, H, W) int64 codes. Any grid size works.
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        if not isinstance(config, PriorConfig):
            raise TypeError(f"config must be a PriorConfig, got {type(config).__name__}")
        self.config = config
        network_class = GatedPixelCNN if config.arch == "gated" else PixelCNN
        self.net: PriorNetwork = network_class(config)

    def logits(self, codes: Tensor, label: Tensor | None = None,
               cond_map: Tensor | None = None) -> Tensor:
        """(B, H, W) int64 codes -> (B, K, H, W) logits; see
        :meth:`~vqlesson.pixelcnn.PriorNetwork.forward`."""
        return self.net(codes, label, cond_map)

    def logits_fn(self, label: Tensor | None, cond_map: Tensor | None, height: int, width: int,
                  fast: bool) -> LogitsAt:
        """:func:`fast_logits_fn` or :func:`naive_logits_fn` with the conditioning computed once
        for the whole grid."""
        block_conds = self.net.block_conditions(
            self.net.condition_features(label, cond_map, height, width))
        return (fast_logits_fn if fast else naive_logits_fn)(self.net, block_conds)
