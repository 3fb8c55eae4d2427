"""Tests of the realism measure's new parts: the classifier two-sample test
(vqlesson.two_sample), the vignette statistic, lesions found, the realism report and the optional
FID (vqlesson.realism). The ABCD estimator and its comparisons are tested in test_abcd.py."""

from __future__ import annotations

import sys

import pytest
import torch

from vqlesson.data.synthetic import SyntheticLesions
from vqlesson.realism import (
    SETS,
    TESTS,
    RealismConfig,
    Vignette,
    found_fraction,
    frechet_inception_distance,
    hue_outside,
    realism_report,
    realism_table,
    reconstruct,
    vignette_fractions,
)
from vqlesson.two_sample import TwoSampleConfig, TwoSampleResult, two_sample_test
from vqlesson.vqvae import VQVAE, VQVAEConfig

SIZE, N = 32, 64  # 32-px images, 64 per set: a test half of 64 images (standard error ~0.06)


def lesions(n: int, seed: int) -> torch.Tensor:
    data = SyntheticLesions(n, image_size=SIZE, seed=seed)
    return torch.stack([data[i][0] for i in range(n)])  # (n, 3, S, S) in [-1, 1]


@pytest.fixture(scope="module")
def draws() -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent draws of the synthetic lesions (disjoint: other seeds)."""
    return lesions(N, seed=101), lesions(N, seed=202)


def shuffled_pixels(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Each image's pixel positions permuted (colours kept): no lesion, no vignette."""
    g = torch.Generator().manual_seed(seed)
    flat = images.flatten(2)  # (N, 3, S*S)
    order = torch.stack([torch.randperm(flat.shape[-1], generator=g) for _ in images])  # (N, S*S)
    return flat.gather(2, order[:, None, :].expand_as(flat)).view_as(images)


# ------------------------------------------------------------------------------------------
# The classifier two-sample test
# ------------------------------------------------------------------------------------------
def test_two_draws_of_one_distribution_are_not_told_apart(draws, one_thread):
    result = two_sample_test(*draws, seed=0)
    assert isinstance(result, TwoSampleResult)
    assert (result.n, result.n_train, result.n_test) == (N, N, N)
    assert result.accuracy <= 0.65 and result.p_value > 0.01, result
    assert result.ci_low <= result.accuracy <= result.ci_high
    assert result.standard_error == pytest.approx((result.accuracy * (1 - result.accuracy) / N) ** 0.5)


def test_real_images_against_their_shuffled_pixels_are_told_apart(draws, one_thread):
    real = draws[0]
    result = two_sample_test(real, shuffled_pixels(real), seed=0)
    assert result.accuracy >= 0.95 and result.p_value < 1e-6, result
    assert result.ci_low > 0.5


def test_deterministic_for_a_seed_and_leaves_global_state_alone(draws, one_thread):
    a, b = draws[0][:16], shuffled_pixels(draws[1][:16])
    config = TwoSampleConfig(epochs=3)
    torch.manual_seed(1234)
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    first = two_sample_test(a, b, config, seed=5)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG as found
    assert torch.get_num_threads() == threads_before
    second = two_sample_test(a, b, config, seed=5)
    assert first._replace(seconds=0) == second._replace(seconds=0)
    assert first.seed == 5


@pytest.mark.parametrize("change, error, words", [
    (lambda b: b[:, :, :16, :16], ValueError, "same shape"),  # another size
    (lambda b: b[:-1], ValueError, "same shape"),  # another number of images
    (lambda b: (b + 1) / 2, ValueError, "[0, 1] images"),  # [0, 1] against [-1, 1]
    (lambda b: (b + 1) * 127.5, ValueError, "must lie in [-1, 1]"),  # 0..255
    (lambda b: b.double(), TypeError, "dtype"),
    (lambda b: b[:3], ValueError, "same shape"),
])
def test_sets_that_differ_in_size_dtype_or_range_are_refused(draws, change, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]")) as info:
        two_sample_test(draws[0], change(draws[1]), names=("samples", "reconstructions"))
    assert "samples" in str(info.value) or "reconstructions" in str(info.value)


