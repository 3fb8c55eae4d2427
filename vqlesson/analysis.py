"""Test-set failure analysis, the measurements of the model itself: encoding, reconstruction,
codebook usage and the prior's NLL.

A VQ-VAE plus an autoregressive prior over its codes (van den Oord et al. 2017, §3.3 and §4;
Razavi et al. 2019, §3.2 for the two-level version) can look fine on the training set and still
fail on held-out data. This module turns that into numbers, one question per section:

- **Encoding** (:func:`encode_dataset`): a data set's images and codes, in its own order.
- **Reconstruction**, train against test: per-image MSE, PSNR and SSIM, by class, and the worst
  test reconstructions with their error maps.
- **Codebook usage**, train against test: usage counts and perplexity per split, and the codes
  the test set uses that training barely did.
- **Prior NLL**: the NLL in bits per code of train, validation and test across the training
  epochs (:class:`NLLTracker`), where validation NLL turns up (:func:`generalisation_gap`),
  per-position surprise maps ``-log2 p(c_i | c_<i)``, and the NLL of a code set under the
  priors of all its levels (:func:`prior_bits_per_code`).

What the *samples* do (their diversity, near-copies of training images, the remedy table) is
:mod:`vqlesson.memorisation`'s job. Every function takes tensors, datasets or loaders and returns
numbers or small NamedTuples; figures live in :mod:`vqlesson.plots`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .codes import CodeDataset, extract_codes, flat_codes
from .metrics import mse, perplexity_from_counts, psnr, ssim, to_unit_range
from .pixelcnn import check_condition
from .pixelcnn_prior import AutoregressivePrior, nll
from .prior import evaluate_prior, level_data
from .runtime import eval_mode, model_device
from .validate import check_codes, check_images, check_int, check_number

METRICS = ("mse", "psnr", "ssim")


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
@dataclass
class AnalysisConfig:
    """The settings of the reconstruction and usage analysis (the pipeline, notebook 05); those
    of the samples are :class:`~vqlesson.memorisation.MemorisationConfig`.

    Attributes:
        worst_k: how many of the worst test reconstructions to show, >= 1.
        rare_fraction: a code is "barely used" in training when it takes less than this fraction
            of the training code positions, in [0, 1).

    Raises:
        ValueError: a value out of range.
    """

    worst_k: int = 8
    rare_fraction: float = 1e-4

    def __post_init__(self) -> None:
        check_int(self.worst_k, "worst_k", 1)
        check_number(self.rare_fraction, "rare_fraction", 0, 1, high_open=True)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------
def _iter_images(data: Any, batch_size: int) -> Iterable[tuple[Tensor, Tensor]]:
    """Batches ``(images (B, C, H, W), labels (B,))`` from a tensor, a dataset or a loader.

    Raises:
        TypeError: ``data`` yields something that is not an image batch.
    """
    if isinstance(data, Tensor):
        check_images(data, "images")
        for chunk in data.split(batch_size):
            yield chunk, torch.full((chunk.shape[0],), -1, dtype=torch.long)
        return
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    for batch in data:
        if isinstance(batch, Tensor):
            x, y = batch, torch.full((batch.shape[0],), -1, dtype=torch.long)
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], Tensor):
            x, y = batch[0], torch.as_tensor(batch[1]).long()
        else:
            raise TypeError(
                "data must yield image batches (B, C, H, W) or (images, labels) pairs, got "
                f"{type(batch).__name__}"
            )
        check_images(x, "data")
        yield x, y


class EncodedSplit(NamedTuple):
    """A data split's images and their codes, in the data set's own order.

    Attributes:
        images: (N, C, H, W) float in [-1, 1], on the CPU.
        codes: :class:`~vqlesson.prior.CodeDataset` of the same N images (labels included).
    """

    images: Tensor
    codes: CodeDataset


def encode_dataset(vqvae: nn.Module, dataset: Any, batch_size: int = 64,
                   classes: Sequence[str] | None = None) -> EncodedSplit:
    """Encode a whole data set in its own order (no shuffling, no dropped batch), keeping the
    images, so that images, codes and indices line up (for nearest-neighbour searches); the
    codes come from :func:`~vqlesson.codes.extract_codes`.

    Args:
        vqvae: a frozen VQ-VAE or VQ-VAE-2.
        dataset: a Dataset of ``(image (C, H, W) in [-1, 1], label)``, e.g.
            ``make_loaders(..., augment=False).train.dataset``.
        batch_size: images per forward pass.
        classes: class names stored with the codes (default: ``dataset.classes`` if any).

    Raises:
        TypeError: a model or data set of the wrong kind; ValueError: an empty data set.
    """
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    images = torch.cat([x for x, _ in _iter_images(loader, batch_size)]).float()  # (N, C, H, W)
    if classes is None:
        classes = getattr(dataset, "classes", None)
    return EncodedSplit(images, extract_codes(vqvae, loader, classes=classes))


# --------------------------------------------------------------------------------------------
# Reconstruction, train against test
# --------------------------------------------------------------------------------------------
class ReconstructionScores(NamedTuple):
    """Per-image reconstruction quality of one split.

    Attributes:
        mse: (N,) float, mean squared error on [-1, 1] images.
        psnr: (N,) float, dB on [0, 1] images (higher is better).
        ssim: (N,) float in [-1, 1] (1: identical).
        labels: (N,) int64 class indices (-1: unlabelled).
    """

    mse: Tensor
    psnr: Tensor
    ssim: Tensor
    labels: Tensor


class WorstReconstructions(NamedTuple):
    """The k worst-reconstructed images of a split (lowest PSNR first).

    Attributes:
        index: (k,) int64 positions in the data set.
        images: (k, C, H, W) float in [-1, 1].
        reconstructions: (k, C, H, W) float in [-1, 1].
        error_maps: (k, H, W) float, squared error on [0, 1] images averaged over channels.
        psnr: (k,) float, dB.
        labels: (k,) int64.
    """

    index: Tensor
    images: Tensor
    reconstructions: Tensor
    error_maps: Tensor
    psnr: Tensor
    labels: Tensor


@torch.no_grad()
def reconstruction_scores(model: nn.Module, data: Any, batch_size: int = 64,
                          progress: bool = False) -> ReconstructionScores:
    """Per-image MSE, PSNR and SSIM of an autoencoder's reconstructions (eval mode, no_grad).

    Args:
        model: a VQ-VAE, VQ-VAE-2 or VAE: ``model(x).x_hat`` (B, C, H, W) in [-1, 1].
        data: (N, C, H, W) float images in [-1, 1], a Dataset of ``(image, label)`` or a loader
            yielding ``(images, labels)``. Keep the order fixed (no shuffling) to match indices.
        batch_size: images per forward pass (tensors and datasets).
        progress: a tqdm bar over the batches.

    Returns:
        :class:`ReconstructionScores`, tensors on the CPU.

    Raises:
        TypeError: data that is not images; ValueError: no images.
    """
    device = model_device(model)
    parts: dict[str, list[Tensor]] = {k: [] for k in (*METRICS, "labels")}
    with eval_mode(model):
        for x, y in tqdm(_iter_images(data, batch_size), disable=not progress, desc="scoring",
                         unit="batch"):
            x_hat = model(x.to(device)).x_hat.float().cpu()
            x = x.float().cpu()
            parts["mse"].append(mse(x, x_hat, reduction="none"))
            parts["psnr"].append(psnr(x, x_hat, reduction="none"))
            parts["ssim"].append(ssim(x, x_hat, reduction="none"))
            parts["labels"].append(y.long().cpu())
    if not parts["mse"]:
        raise ValueError("data holds no images to score")
    return ReconstructionScores(**{k: torch.cat(v) for k, v in parts.items()})


def scores_by_class(scores: ReconstructionScores, classes: Sequence[str] = ()
                    ) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of each metric, per class and over all images.

    Args:
        scores: from :func:`reconstruction_scores`.
        classes: class names (index -> name); unnamed labels are shown as their number.

    Returns:
        ``{group: {"n": count, "mse": mean, "mse_std": std, "psnr": ..., "ssim": ...}}`` with the
        group ``"all"`` first, then each label present in order (``-1`` as ``"unlabelled"``).
    """
    groups: dict[str, Tensor] = {"all": torch.ones_like(scores.labels, dtype=torch.bool)}
    for label in sorted(set(scores.labels.tolist())):
        name = "unlabelled" if label < 0 else (classes[label] if label < len(classes) else str(label))
        groups[name] = scores.labels == label
    table: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        row: dict[str, float] = {"n": float(mask.sum())}
        for metric in METRICS:
            values = getattr(scores, metric)[mask].double()
            row[metric] = float(values.mean())
            row[f"{metric}_std"] = float(values.std()) if values.numel() > 1 else 0.0
        table[name] = row
    return table


