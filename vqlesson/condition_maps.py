"""Non-causal conditioning maps of the priors: what a prior knows about every position at once.

An autoregressive prior sees only the codes before the current one, but some inputs are known
for the whole grid before sampling starts, so every position may look at all of them:

- :class:`ConditionStack`: a spatial conditioning code map, VQ-VAE-2's top codes for the bottom
  prior (Razavi, van den Oord & Vinyals 2019, *Generating Diverse High-Fidelity Images with
  VQ-VAE-2*, §3.2, the conditioning stack): embedded, a few non-causal residual 3x3 layers at
  its own resolution, upsampled to the prior's grid.
- :class:`PositionMap`: *where* on the grid a position is. Chen, Mishra, Rohaninejad & Abbeel
  (2018), *PixelSNAIL: An Improved Autoregressive Generative Model*, §3: a "background" of
  position features given to every layer as non-causal conditioning. Without it a convolutional
  prior is translation-equivariant: it cannot know that the dermoscope's dark surround belongs
  in the corners and the lesion in the middle, and it places both anywhere. Here the features
  come from fixed normalised coordinates (x, y and the radius from the centre, each cell's
  centre mapped to [-1, 1]) through two 1x1 convolutions, so they are defined on any grid: a
  prior trained on 16 x 16 codes puts the vignette in the corners of a 24 x 24 grid too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def upsample_to(x: Tensor, height: int, width: int, name: str = "cond_map") -> Tensor:
    """Nearest-neighbour upsampling of (B, C, h, w) to (B, C, height, width) by whole factors.

    Raises:
        ValueError: ``h`` does not divide ``height`` or ``w`` does not divide ``width`` (the
            message names ``name``).
    """
    h, w = x.shape[-2:]
    if height % h != 0 or width % w != 0:
        raise ValueError(
            f"{name} of grid ({h}, {w}) cannot be upsampled to the prior's grid "
            f"({height}, {width}): the sides must divide the prior's sides (VQ-VAE-2: the top "
            "grid is half the bottom's)"
        )
    x = x.repeat_interleave(height // h, dim=2)  # (B, C, H, w)
    return x.repeat_interleave(width // w, dim=3)  # (B, C, H, W)


class ConditionStack(nn.Module):
    """Non-causal features of a spatial conditioning code map (VQ-VAE-2's top codes).

    Embedding (``cond_codebook_size`` -> ``embed_dim``), ``num_layers`` residual 3x3 layers at
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
        return upsample_to(x, height, width)  # (B, E, H, W)


def coordinate_grid(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """Normalised coordinates of a (height, width) grid: (3, height, width) float32 holding x
    (columns, left -1 to right +1), y (rows, top -1 to bottom +1) and the radius
    ``sqrt(x^2 + y^2)`` (0 at the centre, 1 on the inscribed circle, sqrt(2) in the corners),
    taken at each cell's centre, so the values do not depend on the grid's size.

    Raises:
        ValueError: a side < 1.
    """
    if height < 1 or width < 1:
        raise ValueError(f"the grid must be at least 1 x 1, got ({height}, {width})")
    y = (torch.arange(height, dtype=torch.float32, device=device) * 2 + 1) / height - 1  # (H,)
    x = (torch.arange(width, dtype=torch.float32, device=device) * 2 + 1) / width - 1  # (W,)
    yy, xx = torch.meshgrid(y, x, indexing="ij")  # (H, W) each
    return torch.stack([xx, yy, (xx ** 2 + yy ** 2).sqrt()])  # (3, H, W)


class PositionMap(nn.Module):
    """Where each position lies, as features (PixelSNAIL §3's "background", non-causal).

    :func:`coordinate_grid` (x, y, radius) -> 1x1 convolution (3 -> ``channels``) -> ReLU ->
    1x1 convolution (``channels`` -> ``channels``): a small per-position network of the
    coordinates, so a feature can switch on outside the inscribed circle (radius > 1) or near the
    centre. Fixed coordinates, learnt projection: defined on any grid size.

    ``(height, width)`` -> (1, channels, height, width) float (one map, shared by the batch).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(3, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, height: int, width: int) -> Tensor:
        coords = coordinate_grid(height, width, self.hidden.weight.device)[None]  # (1, 3, H, W)
        return self.out(F.relu(self.hidden(coords)))  # (1, channels, H, W)
