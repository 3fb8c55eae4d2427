"""Priors side by side (vqlesson.prior_trials): equal training time, and every prior measured
alike, on a tiny VQ-VAE and tiny priors (seconds)."""

from __future__ import annotations

import pytest
import torch

from vqlesson.prior import train_prior
from vqlesson.prior_trials import (
    MeasureConfig,
    TrialConfig,
    TrialImages,
    epochs_for,
    measure_prior,
    prior_trial,
    step_seconds,
    trial_table,
)


def comparison_inputs():
    """A tiny VQ-VAE (K = 16, 4 x 4 codes of 16 px images), its code sets and images."""
    from test_prior import pattern_codes, tiny_vqvae

    vqvae = tiny_vqvae().eval()
    codes = {split: pattern_codes(n, k=16, size=4, seed=seed)
             for split, n, seed in (("train", 32, 0), ("val", 8, 1), ("test", 8, 2))}
    gen = torch.Generator().manual_seed(0)
    test = torch.rand(8, 3, 16, 16, generator=gen) * 2 - 1  # (8, 3, 16, 16) in [-1, 1]
    with torch.no_grad():
        reconstructions = vqvae.decode_indices(codes["test"].codes)  # (8, 3, 16, 16)
    images = TrialImages(torch.rand(8, 3, 16, 16, generator=gen) * 2 - 1, test, reconstructions)
    return vqvae, codes, images


def test_epochs_for_turns_seconds_into_whole_epochs():
    assert epochs_for(60.0, 0.5, 100, 10) == 12       # 10 steps of 0.5 s per epoch
    assert epochs_for(1.0, 0.5, 100, 10) == 1         # at least one epoch
    assert epochs_for(60.0, 0.5, 101, 10) == 11       # a last, smaller batch is a step too


def test_step_seconds_times_steps_without_changing_the_weights(one_thread):
    from test_prior import pattern_codes, tiny_prior

    prior, codes = tiny_prior(k=16), pattern_codes(16, k=16, size=4)
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    assert step_seconds(prior, codes, batch_size=8, steps=2) > 0
    assert all(torch.equal(before[k], v) for k, v in prior.state_dict().items())
    assert all(p.grad is None for p in prior.parameters())


def test_measure_prior_measures_a_trained_labelled_prior_at_the_given_temperature(one_thread):
    from test_prior import quick, tiny_prior

    vqvae, codes, images = comparison_inputs()
    prior = tiny_prior(k=16, num_classes=2)
    history = train_prior(prior, codes["train"], codes["val"], quick(epochs=2))
    labels = codes["test"].labels
    with pytest.raises(ValueError, match="temperature"):  # the choice here is unconditional
        measure_prior("gated", prior.eval(), history, vqvae, codes, images, MeasureConfig(label=labels))
    trial = measure_prior("gated", prior, history, vqvae, codes, images, MeasureConfig(0.7, 1, labels))
    assert trial.temperature == 0.7 and trial.temperature_table == ""
    assert trial.epochs == 2 and trial.train_seconds == pytest.approx(sum(history["epoch_time_s"]))
    assert trial.samples.shape == images.test.shape and trial.samples.abs().max() <= 1
    assert 0 < trial.test_bits_per_code < 8 and trial.sample_ms > 0
    assert 0 <= trial.near_copy_fraction <= 1 and 0 <= trial.diversity <= 1
    assert trial.parameters == sum(p.numel() for p in prior.parameters())


def test_prior_trial_trains_for_the_budget_and_the_table_has_a_row_per_prior(one_thread):
    from vqlesson.pixelcnn import PriorConfig
    from vqlesson.transformer_prior import TransformerPriorConfig

    vqvae, codes, images = comparison_inputs()
    budget = TrialConfig(epochs=2, batch_size=8, temperature=1.0, device="cpu")
    gated = prior_trial("gated", PriorConfig(codebook_size=16, embed_dim=8, channels=8,
                                             num_layers=2), vqvae, codes, images, budget)
    transformer = prior_trial("transformer", TransformerPriorConfig(
        codebook_size=16, embed_dim=16, num_layers=1, num_heads=2, position_grid=4),
        vqvae, codes, images, budget)
    for trial in (gated, transformer):
        assert trial.epochs == 2 and len(trial.history["epoch"]) == 2 and trial.train_seconds > 0
        assert not trial.prior.training
    table = trial_table([gated, transformer])
    assert table.count("\n") == 3 and "| gated |" in table and "| transformer |" in table
