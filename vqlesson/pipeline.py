"""The whole course, headless: ``python -m vqlesson pipeline --data auto --profile cpu --out RUN``.

Stages, in order (each one's outputs land in the run folder):

1. ``vqvae``: train the VQ-VAE (or ``--model vqvae2``) and evaluate it on the test split
   (``train-vqvae``: checkpoint.pt, metrics.json, reconstructions, usage, curves).
2. ``prior``: extract the code maps of every split and train the PixelCNN prior(s) on them, with
   early stopping on the validation NLL (``train-prior``: codes_*.pt, prior*.pt,
   prior_metrics.json, prior_curves.png).
3. ``samples``: sample images from the prior(s) (``sample``: samples.png).
4. ``analysis``: the test-set failure analysis of :mod:`vqlesson.analysis` (notebook 05):
   reconstruction train vs test by class, worst test reconstructions, codebook usage train vs
   test, surprise maps, sample diversity against temperature, near-copies of training images
   (analysis.json and figures).
5. ``report``: report.md, the figures and one metrics table.

``RUN/pipeline.json`` records the options and the finished stages. Running the same command
again resumes: finished stages whose outputs exist are skipped, and the training stages continue
from their last finished epoch. Other options for an existing run folder are an error (nothing
is overwritten). Under ``torchrun`` the training stages run on every process and the rest on
rank 0 only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

STATE_FILE = "pipeline.json"
# Options that define a run; resuming with other values would mix two runs in one folder.
RUN_OPTIONS = ("data", "data_root", "profile", "image_size", "batch_size", "dataset_size", "seed",
               "model", "label_conditional", "temperature")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _run_command(argv: list[str]) -> None:
    """Run another ``python -m vqlesson`` command in this process (errors propagate)."""
    from .__main__ import build_parser

    args = build_parser().parse_args(argv)
    status = args.func(args)
    if status:
        raise RuntimeError(f"python -m vqlesson {' '.join(argv)} exited with status {status}")


def _data_argv(options: dict[str, Any]) -> list[str]:
    """The data options as command-line arguments for train-vqvae / train-prior."""
    argv = ["--data", options["data"], "--profile", options["profile"], "--seed", str(options["seed"])]
    for name in ("data_root", "image_size", "batch_size", "dataset_size"):
        if options[name] is not None:
            argv += [f"--{name.replace('_', '-')}", str(options[name])]
    return argv


def _common_argv(args: argparse.Namespace) -> list[str]:
    argv = []
    if args.device:
        argv += ["--device", args.device]
    return argv


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
class Context(NamedTuple):
    """What every stage gets: the parsed arguments, the run folder and the run's options."""

    args: argparse.Namespace
    out: Path
    options: dict[str, Any]


def _stage_vqvae(ctx: Context) -> None:
    argv = ["train-vqvae", *_data_argv(ctx.options), "--out", str(ctx.out),
            "--model", ctx.options["model"], "--resume", *_common_argv(ctx.args)]
    _run_command(argv)


def _stage_prior(ctx: Context) -> None:
    argv = ["train-prior", "--vqvae", str(ctx.out), *_data_argv(ctx.options), "--resume",
            *_common_argv(ctx.args)]
    if ctx.options["label_conditional"]:
        argv.append("--label-conditional")
    if ctx.args.threads:
        argv += ["--threads", str(ctx.args.threads)]
    _run_command(argv)


def _stage_samples(ctx: Context) -> None:
    argv = ["sample", "--run", str(ctx.out), "--n", str(ctx.args.num_samples),
            "--temperature", str(ctx.options["temperature"]), "--seed", str(ctx.options["seed"]),
            *_common_argv(ctx.args)]
    _run_command(argv)


def _load_run(ctx: Context):
    """The run's VQ-VAE and its best prior(s) (one prior, or (top, bottom))."""
    from .checkpoint import load_checkpoint, read_checkpoint
    from .prior import best_checkpoint_path
    from .runtime import get_device
    from .vqvae2 import VQVAE2

    device = get_device(ctx.args.device)
    vqvae = load_checkpoint(ctx.out / "checkpoint.pt", map_location=device).model.eval()
    two_levels = isinstance(vqvae, VQVAE2)
    files = ["prior_top.pt", "prior_bottom.pt"] if two_levels else ["prior.pt"]
    priors, histories = [], {}
    for name in files:
        path = ctx.out / name
        best = best_checkpoint_path(path)
        priors.append(load_checkpoint(best if best.is_file() else path, map_location=device,
                                      expected_class="PixelCNNPrior").model.eval())
        histories[name.removesuffix(".pt")] = read_checkpoint(path).get("history", {})
    return vqvae, (tuple(priors) if two_levels else priors[0]), histories


