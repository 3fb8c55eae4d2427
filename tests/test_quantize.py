"""Tests of the vector quantiser (van den Oord et al. 2017, §3.1-3.2 and appendix A.1)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from vqlesson.quantize import (
    QuantizerConfig,
    VectorQuantizer,
    VQOutput,
    ema_step,
    kmeans,
    squared_distances,
)

K, D = 16, 4


def make_vq(codebook_size: int = K, code_dim: int = D, **settings) -> VectorQuantizer:
    """A quantiser of K codes of size D; ``settings``: :class:`QuantizerConfig` fields."""
    config = QuantizerConfig(**{"init": "random", "restart_dead_after": None, **settings})
    return VectorQuantizer(codebook_size, code_dim, config)


def latents_at(codes: torch.Tensor, indices: torch.Tensor, noise: float = 0.0) -> torch.Tensor:
    """(K, D) codes, (B, H, W) indices -> (B, D, H, W) latents equal to the chosen codes + noise."""
    z = codes[indices]  # (B, H, W, D)
    z = z + noise * torch.randn_like(z)
    return z.permute(0, 3, 1, 2).contiguous()  # (B, D, H, W)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- shapes, dtypes, assignment -------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_output_shapes_and_dtypes(ema):
    vq = make_vq(ema=ema, init="kmeans")
    z = torch.randn(2, D, 5, 7)
    out = vq(z)
    assert isinstance(out, VQOutput)
    assert out.z_q.shape == z.shape and out.z_q.dtype == z.dtype
    assert out.indices.shape == (2, 5, 7) and out.indices.dtype == torch.int64
    assert int(out.indices.min()) >= 0 and int(out.indices.max()) < K
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and out.loss >= 0
    assert out.batch_perplexity.dim() == 0 and out.batch_perplexity.dtype == torch.float32


def test_low_precision_input_gives_same_dtype_and_float32_maths():
    vq = make_vq().eval()
    z = torch.randn(2, D, 4, 4)
    out32 = vq(z)
    out16 = vq(z.to(torch.bfloat16))
    assert out16.z_q.dtype == torch.bfloat16
    assert out16.loss.dtype == torch.float32
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out_ac = vq(z)
    assert out_ac.loss.dtype == torch.float32
    assert torch.equal(out_ac.indices, out32.indices)


def test_nearest_code_matches_bruteforce_cdist():
    vq = make_vq(codebook_size=32, code_dim=8).eval()
    with torch.no_grad():
        vq.codebook.copy_(torch.randn(32, 8))
    z = torch.randn(3, 8, 6, 6)
    out = vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)  # (B·H·W, D)
    brute = torch.cdist(
        flat.double(), vq.codebook.double(), compute_mode="donot_use_mm_for_euclid_dist"
    ).argmin(dim=1)
    assert torch.equal(out.indices.reshape(-1), brute)
    assert torch.equal(vq.nearest_indices(z), out.indices)
    # The forward value of z_q is the chosen code.
    expected = vq.codebook[brute].reshape(3, 6, 6, 8).permute(0, 3, 1, 2)  # (B, D, H, W)
    torch.testing.assert_close(out.z_q, expected)


def test_squared_distances_match_definition():
    x, codes = torch.randn(10, 3), torch.randn(7, 3)
    expected = ((x[:, None, :] - codes[None, :, :]) ** 2).sum(-1)  # (10, 7)
    torch.testing.assert_close(squared_distances(x, codes), expected, atol=1e-5, rtol=1e-5)


# ---- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_straight_through_gradient(ema):
    vq = make_vq(ema=ema)
    z_e = torch.randn(2, D, 3, 3, requires_grad=True)
    out = vq(z_e)
    z_q = out.z_q
    z_q.retain_grad()
    weights = torch.randn_like(z_q)
    loss = (weights * z_q.pow(2)).sum()  # a nonlinear downstream loss of z_q only
    loss.backward()
    assert z_q.grad is not None and z_q.grad.abs().sum() > 0
    torch.testing.assert_close(z_e.grad, z_q.grad)


def test_codebook_gets_gradient_only_without_ema():
    vq = make_vq(ema=False)
    z = torch.randn(2, D, 3, 3, requires_grad=True)
    vq(z).loss.backward()
    assert isinstance(vq.codebook, torch.nn.Parameter)
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0
    assert z.grad is not None and z.grad.abs().sum() > 0  # the commitment term

    vq_ema = make_vq(ema=True)
    assert not vq_ema.codebook.requires_grad
    assert list(vq_ema.parameters()) == []
    z = torch.randn(2, D, 3, 3, requires_grad=True)
    vq_ema(z).loss.backward()
    assert vq_ema.codebook.grad is None
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_loss_values_match_eq3():
    for ema in (False, True):
        vq = make_vq(ema=ema, beta=0.3).eval()
        z = torch.randn(2, D, 4, 4)
        out = vq(z)
        e = vq.lookup(out.indices)
        mse = ((z - e) ** 2).mean()
        expected = 0.3 * mse if ema else (1 + 0.3) * mse
        torch.testing.assert_close(out.loss, expected)


# ---- EMA codebook updates ----------------------------------------------------------------
def test_ema_update_moves_code_to_mean_of_assigned_vectors():
    vq = make_vq(codebook_size=2, code_dim=2, ema=True, decay=0.0, eps=1e-12)
    vq.set_codebook(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
    z = torch.randn(1, 2, 8, 8) * 0.3
    z[:, 0] += torch.where(torch.rand(1, 8, 8) > 0.5, 1.0, -1.0)  # two clusters around ±1
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)  # (64, 2)
    out = vq(z)
    assign = out.indices.reshape(-1)
    for code in range(2):
        members = flat[assign == code]
        assert len(members) > 0
        torch.testing.assert_close(vq.codebook[code], members.mean(0), atol=1e-5, rtol=1e-5)


def test_ema_update_with_decay_moves_code_partway():
    vq = make_vq(codebook_size=2, code_dim=2, ema=True, decay=0.5, eps=1e-12)
    vq.set_codebook(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), cluster_sizes=torch.ones(2) * 4)
    z = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 2, 2).contiguous()  # 4 x (2, 1)
    vq(z)
    # All 4 vectors go to code 1: N = 0.5*4 + 0.5*4 = 4, m = 0.5*4*(1,0) + 0.5*4*(2,1)
    torch.testing.assert_close(vq.codebook[1], torch.tensor([1.5, 0.5]), atol=1e-4, rtol=1e-4)
    # Code 0 unused: N and m both decay, the code stays (up to Laplace smoothing).
    torch.testing.assert_close(vq.codebook[0], torch.tensor([-1.0, 0.0]), atol=1e-4, rtol=1e-4)


def test_ema_step_by_hand_and_as_the_quantiser_applies_it():
    cluster_size, embed_sum = torch.tensor([4.0, 0.0]), torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    counts, sums = torch.tensor([2.0, 0.0]), torch.tensor([[6.0, 2.0], [0.0, 0.0]])
    step = ema_step(cluster_size, embed_sum, counts, sums, decay=0.5, eps=1e-12)
    torch.testing.assert_close(step.cluster_size, torch.tensor([3.0, 0.0]))
    torch.testing.assert_close(step.embed_sum, torch.tensor([[5.0, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(step.codebook[0], torch.tensor([5.0 / 3.0, 1.0 / 3.0]))
    assert torch.equal(cluster_size, torch.tensor([4.0, 0.0]))  # pure: inputs unchanged
    # Laplace smoothing: an unused code divides by about eps, not by zero.
    assert torch.isfinite(step.codebook).all()
    vq = make_vq(codebook_size=2, code_dim=2, ema=True, decay=0.5, eps=1e-12)
    vq.set_codebook(embed_sum / cluster_size.clamp(min=1.0)[:, None], cluster_size.clamp(min=1e-3))
    expected = ema_step(vq.ema_cluster_size, vq.ema_embed_sum, counts, sums, 0.5, 1e-12)
    vq.ema_update(counts, sums)
    assert torch.equal(vq.ema_cluster_size, expected.cluster_size)
    assert torch.equal(vq.ema_embed_sum, expected.embed_sum)
    assert torch.equal(vq.codebook, expected.codebook)


def test_no_ema_update_in_eval_mode():
    vq = make_vq(ema=True, decay=0.0).eval()
    before = vq.codebook.clone()
    vq(torch.randn(2, D, 4, 4))
    assert torch.equal(vq.codebook, before)


# ---- dead-code restarts --------------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_dead_code_is_restarted_from_batch(ema):
    vq = make_vq(codebook_size=3, code_dim=2, ema=ema, restart_dead_after=3)
    far = torch.tensor([100.0, 100.0])
    vq.set_codebook(torch.stack([torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.0]), far]))
    z = torch.randn(2, 2, 4, 4) * 0.1
    z[:, 0] += torch.where(torch.rand(2, 4, 4) > 0.5, 1.0, -1.0)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)  # (32, 2)
    for step in range(1, 3):
        vq(z)
        assert vq.last_restarts == 0
        torch.testing.assert_close(vq.codebook[2], far, rtol=1e-4, atol=1e-4)  # EMA smoothing
        assert int(vq.steps_since_used[2]) == step
    assert int(vq.steps_since_used[0]) == 0
    z_leaf = z.clone().requires_grad_(True)
    out = vq(z_leaf)  # third step without use: restarted
    out.loss.backward()  # the in-place restart does not break the autograd graph
    assert z_leaf.grad is not None
    assert vq.last_restarts == 1
    new = vq.codebook[2]
    assert not torch.allclose(new, far)
    distance_to_batch = (flat - new).norm(dim=1).min()
    assert distance_to_batch < 0.01  # a batch vector plus tiny noise
    assert int(vq.steps_since_used[2]) == 0
    if ema:
        assert float(vq.ema_cluster_size[2]) == 1.0
        torch.testing.assert_close(vq.ema_embed_sum[2], new)


def test_no_restart_in_eval_or_when_disabled():
    far = torch.tensor([[100.0, 100.0]])
    codes = torch.cat([torch.zeros(1, 2), far])
    z = torch.randn(1, 2, 4, 4) * 0.1
    vq = make_vq(codebook_size=2, code_dim=2, restart_dead_after=1).eval()
    vq.set_codebook(codes)
    vq(z)
    assert torch.equal(vq.codebook[1], far[0]) and int(vq.steps_since_used[1]) == 0
    vq_off = make_vq(codebook_size=2, code_dim=2, restart_dead_after=None)
    vq_off.set_codebook(codes)
    for _ in range(3):
        vq_off(z)
    assert vq_off.last_restarts == 0
    torch.testing.assert_close(vq_off.codebook[1], far[0], rtol=1e-4, atol=1e-4)


# ---- perplexity and usage ----------------------------------------------------------------
def test_perplexity_uniform_and_single_code():
    vq = make_vq(codebook_size=8, code_dim=3).eval()
    codes = torch.randn(8, 3) * 5
    vq.set_codebook(codes)
    uniform = torch.arange(8).repeat(4).view(2, 4, 4)  # each code used 4 times
    out = vq(latents_at(codes, uniform, noise=0.01))
    assert torch.equal(out.indices, uniform)
    assert math.isclose(float(out.batch_perplexity), 8.0, rel_tol=1e-5)

    single = torch.full((2, 4, 4), 5)
    out = vq(latents_at(codes, single, noise=0.01))
    assert math.isclose(float(out.batch_perplexity), 1.0, rel_tol=1e-6)

    out = vq(torch.randn(4, 3, 5, 5) * 5)
    assert 1.0 <= float(out.batch_perplexity) <= 8.0


def test_epoch_perplexity_accumulates_and_resets():
    vq = make_vq(codebook_size=4, code_dim=2).eval()
    codes = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    vq.set_codebook(codes)
    assert vq.epoch_perplexity() == 1.0 and vq.active_fraction() == 0.0
    out_a = vq(latents_at(codes, torch.zeros(1, 3, 3, dtype=torch.long)))
    out_b = vq(latents_at(codes, torch.ones(1, 3, 3, dtype=torch.long)))
    assert float(out_a.batch_perplexity) == pytest.approx(1.0) and float(out_b.batch_perplexity) == 1.0
    assert vq.usage_counts.dtype == torch.int64  # int64: exact, and MPS has no float64
    assert vq.usage_counts.tolist() == [9.0, 9.0, 0.0, 0.0]
    assert vq.epoch_perplexity() == pytest.approx(2.0)
    assert vq.active_fraction() == pytest.approx(0.5)
    vq.train()
    vq(latents_at(codes, torch.full((1, 3, 3), 2)))  # training forwards count too
    assert vq.usage_counts.tolist() == [9.0, 9.0, 9.0, 0.0]
    assert vq.epoch_perplexity() == pytest.approx(3.0)
    vq.reset_usage()
    assert vq.usage_counts.sum() == 0
    assert vq.epoch_perplexity() == 1.0 and vq.active_fraction() == 0.0


# ---- lookup -----------------------------------------------------------------------------------
def test_lookup_equals_z_q_in_eval():
    vq = make_vq(init="kmeans")
    vq(torch.randn(4, D, 4, 4))  # kmeans init
    vq.eval()
    z = torch.randn(3, D, 5, 6)
    out = vq(z)
    looked_up = vq.lookup(out.indices)
    assert looked_up.shape == (3, D, 5, 6)
    torch.testing.assert_close(looked_up, out.z_q, atol=1e-6, rtol=1e-6)


def test_lookup_rejects_bad_indices():
    vq = make_vq()
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        vq.lookup(torch.full((1, 2, 2), K))
    with pytest.raises(ValueError, match="B, H, W"):
        vq.lookup(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        vq.lookup(torch.zeros(1, 2, 2))


# ---- initialisation -------------------------------------------------------------------------
def test_kmeans_init_places_codes_on_data_clusters():
    centers = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    which = torch.randint(4, (8, 8, 8))
    z = latents_at(centers, which, noise=0.2)  # (8, 2, 8, 8)

    vq = make_vq(codebook_size=4, code_dim=2, init="kmeans")
    assert not bool(vq.initialized)
    vq(z)
    assert bool(vq.initialized)
    dist = torch.cdist(vq.codebook, centers)  # (codes, centers)
    assert dist.min(dim=1).values.max() < 0.5  # every code sits on a cluster
    assert dist.min(dim=0).values.max() < 0.5  # every cluster has a code
    ema_means = vq.ema_embed_sum / vq.ema_cluster_size.unsqueeze(1)
    torch.testing.assert_close(ema_means, vq.codebook)  # EMA stats agree with the codebook

    random = make_vq(codebook_size=4, code_dim=2, init="random")
    assert bool(random.initialized)
    random(z)
    assert random.codebook.abs().max() < 4.0  # random init is not data-driven: far from ±5


def test_kmeans_init_with_fewer_vectors_than_codes():
    vq = make_vq(codebook_size=64, code_dim=D, init="kmeans")
    z = torch.randn(1, D, 2, 3)  # 6 vectors < 64 codes
    vq(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # (6, D)
    assert torch.cdist(vq.codebook, flat).min(dim=1).values.max() < 0.05
    assert torch.isfinite(vq.codebook).all()


def test_kmeans_function_recovers_means():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    x = torch.cat([centers[0] + torch.randn(50, 2), centers[1] + torch.randn(70, 2)])
    centroids, counts = kmeans(x, 2, iters=5)
    order = centroids[:, 0].argsort()
    torch.testing.assert_close(centroids[order[0]], x[:50].mean(0))
    torch.testing.assert_close(centroids[order[1]], x[50:].mean(0))
    assert counts[order].tolist() == [50.0, 70.0]


def test_bad_init_and_arguments_raise():
    with pytest.raises(ValueError, match="init"):
        VectorQuantizer(8, 4, QuantizerConfig(init="uniform"))
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(8, 4, QuantizerConfig(decay=1.0))
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantizer(0, 4)
    with pytest.raises(ValueError, match="restart_dead_after"):
        VectorQuantizer(8, 4, QuantizerConfig(restart_dead_after=0))


# ---- input validation --------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, D, 4), (2, D + 1, 4, 4), (D, 4, 4), (1, 2, D, 4, 4)])
def test_bad_input_shapes_raise(shape):
    vq = make_vq()
    expected = re.escape(f"(B, D, H, W) with D = code_dim = {D}")
    with pytest.raises(ValueError, match=expected) as info:
        vq(torch.randn(*shape))
    assert str(shape) in str(info.value)


def test_non_float_input_raises():
    with pytest.raises(TypeError, match="floating"):
        make_vq()(torch.zeros(1, D, 2, 2, dtype=torch.long))


# ---- state_dict --------------------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_state_dict_round_trip(ema):
    vq = make_vq(ema=ema, init="kmeans", restart_dead_after=2)
    for _ in range(4):
        vq(torch.randn(4, D, 4, 4))
    state = vq.state_dict()
    expected_keys = {"embedding", "initialized", "steps_since_used", "usage_counts"}
    if ema:
        expected_keys |= {"ema_cluster_size", "ema_embed_sum"}
    assert set(state) == expected_keys

    fresh = make_vq(ema=ema, init="kmeans", restart_dead_after=2)
    assert not bool(fresh.initialized)
    fresh.load_state_dict(state)
    for key, value in vq.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert bool(fresh.initialized)

    # A training step after loading continues from the checkpoint (no k-means re-init).
    z = torch.randn(4, D, 4, 4)
    torch.manual_seed(1)
    out_a = vq(z)
    torch.manual_seed(1)
    out_b = fresh(z)
    assert torch.equal(out_a.indices, out_b.indices)
    torch.testing.assert_close(fresh.codebook, vq.codebook)
