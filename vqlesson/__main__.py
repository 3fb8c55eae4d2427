"""The course's command line: ``python -m vqlesson COMMAND --help``.

Commands:
    train-vqvae   train a VQ-VAE (or --model vqvae2), evaluate it on the test split, write
                  metrics and figures.
    evaluate      re-compute the test metrics of a checkpoint.
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
    parser.add_argument("--dataset-size", type=int, default=None,
                        help="override the profile's number of synthetic training images (the "
                             "synthetic validation and test sets are a fifth of it), or cap real ones")
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
                           image_size=args.image_size, batch_size=args.batch_size,
                           dataset_size=args.dataset_size, seed=args.seed)
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


def _save_figures(model, loader, metrics: dict, history: dict | None, out: Path) -> list[Path]:
    """reconstructions.png, codebook_usage.png and (with a history) training_curves.png."""
    import matplotlib.pyplot as plt
    import torch

    from .plots import codebook_usage, reconstructions, training_curves
    from .train import find_quantizers

    device = next(model.parameters()).device
    written = []
    x, _ = next(iter(loader))
    model.eval()
    with torch.no_grad():
        x_hat = model(x.to(device)).x_hat.float().cpu()
    fig = reconstructions(x, x_hat, n=8, title=f"test set: PSNR {metrics['psnr']:.2f} dB, "
                                               f"SSIM {metrics['ssim']:.3f}")
    fig.savefig(out / "reconstructions.png", dpi=120)
    written.append(out / "reconstructions.png")
    quantizers = find_quantizers(model)
    fig, axes = plt.subplots(1, len(quantizers), figsize=(6 * len(quantizers), 3), squeeze=False)
    for ax, (name, q) in zip(axes.flat, quantizers):
        codebook_usage(q.usage_counts, title=f"{name or 'codes'} on the test set", ax=ax)
    fig.tight_layout()
    fig.savefig(out / "codebook_usage.png", dpi=120)
    written.append(out / "codebook_usage.png")
    if history:
        training_curves(history).savefig(out / "training_curves.png", dpi=120)
        written.append(out / "training_curves.png")
    plt.close("all")
    return written


def _print_metrics(metrics: dict) -> None:
    code_keys = [k for k in metrics if k.endswith(("perplexity", "active_fraction"))
                 and "batch_" not in k and not k.startswith(("top_", "bottom_"))]
    keys = ["loss", "mse", "psnr", "ssim", *code_keys, "bits_per_image", "compression_ratio"]
    for key in keys:
        if key in metrics:
            print(f"  {key:32s} {metrics[key]:.4g}")


def _cmd_train_vqvae(args: argparse.Namespace) -> int:
    import dataclasses

    import matplotlib

    matplotlib.use("Agg")

    from .checkpoint import load_checkpoint
    from .data import make_loaders
    from .runtime import get_device, get_profile, seed_everything
    from .train import TrainConfig, evaluate_vqvae, train_vqvae
    from .vqvae import VQVAE, VQVAEConfig
    from .vqvae2 import VQVAE2, VQVAE2Config

    profile = get_profile(args.profile).with_overrides(
        epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        dataset_size=args.dataset_size)
    seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    loaders = make_loaders(args.data, root=args.data_root, profile=profile,
                           augment=not args.no_augment, seed=args.seed,
                           num_workers=args.num_workers)
    print(f"data: {loaders.description}")
    common = dict(hidden_channels=args.hidden_channels, code_dim=args.code_dim, beta=args.beta,
                  ema=not args.no_ema, init=args.init)
    if args.model == "vqvae2":
        config = VQVAE2Config.from_profile(profile, codebook_size_top=args.codebook_size,
                                           codebook_size_bottom=args.codebook_size, **common)
    else:
        config = VQVAEConfig.from_profile(profile, downsample=args.downsample,
                                          codebook_size=args.codebook_size, **common)
    if args.resume and checkpoint_path.exists():
        # The stored config wins on resume, so a run continues with the settings it started with.
        config = load_checkpoint(checkpoint_path).config
    model = VQVAE2(config) if isinstance(config, VQVAE2Config) else VQVAE(config)
    device = get_device(args.device)
    if isinstance(model, VQVAE2):
        (top, bottom) = model.latent_shapes()
        grid = (f"top grid {top} x K={config.codebook_size_top}, bottom grid {bottom} x "
                f"K={config.codebook_size_bottom}")
    else:
        grid = f"latent grid {model.latent_shape()} x K={config.codebook_size}"
    print(f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
          f"parameters, {grid}, device {device}, profile {profile.name}, {profile.epochs} epochs")
    train_config = TrainConfig(
        epochs=profile.epochs, lr=args.lr, optimizer=args.optimizer, amp=not args.no_amp,
        seed=args.seed, checkpoint_path=str(checkpoint_path), resume=args.resume,
        device=str(device))
    history = train_vqvae(model, loaders.train, loaders.val, train_config)
    test_metrics = evaluate_vqvae(model, loaders.test, device, amp=train_config.amp)
    summary = {
        "model": type(model).__name__, "config": dataclasses.asdict(config), "profile": profile.name,
        "data": loaders.description, "device": str(device), "epochs": len(history.get("epoch", [])),
        "train_seconds": float(sum(history.get("epoch_time_s", []))),
        "test": test_metrics,
        "final_epoch": {k: v[-1] for k, v in history.items() if v and k != "step_loss"},
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    written = _save_figures(model, loaders.test, test_metrics, history, out)
    print("test set:")
    _print_metrics(test_metrics)
    print(f"wrote {checkpoint_path}, {out / 'metrics.json'}, " + ", ".join(str(p) for p in written))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")

    from .checkpoint import load_checkpoint
    from .data import make_loaders
    from .runtime import get_device, get_profile
    from .train import evaluate_vqvae

    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.model
    profile = get_profile(args.profile).with_overrides(image_size=checkpoint.config.image_size)
    loaders = make_loaders(args.data, root=args.data_root, profile=profile, augment=False,
                           seed=args.seed, batch_size=args.batch_size,
                           dataset_size=args.dataset_size)
    device = get_device(args.device)
    results = evaluate_vqvae(model, getattr(loaders, args.split), device)
    print(f"{type(model).__name__} from {args.checkpoint} on the {args.split} split of {loaders.description}:")
    _print_metrics(results)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"metrics_{args.split}.json").write_text(json.dumps(results, indent=2))
        _save_figures(model, getattr(loaders, args.split), results, None, out)
        print(f"wrote {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vqlesson",
        description="vqlesson: VQ-VAE, VQ-VAE-2 and PixelCNN priors on dermoscopy images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train-vqvae", help="train a VQ-VAE or VQ-VAE-2, evaluate it on the test split, write figures",
        description="Trains a VQ-VAE (van den Oord et al. 2017) or, with --model vqvae2, a "
                    "two-level VQ-VAE-2 (Razavi et al. 2019) on the chosen data with the "
                    "profile's sizes, evaluates it on the test split, and writes to --out: "
                    "checkpoint.pt (resumable), metrics.json, reconstructions.png (originals "
                    "above reconstructions), codebook_usage.png and training_curves.png.")
    _add_data_arguments(train)
    train.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    train.add_argument("--model", choices=("vqvae", "vqvae2"), default="vqvae",
                       help="vqvae (one code grid, S/f) or vqvae2 (top grid S/8 and bottom grid "
                            "S/4, --codebook-size codes each); default vqvae")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its last finished epoch")
    train.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    train.add_argument("--lr", type=float, default=1e-3,
                       help="learning rate (default 1e-3; the paper used 2e-4 over 250k steps)")
    train.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    train.add_argument("--codebook-size", type=int, default=None, help="K (default: the profile's)")
    train.add_argument("--code-dim", type=int, default=None, help="D (default: the profile's)")
    train.add_argument("--hidden-channels", type=int, default=None,
                       help="encoder/decoder width (default: the profile's)")
    train.add_argument("--downsample", type=int, choices=(4, 8), default=4,
                       help="vqvae only: downsampling factor f, the code grid is (S/f) x (S/f)")
    train.add_argument("--beta", type=float, default=0.25, help="commitment weight (default 0.25)")
    train.add_argument("--no-ema", action="store_true",
                       help="learn the codebook by its loss term instead of EMA updates")
    train.add_argument("--init", choices=("kmeans", "random"), default="kmeans",
                       help="codebook initialisation (default kmeans on the first batch)")
    train.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    train.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    train.add_argument("--num-workers", type=int, default=None, help="DataLoader workers")
    train.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    train.set_defaults(func=_cmd_train_vqvae)

    evaluate = sub.add_parser(
        "evaluate", help="re-compute the test metrics of a checkpoint",
        description="Loads a checkpoint (the model is rebuilt from its stored config) and "
                    "computes MSE, PSNR, SSIM, perplexity, active codes, bits per image and "
                    "compression ratio on a split of the data.")
    evaluate.add_argument("--checkpoint", required=True, help="path to checkpoint.pt")
    _add_data_arguments(evaluate)
    evaluate.add_argument("--split", choices=("train", "val", "test"), default="test")
    evaluate.add_argument("--out", default=None, help="also write metrics and figures here")
    evaluate.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    evaluate.set_defaults(func=_cmd_evaluate)
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
