"""The whole course, headless: ``python -m vqlesson pipeline --data auto --profile cpu --out RUN``.

Stages, in order (each one's outputs land in the run folder):

1. ``vqvae``: train the VQ-VAE (or ``--model vqvae2``) and evaluate it on the test split
   (:func:`~vqlesson.runs.train_vqvae_run`: checkpoint.pt, metrics.json, reconstructions, usage, curves).
2. ``prior``: extract the code maps of every split and train the prior(s) on them (``--prior-arch``:
   the Gated PixelCNN or the transformer), with early stopping on the validation NLL
   (:func:`~vqlesson.runs.train_prior_run`: codes_*.pt, prior*.pt, prior_metrics.json,
   prior_curves.png).
3. ``temperature``: the sampling temperature, chosen on the validation split by the realism
   measure (:func:`~vqlesson.temperature.choose_temperature`), or ``--temperature`` when given
   (temperature.json); every later stage samples at it.
4. ``samples``: sample images from the prior(s) (:func:`~vqlesson.finished_runs.sample_run`: samples.png).
5. ``analysis``: the test-set failure analysis of :mod:`vqlesson.analysis` (notebook 05):
   reconstruction train vs test by class, worst test reconstructions, codebook usage train vs
   test, surprise maps, sample diversity against temperature, near-copies of training images
   (analysis.json and figures).
6. ``report``: report.md, the figures and one metrics table.

``RUN/pipeline.json`` records the options and the finished stages. Running the same command
again resumes: finished stages whose outputs exist are skipped, and the training stages continue
from their last finished epoch. Other options for an existing run folder are an error (nothing
is overwritten). Under ``torchrun`` the training stages run on every process and the rest on
rank 0 only.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from .. import analysis as A
from .. import memorisation as M
from .. import plots
from ..checkpoint import atomic_write_text
from ..codes import flat_codes
from ..distributed import barrier, is_main_process
from ..finished_runs import SampleConfig, load_run, sample_run
from ..runfolder import RunFolder
from ..runs import DataChoice, PriorRunConfig, Report, VQVAERunConfig, train_prior_run, train_vqvae_run
from ..runtime import get_device, model_device, set_threads
from ..profiles import get_profile
from ..validate import check_int

# Options that define a run; resuming with other values would mix two runs in one folder.
RUN_OPTIONS = ("data", "data_root", "profile", "image_size", "batch_size", "dataset_size", "seed",
               "model", "prior_arch", "label_conditional", "temperature")


@dataclass
class PipelineConfig:
    """Settings of :func:`run_pipeline` besides the data.

    Attributes:
        model: ``vqvae``, or ``vqvae2`` with a top and a bottom prior.
        prior_arch: ``transformer``, a causal transformer over the flattened code map (the
            most realistic samples, benchmarks/RESULTS.md), or ``gated``, the Gated PixelCNN
            with position and dilated blocks.
        label_conditional: class-conditional priors (benign/malignant).
        temperature: sampling temperature of samples.png and the report (default: chosen on
            the validation split by the realism measure, among 0.8, 0.9 and 1).
        num_samples: samples drawn per temperature for the analysis.
        realism_samples: samples drawn at ``temperature`` for the realism measure (two-sample
            tests, vignette, ABCD table), at most the test split's size (that many test images
            are reconstructed to compare them with).
        stop_after: stop after this stage; run again without it to go on (default: run them all).
        threads: CPU threads for torch in the prior stage (default: torch's choice).
        device: ``cpu``, ``cuda``, ``mps`` (default: the best available).
    """

    model: Literal["vqvae", "vqvae2"] = "vqvae"
    prior_arch: Literal["gated", "transformer"] = "transformer"
    label_conditional: bool = False
    temperature: float | None = None
    num_samples: int = 32
    realism_samples: int = 128
    stop_after: str | None = None
    threads: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        check_int(self.realism_samples, "realism_samples", 4,
                  note="a two-sample test trains on half of them and tests on the other half")


class Context(NamedTuple):
    """What every stage gets: the run folder (``out`` its path), the data, the settings, the
    run's options (as recorded in pipeline.json) and where progress lines go."""

    run: RunFolder
    data: DataChoice
    config: PipelineConfig
    options: dict[str, Any]
    report: Report

    @property
    def out(self) -> Path:
        return self.run.root


# --------------------------------------------------------------------------------------------
# Stages 1-3: the workflows
# --------------------------------------------------------------------------------------------
def _stage_vqvae(ctx: Context) -> None:
    config = VQVAERunConfig(model=ctx.config.model, resume=True, device=ctx.config.device)
    result = train_vqvae_run(ctx.run, ctx.data, config, ctx.report)
    ctx.report(f"test PSNR {result.test_metrics['psnr']:.2f} dB, SSIM "
               f"{result.test_metrics['ssim']:.3f}")


def _stage_prior(ctx: Context) -> None:
    set_threads(ctx.config.threads)
    config = PriorRunConfig(prior_arch=ctx.config.prior_arch,
                            label_conditional=ctx.config.label_conditional, resume=True,
                            device=ctx.config.device)
    result = train_prior_run(ctx.run, ctx.data, config, ctx.report)
    test = result.summary["test"]
    ctx.report(f"prior test NLL: {test['bits_per_code']:.3f} bits per code, "
               f"{test['bits_per_dim']:.4f} bits per dim")


def _stage_temperature(ctx: Context) -> None:
    """The run's sampling temperature into temperature.json: ``--temperature`` when given, else
    the choice of :func:`~vqlesson.temperature.choose_temperature` on ``realism_samples``
    validation images (at most the split's size), with its table."""
    from ..data import make_loaders
    from ..finished_runs import sampling_label
    from ..temperature import TemperatureSearch, choose_temperature

    if ctx.config.temperature is not None:
        record = {"temperature": ctx.config.temperature, "chosen": False}
    else:
        loaded = load_run(ctx.run, get_device(ctx.config.device))
        d = ctx.data
        profile = d.sized_profile(image_size=loaded.vqvae.config.image_size)
        val = make_loaders(d.source, root=d.root, profile=profile, augment=False, seed=d.seed,
                           num_workers=0, on_error=d.on_error).val.dataset
        n = min(ctx.config.realism_samples, len(val))
        real = torch.stack([val[i][0] for i in range(n)])  # (n, 3, S, S)
        choice = choose_temperature(loaded.vqvae, loaded.priors, real,
                                    TemperatureSearch(seed=ctx.options["seed"]),
                                    label=sampling_label(None, loaded, n))
        record = {"temperature": choice.temperature, "chosen": True, "n": n,
                  "rows": choice.rows, "reference": choice.reference, "table": choice.table}
        ctx.report(f"sampling temperature, chosen on {n} validation images by the realism "
                   f"measure:\n{choice.table}")
    ctx.report(f"sampling temperature: T = {record['temperature']:g}"
               + ("" if record["chosen"] else " (--temperature)"))
    atomic_write_text(ctx.run.temperature, json.dumps(record, indent=2))


def run_temperature(run: RunFolder) -> float:
    """The sampling temperature the pipeline's ``temperature`` stage wrote to temperature.json.

    Raises:
        FileNotFoundError: the stage has not run yet.
    """
    return float(json.loads(run.temperature.read_text())["temperature"])


def _stage_samples(ctx: Context) -> None:
    config = SampleConfig(n=ctx.config.num_samples, temperature=run_temperature(ctx.run),
                          seed=ctx.data.seed, device=ctx.config.device)
    samples = sample_run(ctx.run, config)
    ctx.report(f"sampled {config.n} images in {samples.seconds:.2f} s: {samples.path}")


# --------------------------------------------------------------------------------------------
# Stage 4: the test-set failure analysis (notebook 05)
# --------------------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


class _Encoded(NamedTuple):
    """The train and test images of a run's data, encoded in their data sets' order."""

    train_images: torch.Tensor
    train_codes: Any
    test_images: torch.Tensor
    test_codes: Any
    classes: list[str]


def _encode_splits(ctx: Context, vqvae: torch.nn.Module) -> _Encoded:
    from ..data import make_loaders

    # Rank 0 alone runs this stage, so no main_process_first (DataChoice.loaders) here.
    d = ctx.data
    profile = d.sized_profile(image_size=vqvae.config.image_size)
    plain = make_loaders(d.source, root=d.root, profile=profile, augment=False, seed=d.seed,
                         num_workers=0, on_error=d.on_error)
    train_images, train_codes = A.encode_dataset(vqvae, plain.train.dataset, profile.batch_size)
    test_images, test_codes = A.encode_dataset(vqvae, plain.test.dataset, profile.batch_size)
    return _Encoded(train_images, train_codes, test_images, test_codes, list(plain.classes))


def _reconstruction_and_usage(ctx: Context, vqvae: Any, e: _Encoded, config: Any,
                              result: dict, figures: dict) -> None:
    """1. Reconstruction, train against test; 2. codebook usage, train against test."""
    scores = {"train": A.reconstruction_scores(vqvae, e.train_images),
              "test": A.reconstruction_scores(vqvae, e.test_images)}
    scores = {split: s._replace(labels=c.labels) for (split, s), c in
              zip(scores.items(), (e.train_codes, e.test_codes))}
    result["reconstruction"] = {split: A.scores_by_class(s, e.classes) for split, s in scores.items()}
    figures["reconstruction scores, train vs test"] = _save(
        plots.score_distributions(scores, e.classes), ctx.run.analysis_figure("scores"))
    worst = A.worst_reconstructions(vqvae, e.test_images, scores["test"], k=config.worst_k)
    figures["worst test reconstructions"] = _save(plots.worst_cases(worst, e.classes),
                                                  ctx.run.analysis_figure("worst"))
    usage = A.compare_usage_levels(e.train_codes, e.test_codes, config.rare_fraction)
    result["usage"] = {
        level: {"train_perplexity": u.train_perplexity, "test_perplexity": u.test_perplexity,
                "train_active": u.train_active, "test_active": u.test_active,
                "test_only_fraction": u.test_only_fraction,
                "test_only_codes": u.test_only_codes.tolist()}
        for level, u in usage.items()}
    figures["codebook usage, train vs test"] = _save(plots.usage_comparison(usage),
                                                     ctx.run.analysis_figure("usage"))


def _prior_generalisation(ctx: Context, loaded: Any, e: _Encoded, result: dict,
                          figures: dict) -> None:
    """3. Prior generalisation: NLL curves and surprise maps."""
    result["prior"] = {name: A.generalisation_gap(h)._asdict()
                       for name, h in loaded.histories.items() if h.get("val_bits_per_code")}
    result["prior_test_bits_per_code"] = A.prior_bits_per_code(loaded.priors, e.test_codes)
    shown = min(8, len(e.test_codes))
    level, prior = e.test_codes.levels[-1], loaded.priors[-1]  # the finest level
    bits = A.surprise_maps(prior, e.test_codes, level=level)[:shown]  # (shown, h, w)
    figures["surprise of test lesions under the prior"] = _save(
        plots.surprise(e.test_images[:shown], bits), ctx.run.analysis_figure("surprise"))


def _diversity(ctx: Context, loaded: Any, e: _Encoded, config: Any, result: dict,
               figures: dict) -> Any:
    """4-5. Sample diversity against temperature, and near-copies of training images. Returns
    the row of the run's own temperature (its samples)."""
    import matplotlib.pyplot as plt

    n_ref = min(config.num_samples, len(e.test_codes))
    reference = M.diversity(flat_codes(e.test_codes, "test")[:n_ref], e.test_images[:n_ref])
    rows = {}
    device = model_device(loaded.vqvae)
    for t in config.temperatures:  # the test NLL does not depend on T: computed once above
        generator = torch.Generator(device=device).manual_seed(ctx.options["seed"])
        row = M.evaluate_remedy(f"T = {t:g}", loaded.vqvae, loaded.priors, None, e.train_codes,
                                e.train_images, config, temperature=t, generator=generator)
        rows[t] = row._replace(test_bits_per_code=result["prior_test_bits_per_code"])
    result["reference_diversity"] = reference._asdict()
    hidden = ("samples", "sample_codes", "memorisation")
    result["temperatures"] = [{"temperature": t, **{k: v for k, v in r._asdict().items()
                                                    if k not in hidden}}
                              for t, r in rows.items()]
    result["table"] = M.remedy_table(list(rows.values()), reference)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    plots.diversity_curves(config.temperatures, {"prior": [r.code_hamming for r in rows.values()]},
                           reference.code_hamming, ax=ax)
    figures["sample diversity against temperature"] = _save(fig, ctx.run.analysis_figure("diversity"))
    at_run = rows[run_temperature(ctx.run)]
    figures[f"samples ({at_run.name}) and their nearest training images"] = _save(
        plots.near_copies(at_run.samples, e.train_images, at_run.memorisation),
        ctx.run.analysis_figure("near_copies"))
    return at_run


def _realism(ctx: Context, loaded: Any, e: _Encoded, at_run: Any, result: dict,
             figures: dict) -> None:
    """6. Do the samples look like lesions? :func:`~vqlesson.realism.realism_report` on
    ``realism_samples`` fresh samples at the run's temperature (the classes in turn for a
    class-conditional prior), the test images and their reconstructions: the classifier
    two-sample tests (Lopez-Paz & Oquab 2017), the near-black fractions outside and inside the
    inscribed circle, lesions found, and the ABCD features (Stolz et al. 1994) against the real
    test lesions, per class for a class-conditional prior."""
    from ..pixelcnn_prior import SampleOptions
    from ..realism import RealismConfig, realism_report, realism_table, reconstruct
    from ..finished_runs import sampling_label
    from ..runtime import model_device
    from ..sampling import sample_images

    start, n = time.perf_counter(), min(ctx.config.realism_samples, len(e.test_images))
    conditional = ctx.config.label_conditional and len(e.classes) > 1
    generator = torch.Generator(device=model_device(loaded.vqvae)).manual_seed(ctx.options["seed"])
    samples = sample_images(loaded.vqvae, loaded.priors, n, sampling_label(None, loaded, n),
                            generator, SampleOptions(temperature=run_temperature(ctx.run))
                            ).float().cpu()  # (n, 3, S, S)
    sampled = time.perf_counter() - start
    report = realism_report(
        samples, reconstruct(loaded.vqvae, e.test_images), e.test_images,
        RealismConfig(seed=ctx.options["seed"]),
        sample_labels=torch.arange(n) % len(e.classes) if conditional else None,
        real_labels=e.test_codes.labels if conditional else None, classes=e.classes)
    name = f"samples ({at_run.name})"
    result["realism"] = report.abcd["samples"]._asdict()
    result["realism_reconstructions"] = report.abcd["reconstructions"]._asdict()
    result["two_sample"] = {k: t._asdict() for k, t in report.two_sample.items()}
    result["vignette"] = {k: v._asdict() for k, v in report.vignette.items()}
    result["lesion_found"] = report.lesion_found
    result["realism_table"] = realism_table(report, sample_name=name)
    figures["ABCD features of samples, reconstructions and real test lesions"] = _save(
        plots.abcd_distributions({name: report.features["samples"],
                                  "VQ-VAE reconstructions": report.features["reconstructions"],
                                  "real test lesions": report.features["real"]}),
        ctx.run.analysis_figure("abcd"))
    ctx.report(f"realism: {n} samples in {sampled:.1f} s, the measure in "
               f"{time.perf_counter() - start - sampled:.1f} s")


def _stage_analysis(ctx: Context) -> None:
    # The run's own sampling temperature is always one of the points (report and figure use it).
    temperatures = sorted({*M.MemorisationConfig.temperatures, run_temperature(ctx.run)})
    config = A.AnalysisConfig()
    samples = M.MemorisationConfig(num_samples=ctx.config.num_samples, temperatures=temperatures)
    loaded = load_run(ctx.run, get_device(ctx.config.device))
    encoded = _encode_splits(ctx, loaded.vqvae)
    figures: dict[str, str] = {}
    result: dict[str, Any] = {"config": {**dataclasses.asdict(config),
                                         **dataclasses.asdict(samples)}}
    _reconstruction_and_usage(ctx, loaded.vqvae, encoded, config, result, figures)
    _prior_generalisation(ctx, loaded, encoded, result, figures)
    at_run = _diversity(ctx, loaded, encoded, samples, result, figures)
    _realism(ctx, loaded, encoded, at_run, result, figures)
    result["figures"] = figures
    atomic_write_text(ctx.run.analysis, json.dumps(result, indent=2, default=float))


# --------------------------------------------------------------------------------------------
# Stage 5: the report
# --------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _metric_rows(ctx: Context, metrics: dict, prior: dict, analysis: dict) -> list[tuple[str, str]]:
    """The report's metrics table, one (name, value) row each."""
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
        if r["temperature"] == run_temperature(ctx.run):
            rows.append((f"sample diversity, codes ({r['name']}; real test images)",
                         f"{_fmt(r['code_hamming'])} ({_fmt(ref and ref['code_hamming'])})"))
            rows.append((f"near-copies of training images ({r['name']})",
                         _fmt(r["near_copy_fraction"], ".0%")))
    return rows + _realism_rows(analysis)


def _realism_rows(analysis: dict) -> list[tuple[str, str]]:
    """The realism measure's rows of the metrics table (two-sample tests, vignette, lesions)."""
    rows = []
    for name, t in analysis.get("two_sample", {}).items():
        rows.append((f"two-sample test accuracy, {name} (0.5: indistinguishable)",
                     f"{_fmt(t['accuracy'])} ± {_fmt(t['standard_error'])} ({t['n']} each)"))
    vignette, found = analysis.get("vignette", {}), analysis.get("lesion_found", {})
    if vignette:
        rows.append(("near-black outside / inside the circle: samples; real",
                     f"{_fmt(vignette['samples']['outside'], '.1%')} / "
                     f"{_fmt(vignette['samples']['inside'], '.1%')}; "
                     f"{_fmt(vignette['real']['outside'], '.1%')} / "
                     f"{_fmt(vignette['real']['inside'], '.1%')}"))
    if found:
        rows.append(("lesion found: samples (real)",
                     f"{_fmt(found['samples'], '.0%')} ({_fmt(found['real'], '.0%')})"))
    return rows


REALISM_NOTE = (
    "Two-sample test (Lopez-Paz & Oquab 2017, vqlesson.two_sample): a small CNN trained on half "
    "of two image sets to tell them apart, its accuracy on the other half (0.5: "
    "indistinguishable, 1: always told apart), with its 95 % Clopper-Pearson interval and p, "
    "the chance of so high an accuracy if both sets came from one distribution (the number "
    "right is then Binomial(n_test, 1/2)). Samples are compared with VQ-VAE reconstructions of the test "
    "images (both through the decoder: only the prior's errors count), the reconstructions "
    "with the test images (the decoder's own yardstick). Near-black: pixels whose mean "
    "brightness is below 0.1, outside and inside the inscribed circle (the dermoscope's dark "
    "surround, notebook 01). The ABCD rule of dermoscopy (Stolz et al. 1994) measured from the "
    "pixels (vqlesson.abcd): W1 is the Wasserstein-1 distance between a set's and the real test "
    "lesions' distribution of each feature, in the feature's own units (0: the same "
    "distribution).")


TEMPERATURE_NOTE = (
    "Each temperature's samples (the same random numbers for all) against VQ-VAE "
    "reconstructions of validation images: the two-sample test's accuracy (0.5: "
    "indistinguishable), the near-black fractions outside and inside the inscribed circle and the "
    "code diversity. The chosen temperature has the lowest accuracy among those whose vignette "
    "lies within 25 % of real outside and at most 2x real inside, and whose diversity is at least "
    "0.9x real (vqlesson.temperature.choose_temperature).")


def _stage_report(ctx: Context) -> None:
    run = ctx.run
    metrics, analysis = _read_json(run.metrics), _read_json(run.analysis)
    state = _read_json(run.pipeline_state)
    rows = _metric_rows(ctx, metrics, _read_json(run.prior_metrics), analysis)
    temperature = _read_json(run.temperature)
    priors = _read_json(run.prior_metrics).get("priors", {})
    lines = [
        f"# vqlesson pipeline report: {run.root.name}", "",
        f"- data: {metrics.get('data', 'n/a')}",
        f"- model: {metrics.get('model', 'n/a')}, profile `{ctx.options['profile']}`, "
        f"device {metrics.get('device', 'n/a')}, seed {ctx.options['seed']}",
        "- prior(s): " + ", ".join(f"{name} {p.get('model', 'PixelCNNPrior')}"
                                   for name, p in priors.items()),
        f"- sampling temperature: {_fmt(temperature.get('temperature'), 'g')} ("
        + ("chosen on the validation split, see below" if temperature.get("chosen")
           else "--temperature") + ")",
        "- stages (seconds): " + ", ".join(
            f"{name} {info['seconds']:.0f}" for name, info in state.get("stages", {}).items()),
        "", "## Metrics", "", "| metric | value |", "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows], "",
        *(["## The sampling temperature, chosen on the validation split", "",
           temperature["table"], "", TEMPERATURE_NOTE, ""] if temperature.get("chosen") else []),
        "## Sampling temperature against diversity and memorisation", "",
        analysis.get("table", "n/a"), "",
        "Diversity is the mean fraction of code positions (Hamming) or the RMS pixel distance "
        "between two samples; real test images give the reference. A near-copy is a sample "
        f"within {analysis.get('config', {}).get('near_copy_hamming', 0.1):.0%} of the code "
        "positions (or a small pixel distance) of a training image.", "",
        "## Do the samples look like lesions?", "",
        analysis.get("realism_table", "n/a"), "", REALISM_NOTE, "", "## Figures", "",
    ]
    figures = {
        "reconstructions (test)": run.reconstructions.name,
        "VQ-VAE training curves": run.training_curves.name,
        "codebook usage (test)": run.codebook_usage.name,
        "prior NLL per epoch": run.prior_curves.name, "samples": run.samples.name,
        **analysis.get("figures", {}),
    }
    for title, name in figures.items():
        if (run.root / name).is_file():
            lines += [f"### {title}", "", f"![{title}]({name})", ""]
    atomic_write_text(run.report, "\n".join(lines))


# --------------------------------------------------------------------------------------------
# The stages and the driver
# --------------------------------------------------------------------------------------------
class Stage(NamedTuple):
    """One pipeline stage: its name, what it does, the files that show it finished, whether
    every process runs it under torchrun, and the function."""

    name: str
    description: str
    outputs: tuple[Path, ...]
    all_ranks: bool
    run: Callable[[Context], None]


def stages(run: RunFolder, two_levels: bool) -> list[Stage]:
    """The stages in order (the prior files depend on the model)."""
    priors = tuple(run.prior(level) for level in run.prior_levels(two_levels))
    return [
        Stage("vqvae", "train and evaluate the VQ-VAE", (run.checkpoint, run.metrics), True,
              _stage_vqvae),
        Stage("prior", "extract the codes, train the prior(s)",
              (run.codes("train"), run.prior_metrics, *priors), True, _stage_prior),
        Stage("temperature", "choose the sampling temperature", (run.temperature,), False,
              _stage_temperature),
        Stage("samples", "sample images", (run.samples,), False, _stage_samples),
        Stage("analysis", "test-set failure analysis", (run.analysis,), False, _stage_analysis),
        Stage("report", "write report.md", (run.report,), False, _stage_report),
    ]


STAGE_NAMES = tuple(stage.name for stage in stages(RunFolder("."), two_levels=False))


def run_options(data: DataChoice, config: PipelineConfig) -> dict[str, Any]:
    """The options that define a run, as pipeline.json records them (the profile resolved)."""
    return {"data": data.source, "data_root": data.root, "profile": get_profile(data.profile).name,
            "image_size": data.image_size, "batch_size": data.batch_size,
            "dataset_size": data.dataset_size, "seed": data.seed, "model": config.model,
            "prior_arch": config.prior_arch, "label_conditional": config.label_conditional,
            "temperature": config.temperature}


def _load_state(run: RunFolder, options: dict[str, Any]) -> dict[str, Any]:
    """The run's state, or a fresh one; other options than the run's are an error."""
    path = run.pipeline_state
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
            f"{run.root} holds a pipeline run with other options: {', '.join(differ)}; run with "
            "the same options to resume it, or choose another --out"
        )
    state.setdefault("stages", {})
    return state


