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


def vqvae2_diagram() -> plt.Figure:
    """The VQ-VAE-2 of Razavi et al. 2019 (Fig. 2a) as boxes and arrows, with grid sizes for an
    S x S image: bottom level at S/4, top level at S/8."""
    boxes = {
        "image\nS x S": (0.05, 0.5), "bottom encoder\n/4": (0.22, 0.5),
        "top encoder\n/2": (0.39, 0.8), "top quantizer\nS/8 grid, K codes": (0.58, 0.8),
        "top decoder\nx2": (0.58, 0.5), "bottom quantizer\nS/4 grid, K codes": (0.58, 0.2),
        "upsample top\nx2": (0.77, 0.8), "decoder\nx4, tanh": (0.77, 0.2),
        "reconstruction\nS x S": (0.94, 0.2),
    }
    arrows = [
        ("image\nS x S", "bottom encoder\n/4"), ("bottom encoder\n/4", "top encoder\n/2"),
        ("top encoder\n/2", "top quantizer\nS/8 grid, K codes"),
        ("top quantizer\nS/8 grid, K codes", "top decoder\nx2"),
        ("top decoder\nx2", "bottom quantizer\nS/4 grid, K codes"),
        ("bottom encoder\n/4", "bottom quantizer\nS/4 grid, K codes"),
        ("top quantizer\nS/8 grid, K codes", "upsample top\nx2"),
        ("upsample top\nx2", "decoder\nx4, tanh"),
        ("bottom quantizer\nS/4 grid, K codes", "decoder\nx4, tanh"),
        ("decoder\nx4, tanh", "reconstruction\nS x S"),
    ]
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.axis("off")
    labels = {}
    for text, (x, y) in boxes.items():
        colour = "#f6d7a7" if "quantizer" in text else "#d9e8f5"
        labels[text] = ax.text(x, y, text, ha="center", va="center", fontsize=9,
                               bbox=dict(boxstyle="round,pad=0.5", fc=colour, ec="0.4"))
    fig.canvas.draw()  # lays out the boxes, so the arrows can be clipped to their outlines
    for (a, b) in arrows:
        ax.annotate("", xy=boxes[b], xytext=boxes[a],
                    arrowprops=dict(arrowstyle="-|>", lw=1.2, color="0.3", shrinkA=2, shrinkB=2,
                                    patchA=labels[a].get_bbox_patch(),
                                    patchB=labels[b].get_bbox_patch()))
    ax.text(0.5, 0.3, "concat", fontsize=8, color="0.3")
    ax.set_title("VQ-VAE-2: the top level (S/8) holds global shape, the bottom level (S/4) local detail")
    return fig