def test_too_few_images_and_bad_settings_are_refused(draws):
    with pytest.raises(ValueError, match="at least 4 images"):
        two_sample_test(draws[0][:3], draws[1][:3])
    with pytest.raises(ValueError, match="holds NaN"):
        two_sample_test(draws[0], draws[1].clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        two_sample_test(draws[0], draws[1], seed=-1)
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        TwoSampleConfig(epochs=0)
    with pytest.raises(ValueError, match="quantize_bits"):
        TwoSampleConfig(quantize_bits=0)


# ------------------------------------------------------------------------------------------
# The vignette statistic and lesions found
# ------------------------------------------------------------------------------------------
def ring_image(size: int = 32) -> torch.Tensor:
    """(1, 3, S, S): white, black outside the inscribed circle (the known answer: 1 and 0)."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    r = ((yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2).sqrt()
    image = torch.ones(1, 3, size, size)
    image[:, :, r > size / 2] = -1.0
    return image


def test_vignette_fractions_of_constructed_images():
    assert vignette_fractions(ring_image()) == Vignette(1.0, 0.0, 1)
    half_black = torch.ones(1, 3, 32, 32)
    half_black[..., :16] = -1.0  # the left half: by symmetry half of each region
    assert vignette_fractions(half_black) == Vignette(0.5, 0.5, 1)
    # The mean over channels decides: a pure red pixel (1, -1, -1) has brightness 1/3.
    red = torch.tensor([1.0, -1.0, -1.0])[None, :, None, None].expand(2, 3, 32, 32)
    assert vignette_fractions(red) == Vignette(0.0, 0.0, 2)
    dim = torch.full((1, 3, 32, 32), 2 * 0.09 - 1)  # brightness 0.09 < 0.1
    assert vignette_fractions(dim) == Vignette(1.0, 1.0, 1)
    assert vignette_fractions(dim, threshold=0.05) == Vignette(0.0, 0.0, 1)
    both = torch.cat([ring_image(), torch.ones(1, 3, 32, 32)])  # averaged over the images
    assert vignette_fractions(both) == Vignette(0.5, 0.0, 2)


def test_vignette_of_the_synthetic_lesions_and_bad_input(draws):
    v = vignette_fractions(draws[0])
    assert 0.3 < v.outside < 0.9 and v.inside < 0.1  # the dermoscope's dark surround
    with pytest.raises(ValueError, match="threshold must be a number in \\(0, 1\\]"):
        vignette_fractions(draws[0], threshold=0)
    with pytest.raises(TypeError, match="images must be a float tensor"):
        vignette_fractions(draws[0].to(torch.uint8))


def solid(rgb: tuple[float, float, float], n: int = 2, size: int = 16) -> torch.Tensor:
    """(n, 3, S, S) images of one colour, ``rgb`` in [0, 1], mapped to [-1, 1]."""
    return (torch.tensor(rgb)[None, :, None, None] * 2 - 1).expand(n, 3, size, size).clone()


def test_hue_outside_counts_colours_the_reference_does_not_have(draws):
    brown, green = solid((0.6, 0.4, 0.2)), solid((0.2, 0.6, 0.2))
    assert hue_outside(brown, brown) == 0.0
    assert hue_outside(green, brown) == 1.0
    assert hue_outside(torch.cat([brown, green]), brown) == 0.5
    grey = solid((0.5, 0.5, 0.5))
    assert hue_outside(grey, brown) == 0.0  # no hue: not counted
    red_wrap = torch.cat([solid((0.9, 0.1, 0.12)), solid((0.9, 0.12, 0.1))])  # hues 359° and 1°
    assert hue_outside(solid((0.9, 0.1, 0.11)), red_wrap) == 0.0  # the circle wraps at red
    own = hue_outside(draws[0], draws[0])
    assert 0.0 < own <= 0.011  # 1 - quantile of its own pixels, by construction
    assert hue_outside(draws[1], draws[0]) < 0.05  # another draw of the same lesions
    shifted = draws[0][:, [2, 0, 1]]  # channels rotated: every hue moves by a third of the circle
    assert hue_outside(shifted, draws[0]) > 0.9
    with pytest.raises(ValueError, match="no coloured pixel"):
        hue_outside(brown, grey)
    with pytest.raises(ValueError, match="quantile"):
        hue_outside(brown, brown, quantile=0)
    with pytest.raises(TypeError, match="reference must be a float tensor"):
        hue_outside(brown, brown.to(torch.uint8))


def test_lesions_are_found_in_lesions_not_in_plain_skin(draws):
    assert found_fraction(draws[0][:16]) >= 0.9
    skin = torch.tensor([0.76, 0.28, 0.06])[None, :, None, None].expand(8, 3, SIZE, SIZE)
    assert found_fraction(skin.contiguous()) == 0.0


# ------------------------------------------------------------------------------------------
# Reconstructions, the report, FID
# ------------------------------------------------------------------------------------------
def test_reconstruct_keeps_order_range_and_the_models_mode(draws):
    torch.manual_seed(0)
    model = VQVAE(VQVAEConfig(image_size=SIZE, hidden_channels=8, residual_channels=4,
                              codebook_size=16, code_dim=4)).train()
    x = draws[0][:5]
    out = reconstruct(model, x, batch_size=2)
    assert out.shape == x.shape and out.dtype == torch.float32 and out.abs().max() <= 1
    model.eval()
    with torch.no_grad():
        assert torch.allclose(out[3], model(x[3:4]).x_hat[0], atol=1e-5)
    assert reconstruct(model.train(), x).shape == x.shape and model.training


def test_realism_report_measures_every_set_and_prints_them(draws, one_thread):
    real = draws[0]
    blurred = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False)
    samples = shuffled_pixels(draws[1])[:48]  # fewer samples than real images: the first 48
    config = RealismConfig(two_sample=TwoSampleConfig(epochs=5), seed=3)
    report = realism_report(samples, blurred, real, config)
    assert set(report.two_sample) == set(TESTS) and set(report.vignette) == set(SETS)
    assert report.two_sample["samples vs reconstructions"].n == 48
    assert report.two_sample["reconstructions vs real"].n == N
    assert all(r.seed == 3 for r in report.two_sample.values())
    assert report.two_sample["samples vs reconstructions"].accuracy >= 0.9  # shuffled: easy
    assert report.lesion_found["real"] >= 0.9 and report.lesion_found["samples"] <= 0.5
    assert report.vignette["samples"].inside > 2 * report.vignette["real"].inside  # black anywhere
    assert set(report.abcd) == {"samples", "reconstructions"}
    assert report.abcd["reconstructions"].wasserstein["border"] < 1.0
    table = realism_table(report, sample_name="samples (T = 1)")
    assert "| samples (T = 1) | " in table and "| VQ-VAE reconstructions | " in table
    assert "W1 border" in table and "*real images*" in table
    with pytest.raises(ValueError, match="reconstructions of real"):
        realism_report(samples, blurred[:10], real, config)


def test_fid_is_skipped_with_a_clear_message_without_its_extra(draws, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchmetrics.image.fid", None)  # as if not installable
    fid = frechet_inception_distance(draws[0][:4], draws[1][:4])
    assert fid.value is None and "vqlesson[fid]" in fid.message
    with pytest.raises(ValueError, match="at least 2 images"):
        frechet_inception_distance(draws[0][:1], draws[1][:4])