@torch.no_grad()
def worst_reconstructions(model: nn.Module, dataset: Any, scores: ReconstructionScores,
                          k: int = 8) -> WorstReconstructions:
    """The ``k`` images of ``dataset`` with the lowest PSNR, reconstructed, with error maps.

    Args:
        model: the autoencoder that produced ``scores``.
        dataset: (N, C, H, W) tensor or an indexable Dataset of ``(image, label)``, in the order
            ``scores`` was computed.
        scores: :func:`reconstruction_scores` of the same data.
        k: how many (at most N), >= 1.

    Raises:
        ValueError: ``k`` < 1, or ``scores`` and ``dataset`` of different lengths.
    """
    check_int(k, "k", 1)
    if len(dataset) != len(scores.psnr):
        raise ValueError(
            f"scores hold {len(scores.psnr)} images but dataset has {len(dataset)}; score the "
            "same data set, in the same order"
        )
    order = torch.argsort(scores.psnr)[:k]  # (k,) lowest PSNR first
    images = torch.stack([dataset[int(i)] if isinstance(dataset, Tensor) else dataset[int(i)][0]
                          for i in order]).float()  # (k, C, H, W)
    with eval_mode(model):
        recon = model(images.to(model_device(model))).x_hat.float().cpu()  # (k, C, H, W)
    error = (to_unit_range(images) - to_unit_range(recon)).pow(2).mean(dim=1)  # (k, H, W)
    return WorstReconstructions(order, images, recon, error, scores.psnr[order],
                                scores.labels[order])


