"""Data-layer speed: what the resize cache buys on ISIC-sized JPEGs.

ISIC 2016 cannot be downloaded everywhere, so this builds an ISIC-layout folder of N large
JPEGs (1024 x 768, like many ISIC images) and times:
  - decoding every image from its JPEG (what every epoch would cost without a cache),
  - the first ISIC2016(...) construction (decodes and writes the cache),
  - the second construction (reads the cache),
  - one epoch of reading items from the cached dataset.

Usage: python benchmarks/bench_data.py [--n 200] [--image-size 64]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vqlesson.data import ISIC2016
from vqlesson.data.image_files import load_rgb

TRAIN_DIR, TRAIN_CSV = "ISBI2016_ISIC_Part3_Training_Data", "ISBI2016_ISIC_Part3_Training_GroundTruth.csv"
TEST_DIR, TEST_CSV = "ISBI2016_ISIC_Part3_Test_Data", "ISBI2016_ISIC_Part3_Test_GroundTruth.csv"


def make_folder(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for folder, csv_name, count in ((TRAIN_DIR, TRAIN_CSV, n), (TEST_DIR, TEST_CSV, 2)):
        (root / folder).mkdir(parents=True)
        rows = []
        for i in range(count):
            base = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            img = Image.fromarray(base).resize((1024, 768), Image.Resampling.BICUBIC)
            img.save(root / folder / f"ISIC_{i:07d}.jpg", quality=90)
            rows.append(f"ISIC_{i:07d},{'malignant' if i % 5 == 0 else 'benign'}")
        (root / csv_name).write_text("\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "isic2016"
        make_folder(root, args.n)
        files = sorted((root / TRAIN_DIR).glob("*.jpg"))

        t0 = time.perf_counter()
        for f in files:
            with Image.open(f) as im:
                im.convert("RGB").resize((args.image_size, args.image_size), Image.Resampling.BICUBIC)
        naive = time.perf_counter() - t0

        t0 = time.perf_counter()
        for f in files:
            load_rgb(f, args.image_size)
        one_thread = time.perf_counter() - t0

        t0 = time.perf_counter()
        ISIC2016(root, "train", args.image_size, val_fraction=0.0)
        first = time.perf_counter() - t0

        t0 = time.perf_counter()
        ds = ISIC2016(root, "train", args.image_size, val_fraction=0.0)
        second = time.perf_counter() - t0

        t0 = time.perf_counter()
        for i in range(len(ds)):
            ds[i]
        epoch = time.perf_counter() - t0

    n = args.n
    print(f"{n} JPEGs of 1024x768 -> {args.image_size} px, {sys.platform}")
    print(f"full decode + resize, one thread (no cache, every epoch): {naive:6.2f} s  ({naive / n * 1e3:5.1f} ms/img)")
    print(f"load_rgb with JPEG draft decoding, one thread:           {one_thread:6.2f} s  ({one_thread / n * 1e3:5.1f} ms/img)")
    print(f"first ISIC2016(): build the cache (threads):             {first:6.2f} s")
    print(f"second ISIC2016(): read the cache:                       {second:6.3f} s")
    print(f"one epoch of items from the cached dataset:              {epoch:6.3f} s  ({epoch / n * 1e6:5.0f} us/img)")
    print(f"speed-up of a cached epoch (load + items) over decoding every epoch: {naive / (second + epoch):5.0f}x")


if __name__ == "__main__":
    main()
