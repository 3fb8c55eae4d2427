"""Tests of vqlesson.source, vqlesson.side_studies and the code-map and training-curve figures."""

from __future__ import annotations

import inspect

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from vqlesson import plots  # noqa: E402
from vqlesson.quantize import VectorQuantizer  # noqa: E402
from vqlesson.side_studies import perplexity_by_batch_size, spread, SideRun  # noqa: E402
from vqlesson.source import source_excerpt  # noqa: E402


def test_a_source_excerpt_names_its_file_and_lines_and_matches_the_file():
    excerpt = source_excerpt(VectorQuantizer.forward, "flat_indices = squared", "z_q = z +")
    assert excerpt.path == "vqlesson/quantize.py"
    file_lines = open(inspect.getsourcefile(VectorQuantizer)).read().splitlines()
    assert excerpt.lines == file_lines[excerpt.first_line - 1:excerpt.last_line]
    assert "argmin" in excerpt.lines[0] and ".detach()" in excerpt.lines[-1]
    assert str(excerpt).startswith(f"# vqlesson/quantize.py, lines {excerpt.first_line}-")
    assert excerpt.text.splitlines() == excerpt.lines


def test_a_missing_marker_says_the_library_changed():
    with pytest.raises(ValueError, match="library changed"):
        source_excerpt(VectorQuantizer.forward, "no such line in forward")
    with pytest.raises(TypeError, match="no Python source"):
        source_excerpt(len)


def test_per_batch_perplexity_grows_with_the_batch_size():
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 64, (32, 4, 4), generator=g)  # 16 positions per image
    by_size = perplexity_by_batch_size(codes, 64, [1, 4])
    assert sorted(by_size) == [1, 4, 32]
    assert by_size[1] < by_size[4] < by_size[32] <= 64
    assert by_size[1] <= 16  # one image holds 16 positions: at most 16 codes
    collapsed = perplexity_by_batch_size(torch.zeros(8, 2, 2, dtype=torch.int64), 8, [2])
    assert collapsed == {2: pytest.approx(1.0), 8: pytest.approx(1.0)}
    with pytest.raises(ValueError, match=">= 1"):
        perplexity_by_batch_size(codes, 64, [0])


def test_spread_is_the_mean_and_range_over_seeds():
    runs = [SideRun("a", s, 8, {}, {"psnr": v}, None, 0.0) for s, v in ((0, 20.0), (1, 22.0))]
    result = spread(runs, "psnr")
    assert (result.mean, result.low, result.high, result.values) == (21.0, 20.0, 22.0, [20.0, 22.0])
    with pytest.raises(ValueError, match="'ssim'"):
        spread(runs, "ssim")


def test_the_code_palette_gives_neighbouring_codes_unrelated_colours():
    palette = plots.categorical_palette(256, seed=0)
    colours = torch.tensor(palette.colors)  # (K, 3)
    assert colours.shape == (256, 3) and len({tuple(c.tolist()) for c in colours}) == 256
    neighbours = (colours[1:] - colours[:-1]).norm(dim=1).mean()
    assert neighbours > 0.3  # a sequential map's neighbours differ by about 0.01
    ax = plots.code_map(torch.tensor([[0, 1], [2, 255]]), 256, title="codes")
    assert ax.get_title() == "codes"
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        plots.code_map(torch.tensor([[0, 4]]), 4)


def test_training_curves_are_readable_for_one_epoch():
    history = {"epoch": [1], "loss": [0.2342500001], "val_loss": [0.25], "val_psnr": [20.0]}
    fig = plots.training_curves(history)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == ["loss", "psnr"]
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["train", "validation"]
    assert "one epoch" in fig._suptitle.get_text()
    fig.canvas.draw()
    assert axes[0].yaxis.get_offset_text().get_text() == ""  # no "1e-7+2.3425e-1"
