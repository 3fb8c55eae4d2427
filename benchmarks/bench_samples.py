"""Realism of a finished pipeline run's samples (a script, not a test: it prints, never asserts).

Loads the run's VQ-VAE and the best weights of its prior(s), draws ``--n`` samples at the run's
temperature, reconstructs ``--n`` held-out real images (the test split, then the validation split
when the test split is smaller) and prints :func:`vqlesson.realism.realism_table`: the classifier
two-sample tests (samples against reconstructions: the prior's errors; reconstructions against
real images: the decoder's yardstick), the near-black fractions outside and inside the inscribed
circle, the fraction with a lesion found, the ABCD Wasserstein-1 table; then the near-copies of
training images and the sample diversity (codes) against the real images' (vqlesson.memorisation),
and the wall time of each step. ``--fid`` adds FID where ``vqlesson[fid]`` and the Inception
weights are available.

    python benchmarks/bench_samples.py --run runs/NAME [--n 256] [--temperature T] [--seed 0]
        [--threads N] [--device cpu] [--fid]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any, NamedTuple

import torch

from vqlesson.checkpoint import load_checkpoint
from vqlesson.cli.pipeline import run_temperature
from vqlesson.codes import flat_codes
from vqlesson.data import make_loaders
from vqlesson.memorisation import MemorisationConfig, diversity, memorisation
from vqlesson.pixelcnn_prior import SampleOptions
from vqlesson.realism import (
    RealismConfig,
    frechet_inception_distance,
    realism_report,
    realism_table,
    reconstruct,
)
from vqlesson.runfolder import RunFolder
from vqlesson.runtime import get_device
from vqlesson.sampling import decode_codes, sample_codes
from vqlesson.two_sample import two_sample_test


class Models(NamedTuple):
    """The run's VQ-VAE and its priors, one per level: ``(prior,)`` or ``(top, bottom)``."""

    vqvae: torch.nn.Module
    priors: tuple[Any, ...]
    num_classes: int


def load_models(run: RunFolder, device: torch.device) -> Models:
    """The run's models through the library (the one place to adapt when those names change)."""
    vqvae = load_checkpoint(run.require_vqvae(), map_location=device).model.eval()
    priors = []
    for level in vqvae.levels:
        best = run.prior_best(level.name)
        path = best if best.is_file() else run.prior(level.name)
        priors.append(load_checkpoint(path, map_location=device).model.eval())
    num_classes = max(int(getattr(p.config, "num_classes", 0) or 0) for p in priors)
    return Models(vqvae, tuple(priors), num_classes)


