"""Figures shared by the notebooks and the command line (matplotlib; nothing is shown or saved
unless the caller does it). Every function returns the ``Figure`` it drew."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import torch

from .data import to_unit_range


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    cell_inches: float = 1.4,
    suptitle: str | None = None,
) -> plt.Figure:
    """A grid of images.

    Args:
        images: (N, 3, H, W) float in [-1, 1] (the course's range; converted for display).
        titles: optional N short captions (e.g. class names).
        ncols: images per row.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
    n = images.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_inches, nrows * cell_inches),
                             squeeze=False)
    pictures = to_unit_range(images.detach().float().cpu()).permute(0, 2, 3, 1)  # (N, H, W, 3)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(pictures[i].numpy())
            if titles is not None:
                ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def channel_histograms(
    images: torch.Tensor, value_range: tuple[float, float], title: str, ax=None
) -> plt.Axes:
    """Per-channel pixel-intensity histograms of a batch ``(N, 3, H, W)`` over ``value_range``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3))
    for c, colour in enumerate(("red", "green", "blue")):
        ax.hist(images[:, c].flatten().cpu().numpy(), bins=64, range=value_range, color=colour,
                alpha=0.45, label=colour, density=True)
    ax.set_title(title)
    ax.set_xlabel("pixel value")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ax
