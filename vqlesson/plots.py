"""Figures shared by the notebooks and the command line (matplotlib; nothing is shown or saved
unless the caller does it). Every function returns the ``Figure`` it drew."""

from __future__ import annotations

from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from .abcd import TDS_BANDS
from .data import to_unit_range
from .validate import check_int


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


def categorical_palette(codebook_size: int, seed: int = 0):
    """A colour map of ``codebook_size`` (K) distinct colours in a seeded random order, for code
    maps: codes are categories, so neighbouring indices (17 and 18) get unrelated colours.

    Returns:
        ``matplotlib.colors.ListedColormap`` with K colours.

    Raises:
        ValueError: ``codebook_size`` < 1.
    """
    from matplotlib.colors import ListedColormap, hsv_to_rgb

    k = np.arange(check_int(codebook_size, "codebook_size", 1))
    hsv = np.stack([(k * 0.618034) % 1.0,                    # golden-ratio hues
                    0.45 + 0.5 * ((k // 3) % 2),             # two saturations
                    np.array((0.55, 0.78, 1.0))[k % 3]], 1)  # three brightnesses; (K, 3)
    order = np.random.default_rng(seed).permutation(codebook_size)
    return ListedColormap(hsv_to_rgb(hsv)[order], name=f"codes{codebook_size}")


def code_map(codes: torch.Tensor, codebook_size: int, ax=None, title: str | None = None,
             seed: int = 0) -> plt.Axes:
    """Draw one code map with :func:`categorical_palette` (no colour bar: colours are names,
    not values).

    Args:
        codes: (H, W) int64 in [0, K).
        codebook_size: K.
        ax: axes to draw into; ``None``: a new figure.
        title: the panel title.
        seed: the palette's order.

    Raises:
        ValueError: ``codes`` is not 2-D or holds an index outside [0, K).
    """
    codes = torch.as_tensor(codes)
    if codes.dim() != 2:
        raise ValueError(f"codes must be (H, W), got shape {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= codebook_size):
        raise ValueError(f"codes must lie in [0, {codebook_size}), got "
                         f"[{int(codes.min())}, {int(codes.max())}]")
    if ax is None:
        _, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(codes.cpu().numpy(), cmap=categorical_palette(codebook_size, seed),
              vmin=-0.5, vmax=codebook_size - 0.5, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def _curve_label(key: str) -> str:
    """``"val_recon_loss"`` -> ``"validation"``, ``"quantizer_top_perplexity"`` -> ``"train, top"``."""
    split = "validation" if key.startswith("val_") else "train"
    for level in ("top", "bottom"):
        if f"_{level}_" in f"_{key}_":
            return f"{split}, {level}"
    return split


def training_curves(history: dict[str, list], keys: Sequence[tuple[str, ...]] | None = None) -> plt.Figure:
    """Per-epoch curves of a training history (as returned by ``train_vqvae``).

    One panel per group, titled by the metric, at most three panels a row; each curve is
    labelled ``train`` or ``validation`` (and its level); axes show plain values (no offset).
    A history of one epoch is drawn as labelled points, with a note saying so.

    Args:
        history: dict of per-epoch lists with an ``epoch`` key.
        keys: groups of history keys, one panel each; default: losses, perplexity, PSNR, SSIM
            (groups whose keys are all absent are dropped).

    Raises:
        ValueError: none of the keys is in the history.
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
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)  # ceil
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.0 * nrows), squeeze=False,
                             layout="constrained")
    epochs = history.get("epoch") or list(range(1, len(history[panels[0][0]]) + 1))
    for ax, group in zip(axes.flat, panels):
        for key in group:
            if key in history and history[key]:
                values = history[key]
                ax.plot(epochs[: len(values)], values, marker="o", ms=6 if len(values) == 1 else 3,
                        label=_curve_label(key))
                if len(values) == 1:
                    ax.annotate(f"{values[0]:.4g}", (epochs[0], values[0]), fontsize=9,
                                xytext=(6, 0), textcoords="offset points", va="center")
        metric = group[0].removeprefix("val_").replace("quantizer_top_", "")
        ax.set_title(metric.replace("_", " "), fontsize=11)
        ax.set_xlabel("epoch")
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.legend(fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if len(epochs) == 1:
        fig.suptitle("one epoch so far: one point per curve", fontsize=10)
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


# --------------------------------------------------------------------------------------------
# Failure analysis (vqlesson.analysis results; notebook 05 and the pipeline's report)
# --------------------------------------------------------------------------------------------
def score_distributions(splits: dict, classes: Sequence[str] = (),
                        metrics: Sequence[str] = ("psnr", "ssim")) -> plt.Figure:
    """Box plots of per-image reconstruction scores, per split and class, one panel per metric.

    Args:
        splits: ``{"train": ReconstructionScores, "test": ...}`` (from
            ``vqlesson.analysis.reconstruction_scores``).
        classes: class names (index -> name).
        metrics: fields of the scores to show (``"mse"``, ``"psnr"``, ``"ssim"``).
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        data, names = [], []
        for split, scores in splits.items():
            values = getattr(scores, metric).double()
            finite = torch.isfinite(values)
            for label in sorted(set(scores.labels.tolist())):
                chosen = values[(scores.labels == label) & finite]
                if chosen.numel():
                    name = classes[label] if 0 <= label < len(classes) else "all"
                    data.append(chosen.numpy())
                    names.append(f"{split}\n{name}")
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(names) + 1), names, fontsize=8)
        ax.set_ylabel(f"{metric}" + (" (dB)" if metric == "psnr" else ""))
        ax.set_title(f"per-image {metric.upper()}", fontsize=10)
    fig.tight_layout()
    return fig


def worst_cases(worst, classes: Sequence[str] = (), title: str | None = None) -> plt.Figure:
    """Originals, reconstructions and squared-error maps of the worst reconstructions.

    Args:
        worst: ``vqlesson.analysis.WorstReconstructions``.
    """
    k = worst.images.shape[0]
    fig, axes = plt.subplots(3, k, figsize=(1.6 * k, 5.0), squeeze=False)
    pictures = [to_unit_range(t.float()).permute(0, 2, 3, 1).numpy()  # (k, H, W, 3)
                for t in (worst.images, worst.reconstructions)]
    vmax = float(worst.error_maps.max()) or 1.0
    for i in range(k):
        label = int(worst.labels[i])
        name = classes[label] if 0 <= label < len(classes) else ""
        axes[0, i].imshow(pictures[0][i])
        axes[0, i].set_title(f"#{int(worst.index[i])} {name}\n{float(worst.psnr[i]):.1f} dB", fontsize=7)
        axes[1, i].imshow(pictures[1][i])
        axes[2, i].imshow(worst.error_maps[i].numpy(), cmap="magma", vmin=0, vmax=vmax)
        for ax in axes[:, i]:
            ax.axis("off")
    for row, text in enumerate(("original", "reconstruction", "squared error")):
        axes[row, 0].text(-0.1, 0.5, text, transform=axes[row, 0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=8)
    fig.suptitle(title or "worst test reconstructions (lowest PSNR)", fontsize=10)
    fig.tight_layout()
    return fig


def usage_comparison(comparisons: dict) -> plt.Figure:
    """Code frequencies on the training and test sets, codes sorted by training usage, one panel
    per level; codes the test set uses but training barely did are marked in red.

    Args:
        comparisons: ``{level: vqlesson.analysis.UsageComparison}``.
    """
    fig, axes = plt.subplots(1, len(comparisons), figsize=(6 * len(comparisons), 3.2),
                             squeeze=False)
    for ax, (level, u) in zip(axes.flat, comparisons.items()):
        train = u.train_counts.double() / u.train_counts.sum().clamp(min=1)  # (K,)
        test = u.test_counts.double() / u.test_counts.sum().clamp(min=1)  # (K,)
        order = torch.argsort(train, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))  # position of each code on the x axis
        floor = 0.5 / max(float(u.test_counts.sum()), 1.0)  # zero drawn at the bottom
        ax.semilogy(range(len(order)), train[order].clamp(min=floor).numpy(), lw=1.5,
                    label=f"train (perplexity {u.train_perplexity:.0f})")
        ax.semilogy(range(len(order)), test[order].clamp(min=floor).numpy(), ".", ms=3,
                    label=f"test (perplexity {u.test_perplexity:.0f})")
        if len(u.test_only_codes):
            ax.semilogy(rank[u.test_only_codes].numpy(), test[u.test_only_codes].numpy(), "o",
                        mfc="none", color="red",
                        label=f"test-only codes: {u.test_only_fraction:.2%} of test positions")
        ax.set_xlabel("code (sorted by training usage)")
        ax.set_ylabel("fraction of positions")
        ax.set_title(f"{level}: train vs test usage", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def nll_curves(history: dict, extra: dict | None = None, title: str | None = None,
               ax=None) -> plt.Axes:
    """A prior's NLL (bits per code) per epoch: train and validation from ``train_prior``'s
    history, plus any split an ``NLLTracker`` recorded (``extra``), with the best epoch marked."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    series = [(history["epoch"], history[k], name) for k, name in
              (("train_bits_per_code", "train"), ("val_bits_per_code", "validation"))
              if history.get(k)]
    for key, values in (extra or {}).items():
        if key.endswith("_bits_per_code"):
            series.append((extra["epoch"], values, key.removesuffix("_bits_per_code")))
    for epochs, values, name in series:
        ax.plot(epochs, values, marker="o", ms=3, label=name)
    if history.get("val_bits_per_code"):
        val = history["val_bits_per_code"]
        best = history["epoch"][min(range(len(val)), key=val.__getitem__)]
        ax.axvline(best, color="grey", ls=":", label=f"lowest validation NLL (epoch {best})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL (bits per code)")
    ax.set_title(title or "prior NLL per epoch", fontsize=10)
    ax.legend(fontsize=8)
    return ax


def surprise(images: torch.Tensor, bits: torch.Tensor, title: str | None = None) -> plt.Figure:
    """Images above their per-position surprise maps ``-log2 p(c_i | c_<i)`` (bits).

    Args:
        images: (N, 3, H, W) float in [-1, 1].
        bits: (N, h, w) float, from ``vqlesson.analysis.surprise_maps``.
    """
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(1.7 * n, 3.8), squeeze=False)
    pictures = to_unit_range(images.detach().float().cpu()).permute(0, 2, 3, 1)  # (N, H, W, 3)
    vmax = float(bits.max())
    for i in range(n):
        axes[0, i].imshow(pictures[i].numpy())
        shown = axes[1, i].imshow(bits[i].numpy(), cmap="inferno", vmin=0, vmax=vmax)
        axes[1, i].set_title(f"mean {float(bits[i].mean()):.2f} bits", fontsize=7)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.colorbar(shown, ax=axes[1, :].tolist(), shrink=0.8, label="bits")
    fig.suptitle(title or "surprise of each code under the prior (bright: unexpected)", fontsize=10)
    return fig


def near_copies(samples: torch.Tensor, train_images: torch.Tensor, memorisation,
                n: int = 8, title: str | None = None) -> plt.Figure:
    """Samples (top) above their nearest training image in code space (bottom), closest pairs
    first, captioned with the code (Hamming) and pixel (RMS) distances.

    Args:
        samples: (N, 3, H, W) float in [-1, 1].
        train_images: (M, 3, H, W) float in [-1, 1], indexed by ``memorisation.code.index``.
        memorisation: ``vqlesson.analysis.Memorisation`` of these samples.
    """
    order = torch.argsort(memorisation.code.distance)[:n]
    pairs = torch.cat([samples[order], train_images[memorisation.code.index[order]]])
    titles = [f"sample{' (copy)' if memorisation.near_copy[i] else ''}" for i in order.tolist()]
    titles += [f"train: {float(memorisation.code.distance[i]):.0%} codes differ"
               for i in order.tolist()]
    return image_grid(pairs, titles, ncols=len(order), cell_inches=1.9,
                      suptitle=title or f"each sample and its nearest training image; "
                                        f"{memorisation.near_copy_fraction:.0%} near-copies")


def diversity_curves(temperatures: Sequence[float], curves: dict, reference=None,
                     ax=None) -> plt.Axes:
    """Sample diversity (mean pairwise code Hamming distance) against temperature, one line per
    prior, with the real test images' figure as a horizontal line.

    Args:
        temperatures: the x values.
        curves: ``{prior name: [Diversity or float per temperature]}``.
        reference: ``Diversity`` (or float) of real test images.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.2))
    value = (lambda d: d.code_hamming if hasattr(d, "code_hamming") else float(d))
    for name, points in curves.items():
        ax.plot(list(temperatures), [value(p) for p in points], marker="o", label=name)
    if reference is not None:
        ax.axhline(value(reference), color="k", ls="--", label="real test images")
    ax.set_xlabel("temperature T")
    ax.set_ylabel("diversity (Hamming)")
    ax.set_ylim(0, 1)
    ax.set_title("sample diversity: fraction of codes that differ", fontsize=10)
    ax.legend(fontsize=8)
    return ax


# --------------------------------------------------------------------------------------------
# The ABCD realism measure (vqlesson.abcd features, vqlesson.realism validation)
# --------------------------------------------------------------------------------------------
#: Axis range and histogram bin edges of each ABCD feature (integer features: one bin each).
ABCD_BINS = {"asymmetry": np.linspace(0, 2, 17), "border": np.linspace(0, 8, 17),
             "colour": np.arange(0.5, 7.0), "structures": np.arange(0.5, 4.0),
             "diameter": np.linspace(1, 5, 17), "score": np.linspace(1, 9, 17),
             "score_diameter": np.linspace(1, 9, 17)}


def abcd_distributions(sets: dict, features: Sequence[str] = ("asymmetry", "border", "colour",
                       "structures", "diameter", "score"), title: str | None = None
                       ) -> plt.Figure:
    """Per-feature distributions of two or more image sets, one panel per ABCD feature.

    Args:
        sets: ``{name: ABCDFeatures}`` (from ``vqlesson.abcd.abcd_features``); images without a
            lesion are left out, and the legend gives each set's fraction with one.
        features: fields of ``ABCDFeatures`` to show (``score`` panels get Stolz's band limits
            4.75 and 5.45 as dotted lines).
        title: the figure's title.

    Raises:
        ValueError: an unknown feature name.
    """
    unknown = [f for f in features if f not in ABCD_BINS]
    if unknown:
        raise ValueError(f"unknown features {unknown}; choose from {list(ABCD_BINS)}")
    legend_rows = -(-len(sets) // 3)  # three sets per legend row, below the panels
    legend_inches = 0.1 + 0.2 * legend_rows
    height = 2.5 + legend_inches
    fig, axes = plt.subplots(1, len(features), figsize=(2.6 * len(features), height),
                             squeeze=False)
    for ax, name in zip(axes.flat, features):
        for label, feats in sets.items():
            values = getattr(feats, name)[feats.found].numpy()
            found = float(feats.found.float().mean()) if len(feats.found) else 0.0
            ax.hist(values, bins=ABCD_BINS[name], density=bool(len(values)), histtype="step",
                    lw=1.6, label=f"{label} ({found:.0%} found)")  # no lesion: an empty line
        if name.startswith("score"):
            for limit in TDS_BANDS:
                ax.axvline(limit, color="k", ls=":", lw=1)
        ax.set_title(name, fontsize=10)
        ax.set_yticks([])
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(sets), 3), fontsize=8,
               frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0.0, legend_inches / height, 1.0, 1.0))
    return fig


