"""Tests of the PixelCNN networks over code maps: masked convolutions (PixelRNN §3.4), the Gated
PixelCNN (van den Oord et al. 2016, §2.2-2.3), causality, receptive fields and conditioning."""

from __future__ import annotations

import pytest
import torch
from conftest import conditioned_config, random_codes, tiny_config

from vqlesson.pixelcnn import (
    GatedPixelCNN,
    MaskedConv2d,
    PixelCNN,
    PriorConfig,
    causal_mask,
    receptive_field,
    receptive_field_weights,
)
from vqlesson.codes import CodeDataset
from vqlesson.pixelcnn_prior import Completion, PixelCNNPrior

ARCHS = ("gated", "plain")
CONDITIONS = ("none", "label", "spatial")


@pytest.fixture(autouse=True)
def _seed(one_thread):
    """Deterministic weights, single-threaded (``one_thread``: tiny convolutions run fastest so)."""
    torch.manual_seed(0)


# ---- masks -----------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [3, 5, 7])
def test_causal_masks_a_and_b(k):
    c = k // 2
    a, b = causal_mask(k, "A"), causal_mask(k, "B")
    assert a.shape == b.shape == (k, k)
    assert a[c, c] == 0 and b[c, c] == 1
    for mask in (a, b):
        assert mask[:c].eq(1).all()  # every row above the centre
        assert mask[c, :c].eq(1).all()  # left of the centre
        assert mask[c + 1:].eq(0).all()  # nothing below
        assert mask[c, c + 1:].eq(0).all()  # nothing to the right
    assert (b - a).sum() == 1  # they differ in the centre only


def test_masked_conv_kernel_stays_masked_and_is_causal():
    conv = MaskedConv2d(2, 4, 5, mask_type="A")
    masked_out = conv.mask.expand_as(conv.weight) == 0  # (4, 2, 5, 5)
    assert conv.weight[masked_out].eq(0).all()
    assert conv.masked_weight()[:, :, 2, 2].eq(0).all()  # type A: no centre
    optimizer = torch.optim.AdamW(conv.parameters(), lr=0.1)
    conv(torch.randn(3, 2, 6, 6)).pow(2).sum().backward()
    assert conv.weight.grad[masked_out].eq(0).all()
    optimizer.step()
    assert conv.weight[masked_out].eq(0).all()
    assert conv.weight[~masked_out].ne(0).any()
    # Output at (2, 3) ignores the input at (2, 3) and after it.
    x = torch.randn(1, 2, 6, 6)
    y = x.clone()
    y[:, :, 2, 3:] += 5.0
    y[:, :, 3:] -= 3.0
    assert torch.allclose(conv(x)[:, :, 2, 3], conv(y)[:, :, 2, 3])
    assert not torch.allclose(conv(x)[:, :, 2, 4], conv(y)[:, :, 2, 4])
    b = MaskedConv2d(2, 4, 3, mask_type="B")
    assert b.mask[0, 0, 1, 1] == 1
    assert b.masked_weight()[:, :, 1, 1].ne(0).any()  # type B may use the centre


@pytest.mark.parametrize("bad", ["C", "a", None])
def test_masked_conv_rejects_bad_mask_type(bad):
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 1, 3, mask_type=bad)


def test_masked_conv_rejects_even_kernel():
    with pytest.raises(ValueError, match="kernel_size"):
        MaskedConv2d(1, 1, 4, mask_type="B")


# ---- shapes and causality --------------------------------------------------------------------

def positions_at_or_after(shape, position) -> torch.Tensor:
    height, width = shape
    index = torch.arange(height * width).view(height, width)
    return index >= position[0] * width + position[1]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("condition", CONDITIONS)
def test_gradient_causality(arch, condition):
    """No gradient from the logits at (i, j) reaches the input at (i, j) or any later position."""
    prior = PixelCNNPrior(conditioned_config(condition, arch=arch))
    shape = (6, 6)
    for position in [(0, 0), (0, 3), (2, 0), (3, 2), (4, 5), (5, 5)]:
        field = receptive_field(prior, shape, position)
        assert field.shape == shape and field.dtype == torch.bool
        assert not field[positions_at_or_after(shape, position)].any(), (arch, position)
        if position != (0, 0):
            assert field.any()  # it does see something before it


