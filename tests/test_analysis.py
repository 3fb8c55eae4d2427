"""vqlesson.analysis on small constructed inputs with known answers (diversity and
memorisation: test_memorisation.py)."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
from conftest import code_set, tiny_prior
from torch import nn

from vqlesson.analysis import (
    AnalysisConfig,
    NLLTracker,
    compare_usage,
    compare_usage_levels,
    code_counts,
    encode_dataset,
    generalisation_gap,
    reconstruction_scores,
    scores_by_class,
    surprise_maps,
    worst_reconstructions,
)
from vqlesson.memorisation import MemorisationConfig
from vqlesson.prior import PriorTrainConfig, evaluate_prior, train_prior
from vqlesson.vqvae import VQVAE, VQVAEConfig

K = 8


class Out(NamedTuple):
    x_hat: torch.Tensor


class NoisyOn(nn.Module):
    """A fake autoencoder: returns its input, except that images whose top-left pixel is marked
    (> 0.9) get a black 4x4 top-left corner, so the test knows which reconstructions are bad
    and where."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        x_hat = x.clone()
        x_hat[x[:, 0, 0, 0] > 0.9, :, :4, :4] = -1.0
        return Out(x_hat)


# ---- codebook usage -----------------------------------------------------------------------
def test_compare_usage_finds_codes_only_the_test_set_uses():
    train = torch.arange(4).repeat(25).view(4, 5, 5)  # codes 0-3, 25 times each
    test = torch.tensor([0, 1, 2, 3, 4, 4, 5, 0]).view(2, 2, 2)  # 4 and 5 never seen in training
    u = compare_usage(train, test, K, rare_fraction=0.01)
    assert u.train_counts.tolist() == [25, 25, 25, 25, 0, 0, 0, 0]
    assert u.test_only_codes.tolist() == [4, 5]  # most used first
    assert u.test_only_fraction == pytest.approx(3 / 8)
    assert u.train_perplexity == pytest.approx(4.0)
    assert u.train_active == 0.5 and u.test_active == 0.75
    assert code_counts(test, K).sum() == 8


def test_compare_usage_levels_and_errors():
    train, test = code_set(torch.randint(0, K, (6, 4, 4))), code_set(torch.randint(0, K, (3, 4, 4)))
    levels = compare_usage_levels(train, test)
    assert list(levels) == ["codes"] and levels["codes"].test_counts.sum() == 48
    with pytest.raises(ValueError, match="codebook_size"):
        code_counts(torch.full((1, 2, 2), K), K)
    with pytest.raises(ValueError, match="rare_fraction"):
        compare_usage(train.codes, test.codes, K, rare_fraction=1.5)


# ---- prior generalisation ------------------------------------------------------------------
def test_a_uniform_prior_has_log2_k_surprise_everywhere():
    prior = tiny_prior()
    for p in prior.parameters():
        p.data.zero_()  # every logit 0: p = 1/K at every position
    codes = torch.randint(0, K, (3, 5, 6))
    bits = surprise_maps(prior, codes)
    assert bits.shape == (3, 5, 6)
    assert torch.allclose(bits, torch.full_like(bits, math.log2(K)), atol=1e-5)
    assert evaluate_prior(prior, code_set(codes))["bits_per_code"] == pytest.approx(math.log2(K), abs=1e-5)


def test_surprise_maps_average_to_the_nll_and_use_labels():
    prior = tiny_prior(num_classes=2)
    codes = code_set(torch.randint(0, K, (5, 4, 4)), torch.tensor([0, 1, 0, 1, 1]))
    bits = surprise_maps(prior, codes)
    assert (bits >= 0).all()
    assert float(bits.double().mean()) == pytest.approx(evaluate_prior(prior, codes)["bits_per_code"], rel=1e-5)
    flipped = surprise_maps(prior, codes.codes, labels=1 - codes.labels)
    assert not torch.allclose(bits, flipped)  # the label changes the prediction


def test_generalisation_gap_finds_where_validation_turns_up():
    history = {"epoch": [1, 2, 3, 4, 5], "train_bits_per_code": [5.0, 4.0, 3.0, 2.0, 1.0],
               "val_bits_per_code": [5.5, 4.5, 4.2, 4.4, 4.9]}
    g = generalisation_gap(history)
    assert (g.best_epoch, g.overfit_epochs, g.final_epoch) == (3, 2, 5)
    assert g.gap_at_best == pytest.approx(1.2) and g.final_gap == pytest.approx(3.9)
    with pytest.raises(ValueError, match="validation"):
        generalisation_gap({"epoch": [1], "train_bits_per_code": [1.0]})


