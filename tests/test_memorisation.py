"""Tests of sample diversity, nearest neighbours, near-copies and the remedy row
(vqlesson.memorisation)."""

from __future__ import annotations

import pytest
import torch
from conftest import code_set, tiny_prior

from vqlesson.memorisation import (
    MemorisationConfig,
    diversity,
    evaluate_remedy,
    memorisation,
    nearest_neighbours,
    pairwise_hamming,
    pairwise_pixel_distance,
    remedy_table,
)
from vqlesson.prior import evaluate_prior
from vqlesson.vqvae import VQVAE, VQVAEConfig

K = 8


# ---- diversity ----------------------------------------------------------------------------
def test_identical_samples_have_zero_diversity():
    codes = torch.randint(0, K, (1, 4, 4)).repeat(5, 1, 1)  # (5, 4, 4) all equal
    images = torch.rand(1, 3, 16, 16).repeat(5, 1, 1, 1) * 2 - 1
    d = diversity(codes, images)
    assert d.code_hamming == 0.0 and d.pixel_rms == pytest.approx(0.0, abs=1e-6) and d.n == 5


def test_pairwise_hamming_known_values():
    a = torch.zeros(1, 2, 2, dtype=torch.long)
    b = torch.tensor([[[1, 0], [0, 0]]])  # 1 of 4 positions differs from a
    c = torch.ones(1, 2, 2, dtype=torch.long)  # 4 of 4 differ from a, 3 of 4 from b
    assert pairwise_hamming(torch.cat([a, b, c])) == pytest.approx((0.25 + 1.0 + 0.75) / 3)
    # chunking must not change the answer
    many = torch.randint(0, 3, (7, 3, 3))
    assert pairwise_hamming(many, chunk=2) == pytest.approx(pairwise_hamming(many, chunk=100))


def test_random_codes_are_about_one_minus_one_over_k_apart():
    codes = torch.randint(0, K, (40, 8, 8), generator=torch.Generator().manual_seed(0))
    assert pairwise_hamming(codes) == pytest.approx(1 - 1 / K, abs=0.02)


def test_pairwise_pixel_distance_known_value():
    black = -torch.ones(1, 3, 4, 4)
    white = torch.ones(1, 3, 4, 4)
    grey = torch.zeros(1, 3, 4, 4)  # 0.5 on [0, 1]
    # pairs: black-white 1.0, black-grey 0.5, white-grey 0.5
    assert pairwise_pixel_distance(torch.cat([black, white, grey])) == pytest.approx(2 / 3, abs=1e-6)


def test_diversity_errors_are_clear():
    with pytest.raises(ValueError, match="at least 2"):
        pairwise_hamming(torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="integer code maps"):
        pairwise_hamming(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="pass pairs"):
        diversity(torch.zeros(3, 2, 2, dtype=torch.long), torch.zeros(4, 3, 4, 4))


# ---- memorisation -------------------------------------------------------------------------
def test_a_copied_training_image_is_flagged_as_a_near_copy():
    g = torch.Generator().manual_seed(1)
    train_codes = torch.randint(0, K, (10, 6, 6), generator=g)
    train_images = torch.rand(10, 3, 16, 16, generator=g) * 2 - 1
    samples = torch.randint(0, K, (4, 6, 6), generator=g)
    sample_images = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
    samples[2] = train_codes[7]  # a verbatim copy of training image 7
    sample_images[2] = train_images[7]
    samples[3] = train_codes[4]
    samples[3, 0, :2] = (train_codes[4, 0, :2] + 1) % K  # 2 of 36 positions changed: 5.6 %
    m = memorisation(samples, train_codes, sample_images, train_images, near_copy_hamming=0.1)
    assert m.code.index[2] == 7 and m.code.distance[2] == 0.0
    assert m.pixel.index[2] == 7 and m.pixel.distance[2] == pytest.approx(0.0, abs=1e-6)
    assert m.code.index[3] == 4 and m.code.distance[3] == pytest.approx(2 / 36)
    assert m.near_copy.tolist() == [False, False, True, True]
    assert m.near_copy_fraction == 0.5
    # The pixel criterion alone: only the verbatim image copy is that close in pixels.
    by_pixels = memorisation(samples, train_codes, sample_images, train_images,
                             near_copy_hamming=0.0, near_copy_pixel_rms=0.01)
    assert by_pixels.near_copy.tolist() == [False, False, True, False]


def test_nearest_neighbours_l2_and_ties():
    refs = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])  # 0, .5, 1 on [0,1]
    queries = torch.stack([torch.full((3, 4, 4), v) for v in (0.9, -0.2)])
    nn_ = nearest_neighbours(queries, refs, "l2")
    assert nn_.index.tolist() == [2, 1]
    assert nn_.distance.tolist() == pytest.approx([0.05, 0.1], abs=1e-6)
    same = torch.zeros(2, 2, 2, dtype=torch.long)
    assert nearest_neighbours(same[:1], same).index.tolist() == [0]  # ties: lowest index


def test_nearest_neighbours_bad_input():
    codes = torch.zeros(2, 3, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="metric"):
        nearest_neighbours(codes, codes, "cosine")
    with pytest.raises(ValueError, match="same shape"):
        nearest_neighbours(codes, torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        nearest_neighbours(codes, codes[:0])
    with pytest.raises(ValueError, match="both"):
        memorisation(codes, codes, sample_images=torch.zeros(2, 3, 4, 4))


# ---- the remedy row ------------------------------------------------------------------------
def test_greedy_samples_of_a_one_code_prior_are_identical_copies():
    """A prior that always predicts code 3, sampled greedily: all samples are the all-3 map,
    which is in the training set: zero diversity and 100 % near-copies."""
    torch.manual_seed(0)
    vqvae = VQVAE(VQVAEConfig(image_size=16, hidden_channels=8, residual_channels=4,
                              num_residual_blocks=1, codebook_size=K, code_dim=4))
    prior = tiny_prior()
    for p in prior.parameters():
        p.data.zero_()
    prior.net.head.out.bias.data[3] = 5.0
    grid, = vqvae.latent_shapes()
    train_codes = code_set(torch.randint(0, K, (5, *grid)))
    train_codes.codes[2] = 3
    test_codes = code_set(torch.randint(0, K, (4, *grid)))
    r = evaluate_remedy("greedy", vqvae, (prior,), test_codes, train_codes,
                        config=MemorisationConfig(num_samples=4), temperature=0.0)
    assert r.sample_codes.shape == (4, grid[0] * grid[1]) and torch.all(r.sample_codes == 3)
    assert r.samples.shape == (4, 3, 16, 16)
    assert r.code_hamming == 0.0 and r.pixel_rms == pytest.approx(0.0, abs=1e-6)
    assert r.near_copy_fraction == 1.0 and r.memorisation.code.index.tolist() == [2] * 4
    assert r.test_bits_per_code == pytest.approx(evaluate_prior(prior, test_codes)["bits_per_code"])
    table = remedy_table([r])
    assert "| greedy |" in table and "100%" in table