def test_gradient_causality_by_hand_from_one_output_location():
    """The same check written out: embed, keep the gradient, backprop one logit."""
    net = GatedPixelCNN(tiny_config())
    codes = random_codes(3, 5, 5)
    x = net.embed(codes).detach().requires_grad_(True)  # (3, E, 5, 5)
    net.logits_from_embedding(x)[:, 2, 3, 1].sum().backward()
    seen = x.grad.abs().sum(dim=(0, 1)) > 0  # (5, 5)
    assert not seen[positions_at_or_after((5, 5), (3, 1))].any()
    assert seen[3, 0] and seen[2, 4] and seen[0, 0]


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_ignore_changed_future_codes(arch):
    prior = PixelCNNPrior(tiny_config(arch=arch)).eval()
    codes = random_codes(2, 5, 6)
    row, col = 2, 3
    changed = codes.clone()
    future = positions_at_or_after((5, 6), (row, col))
    changed[:, future] = (changed[:, future] + 3) % 8
    with torch.no_grad():
        a, b = prior.logits(codes), prior.logits(changed)
    assert torch.allclose(a[:, :, row, col], b[:, :, row, col], atol=1e-6)
    assert not torch.allclose(a[:, :, row, col + 1], b[:, :, row, col + 1], atol=1e-6)


def gated_field_in_theory(config: PriorConfig, shape, position) -> torch.Tensor:
    """Rows above within S + 1, columns within S; the current row within S + 1 to the left."""
    s = config.receptive_reach
    height, width = shape
    r, c = position
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    above = (rows < r) & (rows >= r - 1 - s) & ((cols - c).abs() <= s)
    left = (rows == r) & (cols < c) & (cols >= c - 1 - s)
    return above | left