def _stage_analysis(ctx: Context) -> None:
    import torch

    import matplotlib.pyplot as plt

    from . import analysis as A
    from . import memorisation as M
    from . import plots
    from .checkpoint import atomic_write_text
    from .data import make_loaders
    from .runtime import get_profile

    # The run's own sampling temperature is always one of the points (report and figure use it).
    temperatures = sorted({*A.AnalysisConfig.temperatures, ctx.options["temperature"]})
    config = A.AnalysisConfig(num_samples=ctx.args.num_samples, temperatures=temperatures)
    vqvae, priors, histories = _load_run(ctx)
    o = ctx.options
    profile = get_profile(o["profile"]).with_overrides(
        batch_size=o["batch_size"], dataset_size=o["dataset_size"],
        image_size=vqvae.config.image_size)
    plain = make_loaders(o["data"], root=o["data_root"], profile=profile, augment=False,
                         seed=o["seed"], num_workers=0)
    classes = list(plain.classes)
    train_images, train_codes = A.encode_dataset(vqvae, plain.train.dataset, profile.batch_size)
    test_images, test_codes = A.encode_dataset(vqvae, plain.test.dataset, profile.batch_size)
    figures: dict[str, str] = {}
    result: dict[str, Any] = {"config": dataclasses.asdict(config)}

    # 1. Reconstruction, train against test.
    scores = {"train": A.reconstruction_scores(vqvae, train_images),
              "test": A.reconstruction_scores(vqvae, test_images)}
    scores = {split: s._replace(labels=c.labels) for (split, s), c in
              zip(scores.items(), (train_codes, test_codes))}
    result["reconstruction"] = {split: A.scores_by_class(s, classes) for split, s in scores.items()}
    figures["reconstruction scores, train vs test"] = _save(
        plots.score_distributions(scores, classes), ctx.out / "analysis_scores.png")
    worst = A.worst_reconstructions(vqvae, test_images, scores["test"], k=config.worst_k)
    figures["worst test reconstructions"] = _save(plots.worst_cases(worst, classes),
                                                  ctx.out / "analysis_worst.png")

    # 2. Codebook usage, train against test.
    usage = A.compare_usage_levels(train_codes, test_codes, config.rare_fraction)
    result["usage"] = {
        level: {"train_perplexity": u.train_perplexity, "test_perplexity": u.test_perplexity,
                "train_active": u.train_active, "test_active": u.test_active,
                "test_only_fraction": u.test_only_fraction,
                "test_only_codes": u.test_only_codes.tolist()}
        for level, u in usage.items()}
    figures["codebook usage, train vs test"] = _save(plots.usage_comparison(usage),
                                                     ctx.out / "analysis_usage.png")

    # 3. Prior generalisation: NLL curves and surprise maps.
    result["prior"] = {name: A.generalisation_gap(h)._asdict() for name, h in histories.items()
                       if h.get("val_bits_per_code")}
    result["prior_test_bits_per_code"] = A.prior_bits_per_code(priors, test_codes)
    shown = min(8, len(test_codes))
    level, prior = (("bottom", priors[1]) if isinstance(priors, tuple) else (None, priors))
    bits = A.surprise_maps(prior, test_codes, level=level)[:shown]  # (shown, h, w)
    figures["surprise of test lesions under the prior"] = _save(
        plots.surprise(test_images[:shown], bits), ctx.out / "analysis_surprise.png")

    # 4-5. Diversity against temperature, and near-copies.
    n_ref = min(config.num_samples, len(test_codes))
    reference = M.diversity(A.flat_codes(test_codes, "test")[:n_ref], test_images[:n_ref])
    rows = {}
    for t in config.temperatures:  # the test NLL does not depend on T: computed once above
        generator = torch.Generator(device=next(vqvae.parameters()).device).manual_seed(o["seed"])
        row = M.evaluate_remedy(f"T = {t:g}", vqvae, priors, None, train_codes, train_images,
                                config, temperature=t, generator=generator)
        rows[t] = row._replace(test_bits_per_code=result["prior_test_bits_per_code"])
    result["reference_diversity"] = reference._asdict()
    result["temperatures"] = [{"temperature": t, **{k: v for k, v in r._asdict().items()
                                                    if k not in ("samples", "sample_codes",
                                                                 "memorisation")}}
                              for t, r in rows.items()]
    result["table"] = M.remedy_table(list(rows.values()), reference)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    plots.diversity_curves(config.temperatures, {"prior": [r.code_hamming for r in rows.values()]},
                           reference.code_hamming, ax=ax)
    figures["sample diversity against temperature"] = _save(fig, ctx.out / "analysis_diversity.png")
    at_one = rows[o["temperature"]]
    figures[f"samples ({at_one.name}) and their nearest training images"] = _save(
        plots.near_copies(at_one.samples, train_images, at_one.memorisation),
        ctx.out / "analysis_near_copies.png")
    result["figures"] = figures
    atomic_write_text(ctx.out / "analysis.json", json.dumps(result, indent=2, default=float))


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _stage_report(ctx: Context) -> None:
    from .checkpoint import atomic_write_text

    metrics = _read_json(ctx.out / "metrics.json")
    prior = _read_json(ctx.out / "prior_metrics.json")
    analysis = _read_json(ctx.out / "analysis.json")
    state = _read_json(ctx.out / STATE_FILE)
    test = metrics.get("test", {})
    recon = analysis.get("reconstruction", {})
    rows = [
        ("VQ-VAE test PSNR (dB)", _fmt(test.get("psnr"), ".2f")),
        ("VQ-VAE test SSIM", _fmt(test.get("ssim"))),
        ("per-image PSNR, train / test (dB)",
         f"{_fmt(recon.get('train', {}).get('all', {}).get('psnr'), '.2f')} / "
         f"{_fmt(recon.get('test', {}).get('all', {}).get('psnr'), '.2f')}"),
    ]
    for level, u in analysis.get("usage", {}).items():
        rows.append((f"{level}: perplexity train / test (of K)",
                     f"{_fmt(u['train_perplexity'], '.1f')} / {_fmt(u['test_perplexity'], '.1f')}"))
        rows.append((f"{level}: test positions on codes training barely used",
                     _fmt(u["test_only_fraction"], ".2%")))
    for split in ("train", "val", "test"):
        if split in prior:
            rows.append((f"prior NLL, {split} (bits per code / bits per dim)",
                         f"{_fmt(prior[split]['bits_per_code'])} / "
                         f"{_fmt(prior[split]['bits_per_dim'], '.4f')}"))
    for name, gap in analysis.get("prior", {}).items():
        rows.append((f"{name}: best epoch / epochs trained",
                     f"{gap['best_epoch']} / {gap['final_epoch']}"))
    ref = analysis.get("reference_diversity")
    for r in analysis.get("temperatures", []):
        if r["temperature"] == ctx.options["temperature"]:
            rows.append((f"sample diversity, codes ({r['name']}; real test images)",
                         f"{_fmt(r['code_hamming'])} ({_fmt(ref and ref['code_hamming'])})"))
            rows.append((f"near-copies of training images ({r['name']})",
                         _fmt(r["near_copy_fraction"], ".0%")))
    lines = [
        f"# vqlesson pipeline report: {ctx.out.name}", "",
        f"- data: {metrics.get('data', 'n/a')}",
        f"- model: {metrics.get('model', 'n/a')}, profile `{ctx.options['profile']}`, "
        f"device {metrics.get('device', 'n/a')}, seed {ctx.options['seed']}",
        "- stages (seconds): " + ", ".join(
            f"{name} {info['seconds']:.0f}" for name, info in state.get("stages", {}).items()),
        "", "## Metrics", "", "| metric | value |", "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows], "",
        "## Sampling temperature against diversity and memorisation", "",
        analysis.get("table", "n/a"), "",
        "Diversity is the mean fraction of code positions (Hamming) or the RMS pixel distance "
        "between two samples; real test images give the reference. A near-copy is a sample "
        f"within {analysis.get('config', {}).get('near_copy_hamming', 0.1):.0%} of the code "
        "positions (or a small pixel distance) of a training image.", "",
        "## Figures", "",
    ]
    figures = {
        "reconstructions (test)": "reconstructions.png", "VQ-VAE training curves": "training_curves.png",
        "codebook usage (test)": "codebook_usage.png", "prior NLL per epoch": "prior_curves.png",
        "samples": "samples.png", **analysis.get("figures", {}),
    }
    for title, name in figures.items():
        if (ctx.out / name).is_file():
            lines += [f"### {title}", "", f"![{title}]({name})", ""]
    atomic_write_text(ctx.out / "report.md", "\n".join(lines))


