"""The course's command line: ``python -m vqlesson COMMAND --help`` (or ``vqlesson COMMAND``).

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
    download      ISIC 2016 (or --dataset cifar10) into the data folder, verified.
    build-site    execute the notebooks and render the course as a static website (vqlesson.course.site).
    gallery       a pipeline run's key figures, resized, for the README (vqlesson.course.gallery).
    student-version, grade, sync-notebooks, colab-links
                  the course layer for instructors (vqlesson.course, vqlesson.grading).

This module only parses arguments: each command builds its settings dataclasses from the parsed
options (:func:`vqlesson.cli.fields.from_args`; the options themselves are generated from those
dataclasses in :mod:`vqlesson.cli.options`), calls one workflow of :mod:`vqlesson.runs` (or
:func:`vqlesson.cli.pipeline.run_pipeline`) and prints what it returns. Under ``torchrun
--nproc_per_node=N -m vqlesson ...``, train-vqvae, train-prior and pipeline train data-parallel
(vqlesson.distributed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .fields import from_args
from .pipeline import PipelineConfig, run_pipeline
from ..finished_runs import SampleConfig, sample_run
from ..runs import (
    DataChoice,
    PriorRunConfig,
    VQVAERunConfig,
    evaluate_run,
    preview_data,
    train_prior_run,
    train_vqvae_run,
)
from ..runtime import given, set_threads

#: Commands that train data-parallel under torchrun; the others run once, on rank 0.
DATA_PARALLEL = ("train-vqvae", "train-prior", "pipeline")


# --------------------------------------------------------------------------------------------
# Printing
# --------------------------------------------------------------------------------------------
def print_metrics(metrics: dict) -> None:
    code_keys = [k for k in metrics if k.endswith(("perplexity", "active_fraction"))
                 and "batch_" not in k and not k.startswith(("top_", "bottom_"))]
    for key in ["loss", "mse", "psnr", "ssim", *code_keys, "bits_per_image", "compression_ratio"]:
        if key in metrics:
            print(f"  {key:32s} {metrics[key]:.4g}")


def _wrote(files) -> str:
    return "wrote " + ", ".join(str(p) for p in files)


# --------------------------------------------------------------------------------------------
# Commands: each calls one workflow
# --------------------------------------------------------------------------------------------
def cmd_train_vqvae(args: argparse.Namespace) -> int:
    result = train_vqvae_run(args.out, from_args(DataChoice, args),
                             from_args(VQVAERunConfig, args), report=print)
    if result.files:  # rank 0
        print("test set:")
        print_metrics(result.test_metrics)
        print(_wrote(result.files))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = evaluate_run(args.checkpoint, from_args(DataChoice, args), args.split, args.out,
                          args.device)
    print(f"{type(result.model).__name__} from {args.checkpoint} on the {args.split} split of "
          f"{result.data}:")
    print_metrics(result.metrics)
    if result.files:
        print(_wrote(result.files))
    return 0


def cmd_data_preview(args: argparse.Namespace) -> int:
    result = preview_data(args.out, from_args(DataChoice, args))
    print(result.description)
    for split, counts in result.class_counts.items():
        print(f"  {split:5s}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(_wrote(result.files))
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    result = train_prior_run(args.vqvae, from_args(DataChoice, args),
                             from_args(PriorRunConfig, args), report=print)
    if result.files:  # rank 0
        for name, entry in result.summary["priors"].items():
            print(f"{name} prior: {entry['epochs']} epochs (best {entry['best_epoch']}), "
                  f"{entry['train_seconds']:.1f} s; bits per code train "
                  f"{entry['train']['bits_per_code']:.3f}, val {entry['val']['bits_per_code']:.3f}, "
                  f"test {entry['test']['bits_per_code']:.3f}")
        test = result.summary["test"]
        print(f"test: {test['bits_per_code']:.3f} bits per code, {test['bits_per_dim']:.4f} bits "
              "per dim")
        priors = ", ".join(entry["file"] for entry in result.summary["priors"].values())
        print(f"wrote {priors}, prior_metrics.json, prior_curves.png and codes_*.pt in {args.vqvae}")
        print(f"next: python -m vqlesson sample --run {args.vqvae}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    config = from_args(SampleConfig, args)
    samples = sample_run(args.run, config)
    print(f"sampled {config.n} images of {samples.images.shape[-1]} px ({samples.labels}, "
          f"temperature {config.temperature}, top-k {config.top_k}) in {samples.seconds:.2f} s "
          f"({1000 * samples.seconds / config.n:.0f} ms per image) on {samples.device}")
    print(f"wrote {samples.path}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    run_pipeline(args.out, from_args(DataChoice, args), from_args(PipelineConfig, args),
                 report=lambda line: print(line, flush=True))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..data.download import run_download

    logging.getLogger("vqlesson").setLevel(logging.INFO)  # the download's progress lines
    print(f"data in place: {run_download(args, progress=True)}")
    return 0


def cmd_build_site(args: argparse.Namespace) -> int:
    from ..course.site import build_site

    site = build_site(args.notebooks, args.out, args.profile, args.timeout,
                      report=lambda line: print(line, flush=True))
    print(f"open {site.index} (or serve it: python -m http.server -d {site.out_dir})")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from ..course.gallery import GalleryConfig, make_gallery

    made = make_gallery(args.run, args.out, GalleryConfig(**given(dict(max_width=args.width))))
    print(f"wrote {len(made.images)} images, {made.total_bytes / 1024:.0f} kB in all, and "
          f"{made.readme}")
    return 0


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .options import add_command  # the subcommands' options, generated from the dataclasses
    from .course_commands import add_course_commands  # student-version, grade, sync-notebooks, colab-links

    parser = argparse.ArgumentParser(
        prog="python -m vqlesson",
        description="vqlesson: VQ-VAE, VQ-VAE-2 and PixelCNN priors on dermoscopy images.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {"train-vqvae": cmd_train_vqvae, "evaluate": cmd_evaluate,
                "data-preview": cmd_data_preview, "train-prior": cmd_train_prior,
                "sample": cmd_sample, "pipeline": cmd_pipeline, "download": cmd_download,
                "build-site": cmd_build_site, "gallery": cmd_gallery}
    for name, func in commands.items():
        add_command(sub, name, func)
    add_course_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    launched = False  # this call started the process group (torchrun), so it ends it too
    where = ""
    try:
        if all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
            # Started by torchrun: one process per GPU (NCCL) or CPU worker (gloo), see README.
            from .. import distributed

            if not distributed.is_distributed():
                distributed.init_distributed(getattr(args, "device", None))
                launched = True
            if distributed.world_size() > 1:
                where = f" (rank {distributed.rank()})"
            if args.command not in DATA_PARALLEL:
                code = args.func(args) if distributed.is_main_process() else 0
                distributed.barrier()
                return code
        return args.func(args)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        print(f"error{where}: {err}", file=sys.stderr)
        return 2
    finally:
        if launched:
            distributed.destroy_distributed()


if __name__ == "__main__":
    sys.exit(main())
