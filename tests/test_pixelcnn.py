"""Tests of the code-map priors: masked convolutions (PixelRNN §3.4), the Gated PixelCNN
(van den Oord et al. 2016, §2.2-2.3), the loss in bits per code, and the samplers."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vqlesson import checkpoint
from vqlesson.pixelcnn import (
    GatedPixelCNN,
    MaskedConv2d,
    PixelCNN,
    PixelCNNPrior,
    PriorConfig,
    PriorOutput,
    bits_per_dim,
    causal_mask,
    nll,
    receptive_field,
)

ARCHS = ("gated", "plain")
CONDITIONS = ("none", "label", "spatial")


def tiny_config(**kwargs) -> PriorConfig:
    fields = dict(codebook_size=8, embed_dim=8, channels=16, num_layers=3, kernel_size=3,
                  first_kernel_size=3, cond_layers=1)
    fields.update(kwargs)
    return PriorConfig(**fields)


def conditioned_config(condition: str, **kwargs) -> PriorConfig:
    extra = {"none": {}, "label": {"num_classes": 2},
             "spatial": {"cond_codebook_size": 5}}[condition]
    return tiny_config(**extra, **kwargs)


def condition_inputs(condition: str, n: int, height: int, width: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if condition == "label":
        return {"label": torch.randint(2, (n,), generator=gen)}
    if condition == "spatial":  # a top map of half the height (VQ-VAE-2: half both sides)
        return {"cond_map": torch.randint(5, (n, height // 2, width), generator=gen)}
    return {}


def random_codes(n: int, height: int, width: int, k: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(k, (n, height, width), generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("grid", [(1, 1), (1, 5), (4, 4), (5, 7), (8, 6)])
def test_logit_shapes_any_grid(arch, grid):
    prior = PixelCNNPrior(tiny_config(arch=arch))
    codes = random_codes(2, *grid)
    out = prior(codes)
    assert isinstance(out, PriorOutput)
    assert out.logits.shape == (2, 8, *grid) and out.logits.dtype == torch.float32
    assert out.loss.shape == () and torch.isfinite(out.loss)
    assert out.loss.requires_grad and not out.bits_per_code.requires_grad
    assert math.isclose(out.bits_per_code.item(), out.loss.item() / math.log(2), rel_tol=1e-6)


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


# ---- loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("k", [2, 8, 16])
def test_uniform_logits_give_log2_k_bits(arch, k):
    prior = PixelCNNPrior(tiny_config(arch=arch, codebook_size=k))
    with torch.no_grad():
        prior.net.head.out.weight.zero_()
        prior.net.head.out.bias.zero_()
    codes = random_codes(3, 4, 5, k=k)
    out = prior(codes)
    assert math.isclose(float(out.bits_per_code), math.log2(k), rel_tol=1e-6)
    assert math.isclose(nll(out.logits, codes).item(), math.log2(k), rel_tol=1e-6)


def test_nll_is_categorical_cross_entropy_in_bits():
    logits = torch.randn(2, 5, 3, 4)
    codes = random_codes(2, 3, 4, k=5)
    probs = logits.softmax(dim=1).gather(1, codes[:, None]).squeeze(1)  # (2, 3, 4)
    per_position = nll(logits, codes, reduction="none")
    assert per_position.shape == (2, 3, 4)
    assert torch.allclose(per_position, -torch.log2(probs), atol=1e-5)
    assert torch.allclose(nll(logits, codes), -torch.log2(probs).mean(), atol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        nll(logits, codes, reduction="sum")
    with pytest.raises(ValueError, match="do not match"):
        nll(logits, codes[:, :2])


def test_bits_per_dim():
    # 32x32 codes at 4 bits each for a 128 px RGB image: 4096 bits / 49152 dims.
    assert math.isclose(bits_per_dim(4.0, 32 * 32, 3 * 128 * 128), 4096 / 49152)
    assert math.isclose(bits_per_dim(4.0, 32 * 32, (3, 128, 128)), 4096 / 49152)
    assert torch.is_tensor(bits_per_dim(torch.tensor(2.0), 16, 48))
    with pytest.raises(ValueError, match="codes_per_image"):
        bits_per_dim(1.0, 0, 48)
    with pytest.raises(ValueError, match="image_dims"):
        bits_per_dim(1.0, 16, 0)


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_prior_overfits_a_fixed_batch(arch):
    codes = random_codes(4, 6, 6, k=8, seed=1)
    prior = PixelCNNPrior(tiny_config(arch=arch))
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    first = last = None
    for _ in range(200):
        out = prior(codes)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        first = float(out.bits_per_code) if first is None else first
        last = float(out.bits_per_code)
    assert first > 2.5  # about log2 8 = 3 bits at the start
    assert last < first / 3


def test_dropout_acts_in_training_only():
    prior = PixelCNNPrior(tiny_config(dropout=0.5))
    codes = random_codes(2, 4, 4)
    prior.train()
    assert not torch.equal(prior.logits(codes), prior.logits(codes))
    prior.eval()
    assert torch.equal(prior.logits(codes), prior.logits(codes))


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
    with pytest.raises(ValueError, match=r"label must be in \[0, 2\)"):
        labelled(codes, label=torch.tensor([0, 2]))
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
        spatial(codes, cond_map=torch.full((2, 2, 2), 5))
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
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        model(torch.full((2, 4, 4), 8))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        model(torch.full((2, 4, 4), -1))


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


# ---- sampling --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_sample_shape_dtype_range_and_seed(arch):
    prior = PixelCNNPrior(tiny_config(arch=arch))
    prior.train()
    a = prior.sample(3, (4, 5), generator=seeded(1))
    assert a.shape == (3, 4, 5) and a.dtype == torch.int64
    assert a.min() >= 0 and a.max() < 8
    assert prior.training  # mode restored
    assert torch.equal(a, prior.sample(3, (4, 5), generator=seeded(1)))
    assert not torch.equal(a, prior.sample(3, (4, 5), generator=seeded(2)))


SAMPLING_SETTINGS = [
    dict(), dict(temperature=0.7, top_k=3), dict(temperature=1.5), dict(temperature=0.0),
]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("settings", SAMPLING_SETTINGS, ids=["t1", "t0.7-top3", "t1.5", "greedy"])
def test_fast_and_naive_samplers_agree(arch, condition, settings):
    prior = PixelCNNPrior(conditioned_config(condition, arch=arch, num_layers=2))
    n, shape = 3, (4, 6)
    cond = condition_inputs(condition, n, *shape)
    fast = prior.sample(n, shape, generator=seeded(5), fast=True, **cond, **settings)
    naive = prior.sample(n, shape, generator=seeded(5), fast=False, **cond, **settings)
    assert torch.equal(fast, naive)


def test_fast_sampler_logits_match_the_full_network():
    """Per position, the fast path's logits equal the whole network's (up to rounding), also
    where the receptive field is cut off by the crop (a grid taller and wider than its reach)."""
    for arch in ARCHS:
        net = PixelCNNPrior(tiny_config(arch=arch, num_layers=2, num_classes=2,
                                        cond_codebook_size=5)).net.eval()
        codes = random_codes(2, 9, 10)
        cond = net.condition_features(torch.tensor([0, 1]), torch.randint(5, (2, 3, 5)), 9, 10)
        block_conds = net.block_conditions(cond)
        fast = net.fast_logits_fn(block_conds)
        with torch.no_grad():
            full = net._logits(net.embed(codes), block_conds)  # (2, K, 9, 10)
            for row in range(9):
                for col in range(10):
                    assert torch.allclose(fast(codes, row, col), full[:, :, row, col], atol=1e-5)


def test_fast_sampler_agrees_on_a_grid_wider_than_its_reach():
    prior = PixelCNNPrior(tiny_config(num_layers=2))  # reach S + 1 = 3
    fast = prior.sample(2, (9, 11), temperature=0.8, generator=seeded(3), fast=True)
    naive = prior.sample(2, (9, 11), temperature=0.8, generator=seeded(3), fast=False)
    assert torch.equal(fast, naive)


def test_sample_with_int_label_and_unbatched_cond_map():
    prior = PixelCNNPrior(tiny_config(num_classes=2, cond_codebook_size=5))
    top = torch.randint(5, (2, 3))
    a = prior.sample(3, (4, 6), label=1, cond_map=top, generator=seeded(0))
    b = prior.sample(3, (4, 6), label=torch.tensor([1, 1, 1]), cond_map=top.expand(3, 2, 3),
                     generator=seeded(0))
    assert torch.equal(a, b)
    c = prior.sample(3, (4, 6), label=0, cond_map=top, generator=seeded(0))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("arch", ARCHS)
def test_low_temperature_is_greedy(arch):
    codes = random_codes(2, 5, 5, k=8, seed=3)
    prior = PixelCNNPrior(tiny_config(arch=arch))
    optimizer = torch.optim.Adam(prior.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        prior(codes).loss.backward()
        optimizer.step()
    cold = prior.sample(6, (5, 5), temperature=1e-4, generator=seeded(0))
    assert (cold == cold[0]).all()  # every sample follows the most likely code
    assert torch.equal(cold, prior.sample(6, (5, 5), temperature=0.0))
    assert torch.equal(cold, prior.sample(6, (5, 5), top_k=1, generator=seeded(9)))
    warm = prior.sample(6, (5, 5), temperature=5.0, generator=seeded(0))
    assert not (warm == warm[0]).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fast", [True, False])
def test_completion_keeps_known_positions(arch, fast):
    prior = PixelCNNPrior(tiny_config(arch=arch, num_classes=2))
    prefix = random_codes(3, 6, 5, seed=7)
    out = prior.sample(3, label=1, prefix=prefix, start=(3, 0), generator=seeded(1), fast=fast)
    assert torch.equal(out[:, :3], prefix[:, :3])  # the top half is kept exactly
    assert not torch.equal(out[:, 3:], prefix[:, 3:])
    known = torch.rand(3, 6, 5, generator=seeded(2)) < 0.4
    out = prior.sample(3, (6, 5), label=1, prefix=prefix, known=known, generator=seeded(1),
                       fast=fast)
    assert torch.equal(out[known], prefix[known])
    assert out.min() >= 0 and out.max() < 8
    every = prior.sample(3, label=1, prefix=prefix, start=(6, 0), fast=fast)
    assert torch.equal(every, prefix)  # everything known: nothing changes


def test_completion_fast_and_naive_agree():
    prior = PixelCNNPrior(tiny_config())
    prefix = random_codes(2, 5, 6, seed=4)
    known = torch.zeros(5, 6, dtype=torch.bool)
    known[:2] = True
    known[3, 1] = True
    a = prior.sample(2, prefix=prefix, known=known, generator=seeded(8), fast=True)
    b = prior.sample(2, prefix=prefix, known=known, generator=seeded(8), fast=False)
    assert torch.equal(a, b)
    assert torch.equal(a[:, known], prefix[:, known])


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(n=0, shape=(4, 4)), ValueError, "n "),
    (dict(n=2, shape=(4,)), ValueError, "shape"),
    (dict(n=2, shape=(0, 4)), ValueError, "shape"),
    (dict(n=2, shape=None), ValueError, "shape"),
    (dict(n=2, shape=(4, 4), temperature=-1.0), ValueError, "temperature"),
    (dict(n=2, shape=(4, 4), temperature=float("nan")), ValueError, "temperature"),
    (dict(n=2, shape=(4, 4), top_k=0), ValueError, "top_k"),
    (dict(n=2, shape=(4, 4), top_k=9), ValueError, "top_k"),
    (dict(n=2, shape=(4, 4), generator=0), TypeError, "generator"),
    (dict(n=2, shape=(4, 4), label=1), ValueError, "without labels"),
    (dict(n=2, shape=(4, 4), start=(1, 0)), ValueError, "prefix"),
    (dict(n=2, prefix=torch.zeros(2, 4, 4, dtype=torch.int64)), ValueError, "exactly one"),
    (dict(n=3, prefix=torch.zeros(2, 4, 4, dtype=torch.int64), start=(1, 0)), ValueError, "prefix"),
    (dict(n=2, prefix=torch.zeros(2, 4, 4, dtype=torch.int64), start=(5, 0)), ValueError, "start"),
    (dict(n=2, prefix=torch.zeros(2, 4, 4, dtype=torch.int64), known=torch.ones(4, 4)),
     TypeError, "known"),
    (dict(n=2, prefix=torch.zeros(2, 4, 4, dtype=torch.int64),
          known=torch.ones(3, 3, dtype=torch.bool)), ValueError, "known"),
    (dict(n=2, prefix=torch.zeros(2, 4, 4)), TypeError, "prefix"),
])
def test_sample_rejects_bad_arguments(kwargs, error, match):
    prior = PixelCNNPrior(tiny_config())
    with pytest.raises(error, match=match):
        prior.sample(**kwargs)


# ---- checkpoints -----------------------------------------------------------------------------
def test_prior_round_trips_through_a_checkpoint(tmp_path, monkeypatch):
    entry = ("vqlesson.pixelcnn", "PriorConfig", "PixelCNNPrior")
    if entry not in checkpoint._MODEL_MODULES:  # until the table names the prior
        monkeypatch.setattr(checkpoint, "_MODEL_MODULES", (*checkpoint._MODEL_MODULES, entry))
    config = tiny_config(arch="plain", num_classes=2, cond_codebook_size=4)
    prior = PixelCNNPrior(config)
    path = checkpoint.save_checkpoint(tmp_path / "prior.pt", prior, step=3)
    loaded = checkpoint.load_checkpoint(path, expected_class=PixelCNNPrior)
    assert loaded.config == config and dataclasses.asdict(loaded.config)["arch"] == "plain"
    assert isinstance(loaded.model.net, PixelCNN)
    codes = random_codes(2, 4, 4)
    cond = dict(label=torch.tensor([0, 1]), cond_map=torch.randint(4, (2, 2, 2)))
    prior.eval()
    assert torch.equal(loaded.model.logits(codes, **cond), prior.logits(codes, **cond))
