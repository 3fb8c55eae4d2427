"""Tests of the causal transformer prior over code maps (Esser et al. 2021, §3.2): causality,
the KV-cached sampler against the naive one, conditioning, checkpoints and training."""

from __future__ import annotations

import pytest
import torch
from conftest import random_codes, seeded
from test_prior import pattern_codes

from vqlesson import checkpoint
from vqlesson.configs import prior_config_for
from vqlesson.pixelcnn_prior import Completion, PriorOutput, SampleOptions
from vqlesson.prior import PriorTrainConfig, build_prior, evaluate_prior, train_prior
from vqlesson.transformer_prior import TransformerPrior, TransformerPriorConfig

CONDITIONS = ("none", "label", "spatial", "both")


@pytest.fixture(autouse=True)
def _seed(one_thread):
    torch.manual_seed(0)


def tiny(**kwargs) -> TransformerPrior:
    fields = dict(codebook_size=8, embed_dim=16, num_layers=2, num_heads=2, position_grid=4,
                  cond_layers=1)
    return TransformerPrior(TransformerPriorConfig(**{**fields, **kwargs}))


def conditioned(condition: str) -> tuple[TransformerPrior, dict]:
    """A tiny prior with the given conditioning and inputs for 3 maps of (4, 6) codes."""
    config = {"none": {}, "label": {"num_classes": 2}, "spatial": {"cond_codebook_size": 5},
              "both": {"num_classes": 2, "cond_codebook_size": 5}}[condition]
    inputs = {}
    if "num_classes" in config:
        inputs["label"] = torch.tensor([0, 1, 1])
    if "cond_codebook_size" in config:
        inputs["cond_map"] = torch.randint(5, (3, 2, 3), generator=seeded(4))  # half each side
    return tiny(**config), inputs


@pytest.mark.parametrize("condition", CONDITIONS)
def test_a_change_at_position_i_changes_no_logit_at_or_before_i(condition):
    prior, inputs = conditioned(condition)
    prior.eval()
    codes = random_codes(3, 4, 6)
    with torch.no_grad():
        base = prior.logits(codes, **inputs)  # (3, K, 4, 6)
        for i in range(4 * 6):
            changed = codes.clone().view(3, -1)
            changed[:, i] = (changed[:, i] + 1) % 8
            out = prior.logits(changed.view(3, 4, 6), **inputs)
            diff = (out - base).abs().amax(dim=(0, 1)).flatten()  # (24,) per position
            assert float(diff[: i + 1].max()) == 0.0, i  # not even by rounding
            if i < 4 * 6 - 1:
                assert float(diff[i + 1:].max()) > 0.0, i  # the positions after i do see it


def test_logits_loss_and_any_grid():
    prior = tiny()
    for grid in [(1, 1), (4, 4), (3, 7), (9, 9)]:  # the position map is resized to the grid
        codes = random_codes(2, *grid)
        out = prior(codes)
        assert isinstance(out, PriorOutput) and out.logits.shape == (2, 8, *grid)
        assert out.loss.requires_grad and torch.isfinite(out.loss)


SETTINGS = [dict(), dict(temperature=0.7, top_k=3), dict(temperature=0.0)]


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("settings", SETTINGS, ids=["t1", "t0.7-top3", "greedy"])
def test_cached_sampling_equals_naive_sampling(condition, settings):
    prior, inputs = conditioned(condition)
    fast = prior.sample(3, (4, 6), generator=seeded(5), options=SampleOptions(fast=True, **settings),
                        **inputs)
    naive = prior.sample(3, (4, 6), generator=seeded(5),
                         options=SampleOptions(fast=False, **settings), **inputs)
    assert torch.equal(fast, naive)
    assert fast.shape == (3, 4, 6) and fast.dtype == torch.int64
    assert 0 <= int(fast.min()) and int(fast.max()) < 8


