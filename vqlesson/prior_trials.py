"""Priors side by side: train each on the same codes with the same budget, measure each alike.

The comparison of notebook 04 and ``benchmarks/bench_priors.py``: the Gated PixelCNN before
issue 24 (no position, receptive field of 10 positions), the Gated PixelCNN with position and
dilated blocks (PixelSNAIL §3's background; dilation as in WaveNet), and the causal transformer
(Esser et al. 2021, §3.2), at about equal parameters and for equal training time. For each:

- held-out **bits per code** (the likelihood, on the test codes);
- **sampling speed**, ms per image with the fast sampler (cached / KV-cached);
- **realism** (:func:`~vqlesson.realism.realism_report`): the classifier two-sample test of samples
  against VQ-VAE reconstructions of the test images, the vignette (near-black outside and inside
  the inscribed circle), lesions found, the ABCD Wasserstein-1 distances; near-copies of training
  images and the code diversity (:mod:`vqlesson.memorisation`);
- the sampling temperature, chosen on the validation images by the realism measure
  (:func:`~vqlesson.temperature.choose_temperature`) unless one is given.

Equal training time: :func:`step_seconds` times a few training steps of each prior, and
:func:`epochs_for` turns a budget in seconds into each prior's number of epochs.
:func:`prior_trial` trains one prior for the budget and measures it; :func:`measure_prior`
measures a prior trained elsewhere (notebook 04's three class-conditional priors) alike.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .codes import CodeDataset, flat_codes
from .memorisation import MemorisationConfig, diversity, memorisation
from .pixelcnn_prior import AutoregressivePrior, SampleOptions
from .prior import PriorTrainConfig, build_prior, evaluate_prior, level_data, train_prior
from .realism import RealismConfig, RealismReport, realism_report
from .runtime import model_device
from .sampling import decode_codes, sample_codes
from .temperature import TemperatureSearch, choose_temperature
from .validate import check_int, check_number
from .vqvae import DiscreteAutoencoder


@dataclass
class TrialConfig:
    """The budget and settings every prior of a comparison shares.

    Attributes:
        epochs: training epochs of each prior (when ``seconds`` is ``None``), >= 1.
        seconds: equal training time instead: each prior trains for as many epochs as fit in
            this many seconds at its measured speed (:func:`epochs_for`); ``None``: ``epochs``.
        batch_size: code maps per step, >= 1.
        lr: AdamW's peak learning rate, > 0 (a cosine schedule over the epochs).
        temperature: the sampling temperature; ``None``: chosen per prior on the validation
            images (:func:`~vqlesson.temperature.choose_temperature`).
        seed: of the weights, the training order, the samples and the tests, >= 0.
        device: where to train and sample (``None``: the best available).
    """

    epochs: int = 12
    seconds: float | None = None
    batch_size: int = 32
    lr: float = 1e-3
    temperature: float | None = None
    seed: int = 0
    device: str | None = None

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", 1)
        if self.seconds is not None:
            check_number(self.seconds, "seconds", 0, low_open=True)
        check_int(self.batch_size, "batch_size", 1)
        check_number(self.lr, "lr", 0, low_open=True)
        if self.temperature is not None:
            check_number(self.temperature, "temperature", 0)
        check_int(self.seed, "seed", 0)


class TrialImages(NamedTuple):
    """The images a comparison measures against: ``val`` (N_v, 3, S, S) for the temperature
    choice, ``test`` (N_t, 3, S, S) in the order of the test codes, and ``reconstructions``,
    the VQ-VAE's of ``test`` (:func:`~vqlesson.realism.reconstruct`); float in [-1, 1]."""

    val: Tensor
    test: Tensor
    reconstructions: Tensor