def abcd_validation(validation, classes: Sequence[str] = ("benign", "malignant")) -> plt.Figure:
    """Estimated against true ABCD features of synthetic lesions, one scatter per feature, with
    the identity line and the correlation in each title (colour counts jittered by up to 0.2).

    Args:
        validation: a ``SyntheticValidation`` from ``vqlesson.realism.validate_on_synthetic``.
        classes: names of the true labels (point colours).
    """
    pairs = (("asymmetry", "asymmetry"), ("border", "border"), ("colour", "colour"),
             ("diameter", "diameter"), ("score", "score_diameter"))
    fig, axes = plt.subplots(1, len(pairs), figsize=(13, 2.9))
    found = validation.estimated.found
    labels = validation.truth["labels"][found]
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, (2, int(found.sum())))  # (2, n)
    for ax, (true_name, estimate_name) in zip(axes, pairs):
        truth = validation.truth[true_name][found].numpy()
        estimate = getattr(validation.estimated, estimate_name)[found].numpy()
        if true_name == "colour":  # whole numbers: spread the points to show how many
            truth, estimate = truth + jitter[0], estimate + jitter[1]
        for k, colour in ((0, "tab:blue"), (1, "tab:red")):
            chosen = (labels == k).numpy()
            ax.scatter(truth[chosen], estimate[chosen], s=7, alpha=0.5, color=colour,
                       label=classes[k] if k < len(classes) else str(k))
        edges = ABCD_BINS[estimate_name]
        ax.plot(edges[[0, -1]], edges[[0, -1]], color="k", lw=0.8)
        ax.set_title(f"{true_name}: r = {validation.correlation[true_name]:.2f}", fontsize=10)
        ax.set_xlabel("true (from parameters)", fontsize=8)
    axes[0].set_ylabel("estimated from pixels", fontsize=8)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def codebook_usage_levels(quantizers: Sequence[tuple[str, Any]]) -> plt.Figure:
    """One :func:`codebook_usage` panel per quantiser (``(name, VectorQuantizer)`` pairs, e.g.
    from :func:`vqlesson.train.find_quantizers`), from the usage counted since its last
    ``reset_usage``."""
    fig, axes = plt.subplots(1, len(quantizers), figsize=(6 * len(quantizers), 3), squeeze=False)
    for ax, (name, q) in zip(axes.flat, quantizers):
        codebook_usage(q.usage_counts, title=f"{name or 'codes'} on the test set", ax=ax)
    fig.tight_layout()
    return fig


