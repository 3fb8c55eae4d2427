"""Speed of the procedural dermoscopy data set (a script, not a test).

Prints, on one CPU thread, the milliseconds to render one image at 32/64/128/256 px and the
seconds to construct a data set of 1000 items (parameters + ABCD labels, no rendering). With
``--grid PATH`` it also saves a 4 x 8 grid of images with their labels and ABCD scores (a visual
check).

    python benchmarks/bench_synthetic.py [--items 200] [--repeats 3] [--grid grid.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from vqlesson.data.synthetic import SyntheticLesions

SIZES = (32, 64, 128, 256)


def time_rendering(size: int, items: int, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` wall and CPU milliseconds per image for ``items`` images at ``size``."""
    dataset = SyntheticLesions(items, image_size=size, seed=0)
    dataset[0]  # warm-up
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(items):
            dataset[i]
        best_wall = min(best_wall, (time.perf_counter() - wall) / items * 1e3)
        best_cpu = min(best_cpu, (time.process_time() - cpu) / items * 1e3)
    return best_wall, best_cpu


def time_construction(n: int, repeats: int) -> tuple[float, SyntheticLesions]:
    """Best-of-``repeats`` seconds to build a data set of ``n`` items (and the last one built)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dataset = SyntheticLesions(n, image_size=64, seed=0)
        best = min(best, time.perf_counter() - start)
    return best, dataset


def save_grid(path: Path, image_size: int = 128, seed: int = 0) -> None:
    """A 4 x 8 grid of items titled with class, TDS and A/B/C/D, saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset = SyntheticLesions(32, image_size=image_size, seed=seed)
    f = dataset.features
    fig, axes = plt.subplots(4, 8, figsize=(16, 8.6))
    for i, ax in enumerate(axes.flat):
        image, label = dataset[i]
        ax.imshow(((image + 1) / 2).permute(1, 2, 0).numpy())  # (3, S, S) -> (S, S, 3)
        ax.set_title(
            f"{dataset.classes[int(label)]} TDS {f['score'][i]:.1f}\n"
            f"A{f['asymmetry'][i]:.1f} B{f['border'][i]:.1f} C{int(f['colour'][i])} "
            f"D{f['diameter'][i]:.1f}",
            fontsize=7,
        )
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="images rendered per size")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--grid", type=Path, default=None, help="save a 4x8 PNG grid here")
    args = parser.parse_args()

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    print(f"{'size':>6} {'ms/image (wall)':>16} {'ms/image (CPU)':>15} {'images/s':>9}")
    for size in SIZES:
        wall, cpu = time_rendering(size, args.items, args.repeats)
        print(f"{size:>6} {wall:>16.2f} {cpu:>15.2f} {1e3 / wall:>9.0f}")
    seconds, dataset = time_construction(1000, args.repeats)
    print(f"construction, n=1000: {seconds:.3f} s  ->  {dataset!r}")
    if args.grid is not None:
        save_grid(args.grid)
        print(f"grid saved to {args.grid}")


if __name__ == "__main__":
    main()
