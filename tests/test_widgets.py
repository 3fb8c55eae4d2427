"""vqlesson.widgets: widgets where a frontend exists, real static figures elsewhere."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from vqlesson import widgets
from vqlesson.configs import vqvae_config
from vqlesson.pixelcnn import PriorConfig
from vqlesson.pixelcnn_prior import PixelCNNPrior
from vqlesson.vqvae import VQVAE

matplotlib.use("Agg")


@pytest.fixture
def model():
    torch.manual_seed(0)
    return VQVAE(vqvae_config("ci")).eval()  # 32 px images, 8x8 codes, K = 64


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.rand(3, 3, 32, 32) * 2 - 1


@pytest.fixture
def no_display(monkeypatch):
    """Widgets on, as in Jupyter, but nothing is sent to a frontend."""
    monkeypatch.setenv(widgets.WIDGETS_ENV, "1")
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)


def _image_axes(fig):
    return [ax for ax in fig.axes if ax.get_images()]


def test_static_figures_under_pytest_and_a_switch_for_widgets(monkeypatch):
    assert not widgets.widgets_enabled()  # PYTEST_CURRENT_TEST is set: no frontend
    monkeypatch.setenv(widgets.WIDGETS_ENV, "1")
    assert widgets.widgets_enabled()
    monkeypatch.setenv(widgets.WIDGETS_ENV, "0")
    assert not widgets.widgets_enabled()


def test_code_patches_are_the_pixels_under_the_code(model, images):
    codes, = model.encode(images)  # one level: (3, 8, 8)
    code = int(torch.bincount(codes.flatten()).argmax())
    found = widgets.code_patches(model, images, code, max_patches=5)
    expected = int((codes == code).sum())
    assert found.patches.shape == (min(5, expected), 3, 4, 4)
    for patch, n, (r, c) in zip(found.patches, found.image_index, found.position):
        assert codes[n, r, c] == code
        assert torch.equal(patch, images[n, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4])
    with_context = widgets.code_patches(model, images, code, max_patches=2, context=2)
    assert with_context.patches.shape[-2:] == (8, 8)
    assert torch.equal(widgets.code_patches(model, images, code, level="codes").patches,
                       widgets.code_patches(model, images, code).patches)  # the only level
    with pytest.raises(ValueError, match=r"level must be one of \['codes'\]"):
        widgets.code_patches(model, images, code, level="top")
    assert widgets.code_patches(model, images, 10_000).patches.shape == (0, 3, 4, 4)


def test_static_codebook_explorer_draws_codes_from_most_to_least_used(model, images):
    fig = widgets.codebook_explorer(model, images, max_patches=4, static_codes=3)
    assert isinstance(fig, plt.Figure)
    assert len(_image_axes(fig)) >= 3
    assert "code" in fig.axes[0].get_title(loc="left")
    plt.close(fig)


def test_static_reconstruction_viewer_draws_original_reconstruction_and_error(model, images):
    fig = widgets.reconstruction_viewer(model, images, indices=[0, 2],
                                        labels=torch.tensor([0, 1, 1]), classes=["benign", "malignant"])
    assert isinstance(fig, plt.Figure)
    shown = _image_axes(fig)
    assert len(shown) == 6  # 2 lesions x (original, reconstruction, error)
    titles = [ax.get_title() for ax in shown]
    assert "test lesion 2 (malignant)" in titles and any("PSNR" in t for t in titles)
    plt.close(fig)
    with pytest.raises(ValueError, match="indices"):
        widgets.reconstruction_viewer(model, images, indices=[5])


def test_static_temperature_explorer_draws_one_row_per_temperature(model, one_thread):
    prior = PixelCNNPrior(PriorConfig(codebook_size=64, embed_dim=4, channels=8, num_layers=2,
                                      kernel_size=3, first_kernel_size=3))
    fig = widgets.temperature_explorer(model, (prior,), n=2, temperatures=(0.5, 1.0, 1.5))
    titles = [ax.get_title() for ax in _image_axes(fig)]
    assert titles == ["T=0.5"] * 2 + ["T=1"] * 2 + ["T=1.5"] * 2
    plt.close(fig)


def test_widgets_redraw_when_the_choice_changes(model, images, no_display, monkeypatch, one_thread):
    import ipywidgets

    drawn = []
    real_grid = widgets.image_grid
    monkeypatch.setattr(widgets, "image_grid", lambda *a, **k: drawn.append(k) or real_grid(*a, **k))
    box = widgets.codebook_explorer(model, images)
    assert isinstance(box, ipywidgets.VBox)
    menu = box.children[0]
    assert isinstance(menu, ipywidgets.Dropdown) and len(menu.options) >= 2
    menu.value = menu.options[1][1]
    assert len(drawn) == 2 and str(menu.value) in drawn[-1]["suptitle"]

    viewer = widgets.reconstruction_viewer(model, images, indices=[0, 1])
    assert [value for _, value in viewer.children[0].options] == [0, 1]

    prior = PixelCNNPrior(PriorConfig(codebook_size=64, embed_dim=4, channels=8, num_layers=2,
                                      kernel_size=3, first_kernel_size=3))
    slider = widgets.temperature_explorer(model, (prior,), n=2).children[0]
    assert isinstance(slider, ipywidgets.FloatSlider) and slider.value == 1.0
    plt.close("all")
