"""Tests of the ABCD rule on outlines of known shape (vqlesson.data.synthetic_abcd)."""

from __future__ import annotations

import numpy as np
import pytest

from vqlesson.data.synthetic_abcd import outline_abcd_features


def test_abcd_features_of_known_shapes() -> None:
    k = 10
    amplitudes = np.zeros((3, k))
    phases = np.zeros((3, k))
    amplitudes[1, 1] = 0.3  # an oval: mirror-symmetric, smooth
    amplitudes[2, [0, 2, 4, 6]] = [0.2, 0.2, 0.15, 0.1]  # odd harmonics, mixed phases
    phases[2, [0, 2, 4, 6]] = [0.0, 1.0, 2.5, 4.0]
    radius = np.array([0.5, 0.5, 0.5])
    f = outline_abcd_features(amplitudes, phases, radius, np.array([1, 2, 6]))
    # A circle and an oval are symmetric about both axes, with a smooth border.
    assert f["asymmetry"][0] == pytest.approx(0.0, abs=1e-6)
    assert f["asymmetry"][1] == pytest.approx(0.0, abs=0.05)
    assert f["border"][0] == pytest.approx(0.0) and f["border"][1] == pytest.approx(0.0)
    # The lumpy shape is asymmetric and irregular.
    assert f["asymmetry"][2] > 1.0
    assert f["border"][2] > 3.0
    np.testing.assert_array_equal(f["colour"], [1.0, 2.0, 6.0])
    # Circle of radius 0.5 half-widths: equivalent diameter 0.5 field widths -> D = 1 + 4*0.3/0.45.
    assert f["diameter"][0] == pytest.approx(1.0 + 4.0 * 0.3 / 0.45, abs=0.01)


def test_abcd_features_bad_input() -> None:
    ok = (np.zeros((2, 4)), np.zeros((2, 4)), np.ones(2) * 0.3, np.ones(2, dtype=int))
    with pytest.raises(ValueError, match="amplitudes"):
        outline_abcd_features(np.zeros((2, 4)), np.zeros((2, 3)), *ok[2:])
    with pytest.raises(ValueError, match="amplitudes"):
        outline_abcd_features(np.full((2, 4), 0.3), *ok[1:])  # sum |a_k| = 1.2 >= 1
    with pytest.raises(ValueError, match="radius"):
        outline_abcd_features(*ok[:2], np.array([0.3, -0.1]), ok[3])
    with pytest.raises(ValueError, match="n_colours"):
        outline_abcd_features(*ok[:3], np.array([0, 7]))
