"""CIFAR-10 as a course data source (vqlesson.data.cifar, make_loaders("cifar10")), offline.

The test writes a tiny CIFAR-10 in torchvision's on-disk format (``cifar-10-batches-py/`` with
``data_batch_1..5``, ``test_batch`` and ``batches.meta`` pickles). torchvision checks those files
against the real data set's MD5 sums, so the tests put the fixture's sums in their place.
Every image is one flat colour that encodes its index, so items can be traced to their source.
"""

from __future__ import annotations

import hashlib
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10
from torchvision.transforms import v2

from vqlesson.augment import AugmentConfig
from vqlesson.data.cifar import cifar10_splits
from vqlesson.data import make_loaders
from vqlesson.data.download import DownloadError, download_cifar10

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH, N_TEST = 6, 8  # 30 training images (3 for validation), 8 test images


def _batch(first: int, n: int) -> dict:
    """CIFAR's pickle layout: data (n, 3072) uint8 (R, G, B planes of 32 x 32), labels list.
    Image k is flat red k, green 255 - k, blue 7; its label is k % 10."""
    k = np.arange(first, first + n)
    planes = [np.repeat(k[:, None], 1024, 1), np.repeat(255 - k[:, None], 1024, 1),
              np.full((n, 1024), 7)]
    return {"data": np.concatenate(planes, axis=1).astype(np.uint8),
            "labels": [int(i) % 10 for i in k], "batch_label": "fixture"}


@pytest.fixture
def cifar_root(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cifar10" / CIFAR10.base_folder
    folder.mkdir(parents=True)
    contents = {f"data_batch_{b}": _batch((b - 1) * PER_BATCH, PER_BATCH) for b in range(1, 6)}
    contents["test_batch"] = _batch(200, N_TEST)
    contents["batches.meta"] = {"label_names": NAMES, "num_cases_per_batch": PER_BATCH, "num_vis": 3072}
    md5 = {}
    for name, content in contents.items():
        (folder / name).write_bytes(pickle.dumps(content))
        md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    train_list = [[f"data_batch_{b}", md5[f"data_batch_{b}"]] for b in range(1, 6)]
    monkeypatch.setattr(CIFAR10, "train_list", train_list)
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    return tmp_path / "cifar10"


def source_index(image: torch.Tensor) -> int:
    """The fixture index k of an item (3, S, S) in [-1, 1]: its red value (k / 255 * 2 - 1)."""
    return int(round(float((image[0].mean() + 1) / 2 * 255)))


def test_loaders_give_cifar_classes_splits_and_the_course_range(cifar_root):
    loaders = make_loaders("cifar10", root=cifar_root, profile="ci", image_size=32, batch_size=4,
                           augment=False)
    assert loaders.source == "cifar10" and loaders.classes == tuple(NAMES)
    train, val, test = loaders.train.dataset, loaders.val.dataset, loaders.test.dataset
    assert (len(train), len(val), len(test)) == (27, 3, N_TEST)
    train_ids = {source_index(train[i][0]) for i in range(len(train))}
    val_ids = {source_index(val[i][0]) for i in range(len(val))}
    assert train_ids | val_ids == set(range(30)) and not train_ids & val_ids  # split of the training set
    assert {source_index(test[i][0]) for i in range(len(test))} == set(range(200, 200 + N_TEST))
    image, label = test[0]
    k = source_index(image)
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label.dtype == torch.int64
    assert int(label) == k % 10
    expected = torch.tensor([k, 255 - k, 7]) / 255 * 2 - 1  # exactly the course's mapping to [-1, 1]
    assert torch.allclose(image.mean(dim=(1, 2)), expected, atol=1e-6)
    images, labels = next(iter(loaders.train))
    assert images.shape == (4, 3, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert labels.min() >= 0 and labels.max() < 10


def test_validation_split_follows_the_seed(cifar_root):
    def val_ids(seed):
        val = cifar10_splits(cifar_root, 32, None, seed, augment=False).val
        return sorted(source_index(val[i][0]) for i in range(len(val)))

    assert val_ids(0) == val_ids(0)
    assert len({tuple(val_ids(seed)) for seed in range(6)}) > 1


def test_images_are_resized_to_the_profile_size(cifar_root):
    splits = cifar10_splits(cifar_root, image_size=48, dataset_size=None, seed=0, augment=False)
    image, _ = splits.test[0]
    assert image.shape == (3, 48, 48)
    k = source_index(image)  # a flat image stays flat and keeps its colour after the resize
    expected = (torch.tensor([k, 255 - k, 7]) / 255 * 2 - 1).view(3, 1, 1)
    assert torch.allclose(image, expected.expand(3, 48, 48), atol=1e-5)


def test_dataset_size_caps_training_validation_and_test(cifar_root):
    splits = cifar10_splits(cifar_root, 32, dataset_size=5, seed=0, augment=False)
    assert len(splits.train) == 5 and len(splits.val) == 3 and len(splits.test) == N_TEST  # max(16, 1)
    assert len(cifar10_splits(cifar_root, 32, dataset_size=20, seed=0, augment=False).train) == 20


def test_augmentation_is_only_horizontal_flips_by_default(cifar_root):
    default = cifar10_splits(cifar_root, 32, None, 0, augment=True)
    steps = default.train.transform.transforms
    assert [type(step) for step in steps] == [v2.RandomHorizontalFlip]
    assert default.val.transform is None and default.test.transform is None
    own = cifar10_splits(cifar_root, 32, None, 0, augment=AugmentConfig()).train.transform
    assert v2.RandomVerticalFlip in [type(step) for step in own.transforms]  # an explicit config is used
    assert cifar10_splits(cifar_root, 32, None, 0, augment=False).train.transform is None


def test_missing_or_corrupted_data_says_how_to_download(tmp_path, cifar_root):
    with pytest.raises(FileNotFoundError) as missing:
        make_loaders("cifar10", root=tmp_path / "nowhere", profile="ci")
    message = str(missing.value)
    assert "python -m vqlesson download --dataset cifar10" in message
    assert str(tmp_path / "nowhere") in message
    with open(cifar_root / CIFAR10.base_folder / "data_batch_3", "ab") as fh:
        fh.write(b"garbage")  # its MD5 no longer matches
    with pytest.raises(FileNotFoundError, match="corrupted.*download_cifar10"):
        make_loaders("cifar10", root=cifar_root, profile="ci")


def test_download_cifar10_is_a_noop_when_present_and_clear_offline(tmp_path, cifar_root, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    url = f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"
    monkeypatch.setattr(CIFAR10, "url", url)
    assert download_cifar10(cifar_root) == cifar_root  # in place: no request (the URL is dead)
    with pytest.raises(DownloadError) as info:
        download_cifar10(tmp_path / "empty")
    assert url in str(info.value) and "internet connection" in str(info.value)
