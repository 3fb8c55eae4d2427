"""Tests of the procedural dermoscopy data set (vqlesson.data.synthetic)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vqlesson.data.synthetic_abcd import TDS_THRESHOLD, total_dermoscopy_score
from vqlesson.data.synthetic import COLOUR_NAMES, SyntheticLesions


@pytest.fixture(scope="module")
def big() -> SyntheticLesions:
    """1000 items at 32 px (construction only renders nothing)."""
    return SyntheticLesions(1000, image_size=32, seed=0)


@pytest.fixture(scope="module")
def batch32() -> tuple[torch.Tensor, torch.Tensor, SyntheticLesions]:
    """200 rendered 32 px items: images (200, 3, 32, 32), labels (200,)."""
    ds = SyntheticLesions(200, image_size=32, seed=3)
    images, labels = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(images), torch.stack(labels), ds


# ------------------------------------------------------------------------------------------
# Shapes, dtypes, ranges
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [16, 32, 48, 64, 128, 256])
def test_item_shape_dtype_range(size: int) -> None:
    ds = SyntheticLesions(3, image_size=size, seed=1, hair_probability=1.0)
    assert len(ds) == 3
    for i in range(3):
        image, label = ds[i]
        assert image.shape == (3, size, size)
        assert image.dtype == torch.float32
        assert torch.isfinite(image).all()
        assert image.min() >= -1.0 and image.max() <= 1.0
        assert image.std() > 0.1  # not a constant image
        assert label.dtype == torch.int64 and label.shape == ()
        assert int(label) in (0, 1)
        assert int(label) == int(ds.labels[i])


def test_features_labels_attributes(big: SyntheticLesions) -> None:
    n = len(big)
    assert set(big.features) == {"asymmetry", "border", "colour", "diameter", "score"}
    for name, values in big.features.items():
        assert values.dtype == torch.float32 and values.shape == (n,), name
        assert torch.isfinite(values).all(), name
    f = big.features
    assert f["asymmetry"].min() >= 0 and f["asymmetry"].max() <= 2
    assert f["border"].min() >= 0 and f["border"].max() <= 8
    assert f["colour"].min() >= 1 and f["colour"].max() <= 6
    assert torch.equal(f["colour"], f["colour"].round())
    assert f["diameter"].min() >= 1 and f["diameter"].max() <= 5
    assert big.labels.dtype == torch.int64 and big.labels.shape == (n,)
    assert big.classes == ("benign", "malignant")
    # Every feature actually varies over the data set.
    for name in ("asymmetry", "border", "colour", "diameter"):
        assert f[name].std() > 0.3, name


def test_score_is_tds_of_features(big: SyntheticLesions) -> None:
    f = big.features
    expected = 1.3 * f["asymmetry"] + 0.1 * f["border"] + 0.5 * f["colour"] + 0.5 * f["diameter"]
    torch.testing.assert_close(f["score"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        total_dermoscopy_score(f["asymmetry"], f["border"], f["colour"], f["diameter"]), expected
    )


# ------------------------------------------------------------------------------------------
# Labels follow the ABCD rule
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 7])
def test_label_balance(seed: int) -> None:
    ds = SyntheticLesions(1000, image_size=32, seed=seed)
    assert 0.35 <= ds.malignant_fraction <= 0.65
    assert abs(ds.malignant_fraction - float(ds.labels.float().mean())) < 1e-9


def test_labels_follow_score_threshold(big: SyntheticLesions) -> None:
    score, labels = big.features["score"], big.labels
    assert big.threshold == TDS_THRESHOLD
    assert torch.equal(labels, (score > big.threshold).long())
    assert score[labels == 1].mean() > score[labels == 0].mean()


def test_malignant_items_are_more_atypical(big: SyntheticLesions) -> None:
    malignant = big.labels == 1
    for name in ("asymmetry", "border", "colour", "diameter"):
        values = big.features[name]
        assert values[malignant].mean() > values[~malignant].mean(), name


# ------------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------------
def test_same_seed_same_items() -> None:
    a = SyntheticLesions(6, image_size=32, seed=5)
    b = SyntheticLesions(6, image_size=32, seed=5)
    for i in range(6):
        assert torch.equal(a[i][0], b[i][0])
        assert torch.equal(a[i][0], a[i][0])  # rendering twice gives the same image
    for name in a.features:
        assert torch.equal(a.features[name], b.features[name])
    assert torch.equal(a.labels, b.labels)


def test_different_seeds_differ() -> None:
    a = SyntheticLesions(4, image_size=32, seed=0)
    b = SyntheticLesions(4, image_size=32, seed=1)
    for i in range(4):
        assert (a[i][0] - b[i][0]).abs().mean() > 0.01
    assert not torch.equal(a.features["score"], b.features["score"])
    # Items within one data set differ too.
    assert (a[0][0] - a[1][0]).abs().mean() > 0.01


def test_order_and_length_independence() -> None:
    ds = SyntheticLesions(8, image_size=32, seed=2)
    forward = [ds[i][0] for i in range(8)]
    backward = [ds[i][0] for i in reversed(range(8))][::-1]
    for f, b in zip(forward, backward):
        assert torch.equal(f, b)
    # Item i depends only on (seed, i): a longer data set starts with the same items.
    longer = SyntheticLesions(20, image_size=32, seed=2)
    for i in (0, 5, 7):
        assert torch.equal(ds[i][0], longer[i][0])
        assert ds.params(i) == longer.params(i)
    for name in ds.features:
        assert torch.equal(ds.features[name], longer.features[name][:8])
    assert torch.equal(ds[-1][0], ds[7][0])


def test_dataloader_workers_give_same_images() -> None:
    ds = SyntheticLesions(8, image_size=32, seed=4)
    sequential = torch.stack([ds[i][0] for i in range(8)])
    loader = DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    images, labels = zip(*loader)
    assert torch.equal(torch.cat(images), sequential)
    assert torch.equal(torch.cat(labels), ds.labels)


def test_pickle_round_trip() -> None:
    """Spawned DataLoader workers (macOS, Windows) receive the data set pickled."""
    ds = SyntheticLesions(4, image_size=32, seed=11)
    clone = pickle.loads(pickle.dumps(ds))
    for i in range(4):
        assert torch.equal(clone[i][0], ds[i][0])
    assert torch.equal(clone.labels, ds.labels)


def test_labels_do_not_depend_on_size_or_hair() -> None:
    a = SyntheticLesions(50, image_size=32, seed=9, hair_probability=0.0)
    b = SyntheticLesions(50, image_size=128, seed=9, hair_probability=1.0)
    assert torch.equal(a.labels, b.labels)
    for name in a.features:
        assert torch.equal(a.features[name], b.features[name])
    assert all(len(a.params(i)["hairs"]) == 0 for i in range(50))
    assert all(1 <= len(b.params(i)["hairs"]) <= 8 for i in range(50))


def test_sizes_render_the_same_scene() -> None:
    small = SyntheticLesions(10, image_size=32, seed=6)
    large = SyntheticLesions(10, image_size=128, seed=6)
    for i in range(10):
        pooled = F.avg_pool2d(large[i][0][None], 4)[0]  # (3, 32, 32)
        assert (pooled - small[i][0]).abs().mean() < 0.1


def test_hair_darkens_pixels() -> None:
    bare = SyntheticLesions(10, image_size=64, seed=8, hair_probability=0.0)
    hairy = SyntheticLesions(10, image_size=64, seed=8, hair_probability=1.0)
    for i in range(10):
        diff = hairy[i][0] - bare[i][0]  # (3, 64, 64)
        assert diff.max() < 0.05  # hair darkens (it may only tint black dots)
        assert (diff < -0.1).any()  # and is visible somewhere


# ------------------------------------------------------------------------------------------
# Images look like dermoscopy
# ------------------------------------------------------------------------------------------
def test_lesion_darker_than_skin_and_corners_dark(batch32) -> None:
    images, _, _ = batch32
    luminance = images.mean(dim=1)  # (B, 32, 32)
    centre = luminance[:, 12:20, 12:20].mean()
    sides = torch.cat([luminance[:, 12:20, 2:6], luminance[:, 12:20, 26:30]], dim=2).mean()
    assert centre < sides - 0.2
    corners = luminance[:, [0, 0, -1, -1], [0, -1, 0, -1]]  # (B, 4) the four corner pixels
    assert corners.max() < -0.95
    # Skin is skin-coloured (red > green > blue) on average.
    side_rgb = images[:, :, 12:20, 2:6].mean(dim=(0, 2, 3))
    assert side_rgb[0] > side_rgb[1] > side_rgb[2]


def test_malignant_images_differ_from_benign(batch32) -> None:
    images, labels, _ = batch32
    luminance = images.mean(dim=1)  # (B, 32, 32)
    pigmented_area = (luminance < -0.2).float().mean(dim=(1, 2))  # (B,) dark non-vignette share
    vignette_area = (luminance < -0.95).float().mean(dim=(1, 2))
    lesion_area = pigmented_area - vignette_area
    assert (labels == 1).any() and (labels == 0).any()
    # Malignant lesions are larger (D) and darker (more colours, black, blue-grey).
    assert lesion_area[labels == 1].mean() > 1.2 * lesion_area[labels == 0].mean()


def test_params_are_plain_python_copies(big: SyntheticLesions) -> None:
    p = big.params(3)
    for key in ("atypia", "skin_rgb", "lesion_center", "lesion_radius", "harmonic_amplitudes",
                "harmonic_phases", "palette", "colour_names", "hairs", "label", "features"):
        assert key in p, key
    assert isinstance(p["lesion_radius"], float)
    assert len(p["harmonic_amplitudes"]) == len(p["harmonic_phases"]) == 10
    assert sum(abs(a) for a in p["harmonic_amplitudes"]) < 1.0
    assert len(p["palette"]) == int(big.features["colour"][3])
    assert p["colour_names"] == [COLOUR_NAMES[c] for c in p["palette"]]
    assert p["label"] == int(big.labels[3])
    assert math.isclose(p["features"]["score"], float(big.features["score"][3]))
    p["lesion_radius"] = -1.0
    p["harmonic_amplitudes"][0] = 5.0
    assert big.params(3)["lesion_radius"] > 0  # the data set's own copy is untouched
    assert big.params(3)["harmonic_amplitudes"][0] < 1.0


def test_repr(big: SyntheticLesions) -> None:
    text = repr(big)
    assert "n=1000" in text and "image_size=32" in text and "seed=0" in text
    assert f"malignant_fraction={big.malignant_fraction:.3f}" in text


# ------------------------------------------------------------------------------------------
# Transform contract
# ------------------------------------------------------------------------------------------
def test_transform_zeros_maps_to_minus_one() -> None:
    ds = SyntheticLesions(2, image_size=32, transform=torch.zeros_like)
    image, _ = ds[0]
    assert image.shape == (3, 32, 32)
    assert torch.equal(image, torch.full_like(image, -1.0))


def test_transform_receives_unit_range_and_output_is_clamped() -> None:
    seen = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        seen.append((x.dtype, float(x.min()), float(x.max()), tuple(x.shape)))
        return x * 3.0  # pushes values above 1

    plain = SyntheticLesions(2, image_size=32, seed=1)
    ds = SyntheticLesions(2, image_size=32, seed=1, transform=spy)
    image, _ = ds[1]
    dtype, lo, hi, shape = seen[0]
    assert dtype == torch.float32 and shape == (3, 32, 32)
    assert 0.0 <= lo and hi <= 1.0
    assert image.max() <= 1.0 and image.min() >= -1.0
    expected = ((plain[1][0] + 1.0) / 2.0 * 3.0).clamp(0.0, 1.0) * 2.0 - 1.0
    torch.testing.assert_close(image, expected)


def test_transform_may_change_shape() -> None:
    ds = SyntheticLesions(2, image_size=32, transform=lambda x: x[:, :16, :16])
    assert ds[0][0].shape == (3, 16, 16)


def test_torchvision_colour_jitter_works() -> None:
    v2 = pytest.importorskip("torchvision.transforms.v2")
    ds = SyntheticLesions(2, image_size=32, transform=v2.ColorJitter(brightness=0.5, hue=0.1))
    image, _ = ds[0]
    assert image.shape == (3, 32, 32) and image.min() >= -1 and image.max() <= 1


# ------------------------------------------------------------------------------------------
# Bad arguments
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"n": 0}, ValueError, "n must be"),
        ({"n": -5}, ValueError, "n must be"),
        ({"n": 2.5}, TypeError, "n must be an int"),
        ({"n": 4, "image_size": 15}, ValueError, "image_size"),
        ({"n": 4, "image_size": 8}, ValueError, "image_size"),
        ({"n": 4, "image_size": 32.0}, TypeError, "image_size"),
        ({"n": 4, "seed": -1}, ValueError, "seed"),
        ({"n": 4, "seed": "a"}, TypeError, "seed"),
        ({"n": 4, "hair_probability": 1.5}, ValueError, "hair_probability"),
        ({"n": 4, "hair_probability": -0.1}, ValueError, "hair_probability"),
        ({"n": 4, "hair_probability": "many"}, TypeError, "hair_probability"),
        ({"n": 4, "transform": 3}, TypeError, "transform"),
    ],
)
def test_bad_arguments(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        SyntheticLesions(**kwargs)


def test_bad_index() -> None:
    ds = SyntheticLesions(5, image_size=16)
    with pytest.raises(IndexError):
        ds[5]
    with pytest.raises(IndexError):
        ds[-6]
    with pytest.raises(IndexError):
        ds.params(100)
    with pytest.raises(TypeError, match="index"):
        ds["0"]
    assert torch.equal(ds[np.int64(2)][0], ds[2][0])


def test_transform_returning_non_tensor_raises() -> None:
    ds = SyntheticLesions(2, image_size=16, transform=lambda x: x.numpy())
    with pytest.raises(TypeError, match="transform"):
        ds[0]
