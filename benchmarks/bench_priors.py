"""Priors compared on one run's codes (a script, not a test: it prints, never asserts).

Trains each prior named by ``--priors`` on a finished run's code files (``codes_*.pt``, the
run's VQ-VAE stays as it is) with the same budget, equal epochs (``--epochs``) or equal
training time (``--seconds``: each prior's epochs from its measured step time), then measures
each alike (:func:`vqlesson.prior_trials.prior_trial`): held-out bits per code, sampling speed
(ms per image, fast sampler), and realism against the test images and their reconstructions
(two-sample test, vignette, lesions found, ABCD W1 border / TDS, near-copies, code diversity),
at a temperature chosen per prior on the validation images unless ``--temperature`` is given.
Writes each prior's first 36 samples to ``--out`` (``samples_NAME.png``) and every figure to
``--out/priors.json``.

The priors (the profile's sizes, about 1 M parameters each at ``cpu``):

- ``old``: the Gated PixelCNN before issue 24 (no position, no dilation: it sees 10 positions);
- ``position``: with the position map only; ``dilation``: with dilated blocks only;
- ``gated``: with both (`--prior-arch gated`);
- ``transformer``: the causal transformer (token + learnt position embeddings; the pipeline's default).

    python benchmarks/bench_priors.py --run runs/NAME [--priors old,gated,transformer]
        [--epochs 12 | --seconds S] [--temperature T] [--seed 0] [--threads N] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import torch
from torchvision.utils import save_image

from vqlesson.checkpoint import load_checkpoint
from vqlesson.codes import CodeDataset
from vqlesson.configs import prior_config_for
from vqlesson.data import make_loaders
from vqlesson.prior_trials import TrialConfig, TrialImages, prior_trial, trial_table
from vqlesson.realism import realism_table, reconstruct
from vqlesson.runfolder import RunFolder

PRIORS = {
    "old": ("gated, before issue 24", dict(position=False, dilations=(1,))),
    "position": ("gated + position", dict(dilations=(1,))),
    "dilation": ("gated + dilation", dict(position=False)),
    "gated": ("gated + position + dilation", {}),
    "transformer": ("transformer", dict(arch="transformer")),
}


def prior_config(key: str, profile: str, k: int, grid: tuple[int, int]):
    """The config of prior ``key`` at the profile's sizes."""
    overrides = dict(PRIORS[key][1])
    if overrides.get("arch") == "transformer":
        overrides["position_grid"] = max(grid)
    return prior_config_for(profile, k, **overrides)


def images_of_run(options: dict, vqvae: torch.nn.Module) -> TrialImages:
    """The run's validation and test images (as the pipeline made them, in the order of the
    code files) and the VQ-VAE's reconstructions of the test images."""
    loaders = make_loaders(options["data"], root=options.get("data_root"),
                           profile=options["profile"], image_size=options.get("image_size"),
                           batch_size=options.get("batch_size"),
                           dataset_size=options.get("dataset_size"), augment=False,
                           num_workers=0, seed=options["seed"])
    val = torch.stack([x for x, _ in loaders.val.dataset])  # (N_v, 3, S, S)
    test = torch.stack([x for x, _ in loaders.test.dataset])  # (N_t, 3, S, S)
    return TrialImages(val[:128], test, reconstruct(vqvae, test))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished pipeline run (VQ-VAE, codes)")
    parser.add_argument("--priors", default="old,gated,transformer",
                        help=f"comma-separated, of {', '.join(PRIORS)}")
    parser.add_argument("--epochs", type=int, default=12, help="epochs of each prior")
    parser.add_argument("--seconds", type=float, default=None,
                        help="equal training time instead of equal epochs")
    parser.add_argument("--temperature", type=float, default=None,
                        help="default: chosen per prior on the validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", default=None, help="default: RUN/compare")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run = RunFolder(args.run)
    out = Path(args.out) if args.out else run.root / "compare"
    out.mkdir(parents=True, exist_ok=True)
    options = json.loads(run.pipeline_state.read_text())["options"]
    given = sys.argv[1:] if argv is None else argv
    print("$ python benchmarks/bench_priors.py " + " ".join(map(shlex.quote, given)))
    print(f"run {run.root}: data {options['data']}, profile {options['profile']}; "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}")
    vqvae = load_checkpoint(run.require_vqvae(), map_location="cpu").model.eval()
    codes = {split: CodeDataset.load(run.codes(split)) for split in ("train", "val", "test")}
    images = images_of_run(options, vqvae)
    level = codes["train"].levels[0]
    k, grid = codes["train"].codebook_sizes[level], codes["train"].grid(level)
    trial = TrialConfig(epochs=args.epochs, seconds=args.seconds, temperature=args.temperature,
                        seed=args.seed, device="cpu")
    trials, record = [], {}
    for key in args.priors.split(","):
        start = time.perf_counter()
        t = prior_trial(PRIORS[key][0], prior_config(key, options["profile"], k, grid), vqvae,
                        codes, images, trial)
        trials.append(t)
        save_image((t.samples[:36] + 1) / 2, out / f"samples_{key}.png", nrow=6, padding=2)
        print(f"\n## {t.name}: {time.perf_counter() - start:.0f} s, load average "
              f"{os.getloadavg()[0]:.1f}\n")
        if t.temperature_table:
            print(t.temperature_table + "\n")
        print(realism_table(t.report, sample_name=f"samples (T = {t.temperature:g})"))
        record[key] = {"name": t.name, "parameters": t.parameters, "epochs": t.epochs,
                       "train_seconds": t.train_seconds, "test_bits_per_code": t.test_bits_per_code,
                       "val_bits_per_code": t.history.get("val_bits_per_code"),
                       "temperature": t.temperature, "sample_ms": t.sample_ms,
                       "near_copy_fraction": t.near_copy_fraction, "diversity": t.diversity,
                       "reference_diversity": t.reference_diversity,
                       "table": trial_table([t])}
    print(f"\n{len(images.test)} samples per prior against the {len(images.test)} test images:\n")
    print(trial_table(trials))
    (out / "priors.json").write_text(json.dumps(record, indent=2, default=float))
    print(f"\nsamples and priors.json in {out}; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
