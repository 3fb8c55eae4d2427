"""Tests of the PixelCNN prior over code maps (van den Oord et al. 2016): the loss in bits per
code, the naive and fast samplers (Ramachandran et al. 2017), completion and checkpoints."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import condition_inputs, conditioned_config, random_codes, seeded, tiny_config

from vqlesson import checkpoint
from vqlesson.pixelcnn import PixelCNN
from vqlesson.pixelcnn_prior import (
    Completion,
    PixelCNNPrior,
    PriorOutput,
    SampleOptions,
    bits_per_dim,
    fast_logits_fn,
    nll,
)

ARCHS = ("gated", "plain")
CONDITIONS = ("none", "label", "spatial")


@pytest.fixture(autouse=True)
def _seed(one_thread):
    """Deterministic weights, single-threaded (``one_thread``: tiny convolutions run fastest so)."""
    torch.manual_seed(0)


# ---- logits and loss -------------------------------------------------------------------------
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
    fast = prior.sample(n, shape, generator=seeded(5), options=SampleOptions(fast=True, **settings),
                        **cond)
    naive = prior.sample(n, shape, generator=seeded(5),
                         options=SampleOptions(fast=False, **settings), **cond)
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
        fast = fast_logits_fn(net, block_conds)
        with torch.no_grad():
            full = net.run(net.embed(codes), block_conds)  # (2, K, 9, 10)
            for row in range(9):
                for col in range(10):
                    assert torch.allclose(fast(codes, row, col), full[:, :, row, col], atol=1e-5)


def test_fast_sampler_agrees_on_a_grid_wider_than_its_reach():
    prior = PixelCNNPrior(tiny_config(num_layers=2))  # reach S + 1 = 3
    fast = prior.sample(2, (9, 11), generator=seeded(3),
                        options=SampleOptions(temperature=0.8, fast=True))
    naive = prior.sample(2, (9, 11), generator=seeded(3),
                         options=SampleOptions(temperature=0.8, fast=False))
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
    cold = prior.sample(6, (5, 5), generator=seeded(0), options=SampleOptions(temperature=1e-4))
    assert (cold == cold[0]).all()  # every sample follows the most likely code
    assert torch.equal(cold, prior.sample(6, (5, 5), options=SampleOptions(temperature=0.0)))
    assert torch.equal(cold, prior.sample(6, (5, 5), generator=seeded(9),
                                          options=SampleOptions(top_k=1)))
    warm = prior.sample(6, (5, 5), generator=seeded(0), options=SampleOptions(temperature=5.0))
    assert not (warm == warm[0]).all()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fast", [True, False])
def test_completion_keeps_known_positions(arch, fast):
    prior = PixelCNNPrior(tiny_config(arch=arch, num_classes=2))
    prefix = random_codes(3, 6, 5, seed=7)
    options = SampleOptions(fast=fast)
    out = prior.sample(3, label=1, completion=Completion(prefix, start=(3, 0)),
                       generator=seeded(1), options=options)
    assert torch.equal(out[:, :3], prefix[:, :3])  # the top half is kept exactly
    assert not torch.equal(out[:, 3:], prefix[:, 3:])
    known = torch.rand(3, 6, 5, generator=seeded(2)) < 0.4
    out = prior.sample(3, (6, 5), label=1, completion=Completion(prefix, known=known),
                       generator=seeded(1), options=options)
    assert torch.equal(out[known], prefix[known])
    assert out.min() >= 0 and out.max() < 8
    every = prior.sample(3, label=1, completion=Completion(prefix, start=(6, 0)), options=options)
    assert torch.equal(every, prefix)  # everything known: nothing changes


def test_completion_fast_and_naive_agree():
    prior = PixelCNNPrior(tiny_config())
    prefix = random_codes(2, 5, 6, seed=4)
    known = torch.zeros(5, 6, dtype=torch.bool)
    known[:2] = True
    known[3, 1] = True
    a = prior.sample(2, completion=Completion(prefix, known=known), generator=seeded(8),
                     options=SampleOptions(fast=True))
    b = prior.sample(2, completion=Completion(prefix, known=known), generator=seeded(8),
                     options=SampleOptions(fast=False))
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
    """Each argument of sample() (and of its SampleOptions and Completion) is checked, and the
    error names it."""
    prior = PixelCNNPrior(tiny_config())
    options = {k: kwargs.pop(k) for k in ("temperature", "top_k") if k in kwargs}
    completion = {k: kwargs.pop(k) for k in ("prefix", "start", "known") if k in kwargs}
    with pytest.raises(error, match=match):
        if options:
            kwargs["options"] = SampleOptions(**options)
        if completion:
            kwargs["completion"] = Completion(completion.pop("prefix", None), **completion)
        prior.sample(**kwargs)


# ---- checkpoints -----------------------------------------------------------------------------
def test_prior_round_trips_through_a_checkpoint(tmp_path, monkeypatch):
    entry = ("vqlesson.pixelcnn_prior", "PriorConfig", "PixelCNNPrior")
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


def test_a_prior_checkpoint_from_before_position_and_dilation_still_loads(tmp_path):
    """Checkpoints written before issue 24 store no ``position`` or ``dilations``: they load as
    the prior they were (no position map, no dilation) and give the same logits."""
    config = tiny_config(num_classes=2)
    prior = PixelCNNPrior(config).eval()
    path = checkpoint.save_checkpoint(tmp_path / "prior.pt", prior, step=1)
    payload = torch.load(path, weights_only=True)
    for name in ("position", "dilations"):
        del payload["config"][name]  # the record an older version wrote
    torch.save(payload, path)
    loaded = checkpoint.load_checkpoint(path, expected_class=PixelCNNPrior)
    assert loaded.config.position is False and loaded.config.dilations == (1,)
    assert loaded.model.net.position is None
    codes, label = random_codes(2, 5, 6), torch.tensor([0, 1])
    assert torch.equal(loaded.model.logits(codes, label), prior.logits(codes, label))
    # and a new one keeps both through the round trip
    new = PixelCNNPrior(tiny_config(position=True, dilations=(1, 2))).eval()
    path = checkpoint.save_checkpoint(tmp_path / "new.pt", new)
    again = checkpoint.load_checkpoint(path).model
    assert again.config == new.config and again.net.position is not None
    assert torch.equal(again.logits(codes), new.logits(codes))


def test_fast_and_naive_samplers_agree_with_position_and_dilation():
    for condition in CONDITIONS:
        prior = PixelCNNPrior(conditioned_config(condition, num_layers=4, position=True,
                                                 dilations=(1, 2, 4)))
        cond = condition_inputs(condition, 2, 10, 12)
        fast = prior.sample(2, (10, 12), generator=seeded(6), **cond)
        naive = prior.sample(2, (10, 12), generator=seeded(6),
                             options=SampleOptions(fast=False), **cond)
        assert torch.equal(fast, naive), condition
