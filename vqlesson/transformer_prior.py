"""A small causal transformer prior over VQ-VAE code maps (the VQGAN recipe), beside the PixelCNN.

The code map (B, H, W) is read as a sequence of H·W codes in raster order, and a decoder-only
transformer predicts each code from all the codes before it: every position sees the whole past
from the first layer on (a PixelCNN needs many layers, or dilation, for that), and learnt position
embeddings tell it where on the grid it is.

Implements:

- Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser & Polosukhin (2017), *Attention Is
  All You Need*, §3.2-3.5: scaled dot-product attention (here
  ``torch.nn.functional.scaled_dot_product_attention``), multi-head attention, the position-wise
  MLP, learnt embeddings. The blocks are pre-norm (LayerNorm before attention and MLP; GPT-2,
  Radford et al. 2019), as nanoGPT's ``model.py``, whose layout this file follows.
- Esser, Rombach & Ommer (2021), *Taming Transformers for High-Resolution Image Synthesis*,
  §3.2: a GPT over the flattened code indices of a VQ model with token and learnt position
  embeddings, trained by maximum likelihood, sampled with temperature and top-k; the class label
  and a conditioning code map enter as conditioning (here the label as an added embedding, the
  conditioning map, VQ-VAE-2's top codes for the bottom prior, as non-causal features added at
  every position, as the PixelCNN prior does).
- Compared with the Gated PixelCNN and with PixelSNAIL (Chen et al. 2018, whose attention blocks
  give a PixelCNN the same whole-past view) in ``benchmarks/bench_priors.py``.

The input at sequence position i (whose code it predicts) is the embedding of the code before
it (a learnt start vector at i = 0) plus position i's embedding, plus the label's embedding and
the conditioning features at position i where the prior has them. The position embeddings are a
learnt map of ``position_grid`` x ``position_grid`` vectors, bilinearly resized to the grid being
modelled, so a prior trained on 16 x 16 codes also samples a 24 x 24 grid.

Fast sampling keeps each layer's keys and values (a KV cache): one position costs one token
through the network, and the samples equal the naive sampler's (the whole network per position)
for the same generator, up to rounding (see :mod:`vqlesson.pixelcnn_prior`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .condition_maps import ConditionStack
from .pixelcnn import check_condition
from .pixelcnn_prior import AutoregressivePrior, LogitsAt
from .validate import check_codes, check_int, check_number


@dataclass
class TransformerPriorConfig:
    """Hyperparameters of a :class:`TransformerPrior`.

    Attributes:
        codebook_size: K, number of codes of the VQ-VAE (level) whose codes are modelled.
        embed_dim: width d of the token, position and conditioning embeddings and of every
            block; a multiple of ``num_heads``.
        num_layers: transformer blocks.
        num_heads: attention heads per block (each of width ``embed_dim / num_heads``).
        mlp_ratio: the MLP's hidden width as a multiple of ``embed_dim``.
        dropout: dropout probability of the embeddings, attention weights and residual
            branches (0 disables).
        num_classes: classes of the optional label (2: benign/malignant); 0 = unconditional.
        cond_codebook_size: K of an optional spatial conditioning code map (VQ-VAE-2's top
            level, for the bottom prior); 0 = no spatial conditioning.
        cond_layers: non-causal 3x3 residual layers over the embedded conditioning map.
        position_grid: side of the learnt position map (the training grid's side, e.g. 16);
            other grids get it bilinearly resized.

    Raises:
        ValueError: a field out of range (checked on construction).
    """

    codebook_size: int = 512
    embed_dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    num_classes: int = 0
    cond_codebook_size: int = 0
    cond_layers: int = 2
    position_grid: int = 16

    def __post_init__(self) -> None:
        for name in ("codebook_size", "embed_dim", "num_layers", "num_heads", "mlp_ratio",
                     "position_grid"):
            check_int(getattr(self, name), name, 1)
        for name in ("num_classes", "cond_codebook_size", "cond_layers"):
            check_int(getattr(self, name), name, 0, note="0 disables it")
        check_number(self.dropout, "dropout", 0, 1, high_open=True)
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be a multiple of num_heads "
                             f"({self.num_heads})")


# --------------------------------------------------------------------------------------------
# The blocks
# --------------------------------------------------------------------------------------------
class KVCache:
    """Keys and values of the positions seen so far, per layer: (B, heads, T, head_dim) each."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers
        self.length = 0  # positions held


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position i attends to positions <= i (Vaswani et al.
    §3.2.3, masked). (B, T, d) -> (B, T, d); with a ``cache`` the T inputs are the positions
    after those the cache holds, and their keys and values are appended to it."""

    def __init__(self, config: TransformerPriorConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, d)
        q, k, v = (z.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)
                   for z in (q, k, v))  # (B, T, d) -> (B, heads, T, d/heads)
        mask, causal = None, True
        if cache is not None:
            past = cache.length
            if cache.keys[layer] is not None:
                k = torch.cat([cache.keys[layer], k], dim=2)  # (B, heads, past + T, d/heads)
                v = torch.cat([cache.values[layer], v], dim=2)
            cache.keys[layer], cache.values[layer] = k, v
            # query j (position past + j) sees keys 0 .. past + j
            causal = False
            if t > 1:
                mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0)  # (B, heads, T, d/heads)
        y = y.transpose(1, 2).reshape(b, t, d)  # (B, heads, T, d/heads) -> (B, T, d)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network (Vaswani et al. §3.3), GELU: (B, T, d) -> (B, T, d)."""

    def __init__(self, config: TransformerPriorConfig) -> None:
        super().__init__()
        hidden = config.mlp_ratio * config.embed_dim
        self.fc = nn.Linear(config.embed_dim, hidden)
        self.proj = nn.Linear(hidden, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, config: TransformerPriorConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.embed_dim)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.embed_dim)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)
        return x + self.mlp(self.ln_2(x))


