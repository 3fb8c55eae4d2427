"""The course's command line: ``python -m vqlesson COMMAND --help``.

Commands:
    train-vqvae   train a VQ-VAE (or --model vqvae2), evaluate it on the test split, write
                  metrics and figures.
    evaluate      re-compute the test metrics of a checkpoint.
    data-preview  which data the course will use, a labelled grid of training images with their
                  augmentations, and the class balance, written to --out.
    train-prior   extract the codes of a trained VQ-VAE / VQ-VAE-2 run and train its PixelCNN
                  prior(s) on them; bits per code and per dim, learning curves.
    sample        sample code maps from a run's prior(s), decode them, write an image grid.
    pipeline      the whole course headless (VQ-VAE, prior, samples, failure analysis) with a
                  report.md; resumes from the last finished stage.
    student-version, grade, sync-notebooks, colab-links
                  the course layer for instructors (vqlesson.course, vqlesson.grading).

Under ``torchrun --nproc_per_node=N -m vqlesson ...``, train-vqvae, train-prior and pipeline
train data-parallel (vqlesson.distributed).
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


def _add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


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
    from .distributed import (
        barrier,
        is_main_process,
        main_process_first,
        process_device,
        world_size,
    )
    from .runtime import get_device, get_profile, seed_everything
    from .train import TrainConfig, evaluate_vqvae, train_vqvae
    from .vqvae import VQVAE, VQVAEConfig
    from .vqvae2 import VQVAE2, VQVAE2Config

    # Under torchrun every process runs this function; rank 0 alone prints and writes files.
    say = print if is_main_process() else (lambda *_args, **_kwargs: None)
    profile = get_profile(args.profile).with_overrides(
        epochs=args.epochs, batch_size=args.batch_size, image_size=args.image_size,
        dataset_size=args.dataset_size)
    seed_everything(args.seed)
    out = Path(args.out)
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    with main_process_first():  # rank 0 fills the image cache, the others then read it
        loaders = make_loaders(args.data, root=args.data_root, profile=profile,
                               augment=not args.no_augment, seed=args.seed,
                               num_workers=args.num_workers)
    say(f"data: {loaders.description}")
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
    device = process_device(get_device(args.device))
    if isinstance(model, VQVAE2):
        (top, bottom) = model.latent_shapes()
        grid = (f"top grid {top} x K={config.codebook_size_top}, bottom grid {bottom} x "
                f"K={config.codebook_size_bottom}")
    else:
        grid = f"latent grid {model.latent_shape()} x K={config.codebook_size}"
    say(f"model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
        f"parameters, {grid}, device {device}, profile {profile.name}, {profile.epochs} epochs")
    if world_size() > 1:
        say(f"distributed: {world_size()} processes x batch {profile.batch_size} = "
            f"{world_size() * profile.batch_size} images per step (DistributedDataParallel)")
    train_config = TrainConfig(
        epochs=profile.epochs, lr=args.lr, optimizer=args.optimizer, amp=not args.no_amp,
        seed=args.seed, checkpoint_path=str(checkpoint_path), resume=args.resume,
        device=str(device))
    history = train_vqvae(model, loaders.train, loaders.val, train_config)
    test_metrics = evaluate_vqvae(model, loaders.test, device, amp=train_config.amp,
                                  distributed=True)
    if is_main_process():
        summary = {
            "model": type(model).__name__, "config": dataclasses.asdict(config),
            "profile": profile.name, "data": loaders.description, "device": str(device),
            "epochs": len(history.get("epoch", [])),
            "train_seconds": float(sum(history.get("epoch_time_s", []))),
            "test": test_metrics,
            "final_epoch": {k: v[-1] for k, v in history.items() if v and k != "step_loss"},
        }
        if world_size() > 1:
            summary["processes"] = world_size()
        (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        written = _save_figures(model, loaders.test, test_metrics, history, out)
        print("test set:")
        _print_metrics(test_metrics)
        print(f"wrote {checkpoint_path}, {out / 'metrics.json'}, "
              + ", ".join(str(p) for p in written))
    barrier()  # every file is written before any process goes on (e.g. to train-prior)
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


# --------------------------------------------------------------------------------------------
# Priors: train-prior and sample
# --------------------------------------------------------------------------------------------
def _vqvae_checkpoint(run: Path) -> Path:
    """``run/checkpoint.pt``, or a FileNotFoundError that says how to make it."""
    path = run / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no VQ-VAE run at {str(run)!r} (no {path.name} there); train one first: "
            f"python -m vqlesson train-vqvae --out {run}"
        )
    return path


def _prior_files(run: Path, two_levels: bool) -> list[tuple[str | None, Path]]:
    """(level, checkpoint path) of each prior of a run: prior.pt, or prior_top.pt and
    prior_bottom.pt for a VQ-VAE-2."""
    if two_levels:
        return [("top", run / "prior_top.pt"), ("bottom", run / "prior_bottom.pt")]
    return [(None, run / "prior.pt")]


def _run_profile_name(run: Path) -> str | None:
    """The profile train-vqvae recorded in run/metrics.json, if any."""
    try:
        return json.loads((run / "metrics.json").read_text()).get("profile")
    except (OSError, ValueError, AttributeError):
        return None


def _set_threads(threads: int | None) -> None:
    """--threads: CPU threads for torch (None: torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _prior_curves(histories: dict[str, dict], path: Path) -> None:
    """prior_curves.png: train and validation bits per code per epoch, one panel per level."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(histories), figsize=(4.2 * len(histories), 3.2),
                             squeeze=False)
    for ax, (level, history) in zip(axes.flat, histories.items()):
        epochs = history.get("epoch", [])
        for key, label in (("train_bits_per_code", "train"), ("val_bits_per_code", "validation")):
            if history.get(key):
                ax.plot(epochs, history[key], marker="o", ms=3, label=label)
        if history.get("best_epoch"):
            ax.axvline(history["best_epoch"][-1], color="grey", ls=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("NLL (bits per code)")
        ax.set_title(f"{level} prior" if level != "codes" else "prior", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cmd_train_prior(args: argparse.Namespace) -> int:
    import dataclasses
    import math

    import matplotlib

    matplotlib.use("Agg")

    from .checkpoint import load_checkpoint
    from .data import make_loaders
    from .distributed import (
        barrier,
        is_main_process,
        main_process_first,
        process_device,
        world_size,
    )
    from .pixelcnn_prior import PixelCNNPrior
    from .prior import (
        PriorTrainConfig,
        best_checkpoint_path,
        evaluate_prior,
        extract_codes,
        prior_config_for,
        train_prior,
    )
    from .runtime import get_device, get_profile, seed_everything
    from .vqvae import VQVAE
    from .vqvae2 import VQVAE2

    # Under torchrun every process runs this function; rank 0 alone prints and writes files.
    say = print if is_main_process() else (lambda *_args, **_kwargs: None)
    run = Path(args.vqvae)
    _set_threads(args.threads)
    device = process_device(get_device(args.device))
    vq = load_checkpoint(_vqvae_checkpoint(run), map_location=device)
    model = vq.model
    if not isinstance(model, (VQVAE, VQVAE2)):
        raise ValueError(
            f"{run / 'checkpoint.pt'} holds a {type(model).__name__}, which has no discrete "
            "codes for a prior; train a VQ-VAE: python -m vqlesson train-vqvae --out RUN"
        )
    if args.image_size is not None and args.image_size != vq.config.image_size:
        raise ValueError(
            f"--image-size {args.image_size} differs from the VQ-VAE's image size "
            f"{vq.config.image_size}; leave --image-size out (the run's size is used)"
        )
    if args.augment_passes < 1:
        raise ValueError(f"--augment-passes must be >= 1, got {args.augment_passes}")
    profile = get_profile(args.profile or _run_profile_name(run)).with_overrides(
        prior_epochs=args.epochs, batch_size=args.batch_size, dataset_size=args.dataset_size,
        image_size=vq.config.image_size)
    seed_everything(args.seed)
    passes = args.augment_passes
    with main_process_first():  # rank 0 fills the image cache, the others then read it
        loaders = make_loaders(args.data, root=args.data_root, profile=profile,
                               augment=passes > 1, seed=args.seed, num_workers=args.num_workers)
    say(f"data: {loaders.description}")
    if args.label_conditional and len(loaders.classes) < 2:
        raise ValueError(
            f"--label-conditional needs labelled data with at least 2 classes; this data has "
            f"classes {loaders.classes}"
        )
    codes = {}
    with main_process_first():  # rank 0 extracts and writes the codes, the others reuse them
        for split in ("train", "val", "test"):
            split_passes = passes if split == "train" else 1
            key = (f"{loaders.description}|seed={args.seed}|split={split}|"
                   f"augmented={split_passes > 1}")
            codes[split] = extract_codes(model, getattr(loaders, split),
                                         run / f"codes_{split}.pt", device, split_passes,
                                         classes=loaders.classes, data_key=key)
    say(f"codes: {codes['train']!r} (train), {len(codes['val'])} val, {len(codes['test'])} "
          f"test, in {run}/codes_*.pt")

    two_levels = isinstance(model, VQVAE2)
    summary: dict = {
        "vqvae": type(model).__name__, "run": str(run), "profile": profile.name,
        "data": loaders.description, "device": str(device), "augment_passes": passes,
        "priors": {},
    }
    histories: dict[str, dict] = {}
    for level, path in _prior_files(run, two_levels):
        name = level or "codes"
        k = codes["train"].codebook_sizes[name]
        cond = codes["train"].codebook_sizes["top"] if level == "bottom" else None
        config = prior_config_for(
            profile, k, num_classes=len(loaders.classes) if args.label_conditional else 0,
            dropout=args.dropout, cond_codebook_size=cond)
        if args.resume and path.exists():
            # The stored config wins on resume: a run continues with the settings it started with.
            config = load_checkpoint(path).config
        prior = PixelCNNPrior(config)
        params = sum(p.numel() for p in prior.parameters()) / 1e6
        say(f"{name} prior: grid {codes['train'].grid(name)}, K={k}, {params:.2f} M parameters, "
              f"{profile.prior_epochs} epochs"
              + (", class-conditional" if config.num_classes else "")
              + (", conditioned on the top codes" if config.cond_codebook_size else ""))
        train_config = PriorTrainConfig(
            epochs=profile.prior_epochs, batch_size=profile.batch_size, lr=args.lr,
            amp=not args.no_amp, seed=args.seed, checkpoint_path=str(path), resume=args.resume,
            device=str(device), early_stopping_patience=args.patience or None, level=level)
        history = train_prior(prior, codes["train"], codes["val"], train_config)
        histories[name] = history
        results = {split: evaluate_prior(prior, codes[split], level=level,
                                         batch_size=profile.batch_size, distributed=True)
                   for split in ("train", "val", "test")}
        summary["priors"][name] = {
            "file": path.name, "best_file": best_checkpoint_path(path).name,
            "config": dataclasses.asdict(config),
            "epochs": len(history.get("epoch", [])),
            "best_epoch": history["best_epoch"][-1] if history.get("best_epoch") else None,
            "train_seconds": float(sum(history.get("epoch_time_s", []))),
            "codes_per_s": history["codes_per_s"][-1] if history.get("codes_per_s") else None,
            **results,
        }
    for split in ("train", "val", "test"):
        levels = [summary["priors"][name][split] for name in summary["priors"]]
        bits = sum(r["bits_per_image"] for r in levels)
        positions = sum(math.prod(codes[split].grid(n)) for n in summary["priors"])
        summary[split] = {"bits_per_code": bits / positions,
                          "bits_per_dim": sum(r["bits_per_dim"] for r in levels),
                          "bits_per_image": bits}
    if world_size() > 1:
        summary["processes"] = world_size()
    if is_main_process():
        (run / "prior_metrics.json").write_text(json.dumps(summary, indent=2, default=float))
        _prior_curves(histories, run / "prior_curves.png")
    for name, entry in summary["priors"].items():
        say(f"{name} prior: {entry['epochs']} epochs (best {entry['best_epoch']}), "
            f"{entry['train_seconds']:.1f} s; bits per code train "
            f"{entry['train']['bits_per_code']:.3f}, val {entry['val']['bits_per_code']:.3f}, "
            f"test {entry['test']['bits_per_code']:.3f}")
    say(f"test: {summary['test']['bits_per_code']:.3f} bits per code, "
        f"{summary['test']['bits_per_dim']:.4f} bits per dim")
    files = ", ".join(path.name for _, path in _prior_files(run, two_levels))
    say(f"wrote {files}, prior_metrics.json, prior_curves.png and codes_*.pt in {run}")
    say(f"next: python -m vqlesson sample --run {run}")
    barrier()  # every file is written before any process goes on
    return 0


def _sampling_label(label: str | None, priors: list, classes: list[str], n: int, run: Path):
    """The label argument for sample_images: a class index, alternating classes, or None."""
    import torch

    num_classes = max(p.config.num_classes for p in priors)
    if label is None:
        # A class-conditional prior needs a label: show the classes in turn.
        return torch.arange(n) % num_classes if num_classes else None
    if not num_classes:
        raise ValueError(
            f"the prior(s) in {run} were trained without labels; leave out --label, or train "
            f"class-conditional priors: python -m vqlesson train-prior --vqvae {run} "
            "--label-conditional"
        )
    if label in classes:
        return classes.index(label)
    if label.isdigit() and int(label) < num_classes:
        return int(label)
    choices = ", ".join(classes) if classes else f"0..{num_classes - 1}"
    raise ValueError(f"unknown label {label!r}; choose one of {choices}")


def _cmd_sample(args: argparse.Namespace) -> int:
    import math
    import time

    import torch
    from torchvision.utils import save_image

    from .checkpoint import load_checkpoint
    from .prior import best_checkpoint_path, model_fingerprint, sample_images
    from .runtime import get_device
    from .vqvae2 import VQVAE2

    run = Path(args.run)
    if args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    _set_threads(args.threads)
    device = get_device(args.device)
    vqvae = load_checkpoint(_vqvae_checkpoint(run), map_location=device).model
    two_levels = isinstance(vqvae, VQVAE2)
    priors, classes = [], []
    for _, path in _prior_files(run, two_levels):
        best = best_checkpoint_path(path)
        chosen = best if best.is_file() else path
        if not chosen.is_file():
            raise FileNotFoundError(
                f"no prior trained yet in {run} ({path.name} is missing); train it first: "
                f"python -m vqlesson train-prior --vqvae {run}"
            )
        checkpoint = load_checkpoint(chosen, map_location=device, expected_class="PixelCNNPrior")
        made_by = (checkpoint.extra.get("codes_fingerprint") or "").partition("|")[0]
        if made_by and made_by != f"model:{model_fingerprint(vqvae)}":
            raise ValueError(
                f"{chosen} was trained on the codes of other VQ-VAE weights than "
                f"{run / 'checkpoint.pt'} (was the VQ-VAE trained again?); train the prior again: "
                f"python -m vqlesson train-prior --vqvae {run}"
            )
        priors.append(checkpoint.model)
        classes = list(checkpoint.extra.get("classes") or classes)
    label = _sampling_label(args.label, priors, classes, args.n, run)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    images = sample_images(vqvae, tuple(priors) if two_levels else priors[0], args.n,
                           label=label, temperature=args.temperature, top_k=args.top_k,
                           generator=generator, progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = Path(args.out) if args.out else run / "samples.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, out, nrow=math.ceil(math.sqrt(args.n)), padding=2)
    what = (f"label {args.label}" if args.label is not None
            else "classes in turn" if label is not None else "unconditional")
    print(f"sampled {args.n} images of {images.shape[-1]} px ({what}, temperature "
          f"{args.temperature}, top-k {args.top_k}) in {seconds:.2f} s "
          f"({1000 * seconds / args.n:.0f} ms per image) on {device}")
    print(f"wrote {out}")
    return 0


def _add_prior_commands(sub) -> None:
    """The train-prior and sample subcommands."""
    prior = sub.add_parser(
        "train-prior", help="extract a VQ-VAE run's codes and train its PixelCNN prior(s)",
        description="Loads RUN/checkpoint.pt (a VQ-VAE or VQ-VAE-2 from train-vqvae), encodes "
                    "the train/val/test splits once into RUN/codes_{train,val,test}.pt (reused "
                    "while the checkpoint and data are the same, rebuilt when stale), trains a "
                    "Gated PixelCNN prior on the codes (VQ-VAE-2: a top prior and a bottom "
                    "prior conditioned on the top codes) with early stopping on the validation "
                    "NLL, and writes RUN/prior.pt (VQ-VAE-2: prior_top.pt, prior_bottom.pt; "
                    "the best-validation weights in *_best.pt), prior_metrics.json (bits per "
                    "code and bits per dim on each split) and prior_curves.png. Pass the same "
                    "--data/--dataset-size/--seed as to train-vqvae to use the same images; "
                    "--profile defaults to the run's (from RUN/metrics.json).")
    prior.add_argument("--vqvae", required=True, metavar="RUN",
                       help="the train-vqvae run folder, e.g. runs/NAME")
    _add_data_arguments(prior)
    prior.add_argument("--epochs", type=int, default=None,
                       help="prior epochs (default: the profile's prior_epochs)")
    prior.add_argument("--label-conditional", action="store_true",
                       help="condition the prior(s) on the class label (benign/malignant)")
    prior.add_argument("--dropout", type=float, default=None,
                       help="dropout in the prior's blocks (default 0), against overfitting")
    prior.add_argument("--augment-passes", type=int, default=1,
                       help="passes over the augmented training images when extracting codes "
                            "(default 1: the images without augmentation)")
    prior.add_argument("--patience", type=int, default=5,
                       help="early stopping after this many epochs without a validation "
                            "improvement (0: never stop early; default 5)")
    prior.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    prior.add_argument("--resume", action="store_true",
                       help="continue the prior(s) from their last finished epoch")
    prior.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    prior.add_argument("--num-workers", type=int, default=None, help="DataLoader workers")
    _add_device_argument(prior)
    prior.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (default: torch's choice); 1 can be much "
                            "faster for small models on a busy machine")
    prior.set_defaults(func=_cmd_train_prior)

    sample = sub.add_parser(
        "sample", help="sample images from a run's prior(s) and write a grid",
        description="Loads RUN/checkpoint.pt and the prior(s) trained by train-prior (the "
                    "best-validation weights), samples code maps (VQ-VAE-2: top codes, then "
                    "bottom codes conditioned on them), decodes them and writes a PNG grid; "
                    "prints the time taken.")
    sample.add_argument("--run", required=True, help="the run folder, e.g. runs/NAME")
    sample.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    sample.add_argument("--temperature", type=float, default=1.0,
                        help="divides the logits: 1 samples the model, < 1 sharper, 0 greedy")
    sample.add_argument("--top-k", type=int, default=None,
                        help="sample only among the k most likely codes at each position")
    sample.add_argument("--label", default=None,
                        help="class name (e.g. malignant) or index, for class-conditional "
                             "priors (default: the classes in turn)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--out", default=None, help="PNG file (default RUN/samples.png)")
    _add_device_argument(sample)
    sample.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 can be much "
                             "faster for small models on a busy machine")
    sample.set_defaults(func=_cmd_sample)


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
    _add_device_argument(train)
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
    _add_device_argument(evaluate)
    evaluate.set_defaults(func=_cmd_evaluate)
    preview = sub.add_parser(
        "data-preview", help="show which data the course uses, with a grid of training images",
        description="Builds the train/val/test loaders exactly as the course does, then writes "
                    "training_batch.png (an augmented training batch with labels) and data.json "
                    "(source, sizes, class counts) to --out.")
    _add_data_arguments(preview)
    preview.add_argument("--out", default="runs/data-preview", help="output folder (default runs/data-preview)")
    preview.set_defaults(func=_cmd_data_preview)
    _add_prior_commands(sub)
    from .pipeline import add_pipeline_command

    add_pipeline_command(sub)
    from .course import add_course_commands  # student-version, grade, sync-notebooks, colab-links
    add_course_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    launched = False  # this call started the process group (torchrun), so it ends it too
    where = ""
    try:
        if all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
            # Started by torchrun: one process per GPU (NCCL) or CPU worker (gloo), see README.
            from . import distributed

            if not distributed.is_distributed():
                distributed.init_distributed(getattr(args, "device", None))
                launched = True
            if distributed.world_size() > 1:
                where = f" (rank {distributed.rank()})"
            if args.command not in ("train-vqvae", "train-prior", "pipeline"):
                # Commands without a data-parallel mode run once, on rank 0.
                code = args.func(args) if distributed.is_main_process() else 0
                distributed.barrier()
                return code
        return args.func(args)
    except (FileNotFoundError, ValueError) as err:
        print(f"error{where}: {err}", file=sys.stderr)
        return 2
    finally:
        if launched:
            distributed.destroy_distributed()


if __name__ == "__main__":
    sys.exit(main())
