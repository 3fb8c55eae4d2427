"""Tests of the shared input checks (vqlesson.validate): what passes, and that each bad input
gets an error of the documented type whose message names the argument and the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vqlesson.validate import (
    ShapeError,
    check_codebook_size,
    check_codes,
    check_image_pair,
    check_images,
    check_latents,
    check_level_shapes,
    nearby_valid_sizes,
)


def test_shape_error_is_both_a_value_error_and_a_type_error():
    assert issubclass(ShapeError, ValueError) and issubclass(ShapeError, TypeError)


def test_nearby_valid_sizes():
    assert nearby_valid_sizes(36, 8) == [32, 40]
    assert nearby_valid_sizes(3, 8) == [8]  # no positive multiple below


def test_check_images_accepts_a_float_batch_and_names_each_problem():
    check_images(torch.zeros(2, 3, 16, 16), channels=3, multiple_of=8)
    check_images(torch.zeros(2, 1, 5, 7))  # any channels and sides when not asked
    with pytest.raises(TypeError, match=r"batch must be a torch.Tensor .*list"):
        check_images([[0.0]], "batch")
    with pytest.raises(TypeError, match=r"x must be a float tensor .*uint8.*x.float\(\) / 127.5 - 1"):
        check_images(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\).*\(3, 8, 8\); add a batch dimension"):
        check_images(torch.zeros(3, 8, 8))
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\) \(in_channels = 3\).*\(2, 1, 8, 8\)"):
        check_images(torch.zeros(2, 1, 8, 8), channels=3)
    with pytest.raises(ValueError, match=r"x width 12 is not divisible .* 8.*8 or 16"):
        check_images(torch.zeros(1, 3, 16, 12), multiple_of=8)


def test_check_image_pair_needs_the_same_shape():
    check_image_pair(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"same shape.*\(2, 3, 8, 8\).*\(2, 3, 8, 4\)"):
        check_image_pair(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 4))
    with pytest.raises(TypeError, match="x_hat must be a float tensor"):
        check_image_pair(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.long))


def test_check_latents():
    check_latents(torch.zeros(2, 4, 3, 5), 4)
    with pytest.raises(ShapeError, match=r"z_q must have shape \(B, 4, h, w\).*D = code_dim = 4"):
        check_latents(torch.zeros(2, 5, 3, 5), 4, "z_q")
    with pytest.raises(ShapeError, match=r"latent_channels = 6.*\(6, 3, 5\)"):
        check_latents(torch.zeros(6, 3, 5), 6, channels_name="latent_channels")
    with pytest.raises(TypeError, match="floating-point"):
        check_latents(torch.zeros(2, 4, 3, 5, dtype=torch.int64), 4)


def test_check_codes_types_shapes_and_range():
    check_codes(torch.tensor([[[0, 7]]]), 8)
    check_codes(torch.zeros(2, 3, 4, dtype=torch.int32), 8)  # any integer dtype by default
    check_codes(torch.zeros(0, 3, 4, dtype=torch.long), 8)  # empty is fine unless nonempty
    with pytest.raises(TypeError, match=r"codes must be an integer \(int64\) torch.Tensor.*list"):
        check_codes([[0, 1]], 8)
    with pytest.raises(TypeError, match=r"integer code maps.*float32; convert with codes.long\(\)"):
        check_codes(torch.zeros(2, 3, 4), 8)
    with pytest.raises(TypeError, match="int32"):
        check_codes(torch.zeros(2, 3, 4, dtype=torch.int32), 8, int64=True)
    with pytest.raises(ShapeError, match=r"top must have shape \(B, h, w\), got shape \(3, 4\)"):
        check_codes(torch.zeros(3, 4, dtype=torch.long), 8, "top", layout="(B, h, w)")
    with pytest.raises(ValueError, match="is empty"):
        check_codes(torch.zeros(0, 3, 4, dtype=torch.long), 8, nonempty=True)
    with pytest.raises(ValueError, match=r"must lie in \[0, 8\) \(codebook_size = 8\).*\[-1, 3\]"):
        check_codes(torch.tensor([[[-1, 3]]]), 8)
    check_codes(torch.tensor([[[-1, 99]]]), None)  # no K: no range check


def test_check_codes_with_any_rank_of_maps():
    check_codes(torch.zeros(2, 6, dtype=torch.long), ndim=None)
    check_codes(torch.zeros(2, 2, 3, 3, dtype=torch.long), ndim=None)
    with pytest.raises(ShapeError, match=r"\(N, H, W\)"):
        check_codes(torch.zeros(6, dtype=torch.long), layout="(N, H, W)", ndim=None)


def test_check_level_shapes():
    top, bottom = torch.zeros(2, 4, 4), torch.zeros(2, 8, 8)
    check_level_shapes(top, bottom, "top", "bottom", 2)
    with pytest.raises(ValueError, match=r"2x the top grid.*bottom of \(B=2, 8, 8\)"):
        check_level_shapes(top, torch.zeros(2, 4, 4), "top", "bottom", 2)
    with pytest.raises(ValueError, match="same batch size"):
        check_level_shapes(top, torch.zeros(3, 8, 8), "top", "bottom", 2)


def test_check_codebook_size():
    assert check_codebook_size(512) == 512
    for bad in (0, -3, 2.0, True, "8"):
        with pytest.raises(ValueError, match="K must be a positive int|codebook_size must be"):
            check_codebook_size(bad)
    with pytest.raises(ValueError, match=r"K must be a positive int \(K\), got 0"):
        check_codebook_size(0, "K")


def test_the_setting_checks_name_the_argument_the_range_and_what_arrived():
    from vqlesson.validate import check_choice, check_int, check_number

    assert check_int(5, "k", 1, 10) == 5
    assert check_int(None, "restart_dead_after", 1, none_ok=True) is None
    for bad in (0, 11, 3.0, True, "5", None):
        with pytest.raises(ValueError, match=r"^k must be an int in \[1, 10\], got "):
            check_int(bad, "k", 1, 10)
    with pytest.raises(ValueError, match=r"r must be an int >= 1 or None \(None: never\), got 0"):
        check_int(0, "r", 1, none_ok=True, note="None: never")
    assert check_number(0, "beta", 0) == 0.0
    assert check_number(0.5, "p", 0, 1, high_open=True) == 0.5
    for bad in (1.0, -0.1, float("nan"), False, "0.5"):
        with pytest.raises(ValueError, match=r"^p must be a number in \[0, 1\), got "):
            check_number(bad, "p", 0, 1, high_open=True)
    with pytest.raises(ValueError, match=r"eps must be a number > 0, got 0"):
        check_number(0, "eps", 0, low_open=True)
    assert check_int(np.int64(3), "k", 1) == 3 and type(check_int(np.int64(3), "k", 1)) is int
    assert check_number(np.float32(0.5), "p", 0, 1) == 0.5
    for bad in ("5", 2.5, None):  # the wrong type: a TypeError and, like every check, a ValueError
        with pytest.raises(TypeError, match=r"^k must be an int >= 1, got "):
            check_int(bad, "k", 1)
    with pytest.raises(TypeError, match=r"^p must be a number in \[0, 1\], got 'x'"):
        check_number("x", "p", 0, 1)
    with pytest.raises(ValueError) as out_of_range:
        check_int(0, "k", 1)
    assert not isinstance(out_of_range.value, TypeError)  # a wrong value is only a ValueError
    assert check_choice("gated", "arch", ("gated", "plain")) == "gated"
    with pytest.raises(ValueError, match=r"arch must be one of \('gated', 'plain'\), got 'x'"):
        check_choice("x", "arch", ("gated", "plain"))
