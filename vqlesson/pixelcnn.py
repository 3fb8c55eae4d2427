"""The PixelCNN networks over VQ-VAE code maps: masked convolutions and the Gated PixelCNN.

A trained VQ-VAE turns an image into a map of codes (B, H, W), integers in ``[0, K)``. The networks
here read such a map and give, at every position, K logits for the code there that depend only on
the codes before it in raster order (row by row, left to right): the building blocks of the
autoregressive prior of :mod:`vqlesson.pixelcnn_prior` (its loss in bits and its samplers).

Implements:

- van den Oord, Kalchbrenner & Kavukcuoglu (2016), *Pixel Recurrent Neural Networks*, §3.4 and
  Figure 2: masked convolutions. Mask type A (first layer) excludes the current position, mask
  type B (later layers) includes it. The inputs here are code maps, one categorical variable per
  position, so a single "channel group" is enough (no R/G/B sub-masks). :class:`PixelCNN` is the
  plain stack of masked convolutions, kept because it shows the *blind spot*: positions above
  and to the right of the current one that its receptive field never reaches
  (:func:`receptive_field`).
- van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu (2016), *Conditional
  Image Generation with PixelCNN Decoders*: §2.2, the Gated PixelCNN (:class:`GatedPixelCNN`)
  with gated activations ``tanh(W_f * x) ⊙ σ(W_g * x)``, a vertical stack (rows above) feeding a
  horizontal stack (the current row, to the left) through a 1x1 convolution, and a residual
  connection in the horizontal stack; no blind spot. §2.3, conditioning: a class label (here
  benign/malignant) as a learnt bias in every gated block, and a spatial conditioning map (here
  VQ-VAE-2's top code map, Razavi et al. 2019, for the bottom prior) through 1x1 convolutions.
- Chen, Mishra, Rohaninejad & Abbeel (2018), *PixelSNAIL*, §3: position as non-causal
  conditioning (``PriorConfig.position``, :mod:`vqlesson.condition_maps`), so the prior knows
  where the dermoscope's dark corners belong; and van den Oord et al. (2016), *WaveNet*, §2.1:
  dilated convolutions (``PriorConfig.dilations``), so that 8 blocks see the whole 16 x 16 grid
  (without them the receptive field reaches 10 positions up and sideways).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .condition_maps import ConditionStack, PositionMap
from .runtime import eval_mode, model_device
from .validate import check_codes

MASK_TYPES = ("A", "B")
ARCHS = ("gated", "plain")


# --------------------------------------------------------------------------------------------
# Helpers: masks, shifts, the gate
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



# --------------------------------------------------------------------------------------------
# Config and conditioning
# --------------------------------------------------------------------------------------------
@dataclass
class PriorConfig:
    """Hyperparameters of a code-map prior (:class:`~vqlesson.pixelcnn_prior.PixelCNNPrior`,
    :class:`GatedPixelCNN`, :class:`PixelCNN`). The grid size is not fixed: a prior works on any
    (H, W).

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
        position: give every block where it is on the grid
            (:class:`~vqlesson.condition_maps.PositionMap`, PixelSNAIL §3's non-causal
            "background" of normalised coordinates); off in checkpoints written before it.
        dilations: gated only; the dilation of the blocks after the first, repeated in turn
            (``(1, 2, 4, 8)``: 1, 2, 4, 8, 1, 2, ...), each an int >= 1. Dilation d spaces a
            kernel's taps d positions apart, so the receptive field grows by d per block instead
            of 1 (van den Oord et al. 2016, *WaveNet*, §2.1) and covers the whole grid with few
            blocks; ``(1,)``: none (as before).

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
    position: bool = False
    dilations: tuple[int, ...] = (1,)

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
        for name in ("skip_connections", "position"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        self.dilations = tuple(self.dilations) if isinstance(self.dilations, (list, tuple)) \
            else self.dilations  # a checkpoint stores a list
        if (not isinstance(self.dilations, tuple) or not self.dilations
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 1
                           for d in self.dilations)):
            raise ValueError(f"dilations must be a non-empty tuple of ints >= 1, e.g. (1, 2, 4, "
                             f"8), got {self.dilations!r}")
        if self.arch == "plain" and self.dilations != (1,):
            raise ValueError("dilations are for the gated network; leave dilations=(1,) with "
                             "arch='plain'")

    def block_dilation(self, index: int) -> int:
        """The dilation of gated block ``index`` (0 is the first block: 1)."""
        return 1 if index == 0 else self.dilations[(index - 1) % len(self.dilations)]

    @property
    def receptive_reach(self) -> int:
        """S: how far (in positions) the receptive field reaches up, left and right, not counting
        the gated model's one-position input shift."""
        if self.arch == "gated":
            return self.first_kernel_size // 2 + sum(
                self.block_dilation(i) * (self.kernel_size // 2) for i in range(1, self.num_layers))
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


def check_condition(config: PriorConfig, label: object, cond_map: object, batch: int,
                    height: int, width: int, *, ranges: bool = False) -> None:
    """Check a prior's conditioning inputs against its config and a (batch, H, W) code grid:
    ``label`` (batch,) int64 iff ``num_classes`` > 0, ``cond_map`` (batch, h, w) int64 with
    h | H and w | W iff ``cond_codebook_size`` > 0. Presence, dtypes and shapes only, unless
    ``ranges``: then the values too (min/max, a host sync on a GPU), which is for data that
    enters (``sample()``'s arguments), not for every training step.

    Raises:
        ValueError: a required input missing, an input the model was not built for, a wrong
            shape or grid ratio, or (``ranges``) a value out of range.
        TypeError: a label or conditioning map that is not an int64 tensor.
    """
    c = config
    if c.num_classes and label is None:
        raise ValueError(f"this prior is class-conditional (num_classes = {c.num_classes}); pass "
                         f"label=(B,) int64 class indices in [0, {c.num_classes})")
    if not c.num_classes and label is not None:
        raise ValueError("this prior was built without labels (num_classes = 0); do not pass label")
    if c.cond_codebook_size and cond_map is None:
        raise ValueError(f"this prior is conditioned on a code map (cond_codebook_size = "
                         f"{c.cond_codebook_size}); pass cond_map=(B, h, w) int64 codes (VQ-VAE-2's "
                         "top codes)")
    if not c.cond_codebook_size and cond_map is not None:
        raise ValueError("this prior was built without spatial conditioning (cond_codebook_size = "
                         "0); do not pass cond_map")
    if label is not None:
        if not isinstance(label, Tensor) or label.dtype != torch.int64:
            got = label.dtype if isinstance(label, Tensor) else type(label).__name__
            raise TypeError(f"label must be an int64 tensor of class indices, got {got}")
        if label.shape != (batch,):
            raise ValueError(f"label must have shape ({batch},) (one per code map), got "
                             f"{tuple(label.shape)}")
        if ranges and (int(label.min()) < 0 or int(label.max()) >= c.num_classes):
            raise ValueError(f"label must be in [0, {c.num_classes}), got values in "
                             f"[{int(label.min())}, {int(label.max())}]")
    if cond_map is not None:
        check_codes(cond_map, c.cond_codebook_size if ranges else None, "cond_map", int64=True,
                    nonempty=True)
        if cond_map.shape[0] != batch:
            raise ValueError(f"cond_map has batch {cond_map.shape[0]} but the codes have {batch}")
        h, w = cond_map.shape[1:]
        if height % h != 0 or width % w != 0:
            raise ValueError(f"cond_map grid ({h}, {w}) must divide the code grid ({height}, "
                             f"{width}) (VQ-VAE-2: top grid = bottom grid / 2)")


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
    then the gate (with dilation d, the taps are d apart: rows ``r-pd, ..., r``, columns
    ``c-pd, ..., c+pd``). Its input is shifted down by one row before the first block, so the vertical
    stack at row r only ever sees code rows < r ("mask A" for the first layer, "B" after).
    Horizontal stack: a 1 x (p+1) convolution over the columns ``[c-pd, c]`` of its input (shifted
    right by one column before the first block, so the current position is excluded), plus a 1x1
    convolution of the vertical stack's pre-activation (same row: it holds only rows above), plus
    the conditioning bias, then the gate, dropout, a 1x1 convolution and the residual connection.
    An optional 1x1 skip output feeds the model's head.

    Shapes: v, h (B, C_in, H, W) -> v (B, C, H, W), h (B, C, H, W), skip (B, C, H, W) or None.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, residual: bool,
                 skip: bool, dropout: float, num_classes: int, spatial_channels: int,
                 dilation: int = 1) -> None:
        super().__init__()
        self.pad = kernel_size // 2 * dilation  # how far the taps reach
        self.residual = residual
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (kernel_size // 2 + 1, kernel_size),
                                dilation=dilation)
        self.h_conv = nn.Conv2d(in_channels, 2 * channels, (1, kernel_size // 2 + 1),
                                dilation=dilation)
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


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------
class PriorNetwork(nn.Module):
    """Shared parts of :class:`PixelCNN` and :class:`GatedPixelCNN`: the code embedding, the
    conditioning inputs (checked by :func:`check_condition`) and ``forward``. A subclass builds
    ``blocks`` (one conditioning bias each) and implements :meth:`run`."""

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
        self.position = PositionMap(config.embed_dim) if config.position else None

    # ---- inputs -----------------------------------------------------------------------------
    @property
    def _spatial_channels(self) -> int:
        return self.config.embed_dim if self.config.cond_codebook_size or self.config.position \
            else 0

    def embed(self, codes: Tensor) -> Tensor:
        """``codes`` (B, H, W) int64 in [0, K) -> (B, embed_dim, H, W) float (no checks)."""
        return self.embedding(codes).permute(0, 3, 1, 2)  # (B, H, W, E) -> (B, E, H, W)

    def condition_features(self, label: Tensor | None, cond_map: Tensor | None,
                           height: int, width: int) -> Condition | None:
        """Shared conditioning features for a (height, width) grid (no checks): the label, and
        the sum of the embedded conditioning map (B, E, H, W) and the position map
        (1, E, H, W), where the model has them; ``None`` when it has none of them."""
        if label is None and cond_map is None and self.position is None:
            return None
        spatial = self.cond_stack(cond_map, height, width) if cond_map is not None else None
        if self.position is not None:
            where = self.position(height, width)  # (1, E, H, W)
            spatial = where if spatial is None else spatial + where
        return Condition(label, spatial)

    def block_conditions(self, cond: Condition | None) -> list[Tensor | None]:
        """Each block's conditioning bias ((B, C_b, 1, 1), (B, C_b, H, W) or ``None``)."""
        return [block.condition(cond) for block in self.blocks]

    # ---- forward ----------------------------------------------------------------------------
    def run(self, x: Tensor, block_conds: list[Tensor | None]) -> Tensor:
        """The network on embedded codes, no checks: ``x`` (B, embed_dim, H, W) float and each
        block's conditioning bias (:meth:`block_conditions`) -> logits (B, K, H, W)."""
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
        check_condition(self.config, label, cond_map, b, height, width)
        cond = self.condition_features(label, cond_map, height, width)
        return self.run(x, self.block_conditions(cond))

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
            TypeError, ValueError: codes or conditioning of the wrong dtype or shape (see
                :func:`~vqlesson.validate.check_codes`, :func:`check_condition`). Values are
                not checked here (that would cost a host sync per training step): they are
                checked where they enter (:class:`~vqlesson.codes.CodeDataset`, ``sample()``).
        """
        check_codes(codes, None, int64=True, nonempty=True)
        return self.logits_from_embedding(self.embed(codes), label, cond_map)


class PixelCNN(PriorNetwork):
    """Plain PixelCNN over code maps (PixelRNN §3.4): embedding, a ``first_kernel_size`` masked
    convolution of type A, ``num_layers`` residual blocks of type-B masked convolutions, ReLU,
    1x1 convolutions to K logits.

    Kept to show the blind spot: stacked masked kernels never reach some positions above and to
    the right of the current one (see :func:`receptive_field`). ``config.arch`` is ignored here
    (:class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` uses it to choose the network).
    Conditioning, when configured, is a bias on each block's masked convolution.

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

    def run(self, x: Tensor, block_conds: list[Tensor | None]) -> Tensor:
        h = self.input_conv(x)  # (B, C, H, W)
        for block, cond_bias in zip(self.blocks, block_conds):
            h = block(h, cond_bias)
        return self.head(h)  # (B, K, H, W)


class GatedPixelCNN(PriorNetwork):
    """Gated PixelCNN over code maps (van den Oord et al. 2016, §2.2-2.3): no blind spot.

    Embedding (``nn.Embedding(K, embed_dim)``), shifted down (vertical stack input) and right
    (horizontal stack input) so that the first layer excludes the current position, then
    ``num_layers`` :class:`GatedBlock` s (the first with ``first_kernel_size``, no residual; the
    others dilated as ``config.dilations`` says), then the head on the sum of the skip outputs (or
    the last horizontal output). Optional class label, spatial conditioning map and position map
    (see :class:`PriorConfig`). ``config.arch`` is ignored.

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
                dilation=c.block_dilation(i),
            )
            for i in range(c.num_layers)
        )
        self.head = OutputHead(c.channels, c.codebook_size)

    def vertical_stack(self, x: Tensor, block_conds: list[Tensor | None]) -> list[Tensor]:
        """The vertical stack on embedded codes ``x`` (B, E, H, W), shifted down one row first:
        each block's link to the horizontal stack, (B, 2C, H, W); row r sees code rows < r."""
        v = shift_down(x)  # (B, E, H, W)
        links = []
        for block, cond_bias in zip(self.blocks, block_conds):
            v_pre, v = block.vertical(v, cond_bias)
            links.append(block.v_to_h(v_pre))  # (B, 2C, H, W)
        return links

    def horizontal_stack(self, x: Tensor, links: list[Tensor],
                         block_conds: list[Tensor | None]) -> Tensor:
        """The horizontal stack on embedded codes ``x`` (B, E, H, W), shifted right one column
        first, with the vertical stack's ``links``, then the head: logits (B, K, H, W)."""
        h = shift_right(x)  # (B, E, H, W)
        skips = None
        for block, link, cond_bias in zip(self.blocks, links, block_conds):
            h, skip = block.horizontal(h, link, cond_bias)
            if skip is not None:
                skips = skip if skips is None else skips + skip
        return self.head(skips if skips is not None else h)  # (B, K, H, W)

    def run(self, x: Tensor, block_conds: list[Tensor | None]) -> Tensor:
        return self.horizontal_stack(x, self.vertical_stack(x, block_conds), block_conds)


# --------------------------------------------------------------------------------------------
# Inspection
# --------------------------------------------------------------------------------------------
def receptive_field(model: nn.Module, shape: tuple[int, int], position: tuple[int, int],
                    samples: int = 4, seed: int = 0, stack: str = "output") -> Tensor:
    """Which input positions the logits at ``position`` depend on, found by backpropagation:
    ``receptive_field_weights(...) > 0`` (see there for the arguments and errors).

    Returns:
        (H, W) bool tensor on the CPU; for a causal model only positions before ``position`` in
        raster order can be True. Plot it with ``plt.imshow``.
    """
    return receptive_field_weights(model, shape, position, samples, seed, stack) > 0


def receptive_field_weights(model: nn.Module, shape: tuple[int, int],
                            position: tuple[int, int], samples: int = 4, seed: int = 0,
                            stack: str = "output") -> Tensor:
    """How strongly each input position influences ``position``: the gradient's magnitude.

    Random code maps (and random conditioning, if the model needs it) are embedded, the
    embeddings made leaves that keep their gradient, and a random projection of the features at
    ``position`` is backpropagated; the result is the gradient's absolute value summed over the
    ``samples`` maps and the embedding channels. Eval mode (no dropout) while measuring.

    Args:
        model: a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` (its ``net``),
            :class:`GatedPixelCNN` or :class:`PixelCNN`.
        shape: (H, W) of the grid.
        position: (row, col) of the output position.
        samples: random code maps used (more makes an accidental zero gradient less likely).
        seed: seed of the random codes and projection.
        stack: ``"output"`` (the logits: the horizontal stack of a gated network) or
            ``"vertical"`` (a gated network's vertical stack as its last block hands it to the
            horizontal one; its row r sees rows < r only).

    Returns:
        (H, W) float tensor >= 0 on the CPU (0 outside the receptive field).

    Raises:
        TypeError: ``model`` is not one of the above.
        ValueError: ``position`` outside the grid; ``stack`` unknown or ``"vertical"`` for a
            plain PixelCNN (it has a single stack).
    """
    net = model.net if isinstance(getattr(model, "net", None), PriorNetwork) else model
    if not isinstance(net, PriorNetwork):
        raise TypeError(
            "model must be a PixelCNNPrior, GatedPixelCNN or PixelCNN, got "
            f"{type(model).__name__}"
        )
    if stack not in ("output", "vertical") or (stack == "vertical" and
                                               not isinstance(net, GatedPixelCNN)):
        raise ValueError(f"stack must be 'output', or 'vertical' for a gated network, got "
                         f"{stack!r} for a {type(net).__name__}")
    height, width = shape
    row, col = position
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"position {tuple(position)} is outside the grid ({height}, {width})")
    c = net.config
    device = model_device(net)
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(c.codebook_size, (samples, height, width), generator=gen)
    label = torch.randint(c.num_classes, (samples,), generator=gen) if c.num_classes else None
    cond_map = (torch.randint(c.cond_codebook_size, (samples, height, width), generator=gen)
                if c.cond_codebook_size else None)
    with eval_mode(net), torch.enable_grad():
        x = net.embed(codes.to(device)).detach().requires_grad_(True)  # (S, E, H, W)
        out = _features_at(net, x, label, cond_map, stack)  # (S, F, H, W)
        projection = torch.randn(samples, out.shape[1], generator=gen).to(device)
        (out[:, :, row, col] * projection).sum().backward()
    return x.grad.abs().sum(dim=(0, 1)).cpu()  # (H, W)


def _features_at(net: PriorNetwork, x: Tensor, label: Tensor | None, cond_map: Tensor | None,
                 stack: str) -> Tensor:
    """The logits, or a gated network's last vertical link, for embedded codes ``x``."""
    device = x.device
    label = None if label is None else label.to(device)
    cond_map = None if cond_map is None else cond_map.to(device)
    if stack == "output":
        return net.logits_from_embedding(x, label, cond_map)  # (S, K, H, W)
    b, _, height, width = x.shape
    check_condition(net.config, label, cond_map, b, height, width)
    cond = net.condition_features(label, cond_map, height, width)
    return net.vertical_stack(x, net.block_conditions(cond))[-1]  # (S, 2C, H, W)
