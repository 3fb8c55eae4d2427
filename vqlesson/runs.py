"""The course's workflows: train a VQ-VAE run, train its prior, sample, evaluate, preview the data.

A *run folder* (``runs/NAME``) holds everything one course run makes; :class:`RunFolder` names
every file in it, once. Each workflow is one function that takes a run folder, the data to use
(:class:`DataChoice`) and its settings (a dataclass), writes its files and returns a NamedTuple.
The command line (``python -m vqlesson``), the headless pipeline (:mod:`vqlesson.cli.pipeline`) and
the notebooks all call these functions:

==========================================  ======================================  ================
workflow                                    writes (in the run folder)              command
==========================================  ======================================  ================
:func:`train_vqvae_run`                     checkpoint.pt, metrics.json, figures    ``train-vqvae``
:func:`evaluate_run`                        metrics_SPLIT.json, figures (``out``)   ``evaluate``
:func:`train_prior_run`                     codes_*.pt, prior*.pt, prior_metrics    ``train-prior``
:func:`~vqlesson.finished_runs.sample_run`  samples.png                             ``sample``
:func:`preview_data`                        training_batch.png, data.json           ``data-preview``
==========================================  ======================================  ================

Progress lines go to ``report`` (e.g. ``print``; nothing by default). Under torchrun
(:mod:`vqlesson.distributed`) the training workflows run on every process; rank 0 alone reports
and writes files, and every process returns once the files are complete.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from .checkpoint import atomic_write_text, config_record, load_checkpoint
from .configs import vqvae2_config, vqvae_config
from .data import Loaders, make_loaders
from .distributed import barrier, is_main_process, main_process_first, process_device, world_size
from .runfolder import RunFolder
from .runtime import get_device, given, model_device, seed_everything
from .profiles import PROFILES, Profile, get_profile
from .train import TrainConfig, evaluate_vqvae, find_quantizers, train_vqvae
from .vqvae import VAE, VQVAE, DiscreteAutoencoder, Level
from .vqvae2 import VQVAE2

Report = Callable[[str], None]
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------------------------
@dataclass
class DataChoice:
    """The data a workflow uses and its sizes (:func:`~vqlesson.data.make_loaders`' arguments).

    Attributes:
        source: ``auto`` (ISIC 2016 if ``data/isic2016`` holds it, else synthetic), ``isic2016``,
            ``synthetic``, ``cifar10`` (the VQ-VAE paper's benchmark, at image size 32; get it with
            ``python -m vqlesson download --dataset cifar10``) or ``folder:PATH``, any images.
        root: the ISIC 2016 or CIFAR-10 folder (default: ``$VQLESSON_DATA_DIR/isic2016`` or
            ``data/isic2016``; for ``cifar10``, ``.../cifar10``).
        profile: the sizes, a Profile or its name: ``ci`` for seconds, ``cpu`` for minutes, ``gpu``
            for the real run (default: ``$VQLESSON_PROFILE``, else ``gpu`` with CUDA, else ``cpu``).
        image_size: override the profile's image size in px (default: the profile's).
        batch_size: override the profile's batch size (default: the profile's).
        dataset_size: override the profile's number of synthetic training images (validation
            and test: a fifth of it each), or cap real ones (default: the profile's).
        seed: random seed of the data, the model and training.
        num_workers: ``DataLoader`` workers (default: the profile's).
        on_error: unreadable images: stop, naming each (``raise``), or leave them out (``skip``).
    """

    source: str = field(default="auto", metadata={"flag": "--data"})
    root: str | None = field(default=None, metadata={"flag": "--data-root"})
    profile: Profile | str | None = field(default=None, metadata={"choices": tuple(PROFILES)})
    image_size: int | None = None
    batch_size: int | None = None
    dataset_size: int | None = None
    seed: int = 0
    num_workers: int | None = None
    on_error: Literal["raise", "skip"] = "raise"

    def sized_profile(self, **changes: Any) -> Profile:
        """The profile with this choice's sizes (and ``changes``; ``None`` values ignored)."""
        sizes = dict(batch_size=self.batch_size, image_size=self.image_size,
                     dataset_size=self.dataset_size)
        return get_profile(self.profile).with_overrides(**{**sizes, **given(changes)})

    def loaders(self, profile: Profile, augment: bool) -> Loaders:
        """Train, validation and test loaders at ``profile``'s sizes; under torchrun rank 0
        fills the image cache first and the other processes then read it."""
        with main_process_first():
            return make_loaders(self.source, root=self.root, profile=profile, augment=augment,
                                seed=self.seed, num_workers=self.num_workers,
                                on_error=self.on_error)


def _reporter(report: Report | None) -> Report:
    """``report`` on rank 0, a no-op elsewhere (and when ``report`` is ``None``)."""
    if report is None or not is_main_process():
        return lambda _line: None
    return report


def _write_json(path: Path, payload: dict) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, default=float))


