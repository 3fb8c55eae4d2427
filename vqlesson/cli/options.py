"""The options and help texts of the ``python -m vqlesson`` subcommands.

Every option's default is ``None`` (or a switch that is off), so the default that applies is the
one of the settings dataclass (:mod:`vqlesson.runs`, :mod:`vqlesson.cli.pipeline`) or of the
profile; the help texts quote those defaults from the dataclasses, so they never disagree. The
handlers that turn parsed options into a workflow call live in :mod:`vqlesson.cli`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from .pipeline import PipelineConfig
from ..runs import DataChoice, PriorRunConfig, SampleConfig, VQVAERunConfig
from ..profiles import PROFILES


def add_data_arguments(parser: argparse.ArgumentParser, workers: bool = False) -> None:
    """The options of :class:`~vqlesson.runs.DataChoice` (unset: ``None``, the profile's)."""
    parser.add_argument(
        "--data", default=DataChoice.source,
        help="auto (ISIC 2016 if data/isic2016 holds it, else synthetic), isic2016, synthetic, "
             "cifar10 (CIFAR-10 through torchvision, the VQ-VAE paper's benchmark; get it with "
             "python -m vqlesson download --dataset cifar10; --image-size 32 is the paper's "
             "setting), or folder:PATH (any folder of images). Default: auto.")
    parser.add_argument("--data-root", default=None,
                        help="ISIC 2016 or CIFAR-10 folder (default: $VQLESSON_DATA_DIR/isic2016 or "
                             "data/isic2016; for cifar10, .../cifar10)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None,
                        help="sizes: ci (seconds), cpu (minutes), gpu (the real run). "
                             "Default: $VQLESSON_PROFILE, else gpu with CUDA, else cpu.")
    parser.add_argument("--image-size", type=int, default=None, help="override the profile's image size (px)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the profile's batch size")
    parser.add_argument("--dataset-size", type=int, default=None,
                        help="override the profile's number of synthetic training images (the "
                             "synthetic validation and test sets are a fifth of it), or cap real ones")
    parser.add_argument("--seed", type=int, default=None, help=f"random seed (default {DataChoice.seed})")
    parser.add_argument("--on-error", choices=("raise", "skip"), default=None,
                        help="an unreadable image file: stop with an error naming every bad file "
                             "(raise, the default) or leave the bad files out (skip)")
    if workers:
        parser.add_argument("--num-workers", type=int, default=None, help="DataLoader workers")


def add_device_argument(parser: argparse.ArgumentParser, threads: bool = False) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    if threads:
        parser.add_argument("--threads", type=int, default=None,
                            help="CPU threads for torch (default: torch's choice); 1 can be much "
                                 "faster for small models on a busy machine")




def _train_vqvae(parser: argparse.ArgumentParser) -> None:
    d = VQVAERunConfig
    add_data_arguments(parser, workers=True)
    parser.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    parser.add_argument("--model", choices=("vqvae", "vqvae2"), default=None,
                        help="vqvae (one code grid, S/f) or vqvae2 (top grid S/8 and bottom grid "
                             f"S/4, --codebook-size codes each); default {d.model}")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last finished epoch")
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate (default {d.lr:g}; the paper used 2e-4 over 250k steps)")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default=None,
                        help=f"default {d.optimizer}")
    parser.add_argument("--codebook-size", type=int, default=None, help="K (default: the profile's)")
    parser.add_argument("--code-dim", type=int, default=None, help="D (default: the profile's)")
    parser.add_argument("--hidden-channels", type=int, default=None,
                        help="encoder/decoder width (default: the profile's)")
    parser.add_argument("--downsample", type=int, choices=(4, 8), default=None,
                        help="vqvae only: downsampling factor f, the code grid is (S/f) x (S/f) "
                             f"(default {d.downsample})")
    parser.add_argument("--beta", type=float, default=None,
                        help=f"commitment weight (default {d.beta})")
    parser.add_argument("--no-ema", action="store_true",
                        help="learn the codebook by its loss term instead of EMA updates")
    parser.add_argument("--init", choices=("kmeans", "random"), default=None,
                        help=f"codebook initialisation (default {d.init} on the first batch)")
    parser.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    add_device_argument(parser)


