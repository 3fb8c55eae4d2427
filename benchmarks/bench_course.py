"""The whole course, headless, measured stage by stage: what a student's GPU (or CPU) costs.

Runs :func:`vqlesson.cli.pipeline.run_pipeline` (VQ-VAE, code extraction and prior, samples, the
test-set failure analysis, the report) on the synthetic lesions at the chosen profile's sizes
(they stand in for ISIC 2016: same image size, same number of training images at ``gpu``
scale), one stage at a time, and prints per stage:

- wall time (s);
- throughput: training images per second (VQ-VAE, last epoch), training code positions per
  second (prior, last epoch), sampled images per second (samples);
- peak GPU memory (MiB; ``n/a`` on the CPU);

then the course's final figures: test PSNR and SSIM of the VQ-VAE, the prior's test NLL (bits
per code and bits per dim), the samples' code diversity against real test images and the
near-copy fraction, and the total time against the target (the full course on one GPU in under
20 minutes; the assignment's reports took about 9 hours on a lab GPU).

Mixed precision (AMP) is on, as in the course: bf16 where the GPU has it natively (Ampere and
newer), fp16 with a GradScaler elsewhere (a T4).

Usage: python benchmarks/bench_course.py [--profile gpu] [--device cuda] [--out DIR]
       [--dataset-size N] [--keep]
       (on a CPU: --profile ci for a smoke run in seconds, --profile cpu for minutes)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from vqlesson.cli.pipeline import STAGE_NAMES, PipelineConfig, run_pipeline, run_temperature
from vqlesson.runfolder import RunFolder
from vqlesson.runs import DataChoice
from vqlesson.runtime import get_device
from vqlesson.profiles import get_profile

TARGET_MINUTES = 20


def _peak_mib(device: torch.device) -> str:
    if device.type != "cuda":
        return "n/a"
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}"


def _throughput(stage: str, run: RunFolder, seconds: float, n_samples: int) -> str:
    """The stage's own speed figure, read from the files it wrote."""
    if stage == "vqvae":
        last = json.loads(run.metrics.read_text())["final_epoch"]
        return f"{last['images_per_s']:.0f} train images/s"
    if stage == "prior":
        priors = json.loads(run.prior_metrics.read_text())["priors"]
        return ", ".join(f"{name} {p['codes_per_s']:.0f} codes/s" for name, p in priors.items())
    if stage == "samples":
        return f"{n_samples / seconds:.1f} images/s"
    return ""


def run_stages(out: Path, data: DataChoice, config: PipelineConfig, device: torch.device
               ) -> list[tuple[str, float, str, str]]:
    """Each stage in turn (the pipeline resumes after the last finished one); per stage
    (name, wall s, throughput, peak GPU MiB)."""
    rows = []
    run = RunFolder(out)
    for stage in STAGE_NAMES:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        run_pipeline(out, data, dataclasses.replace(config, stop_after=stage))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        rows.append((stage, seconds, _throughput(stage, run, seconds, config.num_samples),
                     _peak_mib(device)))
    return rows


def report(rows: list[tuple[str, float, str, str]], run: RunFolder, profile: str) -> None:
    print("| stage | wall (s) | throughput | peak GPU memory (MiB) |")
    print("|---|---|---|---|")
    for stage, seconds, speed, peak in rows:
        print(f"| {stage} | {seconds:.1f} | {speed} | {peak} |")
    total = sum(r[1] for r in rows)
    metrics = json.loads(run.metrics.read_text())
    prior = json.loads(run.prior_metrics.read_text())
    analysis = json.loads(run.analysis.read_text())
    temperature = run_temperature(run)  # chosen on the validation split, or --temperature
    at_t = next(r for r in analysis["temperatures"] if r["temperature"] == temperature)
    test = metrics["test"]
    print(f"\nprofile {profile}: {metrics['data']}")
    print(f"VQ-VAE: {metrics['epochs']} epochs, test PSNR {test['psnr']:.2f} dB, SSIM "
          f"{test['ssim']:.3f}, perplexity {test['perplexity']:.1f}")
    print(f"prior: test NLL {prior['test']['bits_per_code']:.3f} bits per code, "
          f"{prior['test']['bits_per_dim']:.4f} bits per dim (the prior's term only)")
    print(f"samples at T = {temperature:g}: code diversity {at_t['code_hamming']:.3f} (real test "
          f"images {analysis['reference_diversity']['code_hamming']:.3f}), near-copies "
          f"{at_t['near_copy_fraction']:.0%}")
    verdict = "within" if total < TARGET_MINUTES * 60 else "over"
    print(f"total: {total / 60:.1f} min ({verdict} the {TARGET_MINUTES}-minute target for the "
          "gpu profile)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="gpu", help="ci, cpu or gpu (default gpu)")
    parser.add_argument("--device", default=None, help="cuda, cpu, mps (default: best available)")
    parser.add_argument("--dataset-size", type=int, default=None,
                        help="synthetic training images (default: the profile's)")
    parser.add_argument("--num-samples", type=int, default=32, help="samples per temperature")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    args = parser.parse_args()

    device = get_device(args.device)
    profile = get_profile(args.profile)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device} ({name or platform.machine()}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_course_"))
    data = DataChoice(source="synthetic", profile=profile, dataset_size=args.dataset_size)
    config = PipelineConfig(num_samples=args.num_samples, device=str(device))
    try:
        rows = run_stages(out, data, config, device)
        report(rows, RunFolder(out), profile.name)
    finally:
        if not args.out and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
        elif args.keep:
            print(f"run folder kept: {out}")


if __name__ == "__main__":
    main()