def prior_curves(histories: dict[str, dict]) -> plt.Figure:
    """Train and validation NLL (bits per code) per epoch, one panel per prior level
    (``{"codes": history}`` or ``{"top": ..., "bottom": ...}``, as :func:`vqlesson.prior.train_prior`
    returns them), with the best epoch marked."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.2),
                             squeeze=False)
    for ax, (level, history) in zip(axes.flat, histories.items()):
        epochs = history.get("epoch", [])
        for key, label in (("train_bits_per_code", "train"), ("val_bits_per_code", "validation")):
            if history.get(key):
                ax.plot(epochs, history[key], marker="o", ms=3, label=label)
        if history.get("best_epoch"):
            ax.axvline(history["best_epoch"][-1], color="grey", ls=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("NLL (bits per code)")
        ax.set_title(f"{level} prior" if level != "codes" else "prior", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def code_maps(codes: torch.Tensor, codebook_size: int, titles: Sequence[str] | None = None,
              suptitle: str | None = None) -> plt.Figure:
    """Code maps drawn with :func:`categorical_palette`, the colours of :func:`code_map` (no
    colour bar: colours carry no order).

    Args:
        codes: (N, H, W) int64 in [0, codebook_size).
        titles: optional N captions.
    """
    n = codes.shape[0]
    fig, axes = plt.subplots(1, n, figsize=(1.9 * n, 2.2), squeeze=False)
    for i, ax in enumerate(axes[0]):
        ax.imshow(codes[i].cpu().numpy(), cmap=categorical_palette(codebook_size), vmin=-0.5,
                  vmax=codebook_size - 0.5, interpolation="nearest")
        ax.set_xticks([]); ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def receptive_fields(fields: dict[str, Sequence[torch.Tensor]], depths: Sequence[int],
                     position: tuple[int, int]) -> plt.Figure:
    """Receptive fields as functions of depth: one row per network or stack (``fields[name][i]``
    at ``depths[i]``), each an (H, W) float map of gradient magnitudes (0: no influence), drawn
    on a log scale relative to its maximum, the predicted position marked by a red square."""
    from matplotlib.colors import LogNorm

    names = list(fields)
    fig, axes = plt.subplots(len(names), len(depths), squeeze=False,
                             figsize=(1.9 * len(depths), 2.0 * len(names) + 0.4))
    for r, name in enumerate(names):
        for c, depth in enumerate(depths):
            ax, field = axes[r, c], fields[name][c].float()
            weights = (field / field.max().clamp_min(1e-30)).numpy()
            weights[weights == 0] = np.nan  # outside the field: blank
            ax.imshow(weights, cmap="viridis", norm=LogNorm(1e-4, 1))
            ax.add_patch(plt.Rectangle((position[1] - 0.5, position[0] - 0.5), 1, 1,
                                       fill=False, edgecolor="red", lw=1.5))
            ax.set_title(f"{name}\n{depth} layers: {int((field > 0).sum())} inputs", fontsize=8)
            ax.set_xticks([]); ax.set_yticks([])
    fig.suptitle("receptive field of the red position: coloured = influences it "
                 "(colour: gradient magnitude, log scale)", fontsize=9)
    fig.tight_layout()
    return fig


def sample_panels(panels: dict[str, torch.Tensor], n: int = 16, ncols: int = 4,
                  cell_inches: float = 0.9) -> plt.Figure:
    """Samples of several priors side by side (e.g. without and with position, same seed and
    budget; or the priors of :mod:`vqlesson.prior_trials`): one panel per name, the first ``n``
    images of each as a grid with ``ncols`` columns, the name above it.

    Args:
        panels: name -> (N, 3, H, W) float images in [-1, 1] (N >= 1; ``n`` at most are shown).
    """
    if not panels:
        raise ValueError("panels must name at least one set of images")
    rows = (n + ncols - 1) // ncols
    fig = plt.figure(figsize=(len(panels) * ncols * cell_inches + 0.4 * len(panels),
                              rows * cell_inches + 0.5))
    outer = fig.add_gridspec(1, len(panels), wspace=0.08)
    for k, (name, images) in enumerate(panels.items()):
        inner = outer[k].subgridspec(rows, ncols, wspace=0.03, hspace=0.03)
        pictures = to_unit_range(images[:n].detach().float().cpu()).permute(0, 2, 3, 1)
        for i in range(rows * ncols):
            ax = fig.add_subplot(inner[i // ncols, i % ncols])
            ax.axis("off")
            if i < len(pictures):
                ax.imshow(pictures[i].numpy())
            if i == ncols // 2:
                ax.set_title(name, fontsize=9, loc="center" if ncols % 2 else "left")
    return fig


def temperature_choice(choice: Any) -> plt.Figure:
    """What :func:`~vqlesson.temperature.choose_temperature` measured: the two-sample accuracy
    (with its standard error; 0.5: indistinguishable) and the code diversity against the
    temperature, the real images' diversity dashed and the chosen temperature marked."""
    t = [r["temperature"] for r in choice.rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    left.errorbar(t, [r["accuracy"] for r in choice.rows],
                  yerr=[r["standard_error"] for r in choice.rows], marker="o", capsize=3)
    left.axhline(0.5, color="grey", linestyle=":", label="indistinguishable")
    left.set(xlabel="temperature", ylabel="two-sample accuracy",
             title="samples vs reconstructions")
    right.plot(t, [r["diversity"] for r in choice.rows], marker="o")
    right.axhline(choice.reference["diversity"], color="grey", linestyle="--", label="real")
    right.set(xlabel="temperature", ylabel="code diversity (Hamming)", title="diversity")
    for ax in (left, right):
        ax.axvline(choice.temperature, color="tab:red", alpha=0.5, label="chosen")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