# --------------------------------------------------------------------------------------------
# Codebook usage, train against test
# --------------------------------------------------------------------------------------------
class UsageComparison(NamedTuple):
    """How one level's codebook is used on the training set and on the test set.

    Attributes:
        train_counts: (K,) int64, how often each code occurs in the training codes.
        test_counts: (K,) int64, the same on the test set.
        train_perplexity: float in [1, K], ``exp(entropy)`` of the training usage.
        test_perplexity: float in [1, K].
        train_active: fraction of the K codes used at least once in training, in [0, 1].
        test_active: the same on the test set.
        test_only_codes: (M,) int64, codes the test set uses whose training frequency is below
            ``rare_fraction`` ("barely used"), sorted by test count, most used first.
        test_only_fraction: fraction of the test code positions that fall on those codes.
    """

    train_counts: Tensor
    test_counts: Tensor
    train_perplexity: float
    test_perplexity: float
    train_active: float
    test_active: float
    test_only_codes: Tensor
    test_only_fraction: float


def code_counts(codes: object, codebook_size: int) -> Tensor:
    """How often each code occurs: (N, H, W) integer codes in [0, K) -> (K,) int64.

    Raises:
        TypeError: not integer codes; ValueError: codes outside [0, codebook_size).
    """
    flat = flat_codes(codes, "codes", codebook_size).reshape(-1)  # (N*L,)
    return torch.bincount(flat, minlength=codebook_size).long()  # (K,)


def compare_usage(train_codes: object, test_codes: object, codebook_size: int,
                  rare_fraction: float = 1e-4) -> UsageComparison:
    """Compare one level's code usage on two splits.

    Args:
        train_codes, test_codes: (N, H, W) integer code maps of one level (or one-level
            :class:`~vqlesson.prior.CodeDataset`).
        codebook_size: K of that level.
        rare_fraction: training frequency below which a code counts as barely used, in [0, 1).

    Raises:
        ValueError: ``rare_fraction`` out of range; codes out of range.
    """
    check_number(rare_fraction, "rare_fraction", 0, 1, high_open=True)
    train = code_counts(train_codes, codebook_size)  # (K,)
    test = code_counts(test_codes, codebook_size)  # (K,)
    train_freq = train.double() / max(int(train.sum()), 1)  # (K,)
    rare = (test > 0) & (train_freq < rare_fraction)  # (K,) bool
    test_only = torch.nonzero(rare).flatten()  # (M,)
    test_only = test_only[torch.argsort(test[test_only], descending=True, stable=True)]
    return UsageComparison(
        train, test,
        float(perplexity_from_counts(train)), float(perplexity_from_counts(test)),
        float((train > 0).double().mean()), float((test > 0).double().mean()),
        test_only, float(test[test_only].sum()) / max(int(test.sum()), 1),
    )


