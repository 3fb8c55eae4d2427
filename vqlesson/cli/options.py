"""The ``python -m vqlesson`` subcommands: their help texts and options.

A workflow command's options are generated from its settings dataclasses
(:mod:`vqlesson.cli.fields`): each option is a field of :class:`~vqlesson.runs.DataChoice`,
:class:`~vqlesson.runs.VQVAERunConfig`, :class:`~vqlesson.runs.PriorRunConfig`,
:class:`~vqlesson.finished_runs.SampleConfig` or :class:`~vqlesson.cli.pipeline.PipelineConfig`, and its
help text is that field's docstring line. Only what no dataclass holds is written here: the
folders a workflow takes as arguments (``--out``, ``--vqvae``, ``--run``), ``--threads``, and the
options of the commands without a settings dataclass. The handlers that turn parsed options into
a workflow call live in :mod:`vqlesson.cli.commands`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .fields import add_fields
from .pipeline import STAGE_NAMES, PipelineConfig
from ..finished_runs import SampleConfig
from ..runs import DataChoice, PriorRunConfig, VQVAERunConfig
from ..profiles import PROFILES


class Command(NamedTuple):
    """One subcommand: its one-line help, its description, the settings dataclasses whose fields
    are its options (without the fields named in ``leave_out``; ``choices`` restricts a field's
    values by name), and a function adding the options no dataclass holds."""

    help: str
    description: str
    settings: tuple[type, ...] = ()
    add_options: Callable[[argparse.ArgumentParser], None] | None = None
    leave_out: tuple[str, ...] = ()
    choices: Mapping[str, tuple] | None = None


def _run_folder(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")


def _threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice); 1 can be much "
                             "faster for small models on a busy machine")


def _evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="path to checkpoint.pt")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test",
                        help="the split to evaluate (default: test)")
    parser.add_argument("--out", default=None, help="also write metrics and figures here")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


def _data_preview(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/data-preview",
                        help="output folder (default: runs/data-preview)")


def _train_prior(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vqvae", required=True, metavar="RUN",
                        help="the train-vqvae run folder, e.g. runs/NAME")
    _threads(parser)


def _sample(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="the run folder, e.g. runs/NAME")
    _threads(parser)


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


COMMANDS: dict[str, Command] = {
    "train-vqvae": Command(
        "train a VQ-VAE or VQ-VAE-2, evaluate it on the test split, write figures",
        "Trains a VQ-VAE (van den Oord et al. 2017) or, with --model vqvae2, a two-level "
        "VQ-VAE-2 (Razavi et al. 2019) on the chosen data with the profile's sizes, evaluates "
        "it on the test split, and writes to --out: checkpoint.pt (resumable), metrics.json, "
        "reconstructions.png (originals above reconstructions), codebook_usage.png and "
        "training_curves.png.", (DataChoice, VQVAERunConfig), _run_folder),
    "evaluate": Command(
        "re-compute the test metrics of a checkpoint",
        "Loads a checkpoint (the model is rebuilt from its stored config) and computes MSE, "
        "PSNR, SSIM, perplexity, active codes, bits per image and compression ratio on a split "
        "of the data.", (DataChoice,), _evaluate, leave_out=("num_workers",)),
    "data-preview": Command(
        "show which data the course uses, with a grid of training images",
        "Builds the train/val/test loaders exactly as the course does, then writes "
        "training_batch.png (an augmented training batch with labels) and data.json (source, "
        "sizes, class counts) to --out.", (DataChoice,), _data_preview,
        leave_out=("num_workers",)),
    "train-prior": Command(
        "extract a VQ-VAE run's codes and train its prior(s)",
        "Loads RUN/checkpoint.pt (a VQ-VAE or VQ-VAE-2 from train-vqvae), encodes the "
        "train/val/test splits once into RUN/codes_{train,val,test}.pt (reused while the "
        "checkpoint and data are the same, rebuilt when stale), trains a prior on the codes "
        "(--prior-arch: a Gated PixelCNN with position and dilated blocks, or a causal "
        "transformer; VQ-VAE-2: a top prior and a bottom prior conditioned on the top codes) "
        "with a cosine learning-rate schedule and early stopping on the validation NLL, and writes RUN/prior.pt (VQ-VAE-2: "
        "prior_top.pt, prior_bottom.pt; the best-validation weights in *_best.pt), "
        "prior_metrics.json (bits per code and bits per dim on each split) and prior_curves.png. "
        "Pass the same --data/--dataset-size/--seed as to train-vqvae to use the same images; "
        "--profile defaults to the run's (from RUN/metrics.json).",
        (DataChoice, PriorRunConfig), _train_prior),
    "sample": Command(
        "sample images from a run's prior(s) and write a grid",
        "Loads RUN/checkpoint.pt and the prior(s) trained by train-prior (the best-validation "
        "weights), samples code maps (VQ-VAE-2: top codes, then bottom codes conditioned on "
        "them), decodes them and writes a PNG grid; prints the time taken.",
        (SampleConfig,), _sample),
    "pipeline": Command(
        "run the whole course headless and write report.md",
        "Runs train-vqvae, train-prior (code extraction and the prior), the choice of the "
        "sampling temperature on the validation split (unless --temperature is given), sample, "
        "the test-set failure analysis and the report in --out, one stage after the other. Running the same "
        "command again resumes from the last finished stage (and the training stages from "
        "their last epoch).", (DataChoice, PipelineConfig), _run_folder,
        leave_out=("num_workers",), choices={"stop_after": STAGE_NAMES}),
    "download": Command(
        "download ISIC 2016 (or CIFAR-10) into the data folder, verified",
        "Downloads ISIC 2016 Part 3 (Gutman et al. 2016, arXiv:1605.01397, CC-0) into the layout "
        "the course reads, verified by SHA-256 and image counts: the official ISIC bucket "
        "first, the archive mirror second; an interrupted download resumes; nothing is "
        "installed unless every check passes; a second call does nothing. --dataset cifar10 "
        "fetches CIFAR-10 through torchvision instead.", (), _download),
    "build-site": Command(
        "execute the notebooks and render the course as a static website",
        "Copies the notebooks into a temporary folder, executes them in order under --profile "
        "(widgets show their static figures) and writes --out/index.html (the landing page) and "
        "one HTML page per notebook with its outputs and figures, the profile and the date; "
        "the repository's notebooks stay without outputs.", (), _build_site),
    "gallery": Command(
        "copy a pipeline run's key figures, resized, into a gallery folder for the README",
        "Copies a finished pipeline run's reconstructions, codebook usage, samples and sample "
        "diversity figures into --out as small PNGs and writes --out/README.md naming the run, "
        "its profile and data.", (), _gallery),
}


def add_command(sub: Any, name: str, func: Callable[[argparse.Namespace], int]
                ) -> argparse.ArgumentParser:
    """Register subcommand ``name`` of :data:`COMMANDS` running ``func``: first the options no
    dataclass holds, then one group of options per settings dataclass."""
    command = COMMANDS[name]
    fields = {cls: {spec.name for spec in dataclasses.fields(cls)} for cls in command.settings}
    unknown = set(command.leave_out).difference(*fields.values())
    if unknown:
        raise ValueError(f"{name}: leave_out names {sorted(unknown)}, no field of its settings")
    parser = sub.add_parser(name, help=command.help, description=command.description)
    if command.add_options is not None:
        command.add_options(parser)
    for cls, names in fields.items():
        add_fields(parser, cls, names & set(command.leave_out), command.choices)
    parser.set_defaults(func=func)
    return parser
