"""The course's command line: ``python -m vqlesson COMMAND --help``.

Commands:
    data-preview  which data the course will use, a labelled grid of training images with their
                  augmentations, and the class balance, written to --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .runtime import PROFILES


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", default="auto",
        help="auto (ISIC 2016 if data/isic2016 holds it, else synthetic), isic2016, synthetic, "
             "or folder:PATH (any folder of images). Default: auto.")
    parser.add_argument("--data-root", default=None,
                        help="ISIC 2016 folder (default: $VQLESSON_DATA_DIR/isic2016 or data/isic2016)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="sizes: ci (seconds), cpu (minutes), gpu (the real run). "
                             "Default: $VQLESSON_PROFILE, else gpu with CUDA, else cpu.")
    parser.add_argument("--image-size", type=int, default=None, help="override the profile's image size (px)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the profile's batch size")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _cmd_data_preview(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import torch

    from .data import make_loaders
    from .plots import image_grid
    from .runtime import get_profile, seed_everything

    seed_everything(args.seed)
    profile = get_profile(args.profile)
    loaders = make_loaders(args.data, root=args.data_root, profile=profile,
                           image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, labels = next(iter(loaders.train))
    names = [loaders.classes[int(y)] if 0 <= int(y) < len(loaders.classes) else "?" for y in labels]
    fig = image_grid(images[:32], names[:32], suptitle=f"training batch, augmented ({loaders.source})")
    fig.savefig(out / "training_batch.png", dpi=120)
    balance = {}
    for split in ("train", "val", "test"):
        dataset_labels = getattr(getattr(loaders, split).dataset, "labels")
        counts = torch.bincount(dataset_labels[dataset_labels >= 0], minlength=len(loaders.classes))
        balance[split] = {c: int(n) for c, n in zip(loaders.classes, counts.tolist())}
    summary = {"source": loaders.source, "description": loaders.description,
               "profile": profile.name, "class_counts": balance}
    (out / "data.json").write_text(json.dumps(summary, indent=2))
    print(loaders.description)
    for split, counts in balance.items():
        print(f"  {split:5s}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(f"wrote {out / 'training_batch.png'} and {out / 'data.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vqlesson",
        description="vqlesson: VQ-VAE, VQ-VAE-2 and PixelCNN priors on dermoscopy images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    preview = sub.add_parser(
        "data-preview", help="show which data the course uses, with a grid of training images",
        description="Builds the train/val/test loaders exactly as the course does, then writes "
                    "training_batch.png (an augmented training batch with labels) and data.json "
                    "(source, sizes, class counts) to --out.")
    _add_data_arguments(preview)
    preview.add_argument("--out", default="runs/data-preview", help="output folder (default runs/data-preview)")
    preview.set_defaults(func=_cmd_data_preview)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