# --------------------------------------------------------------------------------------------
# train-vqvae and evaluate
# --------------------------------------------------------------------------------------------
@dataclass
class VQVAERunConfig:
    """Settings of :func:`train_vqvae_run`; those left ``None`` take the profile's value.

    Attributes:
        model: ``vqvae``, one code grid of S/f, or ``vqvae2``, top grid S/8 and bottom grid S/4.
        epochs: training epochs (default: the profile's).
        lr: learning rate; the paper used 2e-4 over 250k steps, 1e-3 suits short runs.
        optimizer: the optimizer.
        codebook_size: K, the number of code vectors (default: the profile's).
        code_dim: D, the length of a code vector (default: the profile's).
        hidden_channels: the encoder/decoder width (default: the profile's).
        downsample: VQ-VAE only: the factor f from image to code grid, which is (S/f) x (S/f).
        beta: commitment weight.
        ema: learn the codebook by EMA updates, else by its loss term.
        init: codebook initialisation on the first batch.
        augment: augment the training images.
        amp: mixed precision on CUDA.
        resume: continue the run from its last finished epoch (the stored config wins).
        device: ``cpu``, ``cuda``, ``mps`` (default: the best available).
    """

    model: Literal["vqvae", "vqvae2"] = "vqvae"
    epochs: int | None = None
    lr: float = 1e-3
    optimizer: Literal["adamw", "sgd"] = "adamw"
    codebook_size: int | None = None
    code_dim: int | None = None
    hidden_channels: int | None = None
    downsample: Literal[4, 8] = 4
    beta: float = 0.25
    ema: bool = True
    init: Literal["kmeans", "random"] = "kmeans"
    augment: bool = True
    amp: bool = True
    resume: bool = False
    device: str | None = None


class VQVAERun(NamedTuple):
    """What :func:`train_vqvae_run` returns: the trained model, its test metrics (see
    :func:`~vqlesson.train.evaluate_vqvae`), the training history, the data description and
    the files written (on rank 0)."""

    model: torch.nn.Module
    test_metrics: dict[str, float]
    history: dict[str, list]
    data: str
    files: list[Path]


def _autoencoder(profile: Profile, config: VQVAERunConfig, run: RunFolder) -> torch.nn.Module:
    """The model to train: built from the profile and ``config``, or, when resuming, from the
    config stored in the run's checkpoint (a run continues with the settings it started with)."""
    if config.resume and run.checkpoint.exists():
        stored = load_checkpoint(run.checkpoint)
        if not isinstance(stored.model, DiscreteAutoencoder):
            raise ValueError(
                f"{run.checkpoint} holds a {type(stored.model).__name__} model, not a VQ-VAE "
                "run to resume; pass another --out folder, or leave out "
                "--resume to train a new VQ-VAE there (the file is then replaced)")
        return type(stored.model)(stored.config)
    if config.model == "vqvae2":
        return VQVAE2(vqvae2_config(profile, codebook_size_top=config.codebook_size,
                                    codebook_size_bottom=config.codebook_size,
                                    **_common_fields(config)))
    if config.model == "vqvae":
        return VQVAE(vqvae_config(profile, downsample=config.downsample,
                                  codebook_size=config.codebook_size, **_common_fields(config)))
    raise ValueError(f"model must be 'vqvae' or 'vqvae2', got {config.model!r}")


