"""Equal-budget side studies of notebook 02: seeded runs, their spread, batch-size sweeps.

A comparison teaches something only if it can show a difference: each arm is trained with the
same budget (epochs over the same images) and the spread between two seeds of one arm tells a
difference from noise. The models are the VQ-VAE of van den Oord, Vinyals & Kavukcuoglu 2017
(:class:`~vqlesson.vqvae.VQVAE`) and the Gaussian VAE baseline (:class:`~vqlesson.vqvae.VAE`);
the per-batch perplexity is the perplexity of one batch's code
usage, averaged over batches, grows with the batch size towards that of the whole set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .metrics import perplexity_from_counts
from .runtime import seed_everything
from .train import TrainConfig, evaluate_vqvae, train_vqvae
from .validate import check_int
from .vqvae import VAE, VQVAE, VAEConfig, VQVAEConfig


class SideRun(NamedTuple):
    """One trained arm of a comparison.

    Attributes:
        label: what was varied (``"VAE"``, ``"K=16"``...).
        seed: the run's seed (weights and shuffle).
        batch_size: the training batch size.
        history: per-epoch lists of :func:`~vqlesson.train.train_vqvae` (``step_loss`` per step).
        metrics: :func:`~vqlesson.train.evaluate_vqvae` on the evaluation loader (``psnr`` dB,
            ``ssim``, and for a VQ-VAE ``perplexity``, ``active_fraction``, ``bits_per_image``).
        model: the trained model, in eval mode, on the device it trained on.
        seconds: training time in seconds.
    """

    label: str
    seed: int
    batch_size: int
    history: dict
    metrics: dict
    model: nn.Module
    seconds: float


def with_batch_size(loader: DataLoader, batch_size: int, seed: int = 0) -> DataLoader:
    """The same training data set, shuffled by a generator seeded with ``seed``, in batches of
    ``batch_size`` (the last incomplete batch dropped when the set is larger than a batch).

    Raises:
        ValueError: ``batch_size`` < 1.
    """
    check_int(batch_size, "batch_size", 1)
    dataset = loader.dataset
    return DataLoader(dataset, batch_size=batch_size, shuffle=True,
                      drop_last=len(dataset) > batch_size,
                      generator=torch.Generator().manual_seed(seed),
                      num_workers=loader.num_workers)


def side_run(label: str, config: VQVAEConfig | VAEConfig, train_loader: DataLoader,
             eval_loader: Iterable, train_config: TrainConfig, seed: int = 0,
             batch_size: int | None = None) -> SideRun:
    """Train a fresh VQ-VAE or VAE of ``config`` with ``train_config`` (no checkpoint) and
    evaluate it.

    Args:
        label: the arm's name.
        config: a :class:`VQVAEConfig` (-> :class:`VQVAE`) or :class:`VAEConfig` (-> :class:`VAE`).
        train_loader: training batches; rebuilt with ``batch_size`` when that is given.
        eval_loader: held-out batches for the metrics.
        train_config: epochs, optimiser, learning rate; its seed is replaced by ``seed``.
        seed: seeds the weights and the shuffle.
        batch_size: training batch size; ``None``: the loader's.

    Raises:
        TypeError: ``config`` is neither a ``VQVAEConfig`` nor a ``VAEConfig``.
    """
    if not isinstance(config, (VQVAEConfig, VAEConfig)):
        raise TypeError(f"config must be a VQVAEConfig or VAEConfig, got {type(config).__name__}")
    batch_size = batch_size or train_loader.batch_size
    loader = with_batch_size(train_loader, batch_size, seed)
    seed_everything(seed)
    model = VQVAE(config) if isinstance(config, VQVAEConfig) else VAE(config)
    run_config = dataclasses.replace(train_config, seed=seed, checkpoint_path=None, resume=False)
    start = time.perf_counter()
    history = train_vqvae(model, loader, None, run_config)
    seconds = time.perf_counter() - start
    metrics = evaluate_vqvae(model, eval_loader)
    return SideRun(label, seed, batch_size, history, metrics, model.eval(), seconds)


class Spread(NamedTuple):
    """A metric over the seeds of one arm: ``mean``, ``low``, ``high`` (``high - low`` is the
    spread between seeds) and ``values`` in seed order."""

    mean: float
    low: float
    high: float
    values: list[float]


def spread(runs: Sequence[SideRun], key: str) -> Spread:
    """Mean and range of ``metrics[key]`` over ``runs`` (the seeds of one arm).

    Raises:
        ValueError: no runs, or ``key`` missing from a run's metrics.
    """
    if not runs:
        raise ValueError("spread needs at least one run")
    missing = [r.label for r in runs if key not in r.metrics]
    if missing:
        raise ValueError(f"metric {key!r} is not in the metrics of {missing}")
    values = [float(r.metrics[key]) for r in runs]
    return Spread(sum(values) / len(values), min(values), max(values), values)


def perplexity_by_batch_size(codes: Tensor, codebook_size: int,
                             batch_sizes: Sequence[int]) -> dict[int, float]:
    """Mean per-batch perplexity of the code usage when ``codes`` are cut into batches.

    Args:
        codes: (N, H, W) int64 in [0, K), e.g. the codes of a validation set
            (``extract_codes(model, loader).codes``, :func:`~vqlesson.codes.extract_codes`).
        codebook_size: K.
        batch_sizes: sizes to cut into (consecutive images; a last, smaller batch is dropped
            unless it is the only one).

    Returns:
        batch size -> the mean over batches of ``exp(-sum p log p)`` of that batch's usage;
        ``codes.shape[0]`` (one batch, the whole set) is always included.

    Raises:
        ValueError: a batch size < 1, or no codes.
    """
    n = codes.shape[0]
    if n == 0:
        raise ValueError("perplexity_by_batch_size needs at least one code map")
    result = {}
    for b in sorted(set(int(s) for s in batch_sizes) | {n}):
        b = min(check_int(b, "a batch size", 1), n)
        values = [float(perplexity_from_counts(torch.bincount(codes[i:i + b].reshape(-1),
                                                              minlength=codebook_size)))
                  for i in range(0, n - b + 1, b)]
        result[b] = sum(values) / len(values)
    return result