class PriorTrial(NamedTuple):
    """One prior of a comparison, trained and measured (:func:`prior_trial`).

    Attributes:
        name: its label; prior: the trained prior (best validation weights), eval mode.
        parameters: its number of parameters. epochs: epochs trained. train_seconds: wall time.
        history: :func:`~vqlesson.prior.train_prior`'s history.
        test_bits_per_code: held-out NLL in bits per code (log2 K for a uniform guess).
        temperature: the sampling temperature used; temperature_table: the choice's table
            (empty when the temperature was given).
        sample_ms: ms per image of the fast sampler (codes only, without decoding).
        samples: (N_t, 3, S, S) float in [-1, 1] on the CPU, decoded samples.
        report: the :class:`~vqlesson.realism.RealismReport` of the samples.
        near_copy_fraction: samples within 10 % of the code positions of a training image.
        diversity: the samples' code diversity (mean pairwise Hamming fraction) and
            reference_diversity the test images', in [0, 1].
    """

    name: str
    prior: AutoregressivePrior
    parameters: int
    epochs: int
    train_seconds: float
    history: dict
    test_bits_per_code: float
    temperature: float
    temperature_table: str
    sample_ms: float
    samples: Tensor
    report: RealismReport
    near_copy_fraction: float
    diversity: float
    reference_diversity: float