def _common_fields(config: VQVAERunConfig) -> dict[str, Any]:
    return dict(hidden_channels=config.hidden_channels, code_dim=config.code_dim,
                beta=config.beta, ema=config.ema, init=config.init)


def describe_model(model: torch.nn.Module) -> str:
    """One line: class, parameters (millions) and the code grid of each level of a VQ-VAE
    (``codes grid (16, 16) x K=512``) or VQ-VAE-2 (``top grid ..., bottom grid ...``)."""
    grid = ", ".join(f"{level.name} grid {shape} x K={level.codebook_size}"
                     for level, shape in zip(model.levels, model.latent_shapes()))
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    return f"{type(model).__name__}, {millions:.2f} M parameters, {grid}"


def train_vqvae_run(run: RunFolder | str | Path, data: DataChoice,
                    config: VQVAERunConfig | None = None, report: Report | None = None) -> VQVAERun:
    """Train a VQ-VAE (or VQ-VAE-2) run, evaluate it on the test split and write its files.

    Writes ``checkpoint.pt`` (after every epoch; ``config.resume`` continues it),
    ``metrics.json`` (model, config, profile, data, test metrics, the last epoch's values),
    ``reconstructions.png``, ``codebook_usage.png`` and ``training_curves.png``.

    Raises:
        ValueError: bad settings, or a checkpoint of another model or optimiser on resume.
        FileNotFoundError: the data is missing (the message says how to get it).
    """
    run, config, say = RunFolder(run), config or VQVAERunConfig(), _reporter(report)
    profile = data.sized_profile(epochs=config.epochs)
    seed_everything(data.seed)
    if is_main_process():
        run.root.mkdir(parents=True, exist_ok=True)
    loaders = data.loaders(profile, augment=config.augment)
    say(f"data: {loaders.description}")
    model = _autoencoder(profile, config, run)
    device = process_device(get_device(config.device))
    say(f"model: {describe_model(model)}, device {device}, profile {profile.name}, "
        f"{profile.epochs} epochs")
    if world_size() > 1:
        say(f"distributed: {world_size()} processes x batch {profile.batch_size} = "
            f"{world_size() * profile.batch_size} images per step (DistributedDataParallel)")
    train_config = TrainConfig(
        epochs=profile.epochs, lr=config.lr, optimizer=config.optimizer, amp=config.amp,
        seed=data.seed, checkpoint_path=str(run.checkpoint), resume=config.resume,
        device=str(device))
    history = train_vqvae(model, loaders.train, loaders.val, train_config)
    test_metrics = evaluate_vqvae(model, loaders.test, device, amp=config.amp, distributed=True)
    files: list[Path] = []
    if is_main_process():
        summary = {
            "model": type(model).__name__, "config": config_record(model.config),
            "profile": profile.name, "data": loaders.description, "device": str(device),
            "epochs": len(history.get("epoch", [])),
            "train_seconds": float(sum(history.get("epoch_time_s", []))),
            "test": test_metrics,
            "final_epoch": {k: v[-1] for k, v in history.items() if v and not k.startswith("step_")},
            **({"processes": world_size()} if world_size() > 1 else {}),
        }
        files = [_write_json(run.metrics, summary),
                 *save_vqvae_figures(model, loaders.test, test_metrics, history, run)]
    barrier()  # every file is written before any process goes on (e.g. to train-prior)
    return VQVAERun(model, test_metrics, history, loaders.description, files)