def test_nll_tracker_records_the_test_nll_every_epoch(one_thread):
    g = torch.Generator().manual_seed(0)
    train = code_set(torch.randint(0, 3, (16, 4, 4), generator=g))  # few codes: learnable
    test = code_set(torch.randint(0, 3, (8, 4, 4), generator=g))
    prior = tiny_prior()
    tracker = NLLTracker(prior, {"test": test})
    history = train_prior(prior, train, test, PriorTrainConfig(
        epochs=6, batch_size=8, lr=1e-2, progress=False, early_stopping_patience=None,
        restore_best=False), callback=tracker)
    assert tracker.history["epoch"] == [1, 2, 3, 4, 5, 6]
    # The validation set here is the test set, so both records must agree epoch by epoch.
    assert tracker.history["test_bits_per_code"] == pytest.approx(history["val_bits_per_code"], rel=1e-6)
    test_bits = tracker.history["test_bits_per_code"]
    assert test_bits[-1] < test_bits[0] and test_bits[-1] < math.log2(K)  # it learnt something
    with pytest.raises(ValueError, match="K = "):
        NLLTracker(tiny_prior(codebook_size=4), {"test": test})


# ---- reconstruction ------------------------------------------------------------------------
def test_reconstruction_scores_by_class_and_worst_k():
    images = torch.rand(6, 3, 16, 16) * 1.6 - 0.8  # in [-0.8, 0.8]: unmarked
    images[[1, 4], 0, 0, 0] = 1.0  # marked: reconstructed with a black corner
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    dataset = torch.utils.data.TensorDataset(images, labels)
    model = NoisyOn()
    scores = reconstruction_scores(model, dataset, batch_size=4)
    assert scores.mse.shape == (6,) and scores.labels.tolist() == labels.tolist()
    good = [0, 2, 3, 5]
    assert torch.all(scores.mse[good] == 0) and torch.all(torch.isinf(scores.psnr[good]))
    assert torch.all(scores.psnr[[1, 4]] < 20) and torch.all(scores.ssim[good] > 0.999)
    table = scores_by_class(scores, ["benign", "malignant"])
    assert list(table) == ["all", "benign", "malignant"]
    assert table["benign"]["mse"] == 0.0 and table["malignant"]["n"] == 3.0
    assert table["malignant"]["mse"] == pytest.approx(float(scores.mse[[1, 4]].sum()) / 3)
    worst = worst_reconstructions(model, dataset, scores, k=2)
    assert sorted(worst.index.tolist()) == [1, 4]
    assert worst.error_maps.shape == (2, 16, 16)
    # The error is where the offset was applied and nowhere else.
    assert torch.all(worst.error_maps[:, 4:, :] == 0) and torch.all(worst.error_maps[:, :, 4:] == 0)
    assert torch.all(worst.error_maps[:, :4, :4] > 0)
    with pytest.raises(ValueError, match="same data set"):
        worst_reconstructions(model, dataset, scores._replace(psnr=scores.psnr[:3]), k=2)
    with pytest.raises(TypeError, match="float images"):
        reconstruction_scores(model, torch.zeros(2, 16, 16))



def test_analysis_configs_reject_bad_values():
    with pytest.raises(ValueError, match="near_copy_hamming"):
        MemorisationConfig(near_copy_hamming=2.0)
    with pytest.raises(ValueError, match="num_samples"):
        MemorisationConfig(num_samples=1)
    with pytest.raises(ValueError, match="worst_k"):
        AnalysisConfig(worst_k=0)
    with pytest.raises(ValueError, match="rare_fraction"):
        AnalysisConfig(rare_fraction=1.0)


def test_encode_dataset_keeps_the_data_set_order():
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(image_size=16, hidden_channels=8, residual_channels=4,
                              num_residual_blocks=1, codebook_size=K, code_dim=4)).eval()
    images = torch.rand(7, 3, 16, 16) * 2 - 1
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    split = encode_dataset(vqvae, torch.utils.data.TensorDataset(images, labels), batch_size=3)
    assert torch.equal(split.images, images) and split.codes.labels.tolist() == labels.tolist()
    with torch.no_grad():
        assert torch.equal(split.codes.codes, vqvae.encode(images).codes)  # (7, 4, 4), same order
