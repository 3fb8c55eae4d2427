"""Tests of vqlesson.metrics: image quality, codebook usage and code size."""

from __future__ import annotations

import math

import pytest
import torch

from vqlesson import metrics


def smooth_images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth random images in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return up * 2 - 1


def test_to_unit_range_maps_and_clamps():
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 2.0])
    assert torch.equal(metrics.to_unit_range(x), torch.tensor([0.0, 0.5, 1.0, 0.0, 1.0]))


def test_mse_values_and_reductions():
    x = torch.zeros(3, 3, 8, 8)
    x_hat = torch.zeros(3, 3, 8, 8)
    x_hat[1] = 0.5
    x_hat[2] = -1.0
    per_image = metrics.mse(x, x_hat, reduction="none")
    assert per_image.shape == (3,)
    assert torch.allclose(per_image, torch.tensor([0.0, 0.25, 1.0]))
    assert metrics.mse(x, x_hat) == pytest.approx(1.25 / 3)


def test_psnr_identical_is_inf():
    x = smooth_images()
    assert math.isinf(metrics.psnr(x, x.clone()))
    assert torch.isinf(metrics.psnr(x, x.clone(), reduction="none")).all()


def test_psnr_matches_known_mse_on_unit_range():
    x01 = torch.full((2, 3, 16, 16), 0.5)
    errors = torch.tensor([0.1, 0.01])
    x_hat01 = x01 + errors.view(2, 1, 1, 1)  # per-image MSE in [0, 1] units = error²
    expected = 10 * torch.log10(1 / errors.pow(2))  # 20 dB and 40 dB
    got = metrics.psnr(x01 * 2 - 1, x_hat01 * 2 - 1, reduction="none")
    assert got.shape == (2,)
    assert torch.allclose(got, expected, atol=1e-3)
    assert metrics.psnr(x01 * 2 - 1, x_hat01 * 2 - 1) == pytest.approx(30.0, abs=1e-3)


def test_ssim_identical_is_one_and_noise_lowers_it():
    x = smooth_images()
    assert metrics.ssim(x, x.clone()) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    per_image = metrics.ssim(x, noisy, reduction="none")
    assert per_image.shape == (4,)
    assert (per_image < 0.9).all()
    more_noisy = (x + 0.8 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    assert metrics.ssim(x, more_noisy) < metrics.ssim(x, noisy)


def test_ssim_rejects_too_small_images():
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="at least 11"):
        metrics.ssim(x, x)


@pytest.mark.parametrize("fn", [metrics.mse, metrics.psnr, metrics.ssim])
def test_shape_mismatch_is_a_clear_error(fn):
    with pytest.raises(ValueError, match="same shape"):
        fn(torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 12))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        fn(torch.zeros(3, 16, 16), torch.zeros(3, 16, 16))


def test_unknown_reduction_rejected():
    x = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="reduction"):
        metrics.mse(x, x, reduction="sum")


def test_sharpness_blur_scores_lower():
    g = torch.Generator().manual_seed(0)
    sharp = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(sharp, 3, stride=1, padding=1)
    s_sharp = metrics.sharpness(sharp, reduction="none")
    s_blur = metrics.sharpness(blurred, reduction="none")
    assert s_sharp.shape == (2,)
    assert (s_blur < s_sharp).all()
    assert metrics.sharpness(torch.zeros(1, 3, 8, 8)) == 0.0


def test_perplexity_uniform_one_hot_and_empty():
    assert metrics.perplexity_from_counts(torch.ones(512)) == pytest.approx(512.0, rel=1e-9)
    one_hot = torch.zeros(16)
    one_hot[3] = 42
    assert metrics.perplexity_from_counts(one_hot) == pytest.approx(1.0)
    assert metrics.perplexity_from_counts(torch.zeros(8)) == 1.0
    # Two codes used equally among eight: effective number of codes 2.
    assert metrics.perplexity_from_counts([5, 5, 0, 0, 0, 0, 0, 0]) == pytest.approx(2.0)


def test_perplexity_from_counts_values():
    assert math.isclose(float(metrics.perplexity_from_counts(torch.tensor([1.0, 1.0, 0.0, 0.0]))),
                        2.0, rel_tol=1e-6)
    assert float(metrics.perplexity_from_counts(torch.zeros(5))) == 1.0


def test_perplexity_rejects_bad_counts():
    with pytest.raises(ValueError, match="non-negative"):
        metrics.perplexity_from_counts(torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="1-D"):
        metrics.perplexity_from_counts(torch.ones(2, 2))


def test_active_fraction():
    assert metrics.active_fraction(torch.tensor([0, 3, 0, 1])) == 0.5
    assert metrics.active_fraction(torch.zeros(4)) == 0.0


def test_bits_per_image_and_compression_ratio():
    bits = metrics.bits_per_image((16, 16), 512)
    assert bits == 2304.0
    # Hierarchical: 8x8 top + 16x16 bottom, both K=512.
    assert metrics.bits_per_image([((8, 8), 512), ((16, 16), 512)]) == 64 * 9 + 2304
    # The paper's example: 128x128x3 8-bit images -> 32x32 codes of K=512.
    paper_bits = metrics.bits_per_image((32, 32), 512)
    assert metrics.compression_ratio((3, 128, 128), paper_bits) == pytest.approx(
        128 * 128 * 3 * 8 / (32 * 32 * 9)
    )
    assert metrics.compression_ratio((3, 64, 64), bits) == pytest.approx(3 * 64 * 64 * 8 / 2304)


def test_bits_and_ratio_reject_bad_input():
    with pytest.raises(ValueError, match="codebook_size"):
        metrics.bits_per_image((16, 16))
    with pytest.raises(ValueError, match="codebook_size"):
        metrics.bits_per_image((16, 16), 0)
    with pytest.raises(ValueError, match="image_shape"):
        metrics.compression_ratio((64, 64), 100.0)
    with pytest.raises(ValueError, match="latent_bits"):
        metrics.compression_ratio((3, 64, 64), 0.0)


def test_exact_8bit_fraction_and_png_bits_of_a_lossless_codec():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert metrics.to_8bit(torch.tensor([-1.0, 0.0, 1.0, 2.0])).tolist() == [0, 128, 255, 255]
    assert metrics.exact_8bit_fraction(x, x) == 1.0
    assert metrics.exact_8bit_fraction(x, x + 1e-4) > 0.9  # below half an 8-bit step: mostly kept
    shifted = metrics.exact_8bit_fraction(x, x + 0.02, reduction="none")  # 2.55 steps
    assert shifted.shape == (2,) and float(shifted.max()) < 0.05
    flat, noise = torch.zeros(1, 3, 32, 32), torch.rand(1, 3, 32, 32) * 2 - 1
    raw = 3 * 32 * 32 * 8
    assert metrics.png_bits_per_image(flat) < 0.05 * raw  # a constant image compresses
    assert metrics.png_bits_per_image(noise) > 0.95 * raw  # noise does not
    assert metrics.png_bits_per_image(torch.cat([flat, noise]), reduction="none").shape == (2,)
    assert metrics.png_bits_per_image(torch.zeros(1, 1, 8, 8)) > 0  # greyscale
    with pytest.raises(ValueError, match="1 or 3 channels"):
        metrics.png_bits_per_image(torch.zeros(1, 2, 8, 8))
    with pytest.raises(TypeError):
        metrics.png_bits_per_image(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