def save_vqvae_figures(model: torch.nn.Module, loader: Any, metrics: dict, history: dict | None,
                       run: RunFolder) -> list[Path]:
    """``reconstructions.png`` (a batch of ``loader`` above its reconstructions),
    ``codebook_usage.png`` and, with a ``history``, ``training_curves.png``; returns the paths."""
    import matplotlib.pyplot as plt

    from .plots import codebook_usage_levels, reconstructions, training_curves

    device = model_device(model)
    x, _ = next(iter(loader))
    model.eval()
    with torch.no_grad():
        x_hat = model(x.to(device)).x_hat.float().cpu()
    figures = {run.reconstructions: reconstructions(
        x, x_hat, n=8, title=f"test set: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}")}
    quantizers = find_quantizers(model)
    if quantizers:
        figures[run.codebook_usage] = codebook_usage_levels(quantizers)
    if history:
        figures[run.training_curves] = training_curves(history)
    for path, fig in figures.items():
        fig.savefig(path, dpi=120)
    plt.close("all")
    return list(figures)


class Evaluation(NamedTuple):
    """What :func:`evaluate_run` returns: the model, the split's metrics, the data description
    and the files written (with ``out``)."""

    model: torch.nn.Module
    metrics: dict[str, float]
    data: str
    files: list[Path]