# --------------------------------------------------------------------------------------------
# The prior
# --------------------------------------------------------------------------------------------
class TransformerPrior(AutoregressivePrior):
    """A causal transformer over the flattened code map (Esser et al. 2021, §3.2), with the loss
    and the sampler of :class:`~vqlesson.pixelcnn_prior.AutoregressivePrior`; fast sampling
    with a KV cache. Any grid size works (the position map is resized).

    ``forward(codes, label=None, cond_map=None)`` -> ``PriorOutput`` (logits (B, K, H, W));
    ``sample(n, shape, ...)`` -> (n, H, W) int64 codes.
    """

    def __init__(self, config: TransformerPriorConfig) -> None:
        super().__init__()
        if not isinstance(config, TransformerPriorConfig):
            raise TypeError(f"config must be a TransformerPriorConfig, got "
                            f"{type(config).__name__}")
        self.config = c = config
        self.token = nn.Embedding(c.codebook_size, c.embed_dim)
        self.start = nn.Parameter(torch.zeros(c.embed_dim))  # the input before the first code
        self.position = nn.Parameter(torch.zeros(1, c.embed_dim, c.position_grid, c.position_grid))
        self.label = nn.Embedding(c.num_classes, c.embed_dim) if c.num_classes else None
        self.cond_stack = (ConditionStack(c.cond_codebook_size, c.embed_dim, c.cond_layers)
                           if c.cond_codebook_size else None)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.num_layers))
        self.ln_f = nn.LayerNorm(c.embed_dim)
        self.head = nn.Linear(c.embed_dim, c.codebook_size)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.num_layers))
        nn.init.normal_(self.position, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # ---- inputs -----------------------------------------------------------------------------
    def context(self, label: Tensor | None, cond_map: Tensor | None, height: int,
                width: int) -> Tensor:
        """What each sequence position knows before any code: its position embedding plus the
        label's embedding and the conditioning features there. -> (1 or B, H·W, d) float."""
        where = self.position
        if where.shape[-2:] != (height, width):
            where = F.interpolate(where, size=(height, width), mode="bilinear",
                                  align_corners=False)  # (1, d, H, W)
        if cond_map is not None:
            where = where + self.cond_stack(cond_map, height, width)  # (B, d, H, W)
        context = where.flatten(2).transpose(1, 2)  # (1 or B, d, H, W) -> (1 or B, H·W, d)
        if label is not None:
            context = context + self.label(label)[:, None, :]  # (B, H·W, d)
        return context

    def inputs(self, codes: Tensor) -> Tensor:
        """Flat codes (B, T) -> the embeddings of the code before each position (B, T, d): the
        start vector, then codes 0 .. T-2."""
        tokens = self.token(codes[:, :-1])  # (B, T-1, d)
        start = self.start.expand(codes.shape[0], 1, -1)  # (B, 1, d)
        return torch.cat([start, tokens], dim=1)  # (B, T, d)

    def run(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """Embedded inputs (B, T, d) -> logits (B, T, K)."""
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)
        return self.head(self.ln_f(x))  # (B, T, K)

    # ---- the prior's interface --------------------------------------------------------------
    def logits(self, codes: Tensor, label: Tensor | None = None,
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
            TypeError, ValueError: codes or conditioning of the wrong dtype or shape.
        """
        check_codes(codes, None, int64=True, nonempty=True)
        b, height, width = codes.shape
        check_condition(self.config, label, cond_map, b, height, width)
        flat = codes.reshape(b, height * width)  # (B, H, W) -> (B, T)
        x = self.inputs(flat) + self.context(label, cond_map, height, width)  # (B, T, d)
        logits = self.run(x)  # (B, T, K)
        return logits.transpose(1, 2).reshape(b, -1, height, width)  # (B, K, T) -> (B, K, H, W)

    def logits_fn(self, label: Tensor | None, cond_map: Tensor | None, height: int, width: int,
                  fast: bool) -> LogitsAt:
        """Naive: the whole sequence through the network per position. Fast: a KV cache; the
        positions since the last call (all known ones in a completion are skipped by the
        sampler) go through the network in one step, then the current one."""
        if not fast:
            return lambda codes, row, col: self.logits(codes, label, cond_map)[:, :, row, col]
        context = self.context(label, cond_map, height, width)  # (1 or B, T, d)
        cache = KVCache(len(self.blocks))

        def logits_at(codes: Tensor, row: int, col: int) -> Tensor:
            end = row * width + col + 1  # positions 0 .. end-1 are needed
            flat = codes.reshape(codes.shape[0], height * width)  # (n, H, W) -> (n, T)
            x = self.inputs(flat[:, :end])[:, cache.length:]  # (n, new, d)
            x = x + context[:, cache.length:end]
            logits = self.run(x, cache)  # (n, new, K)
            cache.length = end
            return logits[:, -1]  # (n, K)

        return logits_at
