"""The data layer on small messy fixtures: ISIC layout, image folders, cleaning, cache, loaders."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import vqlesson.data.image_files as image_files
from vqlesson.augment import (AugmentConfig, augmentations_on, build_transforms,
                              single_augmentations)
from vqlesson.data import (
    DatasetNotFoundError, ISIC2016, ImageFolderDataset, make_loaders,
    read_isic_labels,
)
from vqlesson.data.image_files import CorruptImageError, load_rgb

from conftest import (
    TEST_DIR, TRAIN_DIR, lesion_array, make_isic_layout,
    save_exif_rotated_jpeg, save_truncated_jpeg,
)


# ----------------------------------------------------------------------------- cleaning
def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    save_exif_rotated_jpeg(path)
    img = np.asarray(load_rgb(path))
    assert img.shape == (40, 20, 3)  # 40x20 stored, displayed 20 wide and 40 high
    top, bottom = img[:15].mean(axis=(0, 1)), img[25:].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60  # the red (left) half is on top after a 90 deg CW turn
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "LA", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray(lesion_array(3))
    if mode == "I;16":
        img = Image.fromarray((np.asarray(base.convert("L"), np.uint16) * 257))
    else:
        img = base.convert(mode)
    path = tmp_path / f"img.{'jpg' if mode in ('L', 'CMYK', '1') else 'png'}"
    img.save(path)
    out = load_rgb(path, size=32)
    assert out.mode == "RGB" and out.size == (32, 32)
    arr = np.asarray(out)
    assert arr.max() > 100  # not black: values were rescaled, not clipped or lost


def test_rgba_transparency_is_composited_on_black(tmp_path):
    rgba = Image.new("RGBA", (16, 16), (255, 255, 255, 0))
    rgba.save(tmp_path / "clear.png")
    assert np.asarray(load_rgb(tmp_path / "clear.png")).max() == 0


def test_truncated_and_non_image_files_raise_naming_the_file(tmp_path):
    save_truncated_jpeg(tmp_path / "broken.jpg")
    with pytest.raises(CorruptImageError, match="broken.jpg"):
        load_rgb(tmp_path / "broken.jpg")
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(CorruptImageError, match="notes.png.*on_error='skip'"):
        load_rgb(tmp_path / "notes.png")


def test_oversized_image_is_centre_cropped_and_resized(tmp_path):
    arr = np.zeros((900, 1200, 3), np.uint8)
    arr[:, 150:1050] = 200  # a centred 900x900 bright square, dark bars left and right
    Image.fromarray(arr).save(tmp_path / "big.jpg", quality=95)
    out = np.asarray(load_rgb(tmp_path / "big.jpg", size=64)).astype(float)
    assert out.shape == (64, 64, 3)
    assert out.mean() > 180  # the bars were cropped away, so the square fills the image


# ----------------------------------------------------------------------------- ISIC 2016
def test_isic_csv_styles(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("image_id,melanoma\nISIC_1,benign\nISIC_2,malignant\nISIC_3,0.0\nISIC_4,1\n")
    assert read_isic_labels(f) == [("ISIC_1", 0), ("ISIC_2", 1), ("ISIC_3", 0), ("ISIC_4", 1)]
    f.write_text("ISIC_1,benign\nISIC_2,maybe\n")
    with pytest.raises(ValueError, match=r"labels.csv, line 2.*'maybe'"):
        read_isic_labels(f)


def test_isic_items_splits_and_labels(isic_root):
    train = ISIC2016(isic_root, "train", image_size=32)
    val = ISIC2016(isic_root, "val", image_size=32)
    test = ISIC2016(isic_root, "test", image_size=32)
    assert len(train) + len(val) == 12 and len(val) >= 1 and len(test) == 6
    assert not set(train.image_ids) & set(val.image_ids)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.min() < -0.2  # uses the [-1, 1] range
    assert y.dtype == torch.int64 and int(y) in (0, 1)
    # training CSV (words) and test CSV (floats) parse to the same 0/1 scheme
    expected_train = {f"ISIC_{i:07d}": int(i % 3 == 0) for i in range(12)}
    for image_id, label in zip(train.image_ids + val.image_ids,
                               torch.cat([train.labels, val.labels]).tolist()):
        assert expected_train[image_id] == label
    assert test.labels.tolist() == [0, 1, 0, 1, 0, 1]
    # the PNG (RGBA) training image was found and cleaned like the JPEGs
    assert "ISIC_0000004" in train.image_ids + val.image_ids


def test_isic_header_row_is_accepted(tmp_path):
    root = make_isic_layout(tmp_path / "isic", messy=False, header=True)
    ds = ISIC2016(root, "train", image_size=16, val_fraction=0.0)
    assert len(ds) == 12


def test_isic_validation_split_is_fixed_and_stratified(isic_root):
    a = ISIC2016(isic_root, "val", image_size=16, val_fraction=0.25)
    b = ISIC2016(isic_root, "val", image_size=16, val_fraction=0.25)
    assert a.image_ids == b.image_ids
    assert 0 < int(a.labels.sum()) < len(a)  # both classes in the validation split
    other = ISIC2016(isic_root, "val", image_size=16, val_fraction=0.25, split_seed=7)
    assert len(other) == len(a)


@pytest.mark.parametrize("what", ["missing", "empty", "no_csv"])
def test_isic_missing_data_says_what_to_do(tmp_path, what):
    root = tmp_path / "isic2016"
    if what != "missing":
        root.mkdir()
    if what == "no_csv":
        (root / TRAIN_DIR).mkdir()
        (root / TEST_DIR).mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        ISIC2016(root, "train", image_size=16)
    message = str(info.value)
    assert "data_download.sh" in message and "SyntheticLesions" in message and str(root) in message


def test_isic_truncated_file_raises_or_is_skipped_with_one_warning(isic_root):
    save_truncated_jpeg(isic_root / TRAIN_DIR / "ISIC_0000005.jpg")
    with pytest.raises(CorruptImageError, match="ISIC_0000005.jpg"):
        ISIC2016(isic_root, "train", image_size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = ISIC2016(isic_root, "train", image_size=16, on_error="skip", val_fraction=0.0)
    skipped = [w for w in caught if "skipped" in str(w.message)]
    assert len(skipped) == 1 and "1 unreadable" in str(skipped[0].message)
    assert "ISIC_0000005.jpg" in str(skipped[0].message)
    assert len(train) == 11 and "ISIC_0000005" not in train.image_ids


def test_isic_csv_row_without_image(isic_root):
    (isic_root / TRAIN_DIR / "ISIC_0000007.jpg").unlink()
    with pytest.raises(ValueError, match="ISIC_0000007"):
        ISIC2016(isic_root, "train", image_size=16)


# ----------------------------------------------------------------------------- cache
def test_cache_is_reused_identically_and_rebuilt_when_the_source_changes(isic_root, monkeypatch):
    first = ISIC2016(isic_root, "test", image_size=24)
    cache_files = list((isic_root / image_files.CACHE_DIRNAME).glob("*24px.pt"))
    assert len(cache_files) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(image_files, "load_rgb", no_decoding)
    second = ISIC2016(isic_root, "test", image_size=24)
    assert torch.equal(first.images, second.images)
    assert torch.equal(first.labels, second.labels)
    monkeypatch.undo()

    # another image size is another cache entry, not a reuse
    assert ISIC2016(isic_root, "test", image_size=16).images.shape[-1] == 16
    # a changed source file invalidates the cache
    path = isic_root / TEST_DIR / "ISIC_0001000.jpg"
    Image.fromarray(np.full((48, 64, 3), 255, np.uint8)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    third = ISIC2016(isic_root, "test", image_size=24)
    assert not torch.equal(first.images[0], third.images[0])
    assert third.images[0].float().mean() > 250


def test_read_only_root_falls_back_to_a_user_cache(isic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "usercache"))
    monkeypatch.setattr(image_files.os, "access", lambda path, mode: False)
    ds = ISIC2016(isic_root, "test", image_size=16)
    assert len(ds) == 6
    assert list((tmp_path / "usercache" / "vqlesson").rglob("*16px.pt"))


# ----------------------------------------------------------------------------- image folders
def test_image_folder_with_class_subfolders(tmp_path):
    for cls, n in (("benign", 3), ("malignant", 2)):
        (tmp_path / cls / "nested").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(lesion_array(i)).save(tmp_path / cls / "nested" / f"{i}.png")
    Image.fromarray(lesion_array(9)).save(tmp_path / "benign" / "x.BMP")
    ds = ImageFolderDataset(tmp_path, image_size=20)
    assert ds.classes == ("benign", "malignant")
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 0, 1, 1]
    x, y = ds[0]
    assert x.shape == (3, 20, 20) and -1 <= x.min() and x.max() <= 1


def test_image_folder_flat_is_unlabelled_and_errors(tmp_path):
    for i in range(3):
        Image.fromarray(lesion_array(i)).save(tmp_path / f"{i}.jpeg")
    ds = ImageFolderDataset(tmp_path, image_size=16)
    assert ds.classes == () and ds.labels.tolist() == [-1, -1, -1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        ImageFolderDataset(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        ImageFolderDataset(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="on_error"):
        ImageFolderDataset(tmp_path, on_error="ignore")
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(tmp_path, image_size=2)


# ----------------------------------------------------------------------------- augmentation
def test_augmentations_keep_shape_and_range():
    torch.manual_seed(0)
    x = torch.rand(3, 32, 32)
    strong = AugmentConfig(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.1, noise_sigma=0.2)
    for config in (AugmentConfig(), strong):
        out = build_transforms(config, 32)(x)
        assert out.shape == (3, 32, 32) and out.dtype == torch.float32
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not torch.equal(out, x)
    assert build_transforms(AugmentConfig.none(), 32) is None
    singles = single_augmentations(AugmentConfig(), 32)
    assert set(singles) == {"random resized crop", "horizontal flip", "vertical flip",
                            "rotation by 90°", "rotation by any angle", "colour jitter",
                            "gaussian noise"}
    on = augmentations_on(AugmentConfig())
    assert set(on) == set(singles)  # one name per augmentation, the figure's and the table's
    assert {name for name, used in on.items() if not used} == {"rotation by any angle",
                                                               "gaussian noise"}
    assert all(not used for used in augmentations_on(AugmentConfig.none()).values())
    assert augmentations_on(AugmentConfig(rotation_degrees=30.0))["rotation by any angle"]
    flipped = single_augmentations(AugmentConfig(), 32)["horizontal flip"]
    outs = {tuple(flipped(x)[0, 0, :2].tolist()) for _ in range(20)}
    assert outs == {tuple(x[0, 0, :2].tolist()), tuple(x[0, 0, -2:].flip(0).tolist())}
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=(0.9, 0.5))


def test_the_default_augmentations_invent_nothing_a_generative_model_would_learn():
    """Notebook 01's table for a generative model: rotations by multiples of 90 degrees (no black
    corners), no noise; any-angle rotation stays available but off."""
    from vqlesson.augment import RandomRot90

    config = AugmentConfig()
    assert config.rotate90 and config.rotation_degrees == 0 and config.noise_sigma == 0
    torch.manual_seed(0)
    white = torch.ones(3, 32, 32)
    transform = build_transforms(config, 32)
    darkest = min(float(transform(white).min()) for _ in range(50))
    assert darkest > 0.8  # mild jitter only: no black fill anywhere
    x = torch.rand(3, 8, 8)
    seen = {RandomRot90()(x).flatten()[0].item() for _ in range(60)}
    corners = {x[0, 0, 0].item(), x[0, 0, -1].item(), x[0, -1, 0].item(), x[0, -1, -1].item()}
    assert seen == corners  # every multiple of 90 degrees, nothing else
    rotated = build_transforms(AugmentConfig(rotation_degrees=45.0, random_resized_crop=False,
                                             brightness=0, contrast=0, saturation=0), 32)
    assert min(float(rotated(white).min()) for _ in range(20)) < 0.1  # the black fill it adds


# ----------------------------------------------------------------------------- loaders
def test_make_loaders_auto_falls_back_to_synthetic(tmp_path):
    loaders = make_loaders("auto", root=tmp_path / "absent", profile="ci", dataset_size=20,
                           batch_size=8)
    assert loaders.source == "synthetic" and "not found" in loaders.description
    x, y = next(iter(loaders.train))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,) and y.dtype == torch.int64
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert len(loaders.val.dataset) == 16 and len(loaders.test.dataset) == 16
    assert loaders.classes == ("benign", "malignant")


def test_make_loaders_auto_picks_isic_when_present(isic_root):
    loaders = make_loaders("auto", root=isic_root, profile="ci", augment=False, batch_size=4)
    assert loaders.source == "isic2016"
    assert len(loaders.test.dataset) == 6
    x, _ = next(iter(loaders.test))
    assert x.shape == (4, 3, 32, 32)
    capped = make_loaders("isic2016", root=isic_root, profile="ci", dataset_size=5)
    assert len(capped.train.dataset) == 5


def test_make_loaders_folder_and_bad_source(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            Image.fromarray(lesion_array(i)).save(tmp_path / cls / f"{i}.png")
    loaders = make_loaders(f"folder:{tmp_path}", profile="ci", batch_size=4)
    sizes = [len(l.dataset) for l in (loaders.train, loaders.val, loaders.test)]
    assert sum(sizes) == 20 and min(sizes) >= 2 and loaders.classes == ("a", "b")
    with pytest.raises(ValueError, match="unknown data source 'imagenet'"):
        make_loaders("imagenet")
    with pytest.raises(ValueError, match="folder:PATH"):
        make_loaders("folder:")


def test_training_shuffle_is_reproducible_for_a_seed():
    a = make_loaders("synthetic", profile="ci", dataset_size=24, batch_size=8, seed=3)
    b = make_loaders("synthetic", profile="ci", dataset_size=24, batch_size=8, seed=3)
    torch.manual_seed(0)
    xa, ya = next(iter(a.train))
    torch.manual_seed(0)
    xb, yb = next(iter(b.train))
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_decompression_bomb_is_named_and_can_be_skipped(tmp_path):
    """A 20000 x 20000 PNG (400 M pixels, a few kB on disk): PIL refuses it with its own
    DecompressionBombError, which must become the course's clear error or a skip."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")
    for i in range(3):
        Image.new("RGB", (20, 20), (40 * i, 80, 120)).save(folder / f"ok_{i}.png")
    with pytest.raises(CorruptImageError, match=r"bomb\.png.*decompression bomb.*on_error='skip'"):
        load_rgb(folder / "bomb.png", 16)
    with pytest.raises(CorruptImageError, match="bomb.png"):
        ImageFolderDataset(folder, image_size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = ImageFolderDataset(folder, image_size=16, on_error="skip")
    assert len(data) == 3 and any("bomb.png" in str(w.message) for w in caught)


def test_every_bad_file_of_a_folder_is_reported_at_once(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20), (40 * i, 80, 120)).save(folder / f"ok_{i}.png")
    save_truncated_jpeg(folder / "broken.jpg")
    (folder / "notes.png").write_text("not an image")
    with pytest.raises(CorruptImageError) as info:
        ImageFolderDataset(folder, image_size=16)
    message = str(info.value)
    assert "2 images" in message and "broken.jpg" in message and "notes.png" in message
    assert "on_error='skip'" in message and "--on-error skip" in message
