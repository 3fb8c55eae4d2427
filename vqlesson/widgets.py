"""Interactive views for the notebooks (ipywidgets), with static figures where no widget
frontend exists.

- :func:`codebook_explorer`: pick a code of a VQ-VAE (van den Oord et al. 2017, §3.1), see the
  image patches whose position uses it (each code position covers an f x f pixel patch);
- :func:`reconstruction_viewer`: pick a test lesion, see it, its reconstruction and the error;
- :func:`temperature_explorer`: move a temperature slider, see samples of a PixelCNN prior
  (van den Oord et al. 2016) decoded by the VQ-VAE.

Each function displays a widget and returns it when widgets can be shown
(:func:`widgets_enabled`), and otherwise draws and returns a static matplotlib ``Figure`` with
the same content for a few fixed choices (nbval, CI, the grader, a plain Python session): call
``plt.show()`` after it, as after any figure. ``VQLESSON_WIDGETS=0`` forces the static figures,
``VQLESSON_WIDGETS=1`` the widgets.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from .metrics import psnr, to_unit_range
from .plots import image_grid
from .runtime import model_device
from .validate import check_images
from .vqvae import check_autoencoder

WIDGETS_ENV = "VQLESSON_WIDGETS"
HEADLESS_ENVS = ("CI", "PYTEST_CURRENT_TEST", "VQLESSON_GRADING")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def widgets_enabled() -> bool:
    """Whether to show widgets: ``$VQLESSON_WIDGETS`` if set (``0``/``1``); otherwise only in
    an IPython kernel (Jupyter, Colab) with ipywidgets installed, and not under CI, pytest/nbval
    or the grader, which have no widget frontend."""
    choice = os.environ.get(WIDGETS_ENV, "").strip().lower()
    if choice in ("0", "false", "off", "no", "static"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    if choice in ("1", "true", "on", "yes"):
        return True
    if any(os.environ.get(name) for name in HEADLESS_ENVS):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _interactive(control: Any, draw: Callable[[Any], plt.Figure]) -> Any:
    """A ``VBox`` of ``control`` above an output area that shows ``draw(control.value)`` and is
    redrawn whenever the value changes; displayed, then returned."""
    import ipywidgets as widgets
    from IPython.display import display

    out = widgets.Output()

    def redraw(_change: Any = None) -> None:
        with out:
            out.clear_output(wait=True)
            fig = draw(control.value)
            display(fig)
            plt.close(fig)

    control.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([control, out])
    box.redraw = redraw  # for callers and tests: draw again with the current value
    display(box)
    return box


def _codes(model: nn.Module, images: Tensor, level: str | None) -> Tensor:
    """(N, h, w) int64 code maps of ``images`` (no state changes) at level ``level`` (``None``:
    the only level; ``"top"`` or ``"bottom"`` for a VQ-VAE-2).

    Raises:
        TypeError: not a VQ-VAE / VQ-VAE-2; ValueError: no such level.
    """
    names = [lv.name for lv in check_autoencoder(model).levels]
    if level is None and len(names) == 1:
        level = names[0]
    if level not in names:
        raise ValueError(f"level must be one of {names} for this {type(model).__name__}, got "
                         f"{level!r}")
    with torch.no_grad():
        codes = model.encode(images.to(model_device(model)))
    return codes[names.index(level)].cpu()


def _reconstruct(model: nn.Module, images: Tensor) -> Tensor:
    """Reconstructions through the codes, changing no state (no usage counts, no EMA)."""
    with torch.no_grad():
        codes = check_autoencoder(model).encode(images.to(model_device(model)))
        return model.decode_indices(*codes).cpu()


# --------------------------------------------------------------------------------------------
# Codebook explorer
# --------------------------------------------------------------------------------------------
class CodePatches(NamedTuple):
    """The image patches whose code position uses one code.

    Attributes:
        patches: (P, 3, p, p) float in [-1, 1], p = f + 2 * context (f = S / grid side); the
            area beyond the image is black.
        image_index: (P,) int64, which image each patch comes from.
        position: (P, 2) int64, (row, column) of the code position in the grid.
    """

    patches: Tensor
    image_index: Tensor
    position: Tensor


def code_patches(model: nn.Module, images: Tensor, code: int, max_patches: int = 16,
                 context: int = 0, level: str | None = None,
                 codes: Tensor | None = None) -> CodePatches:
    """The pixel patches of ``images`` whose code is ``code``, in raster order over the images.

    Args:
        model: a VQ-VAE (or VQ-VAE-2, with ``level``) with ``encode``.
        images: (N, 3, S, S) float in [-1, 1].
        code: the code index, in [0, K).
        max_patches: at most this many patches (>= 1).
        context: pixels of surrounding context on each side (>= 0).
        level: ``"top"`` or ``"bottom"`` for a VQ-VAE-2, else ``None``.
        codes: (N, h, w) precomputed code maps of ``images`` (saves encoding again).

    Returns:
        :class:`CodePatches`, empty (P = 0) when no position uses the code.

    Raises:
        TypeError, ValueError: images that are not (N, 3, S, S) float (see
            :func:`~vqlesson.validate.check_images`).
        ValueError: ``max_patches`` < 1, ``context`` < 0, or code maps that do not divide the
            image size.
    """
    check_images(images, "images", channels=3)
    if max_patches < 1 or context < 0:
        raise ValueError(f"need max_patches >= 1 and context >= 0, got {max_patches}, {context}")
    codes = _codes(model, images, level) if codes is None else codes.cpu()
    size, grid = images.shape[-1], codes.shape[-1]
    if size % grid != 0:
        raise ValueError(f"code grid {grid} does not divide the image size {size}")
    f = size // grid
    where = torch.nonzero(codes == code)[:max_patches]  # (P, 3): image, row, column
    padded = torch.nn.functional.pad(images.cpu().float(), (context,) * 4, value=-1.0)  # black
    side = f + 2 * context
    patches = [padded[n, :, r * f:r * f + side, c * f:c * f + side] for n, r, c in where.tolist()]
    stacked = torch.stack(patches) if patches else images.new_zeros(0, 3, side, side).float()
    return CodePatches(stacked, where[:, 0].clone(), where[:, 1:].clone())


def codebook_explorer(model: nn.Module, images: Tensor, max_patches: int = 16,
                      context: int | None = None, level: str | None = None,
                      static_codes: int = 5) -> Any:
    """Pick a code, see the image patches that use it (codes listed from most to least used
    on ``images``; unused codes are left out).

    Args:
        model: a trained VQ-VAE (or VQ-VAE-2 with ``level``).
        images: (N, 3, S, S) float in [-1, 1], e.g. a test batch.
        max_patches: patches shown per code.
        context: pixels of context around each f x f patch (default f // 2).
        level: ``"top"``/``"bottom"`` for a VQ-VAE-2.
        static_codes: codes shown (one row each) in the static figure, spread over the usage
            ranking from the most used to the least used code.

    Returns:
        The displayed widget, or, without a widget frontend, a ``Figure`` of ``static_codes``
        codes.
    """
    check_images(images, "images", channels=3)
    codes = _codes(model, images, level)  # (N, h, w)
    counts = torch.bincount(codes.flatten())
    order = [int(k) for k in torch.argsort(counts, descending=True) if counts[k] > 0]
    f = images.shape[-1] // codes.shape[-1]
    context = f // 2 if context is None else context
    total = codes.numel()

    def patches_of(code: int) -> CodePatches:
        return code_patches(model, images, code, max_patches, context, level, codes)

    if not widgets_enabled():
        ranks = torch.linspace(0, len(order) - 1, min(static_codes, len(order))).round().long()
        shown = [order[int(r)] for r in ranks.unique()]
        ncols = min(8, max_patches)
        fig, axes = plt.subplots(len(shown), ncols, figsize=(1.2 * ncols, 1.3 * len(shown)),
                                 squeeze=False)
        for row, code in enumerate(shown):
            found = patches_of(code).patches[:ncols]
            for col, ax in enumerate(axes[row]):
                ax.axis("off")
                if col < found.shape[0]:
                    ax.imshow(to_unit_range(found[col]).permute(1, 2, 0).numpy())
            axes[row][0].set_title(f"code {code}: {int(counts[code])} of {total} positions",
                                   fontsize=8, loc="left")
        fig.suptitle(f"codes from most to least used: patches of {f}x{f} pixels (plus context) "
                     "that use them", fontsize=10)
        fig.tight_layout()
        return fig

    import ipywidgets as widgets

    options = [(f"code {k} ({int(counts[k])} positions)", k) for k in order]
    control = widgets.Dropdown(options=options, value=order[0], description="code")

    def draw(code: int) -> plt.Figure:
        found = patches_of(code)
        titles = [f"image {int(i)} ({int(r)},{int(c)})"
                  for i, (r, c) in zip(found.image_index, found.position)]
        return image_grid(found.patches, titles, ncols=8, cell_inches=1.3,
                          suptitle=f"code {code}: used at {int(counts[code])} of {total} positions")

    return _interactive(control, draw)


# --------------------------------------------------------------------------------------------
# Reconstruction viewer
# --------------------------------------------------------------------------------------------
def _reconstruction_rows(images: Tensor, recon: Tensor, chosen: Sequence[int],
                         titles: Sequence[str]) -> plt.Figure:
    """One row per chosen image: original, reconstruction, per-pixel error on [0, 1]."""
    fig, axes = plt.subplots(len(chosen), 3, figsize=(7.5, 2.4 * len(chosen)), squeeze=False)
    for row, (i, title) in enumerate(zip(chosen, titles)):
        x, x_hat = images[i:i + 1], recon[i:i + 1]
        error = (to_unit_range(x) - to_unit_range(x_hat)).abs().mean(1)[0]  # (S, S)
        axes[row][0].imshow(to_unit_range(x[0]).permute(1, 2, 0).numpy())
        axes[row][0].set_title(title, fontsize=8)
        axes[row][1].imshow(to_unit_range(x_hat[0]).permute(1, 2, 0).numpy())
        axes[row][1].set_title(f"reconstruction, PSNR {float(psnr(x, x_hat)):.1f} dB", fontsize=8)
        shown = axes[row][2].imshow(error.numpy(), cmap="magma", vmin=0)
        axes[row][2].set_title("|error| on [0, 1]", fontsize=8)
        fig.colorbar(shown, ax=axes[row][2], fraction=0.046)
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def reconstruction_viewer(model: nn.Module, images: Tensor, indices: Sequence[int] | None = None,
                          labels: Tensor | None = None, classes: Sequence[str] = ()) -> Any:
    """Pick one of the chosen test lesions, see it, its reconstruction and the error map.

    Args:
        model: a trained VQ-VAE or VQ-VAE-2 (reconstructs through its codes, no state change).
        images: (N, 3, S, S) float in [-1, 1].
        indices: which images to offer (default: the first four).
        labels: (N,) int64 class labels, shown with ``classes`` names.
        classes: class names.

    Returns:
        The displayed widget, or a ``Figure`` with one row per chosen lesion.

    Raises:
        TypeError, ValueError: images that are not (N, 3, S, S) float (see
            :func:`~vqlesson.validate.check_images`).
        ValueError: an index outside ``[0, N)``.
    """
    check_images(images, "images", channels=3)
    chosen = list(range(min(4, images.shape[0]))) if indices is None else [int(i) for i in indices]
    if not chosen or any(not 0 <= i < images.shape[0] for i in chosen):
        raise ValueError(f"indices must be in [0, {images.shape[0]}), got {chosen}")
    images = images.cpu().float()
    recon = _reconstruct(model, images)

    def title(i: int) -> str:
        if labels is not None and len(classes):
            return f"test lesion {i} ({classes[int(labels[i])]})"
        return f"test lesion {i}"

    if not widgets_enabled():
        return _reconstruction_rows(images, recon, chosen, [title(i) for i in chosen])

    import ipywidgets as widgets

    control = widgets.Dropdown(options=[(title(i), i) for i in chosen], value=chosen[0],
                               description="lesion")
    return _interactive(control, lambda i: _reconstruction_rows(images, recon, [i], [title(i)]))


# --------------------------------------------------------------------------------------------
# Temperature explorer
# --------------------------------------------------------------------------------------------
def temperature_explorer(vqvae: nn.Module, priors: Sequence[nn.Module], n: int = 6,
                         label: int | None = None,
                         temperatures: Sequence[float] = (0.5, 0.8, 1.0, 1.2), seed: int = 0,
                         slider: tuple[float, float, float] = (0.1, 2.0, 0.1)) -> Any:
    """Move a temperature slider, see ``n`` samples of the prior decoded by the VQ-VAE.

    Every temperature uses a generator seeded with ``seed``, so the rows differ by the
    temperature only.

    Args:
        vqvae: the trained VQ-VAE (or VQ-VAE-2) whose codes the priors model.
        priors: one :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` per level, as a tuple:
            ``(prior,)``, or ``(top_prior, bottom_prior)`` for a VQ-VAE-2.
        n: samples per temperature (>= 1).
        label: class index for a class-conditional prior.
        temperatures: rows of the static figure.
        seed: generator seed.
        slider: (min, max, step) of the temperature slider.

    Returns:
        The displayed widget, or a ``Figure`` with one row per temperature.
    """
    from .pixelcnn_prior import SampleOptions
    from .sampling import sample_images

    def draw_rows(chosen: Sequence[float]) -> plt.Figure:
        rows = [sample_images(vqvae, priors, n, label, torch.Generator().manual_seed(seed),
                              SampleOptions(temperature=float(t))).cpu()
                for t in chosen]
        return image_grid(torch.cat(rows), [f"T={t:g}" for t in chosen for _ in range(n)],
                          ncols=n, suptitle="samples; the same random numbers at every temperature")

    if not widgets_enabled():
        return draw_rows(temperatures)

    import ipywidgets as widgets

    low, high, step = slider
    control = widgets.FloatSlider(value=1.0, min=low, max=high, step=step, description="T",
                                  continuous_update=False, readout_format=".1f")
    return _interactive(control, lambda t: draw_rows([t]))
