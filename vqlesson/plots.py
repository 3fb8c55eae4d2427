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


def reconstructions(x: torch.Tensor, x_hat: torch.Tensor, n: int = 8, title: str | None = None) -> plt.Figure:
    """Originals (top row) above their reconstructions (bottom row).

    Args:
        x, x_hat: (B, 3, H, W) float in [-1, 1]; the first ``n`` are shown.
    """
    n = min(n, x.shape[0])
    grid = torch.cat([x[:n], x_hat[:n]])  # (2n, 3, H, W): originals, then reconstructions
    titles = ["original"] * n + ["reconstruction"] * n
    return image_grid(grid, titles, ncols=n, suptitle=title)


def codebook_usage(counts: torch.Tensor, title: str = "codebook usage", ax=None) -> plt.Axes:
    """Bar chart of code usage counts, sorted from most to least used, with perplexity and the
    fraction of active codes in the title.

    Args:
        counts: (K,) usage counts (any numeric dtype), e.g. ``quantizer.usage_counts``.
    """
    from .metrics import active_fraction, perplexity_from_counts

    counts = counts.detach().double().cpu()
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    ordered = torch.sort(counts, descending=True).values
    ax.bar(range(len(ordered)), (ordered / ordered.sum().clamp_min(1)).numpy(), width=1.0)
    ax.set_xlabel("code (sorted by usage)")
    ax.set_ylabel("fraction of positions")
    ax.set_title(f"{title}: perplexity {perplexity_from_counts(counts):.1f} of K={len(counts)}, "
                 f"{active_fraction(counts):.0%} active", fontsize=9)
    return ax


def training_curves(history: dict[str, list], keys: Sequence[tuple[str, ...]] | None = None) -> plt.Figure:
    """Per-epoch curves of a training history (as returned by ``train_vqvae``).

    Args:
        history: dict of per-epoch lists with an ``epoch`` key.
        keys: groups of history keys, one panel each; default: losses, perplexity, PSNR, SSIM
            (groups whose keys are all absent are dropped).
    """
    if keys is None:
        keys = (("loss", "val_loss"), ("recon_loss", "val_recon_loss"),
                ("perplexity", "val_perplexity"),
                ("quantizer_top_perplexity", "quantizer_bottom_perplexity",
                 "val_quantizer_top_perplexity", "val_quantizer_bottom_perplexity"),
                ("val_psnr",), ("val_ssim",))
    panels = [group for group in keys if any(k in history and history[k] for k in group)]
    if not panels:
        raise ValueError(f"none of the keys {keys} is in the history ({sorted(history)})")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.8), squeeze=False)
    epochs = history.get("epoch") or list(range(1, len(history[panels[0][0]]) + 1))
    for ax, group in zip(axes.flat, panels):
        for key in group:
            if key in history and history[key]:
                ax.plot(epochs[: len(history[key])], history[key], marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