def run_pipeline(out: RunFolder | str | Path, data: DataChoice,
                 config: PipelineConfig | None = None, report: Report | None = None) -> RunFolder:
    """Run (or resume) the pipeline in ``out``; see the module docstring. Progress lines go to
    ``report`` (rank 0 only). Returns the run folder.

    Raises:
        ValueError: other options than those of the run already in ``out``, an unknown
            ``stop_after`` stage, bad settings.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: figures go to files
    run, config = RunFolder(out), config or PipelineConfig()
    main = is_main_process()
    say = report if (report is not None and main) else (lambda _line: None)
    if config.stop_after is not None and config.stop_after not in STAGE_NAMES:
        raise ValueError(f"--stop-after must be one of {STAGE_NAMES}, got {config.stop_after!r}")
    run.root.mkdir(parents=True, exist_ok=True)
    options = run_options(data, config)
    state = _load_state(run, options)
    data = dataclasses.replace(data, profile=options["profile"])
    ctx = Context(run, data, config, options, say)
    for stage in stages(run, config.model == "vqvae2"):
        if stage.name in state["stages"] and all(p.is_file() for p in stage.outputs):
            say(f"[pipeline] {stage.name}: finished earlier, skipped")
        elif stage.all_ranks or main:
            say(f"[pipeline] {stage.name}: {stage.description}")
            start = time.perf_counter()
            stage.run(ctx)
            if main:
                state["stages"][stage.name] = {
                    "seconds": time.perf_counter() - start,
                    "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                atomic_write_text(run.pipeline_state, json.dumps(state, indent=2))
        barrier()
        if stage.name == config.stop_after:
            say(f"[pipeline] stopped after {stage.name} (--stop-after); run the same command "
                "without it to go on")
            return run
    say(f"[pipeline] done: {run.report}")
    return run