def compare_usage_levels(train_codes: CodeDataset, test_codes: CodeDataset,
                         rare_fraction: float = 1e-4) -> dict[str, UsageComparison]:
    """:func:`compare_usage` for every level of two code sets: ``{"codes": ...}`` for a VQ-VAE,
    ``{"top": ..., "bottom": ...}`` for a VQ-VAE-2.

    Raises:
        TypeError: not CodeDatasets; ValueError: the two sets have other levels or K.
    """
    for name, codes in (("train_codes", train_codes), ("test_codes", test_codes)):
        if not isinstance(codes, CodeDataset):
            raise TypeError(f"{name} must be a CodeDataset, got {type(codes).__name__}")
    if train_codes.codebook_sizes != test_codes.codebook_sizes:
        raise ValueError(
            f"the code sets come from different models: levels/K {train_codes.codebook_sizes} "
            f"and {test_codes.codebook_sizes}"
        )
    return {name: compare_usage(train_codes.level(name), test_codes.level(name), k, rare_fraction)
            for name, k in train_codes.codebook_sizes.items()}


# --------------------------------------------------------------------------------------------
# The prior's NLL
# --------------------------------------------------------------------------------------------
class GapSummary(NamedTuple):
    """Where a prior's validation NLL turns up (from a :func:`~vqlesson.prior.train_prior`
    history; all NLLs in bits per code).

    Attributes:
        best_epoch: the epoch (1-based) of the lowest validation NLL.
        best_val: validation NLL at that epoch.
        final_epoch: the last epoch trained.
        final_train: training NLL at the last epoch.
        final_val: validation NLL at the last epoch.
        gap_at_best: validation minus training NLL at the best epoch.
        final_gap: validation minus training NLL at the last epoch.
        overfit_epochs: epochs trained after the best one (0: no sign of overfitting yet).
    """

    best_epoch: int
    best_val: float
    final_epoch: int
    final_train: float
    final_val: float
    gap_at_best: float
    final_gap: float
    overfit_epochs: int


def generalisation_gap(history: Mapping[str, Sequence[float]]) -> GapSummary:
    """Summarise the train/validation NLL curves of a prior's training history.

    Args:
        history: needs per-epoch ``epoch``, ``train_bits_per_code`` and ``val_bits_per_code``.

    Raises:
        ValueError: a history without validation NLL (train with ``val_codes``) or no epochs.
    """
    missing = [k for k in ("epoch", "train_bits_per_code", "val_bits_per_code")
               if not history.get(k)]
    if missing:
        raise ValueError(
            f"history lacks {missing}; train the prior with validation codes "
            "(train_prior(prior, train_codes, val_codes, ...))"
        )
    epochs = list(history["epoch"])
    train = list(history["train_bits_per_code"])
    val = list(history["val_bits_per_code"])
    best = min(range(len(val)), key=val.__getitem__)
    return GapSummary(int(epochs[best]), float(val[best]), int(epochs[-1]), float(train[-1]),
                      float(val[-1]), float(val[best] - train[best]), float(val[-1] - train[-1]),
                      int(epochs[-1] - epochs[best]))