def evaluate_run(checkpoint: str | Path, data: DataChoice, split: str = "test",
                 out: str | Path | None = None, device: str | None = None) -> Evaluation:
    """Recompute the metrics of an autoencoder checkpoint on a split (the model is rebuilt from
    its stored config; the images at its image size); with ``out``, write
    ``metrics_SPLIT.json`` and the figures there.

    Raises:
        FileNotFoundError: no checkpoint at ``checkpoint``.
        ValueError: the checkpoint holds a prior, not an autoencoder; an unknown split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    loaded = load_checkpoint(checkpoint)
    model = loaded.model
    if not isinstance(model, (DiscreteAutoencoder, VAE)):
        raise ValueError(
            f"{checkpoint} holds a {type(model).__name__} (a prior over codes), not an "
            "autoencoder; evaluate the run's VQ-VAE: --checkpoint RUN/checkpoint.pt"
        )
    profile = data.sized_profile(image_size=loaded.config.image_size)
    loaders = data.loaders(profile, augment=False)
    loader = getattr(loaders, split)
    metrics = evaluate_vqvae(model, loader, get_device(device))
    files: list[Path] = []
    if out is not None:
        folder = RunFolder(out)
        folder.root.mkdir(parents=True, exist_ok=True)
        files = [_write_json(folder.split_metrics(split), metrics),
                 *save_vqvae_figures(model, loader, metrics, None, folder)]
    return Evaluation(model, metrics, loaders.description, files)


# --------------------------------------------------------------------------------------------
# data-preview
# --------------------------------------------------------------------------------------------
class Preview(NamedTuple):
    """What :func:`preview_data` returns: the data's description and class counts per split
    (``{"train": {"benign": n, ...}, ...}``), and the files written."""

    description: str
    class_counts: dict[str, dict[str, int]]
    files: list[Path]


def preview_data(out: RunFolder | str | Path, data: DataChoice) -> Preview:
    """Build the loaders exactly as the course does; write ``training_batch.png`` (an augmented
    training batch with labels) and ``data.json`` (source, description, profile, class counts).

    Raises:
        ValueError, FileNotFoundError: bad data settings, missing data.
    """
    from .plots import image_grid

    folder = RunFolder(out)
    seed_everything(data.seed)
    profile = data.sized_profile()
    loaders = make_loaders(data.source, root=data.root, profile=profile,
                           seed=data.seed, on_error=data.on_error)
    folder.root.mkdir(parents=True, exist_ok=True)
    images, labels = next(iter(loaders.train))
    names = [loaders.classes[int(y)] if 0 <= int(y) < len(loaders.classes) else "?" for y in labels]
    fig = image_grid(images[:32], names[:32], suptitle=f"training batch, augmented ({loaders.source})")
    fig.savefig(folder.training_batch, dpi=120)
    balance = {}
    for split in SPLITS:
        dataset_labels = getattr(loaders, split).dataset.labels
        counts = torch.bincount(dataset_labels[dataset_labels >= 0], minlength=len(loaders.classes))
        balance[split] = {c: int(n) for c, n in zip(loaders.classes, counts.tolist())}
    summary = {"source": loaders.source, "description": loaders.description,
               "profile": profile.name, "class_counts": balance}
    files = [folder.training_batch, _write_json(folder.data_summary, summary)]
    return Preview(loaders.description, balance, files)


# --------------------------------------------------------------------------------------------
# train-prior
# --------------------------------------------------------------------------------------------
@dataclass
class PriorRunConfig:
    """Settings of :func:`train_prior_run`; those left ``None`` take the profile's or model's.

    Attributes:
        prior_arch: ``transformer``, a causal transformer over the flattened code map (the
            most realistic samples, benchmarks/RESULTS.md), or ``gated``, the Gated PixelCNN
            with position and dilated blocks.
        bottom_arch: the bottom level's prior of a VQ-VAE-2 (default: ``prior_arch``);
            ``gated`` under a transformer top is VQ-VAE-2 §3.2's split (self-attention at the
            top, a conditioned PixelCNN below). Not for a one-level VQ-VAE.
        epochs: prior epochs (default: the profile's ``prior_epochs``).
        label_conditional: condition the prior(s) on the class label (benign/malignant).
        dropout: dropout in the prior's blocks, against overfitting (default: 0, the model's).
        augment_passes: passes over the augmented training images for the codes; 1: unaugmented.
        patience: early stopping after this many epochs without validation improvement; 0: never.
        lr: AdamW learning rate (the peak of the cosine schedule).
        lr_schedule: ``cosine``: the learning rate falls to 0 over the epochs; ``constant``.
        warmup_steps: steps of linear learning-rate warm-up before the cosine (0: none).
        resume: continue the prior(s) from their last finished epoch.
        amp: mixed precision on CUDA.
        device: ``cpu``, ``cuda``, ``mps`` (default: the best available).
    """

    prior_arch: Literal["gated", "transformer"] = "transformer"
    bottom_arch: Literal["gated", "transformer"] | None = None
    epochs: int | None = None
    label_conditional: bool = False
    dropout: float | None = None
    augment_passes: int = 1
    patience: int = 5
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 0
    resume: bool = False
    amp: bool = True
    device: str | None = None


class PriorRun(NamedTuple):
    """What :func:`train_prior_run` returns: the trained priors as a tuple, one per level
    (``(prior,)`` for a VQ-VAE, ``(top, bottom)`` for a VQ-VAE-2), the code sets by split, the
    summary written to ``prior_metrics.json``, the training histories by level name
    (``codes``, or ``top`` and ``bottom``), and the files written."""

    priors: tuple[Any, ...]
    codes: dict[str, Any]
    summary: dict[str, Any]
    histories: dict[str, dict]
    files: list[Path]


def _check_prior_run(run: RunFolder, vq: Any, data: DataChoice, config: PriorRunConfig) -> None:
    """The VQ-VAE run and settings a prior can be trained on.

    Raises:
        ValueError: a checkpoint without discrete codes, another image size than the VQ-VAE's,
            fewer than one augmentation pass.
    """
    if not isinstance(vq.model, DiscreteAutoencoder):
        raise ValueError(
            f"{run.checkpoint} holds a {type(vq.model).__name__}, which has no discrete codes for "
            "a prior; train a VQ-VAE: python -m vqlesson train-vqvae --out RUN"
        )
    if data.image_size is not None and data.image_size != vq.config.image_size:
        raise ValueError(
            f"--image-size {data.image_size} differs from the VQ-VAE's image size "
            f"{vq.config.image_size}; leave --image-size out (the run's size is used)"
        )
    if config.augment_passes < 1:
        raise ValueError(f"--augment-passes must be >= 1, got {config.augment_passes}")
    if config.bottom_arch is not None and len(vq.model.levels) < 2:
        raise ValueError(f"--bottom-arch names the bottom prior of a VQ-VAE-2; {run.checkpoint} "
                         "holds a one-level VQ-VAE: leave --bottom-arch out, use --prior-arch")


def _extract_splits(model: torch.nn.Module, loaders: Loaders, run: RunFolder, device: Any,
                    seed: int, passes: int) -> dict[str, Any]:
    """The code set of every split, from the run's code files when they are current (under
    torchrun rank 0 extracts and writes them, the other processes then read them)."""
    from .codes import extract_codes

    codes = {}
    with main_process_first():
        for split in SPLITS:
            split_passes = passes if split == "train" else 1
            key = f"{loaders.description}|seed={seed}|split={split}|augmented={split_passes > 1}"
            codes[split] = extract_codes(model, getattr(loaders, split), run.codes(split), device,
                                         split_passes, classes=loaders.classes, data_key=key)
    return codes


class _PriorJob(NamedTuple):
    """What training one level's prior needs from :func:`train_prior_run`."""

    run: RunFolder
    codes: dict[str, Any]
    profile: Profile
    classes: tuple[str, ...]
    config: PriorRunConfig
    seed: int
    device: torch.device