def step_seconds(prior: AutoregressivePrior, codes: CodeDataset, batch_size: int,
                 steps: int = 5) -> float:
    """Seconds per training step of ``prior`` (forward and backward on ``batch_size`` maps of
    ``codes``, the median of ``steps`` after one warm-up step); the weights are not changed."""
    data = level_data(prior, codes, None, "codes")
    device = model_device(prior)
    target = data.target[:batch_size].to(device)
    label = data.labels[:batch_size].to(device) if data.labels is not None else None
    cond = data.cond[:batch_size].to(device) if data.cond is not None else None
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        prior(target, label, cond).loss.backward()
        times.append(time.perf_counter() - start)
    prior.zero_grad(set_to_none=True)
    return sorted(times[1:])[len(times[1:]) // 2]


def epochs_for(seconds: float, step_s: float, maps: int, batch_size: int) -> int:
    """The epochs of ``maps`` code maps in batches of ``batch_size`` that fit in ``seconds`` at
    ``step_s`` seconds per step (at least 1)."""
    return max(1, round(seconds / (step_s * math.ceil(maps / batch_size))))


def _train(prior: AutoregressivePrior, codes: Mapping[str, CodeDataset],
           trial: TrialConfig) -> tuple[float, dict]:
    """Train ``prior`` on the codes within the trial's budget: (seconds, history)."""
    epochs = trial.epochs
    if trial.seconds is not None:
        step_s = step_seconds(prior, codes["train"], trial.batch_size)
        epochs = epochs_for(trial.seconds, step_s, len(codes["train"]), trial.batch_size)
    config = PriorTrainConfig(epochs=epochs, batch_size=trial.batch_size, lr=trial.lr,
                              lr_schedule="cosine", seed=trial.seed, progress=False,
                              early_stopping_patience=None, device=trial.device)
    start = time.perf_counter()
    history = train_prior(prior, codes["train"], codes["val"], config)
    return time.perf_counter() - start, history


def prior_trial(name: str, config: Any, vqvae: DiscreteAutoencoder,
                codes: Mapping[str, CodeDataset], images: TrialImages,
                trial: TrialConfig | None = None) -> PriorTrial:
    """Train the prior ``config`` describes on one-level codes and measure it (module docstring).

    Args:
        name: its label in tables.
        config: a :class:`~vqlesson.pixelcnn.PriorConfig` or
            :class:`~vqlesson.transformer_prior.TransformerPriorConfig` (e.g. from
            :func:`~vqlesson.configs.prior_config_for`), unconditional.
        vqvae: the VQ-VAE the codes come from.
        codes: ``{"train": ..., "val": ..., "test": ...}`` code sets of one level.
        images: :class:`TrialImages`; ``test`` and ``reconstructions`` match ``codes["test"]``.
        trial: :class:`TrialConfig`, the same for every prior compared.

    Returns:
        :class:`PriorTrial`.

    Raises:
        TypeError, ValueError: a config or codes that do not fit (see
            :func:`~vqlesson.prior.train_prior`).
    """
    trial = trial if trial is not None else TrialConfig()
    torch.manual_seed(trial.seed)
    prior = build_prior(config)
    seconds, history = _train(prior, codes, trial)
    return measure_prior(name, prior.eval(), history, vqvae, codes, images,
                         MeasureConfig(trial.temperature, trial.seed), seconds)


@dataclass
class MeasureConfig:
    """How :func:`measure_prior` samples: ``temperature`` (``None``: chosen on the validation
    images by :func:`~vqlesson.temperature.choose_temperature`), ``seed`` of the samples and the
    tests (>= 0), and ``label``: the class label of each sample, (N_t,) int64, e.g. the test
    codes' labels for a class-conditional prior (``None``: unconditional)."""

    temperature: float | None = None
    seed: int = 0
    label: Tensor | None = None


def measure_prior(name: str, prior: AutoregressivePrior, history: dict, vqvae: DiscreteAutoencoder,
                  codes: Mapping[str, CodeDataset], images: TrialImages,
                  measure: MeasureConfig | None = None,
                  train_seconds: float | None = None) -> PriorTrial:
    """Measure a trained prior alike with the others of a comparison (module docstring): as many
    samples as test images, at the given or chosen temperature.

    Args:
        name: its label in tables. prior: trained, one level. history: its
            :func:`~vqlesson.prior.train_prior` history (epochs, and the training time when
            ``train_seconds`` is ``None``: the sum of its ``epoch_time_s``).
        vqvae, codes, images: as :func:`prior_trial`. measure: :class:`MeasureConfig`.

    Returns:
        :class:`PriorTrial`.

    Raises:
        ValueError: labels without a temperature (the choice here is unconditional).
    """
    measure = measure if measure is not None else MeasureConfig()
    table, temperature = "", measure.temperature
    if temperature is None:
        if measure.label is not None:
            raise ValueError("measure_prior: give MeasureConfig.temperature for labelled samples "
                             "(choose it with choose_temperature and the validation labels)")
        choice = choose_temperature(vqvae, (prior,), images.val, TemperatureSearch(seed=measure.seed))
        table, temperature = choice.table, choice.temperature
    n = len(images.test)
    generator = torch.Generator(device=model_device(vqvae)).manual_seed(measure.seed)
    start = time.perf_counter()
    sampled = sample_codes(vqvae, (prior,), n, measure.label, generator,
                           SampleOptions(temperature=temperature))
    sample_ms = 1000 * (time.perf_counter() - start) / n
    samples = decode_codes(vqvae, sampled).float().cpu()  # (n, 3, S, S)
    report = realism_report(samples, images.reconstructions, images.test,
                            RealismConfig(seed=measure.seed))
    sample_flat = flat_codes(tuple(c.cpu() for c in sampled), "samples")
    copies = memorisation(sample_flat, flat_codes(codes["train"], "train"),
                          near_copy_hamming=MemorisationConfig().near_copy_hamming)
    seconds = train_seconds if train_seconds is not None else sum(history.get("epoch_time_s", []))
    return PriorTrial(
        name, prior, sum(p.numel() for p in prior.parameters()), len(history.get("epoch", [])),
        seconds, history, evaluate_prior(prior, codes["test"])["bits_per_code"], temperature,
        table, sample_ms, samples, report, copies.near_copy_fraction,
        diversity(sample_flat, samples).code_hamming,
        diversity(codes["test"], images.test).code_hamming)


def trial_table(trials: list[PriorTrial]) -> str:
    """One markdown row per prior: parameters, epochs and training time, held-out bits per
    code, sampling speed, temperature, two-sample accuracy (samples vs reconstructions),
    near-black outside / inside the circle (x real), lesions found, W1 border and TDS,
    near-copies, code diversity (x real)."""
    lines = ["| prior | parameters | epochs (train s) | test bits/code | ms/image | T | two-sample "
             "acc. | near-black out / in (x real) | lesion found | W1 border / TDS | near-copies "
             "| diversity (x real) |", "|---|" + "---|" * 11]
    for t in trials:
        r = t.report
        v, real = r.vignette["samples"], r.vignette["real"]
        w1 = r.abcd["samples"].wasserstein
        lines.append(
            f"| {t.name} | {t.parameters / 1e6:.2f} M | {t.epochs} ({t.train_seconds:.0f}) | "
            f"{t.test_bits_per_code:.3f} | {t.sample_ms:.1f} | {t.temperature:g} | "
            f"{r.two_sample['samples vs reconstructions'].accuracy:.3f} | "
            f"{v.outside / real.outside:.2f} / {v.inside / max(real.inside, 1e-9):.2f} | "
            f"{r.lesion_found['samples']:.0%} | {w1['border']:.2f} / {w1['score']:.2f} | "
            f"{t.near_copy_fraction:.0%} | {t.diversity / t.reference_diversity:.2f} |")
    return "\n".join(lines)