def _evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="path to checkpoint.pt")
    add_data_arguments(parser)
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--out", default=None, help="also write metrics and figures here")
    add_device_argument(parser)


def _data_preview(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--out", default="runs/data-preview",
                        help="output folder (default runs/data-preview)")


def _train_prior(parser: argparse.ArgumentParser) -> None:
    d = PriorRunConfig
    parser.add_argument("--vqvae", required=True, metavar="RUN",
                        help="the train-vqvae run folder, e.g. runs/NAME")
    add_data_arguments(parser, workers=True)
    parser.add_argument("--epochs", type=int, default=None,
                        help="prior epochs (default: the profile's prior_epochs)")
    parser.add_argument("--label-conditional", action="store_true",
                        help="condition the prior(s) on the class label (benign/malignant)")
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout in the prior's blocks (default 0), against overfitting")
    parser.add_argument("--augment-passes", type=int, default=None,
                        help="passes over the augmented training images when extracting codes "
                             f"(default {d.augment_passes}: the images without augmentation)")
    parser.add_argument("--patience", type=int, default=None,
                        help="early stopping after this many epochs without a validation "
                             f"improvement (0: never stop early; default {d.patience})")
    parser.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {d.lr:g})")
    parser.add_argument("--resume", action="store_true",
                        help="continue the prior(s) from their last finished epoch")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    add_device_argument(parser, threads=True)


def _sample(parser: argparse.ArgumentParser) -> None:
    d = SampleConfig
    parser.add_argument("--run", required=True, help="the run folder, e.g. runs/NAME")
    parser.add_argument("--n", type=int, default=None, help=f"number of images (default {d.n})")
    parser.add_argument("--temperature", type=float, default=None,
                        help="divides the logits: 1 samples the model, < 1 sharper, 0 greedy "
                             f"(default {d.temperature:g})")
    parser.add_argument("--top-k", type=int, default=None,
                        help="sample only among the k most likely codes at each position")
    parser.add_argument("--label", default=None,
                        help="class name (e.g. malignant) or index, for class-conditional "
                             "priors (default: the classes in turn)")
    parser.add_argument("--seed", type=int, default=None, help=f"random seed (default {d.seed})")
    parser.add_argument("--out", default=None, help="PNG file (default RUN/samples.png)")
    add_device_argument(parser, threads=True)


def _pipeline(parser: argparse.ArgumentParser, stage_names: Sequence[str]) -> None:
    d = PipelineConfig
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    parser.add_argument("--model", choices=("vqvae", "vqvae2"), default=None,
                        help=f"vqvae or vqvae2 (a top and a bottom prior); default {d.model}")
    parser.add_argument("--label-conditional", action="store_true",
                        help="class-conditional priors (benign/malignant)")
    parser.add_argument("--temperature", type=float, default=None,
                        help=f"sampling temperature of samples.png and the report (default {d.temperature:g})")
    parser.add_argument("--num-samples", type=int, default=None,
                        help=f"samples drawn per temperature for the analysis (default {d.num_samples})")
    parser.add_argument("--stop-after", choices=stage_names, default=None,
                        help="stop after this stage (run again without it to go on)")
    add_device_argument(parser, threads=True)


def _download(parser: argparse.ArgumentParser) -> None:
    from ..data.download import add_download_arguments

    add_download_arguments(parser)


def _build_site(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=sorted(PROFILES), default="cpu",
                        help="sizes the notebooks run under (default cpu; ci for a quick check)")
    parser.add_argument("--out", default="site", help="site folder (default site)")
    parser.add_argument("--notebooks", default="notebooks",
                        help="folder of the course notebooks (default notebooks)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds one cell may run (default 1800)")


def _gallery(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="a finished pipeline run folder, e.g. runs/course")
    parser.add_argument("--out", default="docs/gallery", help="folder (default docs/gallery)")
    parser.add_argument("--width", type=int, default=None,
                        help="largest width of a gallery image in px (default: the gallery's)")