def draw_samples(models: Models, n: int, temperature: float, seed: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(n, 3, S, S) decoded samples on the CPU, their flat codes (n, L), their labels or None
    (a class-conditional prior gets the classes in turn)."""
    labels = torch.arange(n) % models.num_classes if models.num_classes else None
    generator = torch.Generator(device=device).manual_seed(seed)
    codes = sample_codes(models.vqvae, models.priors, n, labels, generator,
                         SampleOptions(temperature=temperature, progress=True))
    images = decode_codes(models.vqvae, codes).float().cpu()
    return images, flat_codes(tuple(c.cpu() for c in codes), "samples"), labels


def encode(vqvae: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N, L) flat codes of images (VQ-VAE-2: both levels side by side)."""
    device = next(vqvae.parameters()).device
    return torch.cat([flat_codes(tuple(c.cpu() for c in vqvae.encode(x.to(device))), "codes")
                      for x in images.split(batch_size)])


def data_of_run(options: dict, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list]:
    """The run's data, as the pipeline made it: ``n`` held-out images (test split first, then
    validation) with their labels, the training images, and the class names."""
    loaders = make_loaders(options["data"], root=options.get("data_root"),
                           profile=options["profile"], image_size=options.get("image_size"),
                           batch_size=options.get("batch_size"),
                           dataset_size=options.get("dataset_size"), augment=False,
                           num_workers=0, seed=options["seed"])
    held_out = [item for split in (loaders.test, loaders.val) for item in split.dataset]
    real = torch.stack([x for x, _ in held_out[:n]])  # (n, 3, S, S)
    labels = torch.tensor([int(y) for _, y in held_out[:n]])
    train = torch.stack([x for x, _ in loaders.train.dataset])  # (M, 3, S, S)
    return real, labels, train, list(loaders.classes)


class Measured(NamedTuple):
    """What :func:`measure` drew and measured."""

    models: Models
    samples: torch.Tensor
    sample_codes: torch.Tensor
    real: torch.Tensor
    reconstructions: torch.Tensor
    train: torch.Tensor
    report: Any


def measure(run: RunFolder, options: dict, args: argparse.Namespace, temperature: float,
            clock: dict) -> Measured:
    """Load the run, draw the samples, reconstruct the real images, the realism report."""
    device = get_device(args.device)
    start = time.perf_counter()
    models = load_models(run, device)
    real, real_labels, train, classes = data_of_run(options, args.n)
    clock["load models and data"] = time.perf_counter() - start
    start = time.perf_counter()
    samples, codes, labels = draw_samples(models, len(real), temperature, args.seed, device)
    clock[f"sample {len(real)}"] = time.perf_counter() - start
    start = time.perf_counter()
    reconstructions = reconstruct(models.vqvae, real)
    clock[f"reconstruct {len(real)}"] = time.perf_counter() - start
    start = time.perf_counter()
    report = realism_report(samples, reconstructions, real, RealismConfig(seed=args.seed),
                            sample_labels=labels, real_labels=real_labels, classes=classes)
    clock["realism report"] = time.perf_counter() - start
    return Measured(models, samples, codes, real, reconstructions, train, report)


def print_codes_and_calibration(m: Measured, seed: int, clock: dict) -> None:
    """Near-copies, diversity, the two-sample test's null calibration and its timings."""
    start = time.perf_counter()
    config = MemorisationConfig()
    copies = memorisation(m.sample_codes, encode(m.models.vqvae, m.train),
                          near_copy_hamming=config.near_copy_hamming)
    spread = diversity(m.sample_codes, m.samples)
    reference = diversity(encode(m.models.vqvae, m.real), m.real)
    clock["near-copies and diversity"] = time.perf_counter() - start
    print(f"\nnear-copies of the {len(m.train)} training images (<= "
          f"{config.near_copy_hamming:.0%} of the code positions differ): "
          f"{copies.near_copy_fraction:.1%}")
    print(f"diversity, codes (Hamming): samples {spread.code_hamming:.3f}, real "
          f"{reference.code_hamming:.3f} ({spread.code_hamming / reference.code_hamming:.2f}x); "
          f"pixels (RMS): {spread.pixel_rms:.3f}, real {reference.pixel_rms:.3f}")
    half = len(m.real) // 2  # the null: reconstructions of two disjoint halves of the real images
    null = two_sample_test(m.reconstructions[:half], m.reconstructions[half:2 * half], seed=seed)
    print(f"calibration, reconstructions of two disjoint halves ({half} each; should be near "
          f"0.5): {null.accuracy:.3f} [{null.ci_low:.2f}, {null.ci_high:.2f}] (p {null.p_value:.2g})")
    for name, t in m.report.two_sample.items():
        print(f"two-sample test, {name}: {t.seconds:.1f} s ({t.n_train} training images)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished pipeline run folder")
    parser.add_argument("--n", type=int, default=256, help="samples, and real images")
    parser.add_argument("--temperature", type=float, default=None, help="default: the run's")
    parser.add_argument("--seed", type=int, default=0, help="of the samples and the tests")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best)")
    parser.add_argument("--fid", action="store_true", help="also FID (optional extra)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run, clock = RunFolder(args.run), {}
    options = json.loads(run.pipeline_state.read_text())["options"]
    # The run's temperature: --temperature, else the one its pipeline chose (temperature.json)
    temperature = run_temperature(run) if args.temperature is None else args.temperature
    given = sys.argv[1:] if argv is None else argv
    print("$ python benchmarks/bench_samples.py " + " ".join(map(shlex.quote, given)))
    print(f"run {run.root}: data {options['data']}, profile {options['profile']}, model "
          f"{options['model']}, T = {temperature:g}; {torch.get_num_threads()} thread(s), load "
          f"average {os.getloadavg()[0]:.1f} at the start")
    m = measure(run, options, args, temperature, clock)
    print(f"\n{len(m.real)} samples (T = {temperature:g}), {len(m.real)} held-out real images "
          "and their VQ-VAE reconstructions:\n")
    print(realism_table(m.report, sample_name=f"samples (T = {temperature:g})"))
    print_codes_and_calibration(m, args.seed, clock)
    if args.fid:
        for name, images in (("samples", m.samples), ("reconstructions", m.reconstructions)):
            fid = frechet_inception_distance(images, m.real)
            shown = "n/a" if fid.value is None else f"{fid.value:.2f}"
            print(f"FID {name} vs real: {shown} ({fid.message})")
    print("\nwall time: " + ", ".join(f"{k} {v:.1f} s" for k, v in clock.items()) +
          f"; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