def test_gated_has_no_blind_spot_and_plain_has_one():
    config = tiny_config(num_layers=3)  # S = 1 + 2 = 3
    gated = GatedPixelCNN(config)
    plain = PixelCNN(config)
    shape, position = (8, 9), (6, 3)
    expected = gated_field_in_theory(config, shape, position)
    gated_field = receptive_field(gated, shape, position)
    plain_field = receptive_field(plain, shape, position)
    assert torch.equal(gated_field, expected)  # every earlier position within reach, nothing else
    missed = expected & ~plain_field
    assert missed.any()
    # The blind spot is above and to the right: e.g. one row up, just past the first layer's reach.
    r, c = position
    assert missed[r - 1, c + config.first_kernel_size // 2 + 1]
    assert all(i < r and j > c for i, j in missed.nonzero().tolist())


def test_receptive_field_rejects_bad_arguments():
    with pytest.raises(ValueError, match="position"):
        receptive_field(PixelCNNPrior(tiny_config()), (4, 4), (4, 0))
    with pytest.raises(TypeError, match="model"):
        receptive_field(torch.nn.Linear(2, 2), (4, 4), (1, 1))


# ---- conditioning ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_class_label_changes_logits(arch):
    prior = PixelCNNPrior(tiny_config(arch=arch, num_classes=2)).eval()
    codes = random_codes(1, 4, 4).expand(2, 4, 4)
    logits = prior.logits(codes, label=torch.tensor([0, 1]))
    assert not torch.allclose(logits[0], logits[1])
    assert not torch.allclose(logits[0, :, 0, 0], logits[1, :, 0, 0])  # even with no context


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("top_grid", [(4, 4), (2, 2), (4, 2)])
def test_spatial_condition_changes_logits(arch, top_grid):
    prior = PixelCNNPrior(tiny_config(arch=arch, cond_codebook_size=5)).eval()
    codes = random_codes(1, 4, 4).expand(2, 4, 4)
    top = torch.randint(5, (2, *top_grid))
    top[1] = (top[0] + 1) % 5
    logits = prior.logits(codes, cond_map=top)
    assert logits.shape == (2, 8, 4, 4)
    assert not torch.allclose(logits[0], logits[1])


def test_both_conditions_together():
    prior = PixelCNNPrior(tiny_config(num_classes=2, cond_codebook_size=5))
    codes = random_codes(2, 4, 6)
    out = prior(codes, label=torch.tensor([1, 0]), cond_map=torch.randint(5, (2, 2, 3)))
    assert out.logits.shape == (2, 8, 4, 6)


@pytest.mark.parametrize("arch", ARCHS)
def test_missing_or_extra_conditioning_raises(arch):
    codes = random_codes(2, 4, 4)
    label = torch.tensor([0, 1])
    top = torch.randint(5, (2, 2, 2))
    plain = PixelCNNPrior(tiny_config(arch=arch))
    with pytest.raises(ValueError, match="without labels"):
        plain(codes, label=label)
    with pytest.raises(ValueError, match="without spatial"):
        plain(codes, cond_map=top)
    labelled = PixelCNNPrior(tiny_config(arch=arch, num_classes=2))
    with pytest.raises(ValueError, match="class-conditional"):
        labelled(codes)
    with pytest.raises(ValueError, match=r"label must be in \[0, 2\)"):  # values: where they enter
        labelled.sample(2, (4, 4), label=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        labelled(codes, label=torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match="int64"):
        labelled(codes, label=torch.tensor([0.0, 1.0]))
    spatial = PixelCNNPrior(tiny_config(arch=arch, cond_codebook_size=5))
    with pytest.raises(ValueError, match="conditioned on a code map"):
        spatial(codes)
    with pytest.raises(ValueError, match="divide"):
        spatial(codes, cond_map=torch.randint(5, (2, 3, 3)))
    with pytest.raises(ValueError, match="cond_map"):
        spatial.sample(2, (4, 4), cond_map=torch.full((2, 2, 2), 5))
    with pytest.raises(ValueError, match="batch"):
        spatial(codes, cond_map=torch.randint(5, (3, 2, 2)))


# ---- bad inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("net_class", [GatedPixelCNN, PixelCNN, PixelCNNPrior])
def test_bad_codes_raise(net_class):
    model = net_class(tiny_config())
    with pytest.raises(TypeError, match="int64"):
        model(torch.rand(2, 4, 4))
    with pytest.raises(TypeError, match="int64"):
        model(torch.zeros(2, 4, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="Tensor"):
        model([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        model(torch.zeros(2, 1, 4, 4, dtype=torch.int64))
    # Values are checked where codes enter (code sets, sample()), not in forward: no host sync
    # per training step. An out-of-range code in forward fails in the embedding lookup.
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        CodeDataset({"codes": torch.full((2, 4, 4), 8)}, torch.zeros(2, dtype=torch.long),
                    {"codes": 8}, (3, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        PixelCNNPrior(model.config).sample(2, completion=Completion(torch.full((2, 4, 4), -1),
                                                                    start=(1, 0)))
    with pytest.raises(IndexError):
        model(torch.full((2, 4, 4), 8))


@pytest.mark.parametrize("field,value", [
    ("codebook_size", 0), ("channels", 0), ("num_layers", 0), ("kernel_size", 4),
    ("kernel_size", 1), ("first_kernel_size", 6), ("dropout", 1.0), ("dropout", -0.1),
    ("num_classes", -1), ("cond_codebook_size", -2), ("arch", "pixelsnail"),
])
def test_config_rejects_bad_fields(field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(**{field: value})


def test_models_need_a_prior_config():
    with pytest.raises(TypeError, match="PriorConfig"):
        PixelCNNPrior({"codebook_size": 8})
    with pytest.raises(TypeError, match="PriorConfig"):
        GatedPixelCNN(None)


def test_receptive_field_weights_vertical_stack_sees_only_rows_above():
    config = tiny_config(num_layers=3)
    gated = GatedPixelCNN(config)
    shape, position = (8, 9), (6, 3)
    vertical = receptive_field_weights(gated, shape, position, stack="vertical")
    output = receptive_field_weights(gated, shape, position)
    assert vertical.dtype.is_floating_point and bool((vertical >= 0).all())
    assert vertical[position[0]:].eq(0).all() and vertical[: position[0]].gt(0).any()
    assert output[position[0], : position[1]].gt(0).all()  # the horizontal stack adds the row
    assert torch.equal(output > 0, receptive_field(gated, shape, position))
    with pytest.raises(ValueError, match="stack"):
        receptive_field_weights(PixelCNN(config), shape, position, stack="vertical")
    with pytest.raises(ValueError, match="stack"):
        receptive_field_weights(gated, shape, position, stack="diagonal")


def test_code_palette_and_figures():
    import matplotlib
    matplotlib.use("Agg")
    from vqlesson import plots

    palette = plots.categorical_palette(32)  # the one code palette (code_map and code_maps)
    colours = palette(range(32))
    assert len({tuple(c) for c in colours.round(4).tolist()}) == 32  # K distinct colours
    hue_steps = abs(colours[1:, :3] - colours[:-1, :3]).sum(1)
    assert hue_steps.mean() > 0.3  # neighbouring codes are not neighbouring colours
    fig = plots.code_maps(torch.randint(0, 32, (3, 4, 4)), 32, ["a", "b", "c"])
    assert len(fig.axes) == 3
    drawn = fig.axes[0].images[0].get_cmap()
    assert (drawn.colors == palette.colors).all()  # the same colour for the same code everywhere
    config = tiny_config(num_layers=2)
    field = receptive_field_weights(GatedPixelCNN(config), (6, 6), (4, 3))
    fig = plots.receptive_fields({"gated": [field, field]}, [1, 2], (4, 3))
    assert len(fig.axes) == 2 and "inputs" in fig.axes[0].get_title()


def test_blind_spot_codes_hide_each_stripe_from_the_plain_network_only():
    from vqlesson.experiments import blind_spot_codes
    from vqlesson.pixelcnn import PriorConfig

    config = PriorConfig(codebook_size=8, channels=8, embed_dim=4, num_layers=4)  # 7x7 first layer
    data = blind_spot_codes(64, (10, 12), 8, generator=torch.Generator().manual_seed(0))
    maps = data.codes
    assert maps.shape == (64, 10, 12) and maps.dtype == torch.int64
    assert 0 <= int(maps.min()) and int(maps.max()) < 8 and (data.labels == -1).all()
    assert torch.equal(maps[:, 1:, :-4], maps[:, :-1, 4:])  # one row up, 4 columns right: same code
    gated, plain = GatedPixelCNN(config), PixelCNN(config)
    position = (6, 3)
    own_stripe = torch.zeros(10, 12, dtype=torch.bool)
    own_stripe[5, 7] = own_stripe[4, 11] = True  # the earlier positions of the stripe through (6, 3)
    assert receptive_field(gated, (10, 12), position)[5, 7]  # the vertical stack, one row up
    assert not receptive_field(plain, (10, 12), position)[own_stripe].any()
    with pytest.raises(ValueError, match="slope"):
        blind_spot_codes(4, (6, 6), 8, slope=1)


# ---- issue 24: a receptive field that covers the grid, and position -------------------------
def raster_past(shape: tuple[int, int], position: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool: the positions before ``position`` in raster order."""
    height, width = shape
    return torch.arange(height * width).view(height, width) < position[0] * width + position[1]


@pytest.mark.parametrize("profile,grid", [("cpu", 16), ("gpu", 32)])
def test_dilated_gated_prior_sees_the_whole_grid(profile, grid):
    """The profile's gated prior (its layers and dilations; narrow channels to keep the test
    small) reaches every earlier position of the profile's code grid: at the last position, at
    the start of the last row (which needs the top-right corner) and in the middle."""
    from vqlesson.configs import prior_config_for

    config = prior_config_for(profile, 8, embed_dim=4, channels=4)
    assert config.dilations != (1,) and config.receptive_reach >= grid - 1
    prior = PixelCNNPrior(config)
    for position in [(grid - 1, grid - 1), (grid - 1, 0), (grid // 2, grid // 2)]:
        field = receptive_field(prior, (grid, grid), position)
        assert torch.equal(field, raster_past((grid, grid), position)), position
    # Without dilation the same 8 layers leave most of the grid unseen.
    undilated = receptive_field(PixelCNNPrior(prior_config_for(profile, 8, embed_dim=4, channels=4,
                                                               dilations=(1,))),
                                (grid, grid), (grid - 1, grid - 1))
    assert not undilated[0].any()


@pytest.mark.parametrize("dilations", [(2,), (1, 2, 4), (3, 1)])
def test_dilated_blocks_stay_causal(dilations):
    net = GatedPixelCNN(tiny_config(num_layers=4, dilations=dilations, position=True))
    shape = (7, 9)
    for position in [(0, 0), (3, 4), (6, 8), (5, 0)]:
        field = receptive_field(net, shape, position)
        assert not (field & ~raster_past(shape, position)).any(), (dilations, position)


def test_config_checks_dilations_and_position():
    assert tiny_config(dilations=[1, 2]).dilations == (1, 2)  # a checkpoint's list
    for bad in ((), (0,), (1, -2), "12", (1.5,)):
        with pytest.raises(ValueError, match="dilations"):
            tiny_config(dilations=bad)
    with pytest.raises(ValueError, match="plain"):
        tiny_config(arch="plain", dilations=(1, 2))
    with pytest.raises(ValueError, match="position"):
        tiny_config(position=1)
    assert tiny_config(num_layers=4, dilations=(1, 2)).receptive_reach == 1 + 1 + 2 + 1


def test_coordinate_grid_is_normalised_on_any_grid():
    from vqlesson.condition_maps import coordinate_grid

    for height, width in [(1, 1), (4, 6), (16, 16), (24, 24)]:
        x, y, r = coordinate_grid(height, width)
        assert x.shape == (height, width)
        assert torch.allclose(x, -x.flip(1)) and torch.allclose(y, -y.flip(0))  # centred
        assert float(x.abs().max()) < 1 and float(y.abs().max()) < 1
        assert torch.allclose(r, (x ** 2 + y ** 2).sqrt())
    x, y, r = coordinate_grid(16, 16)
    assert float(r.min()) < 0.1 and float(r.max()) > 1.3  # centre and corners
    assert x[0, 0] < 0 < x[0, -1] and y[0, 0] < 0 < y[-1, 0]  # x to the right, y downwards
    with pytest.raises(ValueError, match="grid"):
        coordinate_grid(0, 3)


def test_position_reaches_every_block_on_any_grid():
    """With position, the same codes get other logits at other places, on the trained grid and
    on a larger one; without it, a constant map's interior positions are alike."""
    codes = torch.zeros(1, 12, 12, dtype=torch.int64)
    with_position = PixelCNNPrior(tiny_config(position=True, dilations=(1, 2)))
    without = PixelCNNPrior(tiny_config(dilations=(1, 2)))
    for grid in (8, 12):
        logits = with_position.logits(codes[:, :grid, :grid])[0]  # (K, grid, grid)
        assert not torch.allclose(logits[:, grid - 3, 3], logits[:, grid - 3, grid - 4])
    plain_logits = without.logits(codes)[0]  # far from the borders the input looks the same
    assert torch.allclose(plain_logits[:, 9, 5], plain_logits[:, 9, 6], atol=1e-6)
    assert with_position.net.block_conditions(
        with_position.net.condition_features(None, None, 5, 5))[0].shape[-2:] == (5, 5)


def test_position_lets_a_prior_put_the_surround_in_the_corners():
    """Code maps whose corners (outside the inscribed circle) hold code 0 and whose field holds
    random codes 1..7: a prior with position learns where the surround goes, and its greedy
    samples put code 0 exactly outside the circle; on a grid larger than trained on (where the
    convolutions' own cues, distances in cells from the padded border, mislead it) the zeros
    still gather outside the circle."""
    from vqlesson.condition_maps import coordinate_grid

    def maps(n, side, seed):
        outside = coordinate_grid(side, side)[2] > 1  # (side, side) bool
        codes = torch.randint(1, 8, (n, side, side), generator=torch.Generator().manual_seed(seed))
        return codes.masked_fill(outside, 0), outside

    codes, outside = maps(64, 8, 0)
    prior = PixelCNNPrior(tiny_config(position=True, dilations=(1, 2), num_layers=4))
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(80):
        optimizer.zero_grad()
        prior(codes).loss.backward()
        optimizer.step()
    from vqlesson.pixelcnn_prior import SampleOptions

    samples = prior.sample(4, (8, 8), generator=torch.Generator().manual_seed(1),
                           options=SampleOptions(top_k=1))
    assert torch.equal(samples == 0, outside.expand(4, 8, 8))
    samples = prior.sample(4, (12, 12), generator=torch.Generator().manual_seed(1),
                           options=SampleOptions(top_k=1))
    where = coordinate_grid(12, 12)[2] > 1
    zeros = samples == 0
    assert zeros[:, where].float().mean() > 2 * zeros[:, ~where].float().mean()