#: name -> (one-line help, description, function adding the options)
COMMANDS: dict[str, tuple[str, str, Callable[..., None]]] = {
    "train-vqvae": (
        "train a VQ-VAE or VQ-VAE-2, evaluate it on the test split, write figures",
        "Trains a VQ-VAE (van den Oord et al. 2017) or, with --model vqvae2, a two-level "
        "VQ-VAE-2 (Razavi et al. 2019) on the chosen data with the profile's sizes, evaluates "
        "it on the test split, and writes to --out: checkpoint.pt (resumable), metrics.json, "
        "reconstructions.png (originals above reconstructions), codebook_usage.png and "
        "training_curves.png.", _train_vqvae),
    "evaluate": (
        "re-compute the test metrics of a checkpoint",
        "Loads a checkpoint (the model is rebuilt from its stored config) and computes MSE, "
        "PSNR, SSIM, perplexity, active codes, bits per image and compression ratio on a split "
        "of the data.", _evaluate),
    "data-preview": (
        "show which data the course uses, with a grid of training images",
        "Builds the train/val/test loaders exactly as the course does, then writes "
        "training_batch.png (an augmented training batch with labels) and data.json (source, "
        "sizes, class counts) to --out.", _data_preview),
    "train-prior": (
        "extract a VQ-VAE run's codes and train its PixelCNN prior(s)",
        "Loads RUN/checkpoint.pt (a VQ-VAE or VQ-VAE-2 from train-vqvae), encodes the "
        "train/val/test splits once into RUN/codes_{train,val,test}.pt (reused while the "
        "checkpoint and data are the same, rebuilt when stale), trains a Gated PixelCNN prior "
        "on the codes (VQ-VAE-2: a top prior and a bottom prior conditioned on the top codes) "
        "with early stopping on the validation NLL, and writes RUN/prior.pt (VQ-VAE-2: "
        "prior_top.pt, prior_bottom.pt; the best-validation weights in *_best.pt), "
        "prior_metrics.json (bits per code and bits per dim on each split) and prior_curves.png. "
        "Pass the same --data/--dataset-size/--seed as to train-vqvae to use the same images; "
        "--profile defaults to the run's (from RUN/metrics.json).", _train_prior),
    "sample": (
        "sample images from a run's prior(s) and write a grid",
        "Loads RUN/checkpoint.pt and the prior(s) trained by train-prior (the best-validation "
        "weights), samples code maps (VQ-VAE-2: top codes, then bottom codes conditioned on "
        "them), decodes them and writes a PNG grid; prints the time taken.", _sample),
    "pipeline": (
        "run the whole course headless and write report.md",
        "Runs train-vqvae, train-prior (code extraction and the prior), sample, the test-set "
        "failure analysis and the report in --out, one stage after the other. Running the same "
        "command again resumes from the last finished stage (and the training stages from "
        "their last epoch).", _pipeline),
    "download": (
        "download ISIC 2016 (or CIFAR-10) into the data folder, verified",
        "Downloads ISIC 2016 Part 3 (Gutman et al. 2016, arXiv:1605.01397, CC-0) into the layout "
        "the course reads, verified by SHA-256 and image counts: the official ISIC bucket "
        "first, the archive mirror second; an interrupted download resumes; nothing is "
        "installed unless every check passes; a second call does nothing. --dataset cifar10 "
        "fetches CIFAR-10 through torchvision instead.", _download),
    "build-site": (
        "execute the notebooks and render the course as a static website",
        "Copies the notebooks into a temporary folder, executes them in order under --profile "
        "(widgets show their static figures) and writes --out/index.html (the landing page) and "
        "one HTML page per notebook with its outputs and figures, the profile and the date; "
        "the repository's notebooks stay without outputs.", _build_site),
    "gallery": (
        "copy a pipeline run's key figures, resized, into a gallery folder for the README",
        "Copies a finished pipeline run's reconstructions, codebook usage, samples and sample "
        "diversity figures into --out as small PNGs and writes --out/README.md naming the run, "
        "its profile and data.", _gallery),
}


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int],
                stage_names: Sequence[str]) -> argparse.ArgumentParser:
    """Register subcommand ``name`` (its options from :data:`COMMANDS`) running ``func``."""
    short, description, add_options = COMMANDS[name]
    parser = sub.add_parser(name, help=short, description=description)
    if name == "pipeline":
        add_options(parser, stage_names)
    else:
        add_options(parser)
    parser.set_defaults(func=func)
    return parser
