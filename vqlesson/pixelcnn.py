"""Autoregressive priors over VQ-VAE code maps: PixelCNN and Gated PixelCNN.

A trained VQ-VAE turns an image into a map of code indices (B, H, W), integers in ``[0, K)``.
A *prior* models ``p(codes) = prod_i p(code_i | code_<i)`` in raster order (row by row, left to
right), so new code maps can be sampled position by position and decoded into images.

Implements:

- van den Oord, Kalchbrenner & Kavukcuoglu (2016), *Pixel Recurrent Neural Networks*, §3.4 and
  Figure 2: masked convolutions. Mask type A (first layer) excludes the current position, mask
  type B (later layers) includes it. The inputs here are code maps, one categorical variable per
  position, so a single "channel group" is enough (no R/G/B sub-masks). :class:`PixelCNN` is the
  plain stack of masked convolutions, kept because it shows the *blind spot*: positions above
  and to the right of the current one that its receptive field never reaches.
- van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016), *Conditional
  Image Generation with PixelCNN Decoders*: §2.2, the Gated PixelCNN (:class:`GatedPixelCNN`)
  with gated activations ``tanh(W_f * x) ⊙ σ(W_g * x)``, a vertical stack (rows above) feeding a
  horizontal stack (the current row, to the left) through a 1x1 convolution, and a residual
  connection in the horizontal stack; no blind spot. §2.3, conditioning: a class label (here
  benign/malignant) as a learnt bias in every gated block, and a spatial conditioning map (here
  VQ-VAE-2's top code map, Razavi et al. 2019, for the bottom prior) through 1x1 convolutions.
- The fast sampler follows the idea of Ramachandran et al. (2017), *Fast Generation for
  Convolutional Autoregressive Models*: recompute only what the next position can see. For the
  gated model the vertical stack is computed once per row (on the rows its receptive field
  reaches) and only the horizontal stack runs per position; for the plain model the network runs
  on the window of its receptive field. Both samplers draw the same random numbers in the same
  order, so with the same generator they give identical samples. (The two compute the same sums
  on differently sized inputs, for which PyTorch may pick kernels that round differently, e.g.
  for a batch of one on the CPU: the logits then agree to about 1e-7, and a sample could only
  differ on a tie that close.)

The loss is the categorical cross-entropy over the K codes (softmax over K logits per position),
reported in bits per code (:func:`nll`). Code indices are *categories*: code 17 is not "close" to
code 18, so regressing indices with a mean squared error would be wrong, and so would a binary
cross-entropy (there are K classes per position, not K independent yes/no variables).
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

MASK_TYPES = ("A", "B")
ARCHS = ("gated", "plain")
LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Helpers: masks, shifts, input checks, metrics
# --------------------------------------------------------------------------------------------
def causal_mask(kernel_size: int, mask_type: str) -> Tensor:
    """The (kernel_size, kernel_size) float mask of a masked convolution (PixelRNN §3.4).

    1 for the rows above the centre and for the centre row left of the centre; the centre itself
    is 1 for mask type ``"B"`` and 0 for type ``"A"``; everything below or right of the centre is 0.

    Raises:
        ValueError: ``mask_type`` not ``"A"``/``"B"``, or ``kernel_size`` not an odd int >= 1.
    """
    if mask_type not in MASK_TYPES:
        raise ValueError(
            f"mask_type must be 'A' (first layer, excludes the centre) or 'B' (later layers, "
            f"includes it), got {mask_type!r}"
        )
    if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}")
    centre = kernel_size // 2
    mask = torch.zeros(kernel_size, kernel_size)
    mask[:centre, :] = 1.0  # rows above the centre
    mask[centre, :centre] = 1.0  # centre row, left of the centre
    if mask_type == "B":
        mask[centre, centre] = 1.0
    return mask


def shift_down(x: Tensor) -> Tensor:
    """Move a (B, C, H, W) map down by one row (zeros enter at the top): row r holds row r-1."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1, :]  # (B, C, H, W)


def shift_right(x: Tensor) -> Tensor:
    """Move a (B, C, H, W) map right by one column (zeros enter at the left)."""
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]  # (B, C, H, W)


def gate(x: Tensor) -> Tensor:
    """Gated activation ``tanh(a) * sigmoid(b)`` with ``a, b`` the two channel halves of ``x``.

    (B, 2C, H, W) -> (B, C, H, W), values in (-1, 1).
    """
    a, b = x.chunk(2, dim=1)  # 2 x (B, C, H, W)
    return torch.tanh(a) * torch.sigmoid(b)


def check_codes(codes: object, codebook_size: int, name: str = "codes") -> None:
    """Validate a batch of code maps.

    Args:
        codes: expected (B, H, W) int64 in ``[0, codebook_size)``.

    Raises:
        TypeError: not a tensor, or not int64.
        ValueError: not 3-D, empty, or values outside ``[0, codebook_size)``.
    """
    if not isinstance(codes, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of int64 code indices, got {type(codes).__name__}"
        )
    if codes.dtype != torch.int64:
        raise TypeError(
            f"{name} must be int64 code indices (categories, not floats or one-hot), got dtype "
            f"{codes.dtype}; convert with {name}.long()"
        )
    if codes.dim() != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got shape {tuple(codes.shape)}")
    if codes.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(codes.shape)})")
    low, high = int(codes.min()), int(codes.max())
    if low < 0 or high >= codebook_size:
        raise ValueError(
            f"{name} must hold indices in [0, {codebook_size}) (codebook_size = {codebook_size}); "
            f"got values in [{low}, {high}]"
        )