class NLLTracker:
    """A :func:`~vqlesson.prior.train_prior` callback that records the NLL of extra splits
    (e.g. the test set) after every epoch, so train, validation and test curves can be drawn.

    The test set never steers training: the tracker only reads it. Use it for the analysis, not
    for choosing epochs (that is the validation set's job).

    Args:
        prior: the prior being trained (the same object given to ``train_prior``).
        splits: ``{"test": test_codes, ...}``, :class:`~vqlesson.prior.CodeDataset` each.
        level: ``"top"``/``"bottom"`` for VQ-VAE-2 codes, ``None`` for VQ-VAE codes.
        batch_size: code maps per forward pass.

    Attributes:
        history: ``{"epoch": [...], "<split>_bits_per_code": [...]}``; a resumed run records
            only the epochs it trains.
    """

    def __init__(self, prior: AutoregressivePrior, splits: Mapping[str, CodeDataset],
                 level: str | None = None, batch_size: int = 64) -> None:
        if not isinstance(prior, AutoregressivePrior):
            raise TypeError(f"prior must be a PixelCNNPrior or TransformerPrior, got "
                            f"{type(prior).__name__}")
        if not splits:
            raise ValueError("splits must name at least one code set, e.g. {'test': test_codes}")
        for name, codes in splits.items():
            level_data(prior, codes, level, f"splits[{name!r}]")  # fail now, not after epoch 1
        self.prior, self.splits, self.level, self.batch_size = prior, dict(splits), level, batch_size
        self.history: dict[str, list[float]] = {"epoch": []}

    def __call__(self, history: Mapping[str, Sequence[float]]) -> None:
        self.history["epoch"].append(int(history["epoch"][-1]))
        for name, codes in self.splits.items():
            result = evaluate_prior(self.prior, codes, level=self.level, batch_size=self.batch_size)
            self.history.setdefault(f"{name}_bits_per_code", []).append(result["bits_per_code"])


@torch.no_grad()
def surprise_maps(prior: AutoregressivePrior, codes: CodeDataset | Tensor, level: str | None = None,
                  labels: Tensor | None = None, cond_map: Tensor | None = None,
                  batch_size: int = 64) -> Tensor:
    """Per-position surprise ``-log2 p(c_i | c_<i)`` of code maps under a prior (eval mode).

    Positions the prior finds unlikely (high surprise) show where a test lesion differs from
    what training taught it; their mean is the NLL in bits per code.

    Args:
        prior: a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` or
            :class:`~vqlesson.transformer_prior.TransformerPrior`.
        codes: a :class:`~vqlesson.prior.CodeDataset` (labels and top-level conditioning are
            taken from it as the prior needs), or (N, H, W) int64 codes in [0, K).
        level: for a VQ-VAE-2 CodeDataset, ``"top"`` or ``"bottom"``.
        labels: (N,) int64, only with tensor ``codes`` and a class-conditional prior.
        cond_map: (N, h, w) int64, only with tensor ``codes`` and a spatially conditioned prior.
        batch_size: code maps per forward pass.

    Returns:
        (N, H, W) float32 bits on the CPU, each >= 0.

    Raises:
        TypeError, ValueError: codes or conditioning that do not fit the prior (values
            included: checked once here, not per batch).
    """
    if isinstance(codes, CodeDataset):
        data = level_data(prior, codes, level, "codes")
        target, labels, cond_map = data.target, data.labels, data.cond
    else:
        target = codes
        check_codes(target, prior.config.codebook_size, "codes", int64=True, nonempty=True)
        check_condition(prior.config, labels, cond_map, *target.shape, ranges=True)
    device = model_device(prior)
    out = []
    with eval_mode(prior):
        for index in torch.arange(target.shape[0]).split(batch_size):
            c = target[index].to(device)
            y = labels[index].to(device) if labels is not None else None
            m = cond_map[index].to(device) if cond_map is not None else None
            logits = prior.logits(c, y, m)  # (B, K, H, W)
            out.append(nll(logits, c, reduction="none").float().cpu())  # (B, H, W) bits
    return torch.cat(out)


def prior_bits_per_code(priors: Sequence[AutoregressivePrior], codes: CodeDataset,
                        batch_size: int = 64) -> float:
    """NLL in bits per code of a code set under its priors, a tuple of one prior per level
    (``(prior,)`` for VQ-VAE codes, ``(top_prior, bottom_prior)`` for VQ-VAE-2 codes): the
    bits of all levels add up and are divided by all positions of all grids.

    Raises:
        TypeError: not one prior per level of the codes; ValueError: priors that do not fit
            the codes.
    """
    if not isinstance(priors, (tuple, list)) or len(priors) != len(codes.levels):
        raise TypeError(f"priors must be a tuple of one prior per level of the codes "
                        f"{codes.levels}, got {type(priors).__name__}")
    bits = sum(evaluate_prior(prior, codes, level=name, batch_size=batch_size)["bits_per_image"]
               for prior, name in zip(priors, codes.levels))
    positions = sum(math.prod(codes.grid(name)) for name in codes.levels)
    return bits / positions
