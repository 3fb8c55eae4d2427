"""Fixtures that build small, messy image data sets on disk (nothing is downloaded), and small
code-map priors and code sets for the PixelCNN and analysis tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vqlesson.pixelcnn import PriorConfig
from vqlesson.pixelcnn_prior import PixelCNNPrior
from vqlesson.codes import CodeDataset

TRAIN_DIR, TRAIN_CSV = "ISBI2016_ISIC_Part3_Training_Data", "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
TEST_DIR, TEST_CSV = "ISBI2016_ISIC_Part3_Test_Data", "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"


def lesion_array(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A smooth (H, W, 3) uint8 test picture: a dark blob on a skin tone, different per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    cy, cx = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width
    r = np.hypot(yy - cy, xx - cx) / (0.3 * min(height, width))
    blob = np.clip(1.2 - r, 0, 1)[..., None]
    skin = np.array([220, 170, 140]) * rng.uniform(0.85, 1.0)
    lesion = np.array([90, 50, 30]) * rng.uniform(0.7, 1.3)
    return (skin * (1 - blob) + lesion * blob).clip(0, 255).astype(np.uint8)


def save_exif_rotated_jpeg(path: Path) -> None:
    """A 40x20 JPEG, left half red and right half blue, tagged EXIF orientation 6 (rotate 90 CW)."""
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(path, quality=95, exif=exif.tobytes())


def save_truncated_jpeg(path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(lesion_array(99, 64, 64)).save(buf, format="JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])


def make_isic_layout(root: Path, n_train: int = 12, n_test: int = 6, *, messy: bool = True,
                     header: bool = False) -> Path:
    """An ISIC 2016 Part 3 folder: training CSV with word labels, test CSV with 0.0/1.0 floats.

    With ``messy`` the training set also holds an over-sized JPEG, an EXIF-rotated JPEG, a
    greyscale JPEG, a CMYK JPEG and (as ``.png``) an RGBA image.
    """
    (root / TRAIN_DIR).mkdir(parents=True)
    (root / TEST_DIR).mkdir(parents=True)
    rows = []
    for i in range(n_train):
        image_id = f"ISIC_{i:07d}"
        label = "malignant" if i % 3 == 0 else "benign"
        path = root / TRAIN_DIR / f"{image_id}.jpg"
        img = Image.fromarray(lesion_array(i))
        if messy and i == 0:
            img = Image.fromarray(lesion_array(i, 900, 1200))  # over-sized
        if messy and i == 1:
            save_exif_rotated_jpeg(path)
        elif messy and i == 2:
            img.convert("L").save(path)
        elif messy and i == 3:
            img.convert("CMYK").save(path)
        elif messy and i == 4:
            path = path.with_suffix(".png")
            rgba = img.convert("RGBA")
            rgba.putalpha(128)
            rgba.save(path)
        else:
            img.save(path, quality=90)
        rows.append(f"{image_id},{label}")
    (root / TRAIN_CSV).write_text(("image_id,melanoma\n" if header else "") + "\n".join(rows) + "\n")
    rows = []
    for i in range(n_test):
        image_id = f"ISIC_{1000 + i:07d}"
        Image.fromarray(lesion_array(1000 + i)).save(root / TEST_DIR / f"{image_id}.jpg")
        rows.append(f"{image_id},{'1.0' if i % 2 else '0.0'}")
    (root / TEST_CSV).write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def isic_root(tmp_path: Path) -> Path:
    return make_isic_layout(tmp_path / "isic2016")


@pytest.fixture
def one_thread():
    """One torch thread for the test: the many tiny convolutions of small models run fastest
    single-threaded, and on a busy machine threads waiting for each other slow them many-fold
    (speed itself is never tested). Restores the previous setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def smooth_batch(size: int = 16) -> torch.Tensor:
    """4 smooth, distinct RGB images in [-1, 1], (4, 3, size, size): easy to overfit."""
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij"
    )
    batch = []
    for i in range(4):
        r = 0.8 * torch.sin(3 * xx + i)
        g = 0.8 * torch.cos(2 * yy - i)
        b = ((xx**2 + yy**2) < 0.3 + 0.1 * i).float() * 1.2 - 0.6
        batch.append(torch.stack([r, g, b]))
    return torch.stack(batch)


# ---- small code-map priors (tests of vqlesson.pixelcnn and vqlesson.pixelcnn_prior) -----------
def tiny_config(**kwargs) -> PriorConfig:
    """A prior config small enough for fast tests (K = 8); ``kwargs`` replace fields."""
    fields = dict(codebook_size=8, embed_dim=8, channels=16, num_layers=3, kernel_size=3,
                  first_kernel_size=3, cond_layers=1)
    fields.update(kwargs)
    return PriorConfig(**fields)


def conditioned_config(condition: str, **kwargs) -> PriorConfig:
    extra = {"none": {}, "label": {"num_classes": 2},
             "spatial": {"cond_codebook_size": 5}}[condition]
    return tiny_config(**extra, **kwargs)


def condition_inputs(condition: str, n: int, height: int, width: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if condition == "label":
        return {"label": torch.randint(2, (n,), generator=gen)}
    if condition == "spatial":  # a top map of half the height (VQ-VAE-2: half both sides)
        return {"cond_map": torch.randint(5, (n, height // 2, width), generator=gen)}
    return {}


def random_codes(n: int, height: int, width: int, k: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(k, (n, height, width), generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)



# ---- small code sets and priors (tests of vqlesson.analysis and vqlesson.memorisation) ---------
def tiny_prior(**overrides) -> PixelCNNPrior:
    """A seeded prior over K = 8 codes, small enough for fast tests."""
    torch.manual_seed(0)
    fields = dict(codebook_size=8, embed_dim=8, channels=8, num_layers=2, first_kernel_size=3)
    return PixelCNNPrior(PriorConfig(**{**fields, **overrides}))


def code_set(codes: torch.Tensor, labels: torch.Tensor | None = None) -> CodeDataset:
    """A one-level CodeDataset (K = 8, benign/malignant) of ``codes`` (N, H, W)."""
    labels = labels if labels is not None else torch.zeros(len(codes), dtype=torch.long)
    return CodeDataset({"codes": codes}, labels, {"codes": 8}, (3, 16, 16), ("benign", "malignant"))