def nll(logits: Tensor, codes: Tensor, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of code maps in **bits per code**.

    The categorical cross-entropy (softmax over the K logits of each position) in nats, divided
    by ln 2. Indices are categories, so this, not a mean squared error on the indices, is the
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


def _upsample_to(x: Tensor, height: int, width: int, name: str = "cond_map") -> Tensor:
    """Nearest-neighbour upsampling of (B, C, h, w) to (B, C, height, width) by whole factors."""
    h, w = x.shape[-2:]
    if height % h != 0 or width % w != 0:
        raise ValueError(
            f"{name} of grid ({h}, {w}) cannot be upsampled to the prior's grid "
            f"({height}, {width}): the sides must divide the prior's sides (VQ-VAE-2: the top "
            "grid is half the bottom's)"
        )
    x = x.repeat_interleave(height // h, dim=2)  # (B, C, H, w)
    return x.repeat_interleave(width // w, dim=3)  # (B, C, H, W)


def _crop(t: Tensor | None, rows: slice, cols: slice) -> Tensor | None:
    """Crop a per-block conditioning bias; a (B, C, 1, 1) label-only bias broadcasts as it is."""
    if t is None or (t.shape[-2] == 1 and t.shape[-1] == 1):
        return t
    return t[:, :, rows, cols]


# --------------------------------------------------------------------------------------------
# Config and outputs
# --------------------------------------------------------------------------------------------
@dataclass
class PriorConfig:
    """Hyperparameters of a code-map prior (:class:`PixelCNNPrior`, :class:`GatedPixelCNN`,
    :class:`PixelCNN`). The grid size is not fixed: a prior works on any (H, W).

    Attributes:
        codebook_size: K, number of codes of the VQ-VAE (level) whose codes are modelled.
        embed_dim: size of the learnt embedding of each code (and of each conditioning code).
        channels: width of the hidden feature maps.
        num_layers: gated blocks (``gated``) or residual blocks after the first layer (``plain``).
        kernel_size: odd kernel size of the blocks (3 or 5).
        first_kernel_size: odd kernel size of the first layer (PixelRNN: 7x7, mask A).
        dropout: dropout probability inside the blocks, a remedy for overfitting (0 disables).
        num_classes: classes of the optional label (2: benign/malignant); 0 = unconditional.
        cond_codebook_size: K of an optional spatial conditioning code map (VQ-VAE-2's top
            level, for the bottom prior); 0 = no spatial conditioning.
        cond_layers: non-causal 3x3 residual layers over the embedded conditioning map before
            it is upsampled (it is fully known, so it may look everywhere; VQ-VAE-2's
            conditioning stack); 0 = embedding only.
        skip_connections: gated only; the output head reads the sum of per-block 1x1 skip
            outputs instead of the last horizontal-stack output.
        arch: ``"gated"`` (Gated PixelCNN) or ``"plain"`` (masked convolutions, blind spot).

    Raises:
        ValueError: a field out of range (checked on construction).
    """

    codebook_size: int = 512
    embed_dim: int = 64
    channels: int = 64
    num_layers: int = 8
    kernel_size: int = 3
    first_kernel_size: int = 7
    dropout: float = 0.0
    num_classes: int = 0
    cond_codebook_size: int = 0
    cond_layers: int = 2
    skip_connections: bool = True
    arch: str = "gated"

    def __post_init__(self) -> None:
        for name in ("codebook_size", "embed_dim", "channels", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("num_classes", "cond_codebook_size", "cond_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0 (0 disables it), got {value!r}")
        for name in ("kernel_size", "first_kernel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 3 or value % 2 == 0:
                raise ValueError(f"{name} must be an odd int >= 3 (e.g. 3, 5, 7), got {value!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if not isinstance(self.skip_connections, bool):
            raise ValueError(f"skip_connections must be a bool, got {self.skip_connections!r}")

    @property
    def receptive_reach(self) -> int:
        """S: how far (in positions) the receptive field reaches up, left and right, not counting
        the gated model's one-position input shift."""
        if self.arch == "gated":
            return self.first_kernel_size // 2 + (self.num_layers - 1) * (self.kernel_size // 2)
        return self.first_kernel_size // 2 + self.num_layers * (self.kernel_size // 2)


class Condition(NamedTuple):
    """Conditioning features shared by all blocks (built by ``condition_features``).

    Attributes:
        label: (B,) int64 in [0, num_classes), or ``None``.
        spatial: (B, embed_dim, H, W) float, the embedded conditioning map on the prior's grid,
            or ``None``.
    """

    label: Tensor | None
    spatial: Tensor | None


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
# Blocks
# --------------------------------------------------------------------------------------------
class MaskedConv2d(nn.Conv2d):
    """A square convolution whose kernel only sees causal positions (PixelRNN §3.4).

    Mask type ``"A"`` excludes the centre (use it for the first layer: the output at a position
    must not see that position's own input), type ``"B"`` includes it (later layers). Rows below
    the centre and the centre row right of the centre are always masked. Single channel group:
    every output channel sees every input channel at the allowed positions.

    (B, in_channels, H, W) -> (B, out_channels, H, W) (``padding = kernel_size // 2``).

    Attributes:
        mask: (1, 1, k, k) float buffer of 0/1, see :func:`causal_mask`.

    Raises:
        ValueError: ``mask_type`` not ``"A"``/``"B"``; ``kernel_size`` not an odd int.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 mask_type: str = "B", bias: bool = True) -> None:
        mask = causal_mask(kernel_size, mask_type)  # validates both arguments
        super().__init__(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias
        )
        self.mask_type = mask_type
        self.register_buffer("mask", mask[None, None], persistent=False)  # (1, 1, k, k)
        with torch.no_grad():
            self.weight.mul_(self.mask)  # masked weights start (and, with zero gradient, stay) at 0

    def masked_weight(self) -> Tensor:
        """The kernel actually applied: (out, in, k, k), zero at masked positions."""
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mask_type={self.mask_type!r}"


class _ConditionBias(nn.Module):
    """One block's conditioning: a per-class bias (``nn.Embedding(num_classes, out)``) plus a 1x1
    convolution of the spatial features. Returns (B, out, 1, 1), (B, out, H, W) or ``None``."""

    def __init__(self, out_channels: int, num_classes: int, spatial_channels: int) -> None:
        super().__init__()
        self.label_bias = nn.Embedding(num_classes, out_channels) if num_classes else None
        self.spatial = nn.Conv2d(spatial_channels, out_channels, 1) if spatial_channels else None

    def forward(self, cond: Condition | None) -> Tensor | None:
        if cond is None:
            return None
        bias = None
        if self.label_bias is not None:
            bias = self.label_bias(cond.label)[:, :, None, None]  # (B, out, 1, 1)
        if self.spatial is not None:
            spatial = self.spatial(cond.spatial)  # (B, out, H, W)
            bias = spatial if bias is None else bias + spatial
        return bias


class ResidualMaskedBlock(nn.Module):
    """Residual block of the plain PixelCNN (PixelRNN Figure 5): ReLU, 1x1 (C -> C/2), ReLU,
    masked k x k type B (C/2 -> C/2) plus the conditioning bias, ReLU, dropout, 1x1 (C/2 -> C),
    added to the input. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, kernel_size: int, dropout: float, num_classes: int,
                 spatial_channels: int) -> None:
        super().__init__()
        half = max(1, channels // 2)
        self.reduce = nn.Conv2d(channels, half, 1)
        self.masked = MaskedConv2d(half, half, kernel_size, "B")
        self.expand = nn.Conv2d(half, channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.condition = _ConditionBias(half, num_classes, spatial_channels)

    def forward(self, x: Tensor, cond_bias: Tensor | None) -> Tensor:
        h = self.masked(F.relu(self.reduce(F.relu(x))))
        if cond_bias is not None:
            h = h + cond_bias
        return x + self.expand(self.dropout(F.relu(h)))


class GatedBlock(nn.Module):
    """One layer of the Gated PixelCNN (§2.2, Figure 2), causal by construction.

    Vertical stack: a (p+1) x k convolution (p = k // 2) over the rows ``[r-p, r]`` of its input,
    then the gate. Its input is shifted down by one row before the first block, so the vertical
    stack at row r only ever sees code rows < r ("mask A" for the first layer, "B" after).
    Horizontal stack: a 1 x (p+1) convolution over the columns ``[c-p, c]`` of its input (shifted
    right by one column before the first block, so the current position is excluded), plus a 1x1
    convolution of the vertical stack's pre-activation (same row: it holds only rows above), plus
    the conditioning bias, then the gate, dropout, a 1x1 convolution and the residual connection.
    An optional 1x1 skip output feeds the model's head.

    Shapes: v, h (B, C_in, H, W) -> v (B, C, H, W), h (B, C, H, W), skip (B, C, H, W) or None.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, residual: bool,
                 skip: bool, dropout: float, num_classes: int, spatial_channels: int) -> None:
        super().__init__()
        self.pad = kernel_size // 2
        self.residual = residual
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (self.pad + 1, kernel_size))
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, self.pad + 1))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.skip_out = nn.Conv2d(channels, channels, 1) if skip else None
        self.dropout = nn.Dropout(dropout)
        self.condition = _ConditionBias(2 * channels, num_classes, spatial_channels)

    def vertical(self, v: Tensor, cond_bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """``v`` (B, C_in, H, W) -> (pre-activation (B, 2C, H, W), gated output (B, C, H, W));
        row r of both depends on rows ``<= r`` of ``v`` only."""
        p = self.pad
        v_pre = self.v_conv(F.pad(v, (p, p, p, 0)))  # (B, 2C, H, W): pad left, right, top
        v_act = v_pre if cond_bias is None else v_pre + cond_bias
        return v_pre, gate(v_act)

    def horizontal(self, h: Tensor, link: Tensor, cond_bias: Tensor | None
                   ) -> tuple[Tensor, Tensor | None]:
        """``h`` (B, C_in, H, W) and ``link = v_to_h(v_pre)`` (B, 2C, H, W) -> (h out (B, C, H, W),
        skip (B, C, H, W) or None); column c depends on columns ``<= c`` of ``h``."""
        h_pre = self.h_conv(F.pad(h, (self.pad, 0, 0, 0))) + link  # (B, 2C, H, W): pad left
        if cond_bias is not None:
            h_pre = h_pre + cond_bias
        gated = self.dropout(gate(h_pre))  # (B, C, H, W)
        out = self.h_out(gated)
        if self.residual:
            out = out + h
        skip = self.skip_out(gated) if self.skip_out is not None else None
        return out, skip

    def forward(self, v: Tensor, h: Tensor, cond_bias: Tensor | None
                ) -> tuple[Tensor, Tensor, Tensor | None]:
        v_pre, v_out = self.vertical(v, cond_bias)
        h_out, skip = self.horizontal(h, self.v_to_h(v_pre), cond_bias)
        return v_out, h_out, skip


class OutputHead(nn.Module):
    """ReLU, 1x1 (C -> C), ReLU, 1x1 (C -> K): features (B, C, H, W) -> logits (B, K, H, W)."""

    def __init__(self, channels: int, codebook_size: int) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, codebook_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(F.relu(self.hidden(F.relu(x))))


class ConditionStack(nn.Module):
    """Non-causal features of a spatial conditioning code map (VQ-VAE-2's top codes).

    Embedding (``cond_codebook_size`` -> ``embed_dim``), ``cond_layers`` residual 3x3 layers at
    the map's own resolution, then nearest-neighbour upsampling to the prior's grid (the ratio is
    computed from the shapes and must be whole). (B, h, w) int64 -> (B, embed_dim, H, W) float.
    """

    def __init__(self, cond_codebook_size: int, embed_dim: int, num_layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cond_codebook_size, embed_dim)
        self.layers = nn.ModuleList(
            nn.Conv2d(embed_dim, embed_dim, 3, padding=1) for _ in range(num_layers)
        )

    def forward(self, cond_map: Tensor, height: int, width: int) -> Tensor:
        x = self.embedding(cond_map).permute(0, 3, 1, 2)  # (B, h, w, E) -> (B, E, h, w)
        for layer in self.layers:
            x = x + layer(F.relu(x))
        return _upsample_to(x, height, width)  # (B, E, H, W)


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
class _CodePriorNetwork(nn.Module):
    """Shared parts of :class:`PixelCNN` and :class:`GatedPixelCNN`: the code embedding, the
    conditioning inputs and their checks, and the per-position logits used by the samplers."""

    blocks: nn.ModuleList

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        if not isinstance(config, PriorConfig):
            raise TypeError(f"config must be a PriorConfig, got {type(config).__name__}")
        self.config = config
        self.embedding = nn.Embedding(config.codebook_size, config.embed_dim)
        self.cond_stack = (
            ConditionStack(config.cond_codebook_size, config.embed_dim, config.cond_layers)
            if config.cond_codebook_size else None
        )

    # ---- inputs -----------------------------------------------------------------------------
    @property
    def _spatial_channels(self) -> int:
        return self.config.embed_dim if self.config.cond_codebook_size else 0

    def embed(self, codes: Tensor) -> Tensor:
        """``codes`` (B, H, W) int64 in [0, K) -> (B, embed_dim, H, W) float (no checks)."""
        return self.embedding(codes).permute(0, 3, 1, 2)  # (B, H, W, E) -> (B, E, H, W)

    def check_condition(self, label: Tensor | None, cond_map: Tensor | None,
                        batch: int, height: int, width: int) -> None:
        """Check the conditioning inputs against the config and a (batch, H, W) code grid.

        Raises:
            ValueError: a required input missing, an input the model was not built for, or a
                wrong shape/range/grid ratio.
            TypeError: a non-int64 label or conditioning map.
        """
        c = self.config
        if c.num_classes and label is None:
            raise ValueError(
                f"this prior is class-conditional (num_classes = {c.num_classes}); pass "
                f"label=(B,) int64 class indices in [0, {c.num_classes})"
            )
        if not c.num_classes and label is not None:
            raise ValueError(
                "this prior was built without labels (num_classes = 0); do not pass label"
            )
        if c.cond_codebook_size and cond_map is None:
            raise ValueError(
                f"this prior is conditioned on a code map (cond_codebook_size = "
                f"{c.cond_codebook_size}); pass cond_map=(B, h, w) int64 codes (VQ-VAE-2's top "
                "codes)"
            )
        if not c.cond_codebook_size and cond_map is not None:
            raise ValueError(
                "this prior was built without spatial conditioning (cond_codebook_size = 0); "
                "do not pass cond_map"
            )
        if label is not None:
            if not isinstance(label, Tensor) or label.dtype != torch.int64:
                raise TypeError(
                    "label must be an int64 tensor of class indices, got "
                    f"{label.dtype if isinstance(label, Tensor) else type(label).__name__}"
                )
            if label.shape != (batch,):
                raise ValueError(
                    f"label must have shape ({batch},) (one per code map), got {tuple(label.shape)}"
                )
            if int(label.min()) < 0 or int(label.max()) >= c.num_classes:
                raise ValueError(
                    f"label must be in [0, {c.num_classes}), got values in "
                    f"[{int(label.min())}, {int(label.max())}]"
                )
        if cond_map is not None:
            check_codes(cond_map, c.cond_codebook_size, "cond_map")
            if cond_map.shape[0] != batch:
                raise ValueError(
                    f"cond_map has batch {cond_map.shape[0]} but the codes have {batch}"
                )
            h, w = cond_map.shape[1:]
            if height % h != 0 or width % w != 0:
                raise ValueError(
                    f"cond_map grid ({h}, {w}) must divide the code grid ({height}, {width}) "
                    "(VQ-VAE-2: top grid = bottom grid / 2)"
                )

    def condition_features(self, label: Tensor | None, cond_map: Tensor | None,
                           height: int, width: int) -> Condition | None:
        """Shared conditioning features for a (height, width) grid (no checks); ``None`` when the
        model is unconditional."""
        if label is None and cond_map is None:
            return None
        spatial = self.cond_stack(cond_map, height, width) if cond_map is not None else None
        return Condition(label, spatial)

    def block_conditions(self, cond: Condition | None) -> list[Tensor | None]:
        """Each block's conditioning bias ((B, C_b, 1, 1), (B, C_b, H, W) or ``None``)."""
        return [block.condition(cond) for block in self.blocks]

    # ---- forward ----------------------------------------------------------------------------
    def _logits(self, x: Tensor, block_conds: list[Tensor | None]) -> Tensor:
        raise NotImplementedError

    def logits_from_embedding(self, x: Tensor, label: Tensor | None = None,
                              cond_map: Tensor | None = None) -> Tensor:
        """Logits from already embedded codes: the float input path (for receptive fields).

        Args:
            x: (B, embed_dim, H, W) float, e.g. ``embed(codes)``.
            label, cond_map: as in :meth:`forward`.

        Returns:
            (B, K, H, W) float logits.
        """
        if x.dim() != 4 or x.shape[1] != self.config.embed_dim:
            raise ValueError(
                f"x must have shape (B, {self.config.embed_dim}, H, W) (embed_dim), got "
                f"{tuple(x.shape)}"
            )
        b, _, height, width = x.shape
        self.check_condition(label, cond_map, b, height, width)
        cond = self.condition_features(label, cond_map, height, width)
        return self._logits(x, self.block_conditions(cond))

    def forward(self, codes: Tensor, label: Tensor | None = None,
                cond_map: Tensor | None = None) -> Tensor:
        """Next-code logits for every position, each seeing only the codes before it.

        Args:
            codes: (B, H, W) int64 in [0, K), any H, W >= 1.
            label: (B,) int64 in [0, num_classes); required iff ``num_classes > 0``.
            cond_map: (B, h, w) int64 in [0, cond_codebook_size), h | H and w | W; required iff
                ``cond_codebook_size > 0``.

        Returns:
            (B, K, H, W) float logits; position (r, c) depends only on codes before (r, c) in
            raster order (and on the conditioning).

        Raises:
            TypeError, ValueError: bad codes or conditioning (see :func:`check_codes`,
                :meth:`check_condition`).
        """
        check_codes(codes, self.config.codebook_size)
        return self.logits_from_embedding(self.embed(codes), label, cond_map)

    # ---- per-position logits for the samplers -----------------------------------------------
    def naive_logits_at(self, codes: Tensor, row: int, col: int,
                        block_conds: list[Tensor | None]) -> Tensor:
        """Run the whole network on ``codes`` (n, H, W); the logits (n, K) at (row, col)."""
        return self._logits(self.embed(codes), block_conds)[:, :, row, col]

    def fast_logits_fn(self, block_conds: list[Tensor | None]
                       ) -> Callable[[Tensor, int, int], Tensor]:
        """A function ``(codes, row, col) -> (n, K)`` logits equal to :meth:`naive_logits_at`
        that runs the network only on the window of the position's receptive field (rows
        ``[row - S, row]``, columns ``[col - S, col + S]``, S = ``config.receptive_reach``).
        Must be called in raster order with codes before (row, col) final."""
        s = self.config.receptive_reach

        def logits_at(codes: Tensor, row: int, col: int) -> Tensor:
            r0, c0 = max(0, row - s), max(0, col - s)
            rows, cols = slice(r0, row + 1), slice(c0, col + s + 1)
            conds = [_crop(t, rows, cols) for t in block_conds]
            return self._logits(self.embed(codes[:, rows, cols]), conds)[:, :, row - r0, col - c0]

        return logits_at


class PixelCNN(_CodePriorNetwork):
    """Plain PixelCNN over code maps (PixelRNN §3.4): embedding, a ``first_kernel_size`` masked
    convolution of type A, ``num_layers`` residual blocks of type-B masked convolutions, ReLU,
    1x1 convolutions to K logits.

    Kept to show the blind spot: stacked masked kernels never reach some positions above and to
    the right of the current one (see :func:`receptive_field`). ``config.arch`` is ignored here
    (:class:`PixelCNNPrior` uses it to choose the network). Conditioning, when configured, is a
    bias on each block's masked convolution.

    ``codes`` (B, H, W) int64 in [0, K) -> logits (B, K, H, W).
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__(config)
        c = config
        self.input_conv = MaskedConv2d(c.embed_dim, c.channels, c.first_kernel_size, "A")
        self.blocks = nn.ModuleList(
            ResidualMaskedBlock(c.channels, c.kernel_size, c.dropout, c.num_classes,
                                self._spatial_channels)
            for _ in range(c.num_layers)
        )
        self.head = OutputHead(c.channels, c.codebook_size)

    def _logits(self, x: Tensor, block_conds: list[Tensor | None]) -> Tensor:
        h = self.input_conv(x)  # (B, C, H, W)
        for block, cond_bias in zip(self.blocks, block_conds):
            h = block(h, cond_bias)
        return self.head(h)  # (B, K, H, W)


class GatedPixelCNN(_CodePriorNetwork):
    """Gated PixelCNN over code maps (van den Oord et al. 2016, §2.2-2.3): no blind spot.

    Embedding (``nn.Embedding(K, embed_dim)``), shifted down (vertical stack input) and right
    (horizontal stack input) so that the first layer excludes the current position, then
    ``num_layers`` :class:`GatedBlock` s (the first with ``first_kernel_size``, no residual), then
    the head on the sum of the skip outputs (or the last horizontal output). Optional class
    label and spatial conditioning map (see :class:`PriorConfig`). ``config.arch`` is ignored.

    ``codes`` (B, H, W) int64 in [0, K) -> logits (B, K, H, W).
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__(config)
        c = config
        self.blocks = nn.ModuleList(
            GatedBlock(
                c.embed_dim if i == 0 else c.channels, c.channels,
                c.first_kernel_size if i == 0 else c.kernel_size,
                residual=i > 0, skip=c.skip_connections, dropout=c.dropout,
                num_classes=c.num_classes, spatial_channels=self._spatial_channels,
            )
            for i in range(c.num_layers)
        )
        self.head = OutputHead(c.channels, c.codebook_size)

    def _run_horizontal(self, h: Tensor, links: list[Tensor], block_conds: list[Tensor | None]
                        ) -> Tensor:
        skips = None
        for block, link, cond_bias in zip(self.blocks, links, block_conds):
            h, skip = block.horizontal(h, link, cond_bias)
            if skip is not None:
                skips = skip if skips is None else skips + skip
        return self.head(skips if skips is not None else h)  # (B, K, H, W)

    def _run_vertical(self, v: Tensor, block_conds: list[Tensor | None]) -> list[Tensor]:
        links = []
        for block, cond_bias in zip(self.blocks, block_conds):
            v_pre, v = block.vertical(v, cond_bias)
            links.append(block.v_to_h(v_pre))  # (B, 2C, H, W)
        return links

    def _logits(self, x: Tensor, block_conds: list[Tensor | None]) -> Tensor:
        links = self._run_vertical(shift_down(x), block_conds)
        return self._run_horizontal(shift_right(x), links, block_conds)

    def fast_logits_fn(self, block_conds: list[Tensor | None]
                       ) -> Callable[[Tensor, int, int], Tensor]:
        """Like the base version, but the vertical stack (which only sees rows above) runs once
        per row on rows ``[row - S - 1, row]``, and per position only the horizontal stack runs,
        on columns ``[col - S - 1, col]`` of the current row (Ramachandran et al. 2017's idea of
        recomputing only what changed)."""
        reach = self.config.receptive_reach + 1  # + 1: the input shift
        cache: dict[str, object] = {"row": None, "links": None}

        def logits_at(codes: Tensor, row: int, col: int) -> Tensor:
            if cache["row"] != row:  # codes of all rows above are final now
                r0 = max(0, row - reach)
                rows = slice(r0, row + 1)
                conds = [_crop(t, rows, slice(None)) for t in block_conds]
                x = self.embed(codes[:, rows])  # (n, E, rows, W)
                links = self._run_vertical(shift_down(x), conds)
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
            h = shift_right(self.embed(codes[:, row:row + 1, cols]))  # (n, E, 1, c1 - c0)
            return self._run_horizontal(h, links, conds)[:, :, 0, col - c0]  # (n, K)

        return logits_at


# --------------------------------------------------------------------------------------------
# The prior: one class for checkpoints, training and sampling
# --------------------------------------------------------------------------------------------
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


class PixelCNNPrior(nn.Module):
    """An autoregressive prior over code maps: :class:`GatedPixelCNN` (``arch="gated"``) or
    :class:`PixelCNN` (``arch="plain"``) as ``self.net``, with the loss and the samplers.

    ``forward(codes, label=None, cond_map=None)`` -> :class:`PriorOutput`;
    ``sample(n, shape, ...)`` -> (n, H, W) int64 codes. Any grid size works.
    """

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        if not isinstance(config, PriorConfig):
            raise TypeError(f"config must be a PriorConfig, got {type(config).__name__}")
        self.config = config
        network_class = GatedPixelCNN if config.arch == "gated" else PixelCNN
        self.net: _CodePriorNetwork = network_class(config)

    def logits(self, codes: Tensor, label: Tensor | None = None,
               cond_map: Tensor | None = None) -> Tensor:
        """(B, H, W) int64 codes -> (B, K, H, W) logits; see :meth:`GatedPixelCNN.forward`."""
        return self.net(codes, label, cond_map)

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
            TypeError, ValueError: bad codes or conditioning.
        """
        logits = self.net(codes, label, cond_map)  # (B, K, H, W)
        loss = F.cross_entropy(logits.float(), codes)
        return PriorOutput(logits=logits, loss=loss, bits_per_code=loss.detach() / LN2)

    # ---- sampling ---------------------------------------------------------------------------
    def _sampling_inputs(self, n, shape, label, cond_map, temperature, top_k, generator,
                         prefix, start, known):
        """Validate :meth:`sample`'s arguments; returns (H, W, label, cond_map, codes, known)."""
        c = self.config
        device = next(self.parameters()).device
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n (number of samples) must be an int >= 1, got {n!r}")
        if prefix is not None:
            check_codes(prefix, c.codebook_size, "prefix")
            if prefix.shape[0] != n:
                raise ValueError(
                    f"prefix must have shape (n, H, W) with n = {n}, got {tuple(prefix.shape)}"
                )
            if shape is not None and tuple(shape) != tuple(prefix.shape[1:]):
                raise ValueError(
                    f"shape {tuple(shape)} does not match the prefix grid {tuple(prefix.shape[1:])}"
                )
            shape = tuple(prefix.shape[1:])
            if (start is None) == (known is None):
                raise ValueError(
                    "with prefix, pass exactly one of start=(row, col) (keep the codes before it "
                    "in raster order) or known=(n, H, W) / (H, W) bool mask (keep the True "
                    "positions)"
                )
        elif start is not None or known is not None:
            raise ValueError("start/known need prefix=(n, H, W) codes to keep")
        if (shape is None or not isinstance(shape, (tuple, list)) or len(shape) != 2
                or not all(isinstance(s, int) and s >= 1 for s in shape)):
            raise ValueError(f"shape must be (H, W), two ints >= 1, got {shape!r}")
        height, width = shape
        if (not isinstance(temperature, (int, float)) or not math.isfinite(temperature)
                or temperature < 0):
            raise ValueError(
                f"temperature must be a finite number >= 0 (1: the model's distribution, < 1: "
                f"sharper, 0: greedy argmax), got {temperature!r}"
            )
        if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= c.codebook_size):
            raise ValueError(
                f"top_k must be None or an int in [1, {c.codebook_size}], got {top_k!r}"
            )
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator or None, got {type(generator).__name__}"
            )
        if isinstance(label, int) and not isinstance(label, bool):
            label = torch.full((n,), label, dtype=torch.int64)
        if isinstance(label, Tensor) and label.dim() == 1 and label.shape[0] == 1 and n > 1:
            label = label.expand(n)
        if isinstance(cond_map, Tensor) and cond_map.dim() == 2:
            cond_map = cond_map[None]  # (h, w) -> (1, h, w)
        if (isinstance(cond_map, Tensor) and cond_map.dim() == 3 and cond_map.shape[0] == 1
                and n > 1):
            cond_map = cond_map.expand(n, -1, -1)  # (n, h, w)
        label = label.to(device) if isinstance(label, Tensor) else label
        cond_map = cond_map.to(device) if isinstance(cond_map, Tensor) else cond_map
        self.net.check_condition(label, cond_map, n, height, width)
        codes = torch.zeros(n, height, width, dtype=torch.int64, device=device)
        if prefix is not None:
            codes = prefix.to(device).clone()
            if start is not None:
                if (not isinstance(start, (tuple, list)) or len(start) != 2
                        or not all(isinstance(s, int) for s in start)):
                    raise ValueError(f"start must be (row, col) ints, got {start!r}")
                index = start[0] * width + start[1]
                inside = 0 <= start[0] <= height and 0 <= start[1] < width
                if not (inside and index <= height * width):
                    raise ValueError(
                        f"start {tuple(start)} is outside the grid ({height}, {width})"
                    )
                raster = torch.arange(height * width, device=device).view(height, width)  # (H, W)
                known = raster < index  # (H, W)
            if not isinstance(known, Tensor) or known.dtype != torch.bool:
                raise TypeError("known must be a bool tensor of shape (n, H, W) or (H, W)")
            if known.shape == (height, width):
                known = known[None].expand(n, height, width)  # (n, H, W)
            if known.shape != (n, height, width):
                raise ValueError(
                    f"known must have shape ({n}, {height}, {width}) or ({height}, {width}), "
                    f"got {tuple(known.shape)}"
                )
            known = known.to(device)
        return height, width, label, cond_map, codes, known

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int] | None = None,
               label: int | Tensor | None = None, cond_map: Tensor | None = None,
               temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, fast: bool = True, *,
               prefix: Tensor | None = None, start: tuple[int, int] | None = None,
               known: Tensor | None = None, progress: bool = False) -> Tensor:
        """Draw code maps position by position in raster order.

        Per position, ``n`` x K uniforms are drawn from ``generator`` (always, also where the
        code is kept), and a code is chosen by the Gumbel-max trick: the same draws in the same
        order for ``fast=True`` and ``fast=False``, so both give identical samples for the same
        generator state. The model is in eval mode (no dropout) while sampling.

        Args:
            n: number of code maps (>= 1).
            shape: (H, W) of the grid; may be left out when ``prefix`` is given.
            label: class index (int) or (n,) int64, iff the prior is class-conditional.
            cond_map: (n, h, w) (or (h, w)) int64 conditioning codes, iff spatially conditioned.
            temperature: divides the logits; 1 samples the model, < 1 is sharper, 0 is greedy.
            top_k: keep only the k most likely codes at each position (None: all K).
            generator: a ``torch.Generator`` (CPU or the model's device) for reproducibility.
            fast: run only the receptive field per position (True) or the whole network (False).
            prefix: (n, H, W) int64 codes for completion; the known positions keep their codes.
            start: (row, col): keep the prefix codes before this position in raster order
                (``(H // 2, 0)`` keeps the top half).
            known: (n, H, W) or (H, W) bool, True where the prefix code is kept.
            progress: show a tqdm bar over rows.

        Returns:
            (n, H, W) int64 codes in [0, K) on the model's device.

        Raises:
            ValueError, TypeError: bad arguments (each names the argument).
        """
        height, width, label, cond_map, codes, known = self._sampling_inputs(
            n, shape, label, cond_map, temperature, top_k, generator, prefix, start, known
        )
        k = self.config.codebook_size
        draw_device = generator.device if generator is not None else codes.device
        was_training = self.training
        self.eval()
        try:
            cond = self.net.condition_features(label, cond_map, height, width)
            block_conds = self.net.block_conditions(cond)
            if fast:
                logits_at = self.net.fast_logits_fn(block_conds)
            else:
                def logits_at(current: Tensor, row: int, col: int) -> Tensor:
                    return self.net.naive_logits_at(current, row, col, block_conds)
            for row in tqdm(range(height), desc="sampling rows", disable=not progress):
                for col in range(width):
                    uniforms = torch.rand((n, k), generator=generator, device=draw_device)
                    if known is not None:
                        todo = ~known[:, row, col]  # (n,)
                        if not bool(todo.any()):
                            continue
                    new = _choose_codes(logits_at(codes, row, col), uniforms.to(codes.device),
                                        temperature, top_k)  # (n,)
                    if known is not None:
                        new = torch.where(todo, new, codes[:, row, col])
                    codes[:, row, col] = new
        finally:
            self.train(was_training)
        return codes


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------
def receptive_field(model: nn.Module, shape: tuple[int, int], position: tuple[int, int],
                    samples: int = 4, seed: int = 0) -> Tensor:
    """Which input positions the logits at ``position`` depend on, found by backpropagation.

    Random code maps (and random conditioning, if the model needs it) are embedded, the
    embeddings made leaves that keep their gradient, and a random projection of the logits at
    ``position`` is backpropagated; a position is in the receptive field when its embedding gets
    a nonzero gradient for some of the ``samples`` maps. Eval mode (no dropout) while measuring.

    Args:
        model: a :class:`PixelCNNPrior`, :class:`GatedPixelCNN` or :class:`PixelCNN`.
        shape: (H, W) of the grid.
        position: (row, col) of the output position.
        samples: random code maps used (more makes an accidental zero gradient less likely).
        seed: seed of the random codes and projection.

    Returns:
        (H, W) bool tensor on the CPU; for a causal model only positions before ``position`` in
        raster order can be True. Plot it with ``plt.imshow``.

    Raises:
        TypeError: ``model`` is not one of the above.
        ValueError: ``position`` outside the grid.
    """
    net = model.net if isinstance(model, PixelCNNPrior) else model
    if not isinstance(net, _CodePriorNetwork):
        raise TypeError(
            "model must be a PixelCNNPrior, GatedPixelCNN or PixelCNN, got "
            f"{type(model).__name__}"
        )
    height, width = shape
    row, col = position
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"position {tuple(position)} is outside the grid ({height}, {width})")
    c = net.config
    device = next(net.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(c.codebook_size, (samples, height, width), generator=gen)
    label = torch.randint(c.num_classes, (samples,), generator=gen) if c.num_classes else None
    cond_map = (torch.randint(c.cond_codebook_size, (samples, height, width), generator=gen)
                if c.cond_codebook_size else None)
    projection = torch.randn(samples, c.codebook_size, generator=gen)
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            x = net.embed(codes.to(device)).detach().requires_grad_(True)  # (S, E, H, W)
            logits = net.logits_from_embedding(
                x, None if label is None else label.to(device),
                None if cond_map is None else cond_map.to(device),
            )
            (logits[:, :, row, col] * projection.to(device)).sum().backward()
    finally:
        net.train(was_training)
    return (x.grad.abs().sum(dim=(0, 1)) > 0).cpu()  # (H, W)