class Stage(NamedTuple):
    """One pipeline stage: its name, what it does, the files that show it finished, whether
    every process runs it under torchrun, and the function."""

    name: str
    description: str
    outputs: tuple[str, ...]
    all_ranks: bool
    run: Callable[[Context], None]


def stages(two_levels: bool) -> list[Stage]:
    """The stages in order (the prior files depend on the model)."""
    priors = ("prior_top.pt", "prior_bottom.pt") if two_levels else ("prior.pt",)
    return [
        Stage("vqvae", "train and evaluate the VQ-VAE", ("checkpoint.pt", "metrics.json"), True,
              _stage_vqvae),
        Stage("prior", "extract the codes, train the prior(s)",
              ("codes_train.pt", "prior_metrics.json", *priors), True, _stage_prior),
        Stage("samples", "sample images", ("samples.png",), False, _stage_samples),
        Stage("analysis", "test-set failure analysis", ("analysis.json",), False, _stage_analysis),
        Stage("report", "write report.md", ("report.md",), False, _stage_report),
    ]


STAGE_NAMES = tuple(stage.name for stage in stages(two_levels=False))


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def _options(args: argparse.Namespace) -> dict[str, Any]:
    from .runtime import get_profile

    options = {name: getattr(args, name) for name in RUN_OPTIONS}
    options["profile"] = get_profile(args.profile).name  # the resolved one, not None
    return options