def test_cached_logits_match_the_full_network():
    prior, inputs = conditioned("both")
    prior.eval()
    codes = random_codes(3, 4, 6)
    with torch.no_grad():
        full = prior.logits(codes, **inputs)
        logits_at = prior.logits_fn(inputs["label"], inputs["cond_map"], 4, 6, fast=True)
        for row in range(4):
            for col in range(6):
                assert torch.allclose(logits_at(codes, row, col), full[:, :, row, col], atol=1e-5)


def test_completion_with_the_cache_catches_up_over_known_positions():
    prior, inputs = conditioned("label")
    prefix = random_codes(3, 4, 6, seed=7)
    known = torch.zeros(4, 6, dtype=torch.bool)
    known[:2] = True  # whole known rows: the sampler skips them, the cache must still see them
    known[3, 2] = True
    out = {fast: prior.sample(3, completion=Completion(prefix, known=known), generator=seeded(8),
                              options=SampleOptions(fast=fast), **inputs)
           for fast in (True, False)}
    assert torch.equal(out[True], out[False])
    assert torch.equal(out[True][:, known], prefix[:, known])


def test_label_and_cond_map_condition_the_logits():
    prior, inputs = conditioned("both")
    codes = random_codes(3, 4, 6)
    base = prior.logits(codes, **inputs)
    other_label = prior.logits(codes, label=1 - inputs["label"], cond_map=inputs["cond_map"])
    other_map = prior.logits(codes, label=inputs["label"], cond_map=(inputs["cond_map"] + 1) % 5)
    assert not torch.allclose(base, other_label) and not torch.allclose(base, other_map)
    with pytest.raises(ValueError, match="label"):
        prior.logits(codes, cond_map=inputs["cond_map"])
    with pytest.raises(ValueError, match="cond_map"):
        prior.logits(codes, label=inputs["label"])
    with pytest.raises(ValueError, match="without labels"):
        tiny().sample(2, (3, 3), label=1)


def test_checkpoint_round_trip(tmp_path):
    prior, inputs = conditioned("both")
    path = checkpoint.save_checkpoint(tmp_path / "prior.pt", prior, step=2)
    loaded = checkpoint.load_checkpoint(path)
    assert isinstance(loaded.model, TransformerPrior) and loaded.config == prior.config
    prior.eval()
    codes = random_codes(3, 4, 6)
    assert torch.equal(loaded.model.logits(codes, **inputs), prior.logits(codes, **inputs))


def test_trains_with_the_prior_loop_and_lowers_the_nll(tmp_path):
    train, val = pattern_codes(64, seed=0), pattern_codes(16, seed=1)
    prior = tiny()
    before = evaluate_prior(prior, val)["bits_per_code"]
    history = train_prior(prior, train, val, PriorTrainConfig(
        epochs=15, batch_size=16, lr=1e-2, lr_schedule="cosine", warmup_steps=4, amp=False,
        progress=False, device="cpu", checkpoint_path=tmp_path / "prior.pt"))
    after = evaluate_prior(prior, val)["bits_per_code"]
    assert after < 0.7 * before
    assert history["lr"][-1] < history["lr"][0]  # the cosine schedule
    reloaded = checkpoint.load_checkpoint(tmp_path / "prior_best.pt").model
    assert evaluate_prior(reloaded, val)["bits_per_code"] == pytest.approx(after, rel=1e-5)


def test_config_checks_and_the_profile_sizes():
    for bad in (dict(embed_dim=10, num_heads=4), dict(num_layers=0), dict(dropout=1.0),
                dict(position_grid=0), dict(num_classes=-1)):
        with pytest.raises(ValueError):
            TransformerPriorConfig(**bad)
    with pytest.raises(TypeError, match="TransformerPriorConfig"):
        TransformerPrior(prior_config_for("ci", 8))
    config = prior_config_for("cpu", 256, arch="transformer", num_classes=2, position_grid=16)
    assert isinstance(config, TransformerPriorConfig)
    assert (config.codebook_size, config.num_classes, config.position_grid) == (256, 2, 16)
    assert isinstance(build_prior(prior_config_for("ci", 8, arch="transformer")), TransformerPrior)
    with pytest.raises(ValueError, match="arch"):
        prior_config_for("ci", 8, arch="lstm")