def _train_level(job: _PriorJob, level: Level, say: Report) -> tuple[Any, dict, dict]:
    """Train (or resume) the prior of one level (conditioned on the codes of the level its
    ``condition`` names, if any); ``(prior, history, summary entry)``."""
    from .configs import prior_config_for
    from .prior import PriorTrainConfig, build_prior, evaluate_prior, train_prior

    name, path, c = level.name, job.run.prior(level.name), job.config
    k = job.codes["train"].codebook_sizes[name]
    cond = job.codes["train"].codebook_sizes[level.condition] if level.condition else None
    grid = job.codes["train"].grid(name)
    arch = c.bottom_arch if level.condition and c.bottom_arch else c.prior_arch
    prior_config = prior_config_for(
        job.profile, k, arch=arch,
        num_classes=len(job.classes) if c.label_conditional else 0, dropout=c.dropout,
        cond_codebook_size=cond,
        **({"position_grid": max(grid)} if arch == "transformer" else {}))
    if c.resume and path.exists():  # the stored config wins: a run continues as it started
        prior_config = load_checkpoint(path).config
    prior = build_prior(prior_config)
    params = sum(p.numel() for p in prior.parameters()) / 1e6
    say(f"{name} prior: {type(prior).__name__}, grid {grid}, K={k}, {params:.2f} M parameters, "
        f"{job.profile.prior_epochs} epochs"
        + (", class-conditional" if prior_config.num_classes else "")
        + (", conditioned on the top codes" if prior_config.cond_codebook_size else ""))
    train_config = PriorTrainConfig(
        epochs=job.profile.prior_epochs, batch_size=job.profile.batch_size, lr=c.lr, amp=c.amp,
        seed=job.seed, checkpoint_path=str(path), resume=c.resume, device=str(job.device),
        early_stopping_patience=c.patience or None, level=name, lr_schedule=c.lr_schedule,
        warmup_steps=c.warmup_steps)
    history = train_prior(prior, job.codes["train"], job.codes["val"], train_config)
    results = {split: evaluate_prior(prior, job.codes[split], level=name,
                                     batch_size=job.profile.batch_size, distributed=True)
               for split in SPLITS}
    entry = {
        "file": path.name, "best_file": job.run.prior_best(name).name,
        "model": type(prior).__name__, "config": dataclasses.asdict(prior_config), "epochs": len(history.get("epoch", [])),
        "best_epoch": history["best_epoch"][-1] if history.get("best_epoch") else None,
        "train_seconds": float(sum(history.get("epoch_time_s", []))),
        "codes_per_s": history["codes_per_s"][-1] if history.get("codes_per_s") else None,
        **results,
    }
    return prior, history, entry