def _load_state(out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The run's state, or a fresh one; other options than the run's are an error."""
    path = out / STATE_FILE
    if not path.is_file():
        return {"options": options, "stages": {}}
    try:
        state = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to start the run over") from err
    stored = state.get("options", {})
    differ = [f"--{k.replace('_', '-')} {stored.get(k)!r} (now {options[k]!r})"
              for k in RUN_OPTIONS if stored.get(k) != options[k]]
    if differ:
        raise ValueError(
            f"{out} holds a pipeline run with other options: {', '.join(differ)}; run with the "
            "same options to resume it, or choose another --out"
        )
    state.setdefault("stages", {})
    return state


def run_pipeline(args: argparse.Namespace) -> int:
    """Run (or resume) the pipeline; see the module docstring. Returns 0."""
    import matplotlib

    from .checkpoint import atomic_write_text
    from .distributed import barrier, is_main_process

    matplotlib.use("Agg")  # headless: figures go to files
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = _options(args)
    state = _load_state(out, options)
    main = is_main_process()
    if args.stop_after is not None and args.stop_after not in STAGE_NAMES:
        raise ValueError(f"--stop-after must be one of {STAGE_NAMES}, got {args.stop_after!r}")
    for stage in stages(options["model"] == "vqvae2"):
        done = stage.name in state["stages"] and all((out / f).is_file() for f in stage.outputs)
        if done:
            if main:
                print(f"[pipeline] {stage.name}: finished earlier, skipped")
        elif stage.all_ranks or main:
            if main:
                print(f"[pipeline] {stage.name}: {stage.description}", flush=True)
            start = time.perf_counter()
            stage.run(Context(args, out, options))
            if main:
                state["stages"][stage.name] = {
                    "seconds": time.perf_counter() - start,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                }
                atomic_write_text(out / STATE_FILE, json.dumps(state, indent=2))
        barrier()
        if stage.name == args.stop_after:
            if main:
                print(f"[pipeline] stopped after {stage.name} (--stop-after); run the same "
                      "command without it to go on")
            return 0
    if main:
        print(f"[pipeline] done: {out / 'report.md'}")
    return 0


def add_pipeline_command(sub: Any) -> None:
    """Register ``pipeline`` on the subcommand parsers of ``python -m vqlesson``."""
    from .__main__ import _add_data_arguments, _add_device_argument

    parser = sub.add_parser(
        "pipeline", help="run the whole course headless and write report.md",
        description="Runs train-vqvae, train-prior (code extraction and the prior), sample, the "
                    "test-set failure analysis and the report in --out, one stage after the "
                    "other. Running the same command again resumes from the last finished "
                    "stage (and the training stages from their last epoch).")
    _add_data_arguments(parser)
    parser.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    parser.add_argument("--model", choices=("vqvae", "vqvae2"), default="vqvae",
                        help="vqvae (default) or vqvae2 (a top and a bottom prior)")
    parser.add_argument("--label-conditional", action="store_true",
                        help="class-conditional priors (benign/malignant)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature of samples.png and the report (default 1)")
    parser.add_argument("--num-samples", type=int, default=32,
                        help="samples drawn per temperature for the analysis (default 32)")
    parser.add_argument("--stop-after", choices=STAGE_NAMES, default=None,
                        help="stop after this stage (run again without it to go on)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch in the prior stage")
    _add_device_argument(parser)
    parser.set_defaults(func=run_pipeline)