def _whole_model_bits(summary: dict, codes: dict[str, Any]) -> None:
    """Add each split's bits of the whole code (both levels of a VQ-VAE-2) to ``summary``."""
    import math

    for split in SPLITS:
        levels = [summary["priors"][name][split] for name in summary["priors"]]
        bits = sum(r["bits_per_image"] for r in levels)
        positions = sum(math.prod(codes[split].grid(n)) for n in summary["priors"])
        summary[split] = {"bits_per_code": bits / positions,
                          "bits_per_dim": sum(r["bits_per_dim"] for r in levels),
                          "bits_per_image": bits}


def train_prior_run(run: RunFolder | str | Path, data: DataChoice,
                    config: PriorRunConfig | None = None, report: Report | None = None) -> PriorRun:
    """Extract a VQ-VAE run's codes and train its prior(s) on them.

    Encodes every split once into ``codes_{train,val,test}.pt`` (reused while the checkpoint
    and the data are the same), trains a prior of ``config.prior_arch`` (the transformer or
    the Gated PixelCNN; VQ-VAE-2: a top prior and a bottom prior conditioned on the top codes)
    with a cosine learning-rate schedule and early stopping on the validation NLL, and
    writes ``prior.pt`` (or ``prior_top.pt``, ``prior_bottom.pt``; best weights in
    ``*_best.pt``), ``prior_metrics.json`` (bits per code and per dim on each split) and
    ``prior_curves.png``. ``data`` should name the same data and seed as the VQ-VAE run; its
    profile defaults to the run's.

    Raises:
        FileNotFoundError: no VQ-VAE in the run folder (the message says how to train one).
        ValueError: see :func:`_check_prior_run`; labels needed but missing.
    """
    run, config, say = RunFolder(run), config or PriorRunConfig(), _reporter(report)
    device = process_device(get_device(config.device))
    vq = load_checkpoint(run.require_vqvae(), map_location=device)
    _check_prior_run(run, vq, data, config)
    data = dataclasses.replace(data, profile=data.profile or run.recorded_profile())
    profile = data.sized_profile(prior_epochs=config.epochs, image_size=vq.config.image_size)
    seed_everything(data.seed)
    loaders = data.loaders(profile, augment=config.augment_passes > 1)
    say(f"data: {loaders.description}")
    if config.label_conditional and len(loaders.classes) < 2:
        raise ValueError(f"--label-conditional needs labelled data with at least 2 classes; "
                         f"this data has classes {loaders.classes}")
    codes = _extract_splits(vq.model, loaders, run, device, data.seed, config.augment_passes)
    say(f"codes: {codes['train']!r} (train), {len(codes['val'])} val, {len(codes['test'])} "
        f"test, in {run.root}/codes_*.pt")
    summary: dict[str, Any] = {
        "vqvae": type(vq.model).__name__, "run": str(run.root), "profile": profile.name,
        "data": loaders.description, "device": str(device),
        "augment_passes": config.augment_passes, "priors": {}}
    job = _PriorJob(run, codes, profile, tuple(loaders.classes), config, data.seed, device)
    priors, histories = [], {}
    for level in vq.model.levels:  # coarsest first: a conditioned level after its condition
        prior, histories[level.name], summary["priors"][level.name] = _train_level(job, level, say)
        priors.append(prior)
    _whole_model_bits(summary, codes)
    if world_size() > 1:
        summary["processes"] = world_size()
    files: list[Path] = []
    if is_main_process():
        from .plots import prior_curves

        prior_curves(histories).savefig(run.prior_curves, dpi=120)
        files = [_write_json(run.prior_metrics, summary), run.prior_curves]
    barrier()  # every file is written before any process goes on
    return PriorRun(tuple(priors), codes, summary, histories, files)
