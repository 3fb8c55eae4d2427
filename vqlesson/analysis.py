"""Test-set failure analysis: measuring why generated lesions "all look alike".

A VQ-VAE plus an autoregressive prior over its codes (van den Oord et al. 2017, §3.3 and §4;
Razavi et al. 2019, §3.2 for the two-level version) can look fine on the training set and still
fail on held-out data. This module turns the failure into numbers, one question per section:

1. **Reconstruction**, train against test: per-image MSE, PSNR and SSIM, by class, and the worst
   test reconstructions with their error maps.
2. **Codebook**, train against test: usage counts and perplexity per split, and the codes the
   test set uses that training barely did.
3. **Prior generalisation**: the NLL in bits per code of train, validation and test across the
   training epochs (:class:`NLLTracker`), where validation NLL turns up
   (:func:`generalisation_gap`), and per-position surprise maps ``-log2 p(c_i | c_<i)``.
4. **Sample diversity**: the mean pairwise distance between samples, in code space (Hamming) and
   in pixel space, against the same figure for real test images.
5. **Memorisation**: each sample's nearest training image (code-space Hamming and pixel RMS) and
   the fraction of samples that are near-copies.

Every function takes tensors, datasets or loaders and returns numbers or small NamedTuples;
figures live in :mod:`vqlesson.plots`. Distances are in [0, 1]: Hamming distances are the
fraction of code positions that differ, pixel distances the root-mean-square difference on
images mapped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .metrics import mse, perplexity_from_counts, psnr, ssim, to_unit_range
from .pixelcnn_prior import PixelCNNPrior, nll
from .codes import CodeDataset, extract_codes
from .prior import level_data, evaluate_prior
from .sampling import decode_codes, sample_codes
from .runtime import eval_mode
from .validate import check_codes, check_images

METRICS = ("mse", "psnr", "ssim")
LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
@dataclass
class AnalysisConfig:
    """The thresholds and sizes of a failure analysis (used by the pipeline and notebook 05).

    Attributes:
        worst_k: how many of the worst test reconstructions to show, >= 1.
        rare_fraction: a code is "barely used" in training when it takes less than this fraction
            of the training code positions, in [0, 1).
        near_copy_hamming: a sample is a near-copy of a training image when the fraction of its
            code positions that differ from that image's codes is at most this, in [0, 1].
        near_copy_pixel_rms: ... or when its pixel RMS distance to that training image (on
            [0, 1] images) is at most this, >= 0; 0 (the default) disables the pixel criterion,
            because a decoded copy of a training image's codes is only as close as the VQ-VAE's
            reconstruction (about 0.03 on the cpu profile) and plain-skin images are close to
            each other without being copies.
        num_samples: samples drawn per prior for the diversity and memorisation figures, >= 2.
        temperatures: the temperatures of the diversity-against-temperature figure, each >= 0.

    Raises:
        ValueError: a value out of range.
    """

    worst_k: int = 8
    rare_fraction: float = 1e-4
    near_copy_hamming: float = 0.1
    near_copy_pixel_rms: float = 0.0
    num_samples: int = 32
    temperatures: tuple[float, ...] = (0.3, 0.5, 0.7, 1.0)

    def __post_init__(self) -> None:
        if isinstance(self.worst_k, bool) or not isinstance(self.worst_k, int) or self.worst_k < 1:
            raise ValueError(f"worst_k must be an int >= 1, got {self.worst_k!r}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) \
                or self.num_samples < 2:
            raise ValueError(f"num_samples must be an int >= 2, got {self.num_samples!r}")
        if not 0.0 <= self.rare_fraction < 1.0:
            raise ValueError(f"rare_fraction must be in [0, 1), got {self.rare_fraction!r}")
        if not 0.0 <= self.near_copy_hamming <= 1.0:
            raise ValueError(f"near_copy_hamming must be in [0, 1], got {self.near_copy_hamming!r}")
        if not self.near_copy_pixel_rms >= 0.0:
            raise ValueError(
                f"near_copy_pixel_rms must be >= 0 (0 disables it), got {self.near_copy_pixel_rms!r}"
            )
        self.temperatures = tuple(float(t) for t in self.temperatures)
        if not self.temperatures or min(self.temperatures) < 0:
            raise ValueError(f"temperatures must be non-empty and >= 0, got {self.temperatures!r}")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


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


def flat_codes(codes: object, name: str, codebook_size: int | None = None) -> Tensor:
    """(N, ...) integer codes, a CodeDataset or a {level: (N, h, w)} dict -> (N, L) int64, one
    row per image (the levels of a VQ-VAE-2 side by side); with ``codebook_size`` the codes
    must lie in [0, K)."""
    if isinstance(codes, CodeDataset):
        codes = {level: codes.level(level) for level in codes.levels}
    if isinstance(codes, Mapping):
        return torch.cat([flat_codes(c, f"{name}[{level!r}]", codebook_size)
                          for level, c in codes.items()], dim=1)  # (N, L_top + L_bottom)
    check_codes(codes, codebook_size, name, layout="(N, H, W)", ndim=None)
    return codes.flatten(1).long()  # (N, H, W) -> (N, H*W)


def _flat_pixels(images: object, name: str) -> Tensor:
    """(N, C, H, W) images in [-1, 1] -> (N, C*H*W) float32 in [0, 1]."""
    check_images(images, name)
    return to_unit_range(images.float()).flatten(1)  # (N, C, H, W) -> (N, C*H*W)


def _check_same_width(a: Tensor, b: Tensor, names: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{names} must have the same shape per item, got {a.shape[1]} and {b.shape[1]} values "
            "per item (code maps of another grid, or images of another size?)"
        )


def _pairwise_mean(flat: Tensor, distance, chunk: int) -> float:
    """Mean of ``distance(rows_i, flat)`` over all unordered pairs i < j of the rows of ``flat``."""
    n = flat.shape[0]
    if n < 2:
        raise ValueError(f"a pairwise distance needs at least 2 items, got {n}")
    total = 0.0
    for start in range(0, n, chunk):
        d = distance(flat[start:start + chunk], flat)  # (c, N)
        rows = torch.arange(start, start + d.shape[0]).unsqueeze(1)  # (c, 1)
        upper = torch.arange(n).unsqueeze(0) > rows  # (c, N): pairs i < j only
        total += float(d[upper].double().sum())
    return total / (n * (n - 1) / 2)


def _hamming(a: Tensor, b: Tensor) -> Tensor:
    """(A, L), (B, L) int -> (A, B) float: fraction of positions that differ."""
    return (a.unsqueeze(1) != b.unsqueeze(0)).float().mean(dim=2)  # (A, B, L) -> (A, B)


def _rms(a: Tensor, b: Tensor) -> Tensor:
    """(A, P), (B, P) float -> (A, B) float: root-mean-square difference."""
    d2 = torch.cdist(a.double(), b.double()).pow(2) / a.shape[1]  # (A, B) mean squared diff
    return d2.clamp(min=0.0).sqrt().float()


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
    images, so that images, codes and indices line up (for nearest-neighbour searches).

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
# 1. Reconstruction, train against test
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
    device = _model_device(model)
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
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    if len(dataset) != len(scores.psnr):
        raise ValueError(
            f"scores hold {len(scores.psnr)} images but dataset has {len(dataset)}; score the "
            "same data set, in the same order"
        )
    order = torch.argsort(scores.psnr)[:k]  # (k,) lowest PSNR first
    images = torch.stack([dataset[int(i)] if isinstance(dataset, Tensor) else dataset[int(i)][0]
                          for i in order]).float()  # (k, C, H, W)
    with eval_mode(model):
        recon = model(images.to(_model_device(model))).x_hat.float().cpu()  # (k, C, H, W)
    error = (to_unit_range(images) - to_unit_range(recon)).pow(2).mean(dim=1)  # (k, H, W)
    return WorstReconstructions(order, images, recon, error, scores.psnr[order],
                                scores.labels[order])


# --------------------------------------------------------------------------------------------
# 2. Codebook usage, train against test
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
    if not 0.0 <= rare_fraction < 1.0:
        raise ValueError(f"rare_fraction must be in [0, 1), got {rare_fraction!r}")
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
# 3. Prior generalisation
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

    def __init__(self, prior: PixelCNNPrior, splits: Mapping[str, CodeDataset],
                 level: str | None = None, batch_size: int = 64) -> None:
        if not isinstance(prior, PixelCNNPrior):
            raise TypeError(f"prior must be a PixelCNNPrior, got {type(prior).__name__}")
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
def surprise_maps(prior: PixelCNNPrior, codes: CodeDataset | Tensor, level: str | None = None,
                  labels: Tensor | None = None, cond_map: Tensor | None = None,
                  batch_size: int = 64) -> Tensor:
    """Per-position surprise ``-log2 p(c_i | c_<i)`` of code maps under a prior (eval mode).

    Positions the prior finds unlikely (high surprise) show where a test lesion differs from
    what training taught it; their mean is the NLL in bits per code.

    Args:
        prior: a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior`.
        codes: a :class:`~vqlesson.prior.CodeDataset` (labels and top-level conditioning are
            taken from it as the prior needs), or (N, H, W) int64 codes in [0, K).
        level: for a VQ-VAE-2 CodeDataset, ``"top"`` or ``"bottom"``.
        labels: (N,) int64, only with tensor ``codes`` and a class-conditional prior.
        cond_map: (N, h, w) int64, only with tensor ``codes`` and a spatially conditioned prior.
        batch_size: code maps per forward pass.

    Returns:
        (N, H, W) float32 bits on the CPU, each >= 0.

    Raises:
        TypeError, ValueError: codes or conditioning that do not fit the prior.
    """
    if isinstance(codes, CodeDataset):
        data = level_data(prior, codes, level, "codes")
        target, labels, cond_map = data.target, data.labels, data.cond
    else:
        target = codes
    device = next(prior.parameters()).device
    out = []
    with eval_mode(prior):
        for index in torch.arange(target.shape[0]).split(batch_size):
            c = target[index].to(device)
            y = labels[index].to(device) if labels is not None else None
            m = cond_map[index].to(device) if cond_map is not None else None
            logits = prior.logits(c, y, m)  # (B, K, H, W)
            out.append(nll(logits, c, reduction="none").float().cpu())  # (B, H, W) bits
    return torch.cat(out)


# --------------------------------------------------------------------------------------------
# 4. Sample diversity
# --------------------------------------------------------------------------------------------
class Diversity(NamedTuple):
    """Mean pairwise distance within a set of images and their code maps.

    Attributes:
        code_hamming: mean fraction of code positions that differ between two items, in [0, 1]
            (0: all identical).
        pixel_rms: mean RMS pixel distance between two images on [0, 1], in [0, 1].
        n: number of items.
    """

    code_hamming: float
    pixel_rms: float
    n: int


def pairwise_hamming(codes: object, chunk: int = 256) -> float:
    """Mean Hamming distance over all unordered pairs of code maps, as a fraction of positions.

    Args:
        codes: (N, H, W) (or (N, L)) integer codes, N >= 2.
        chunk: rows compared at once (memory: chunk x N x H·W booleans).

    Returns:
        float in [0, 1]: 0 when all maps are identical, about ``1 - 1/K`` for uniform random codes.

    Raises:
        TypeError: not integer codes; ValueError: fewer than 2 maps.
    """
    return _pairwise_mean(flat_codes(codes, "codes"), _hamming, chunk)


def pairwise_pixel_distance(images: Tensor, chunk: int = 256) -> float:
    """Mean RMS distance over all unordered pairs of images, on images mapped to [0, 1].

    Args:
        images: (N, C, H, W) float in [-1, 1], N >= 2.

    Returns:
        float in [0, 1]: 0 when all images are identical.

    Raises:
        TypeError: not an image batch; ValueError: fewer than 2 images.
    """
    return _pairwise_mean(_flat_pixels(images, "images"), _rms, chunk)


def diversity(codes: object, images: Tensor) -> Diversity:
    """:func:`pairwise_hamming` of the code maps and :func:`pairwise_pixel_distance` of the
    images of one set (e.g. 32 samples, or 32 real test lesions for reference).

    Raises:
        ValueError: different numbers of code maps and images, or fewer than 2.
    """
    flat = flat_codes(codes, "codes")
    if flat.shape[0] != images.shape[0]:
        raise ValueError(f"{flat.shape[0]} code maps but {images.shape[0]} images; pass pairs")
    return Diversity(pairwise_hamming(flat), pairwise_pixel_distance(images), int(flat.shape[0]))


# --------------------------------------------------------------------------------------------
# 5. Memorisation
# --------------------------------------------------------------------------------------------
class NearestNeighbours(NamedTuple):
    """For each query, the closest reference.

    Attributes:
        index: (N,) int64, position of the nearest reference.
        distance: (N,) float in [0, 1], Hamming fraction or pixel RMS on [0, 1] images.
    """

    index: Tensor
    distance: Tensor


class Memorisation(NamedTuple):
    """Which samples are near-copies of training images.

    Attributes:
        code: :class:`NearestNeighbours` in code space (Hamming).
        pixel: :class:`NearestNeighbours` in pixel space (RMS), or ``None`` without images.
        near_copy: (N,) bool, the code distance is <= ``near_copy_hamming`` or the pixel
            distance <= ``near_copy_pixel_rms``.
        near_copy_fraction: float in [0, 1].
    """

    code: NearestNeighbours
    pixel: NearestNeighbours | None
    near_copy: Tensor
    near_copy_fraction: float


def nearest_neighbours(queries: object, references: object, metric: str = "hamming",
                       chunk: int = 256) -> NearestNeighbours:
    """The nearest reference of every query.

    Args:
        queries, references: ``metric="hamming"``: (N, H, W) and (M, H, W) integer codes;
            ``metric="l2"``: (N, C, H, W) and (M, C, H, W) float images in [-1, 1].
        metric: ``"hamming"`` (fraction of differing positions) or ``"l2"`` (RMS on [0, 1]).
        chunk: queries compared at once.

    Returns:
        :class:`NearestNeighbours` (ties: the lowest reference index).

    Raises:
        ValueError: unknown metric, no references, or items of different shapes.
        TypeError: codes that are not integers, images that are not float (N, C, H, W).
    """
    if metric == "hamming":
        q, r, distance = flat_codes(queries, "queries"), flat_codes(references, "references"), _hamming
    elif metric == "l2":
        q, r, distance = _flat_pixels(queries, "queries"), _flat_pixels(references, "references"), _rms
    else:
        raise ValueError(f"metric must be 'hamming' (codes) or 'l2' (images), got {metric!r}")
    if r.shape[0] == 0:
        raise ValueError("references is empty; give at least one training item")
    _check_same_width(q, r, "queries and references")
    index, dist = [], []
    for start in range(0, q.shape[0], chunk):
        d = distance(q[start:start + chunk], r)  # (c, M)
        value, where = d.min(dim=1)  # (c,), (c,): min returns the first minimum
        index.append(where)
        dist.append(value)
    return NearestNeighbours(torch.cat(index).long(), torch.cat(dist).float())


def memorisation(sample_codes: object, train_codes: object, sample_images: Tensor | None = None,
                 train_images: Tensor | None = None, near_copy_hamming: float = 0.1,
                 near_copy_pixel_rms: float = 0.0) -> Memorisation:
    """Find each sample's nearest training item and flag near-copies.

    Args:
        sample_codes: (N, H, W) integer codes of the samples.
        train_codes: (M, H, W) integer codes of the training images.
        sample_images, train_images: optional (N, ...) and (M, C, H, W) images in [-1, 1] for the
            pixel-space neighbours (both or neither).
        near_copy_hamming: code-distance threshold in [0, 1].
        near_copy_pixel_rms: pixel-distance threshold >= 0 (0 disables it).

    Raises:
        ValueError: only one of the two image sets, or thresholds out of range.
    """
    if (sample_images is None) != (train_images is None):
        raise ValueError("give both sample_images and train_images, or neither")
    if not 0.0 <= near_copy_hamming <= 1.0 or near_copy_pixel_rms < 0:
        raise ValueError(
            f"near_copy_hamming must be in [0, 1] and near_copy_pixel_rms >= 0, got "
            f"{near_copy_hamming!r} and {near_copy_pixel_rms!r}"
        )
    code = nearest_neighbours(sample_codes, train_codes, "hamming")
    near = code.distance <= near_copy_hamming  # (N,)
    pixel = None
    if sample_images is not None:
        pixel = nearest_neighbours(sample_images, train_images, "l2")
        if near_copy_pixel_rms > 0:
            near = near | (pixel.distance <= near_copy_pixel_rms)
    return Memorisation(code, pixel, near, float(near.float().mean()) if near.numel() else 0.0)


# --------------------------------------------------------------------------------------------
# The remedy table: one row per prior and sampling setting
# --------------------------------------------------------------------------------------------
class RemedyResult(NamedTuple):
    """One row of the remedy table (notebook 05, the pipeline's report).

    Attributes:
        name: the remedy.
        test_bits_per_code: the prior's test NLL, bits per code (lower is better).
        code_hamming: sample diversity in code space (higher is more diverse), in [0, 1].
        pixel_rms: sample diversity in pixel space, in [0, 1].
        near_copy_fraction: fraction of samples that are near-copies of training images.
        samples: (N, C, H, W) the samples, in [-1, 1].
        sample_codes: (N, L) int64, their code maps flattened (VQ-VAE-2: both levels).
        memorisation: the :class:`Memorisation` behind ``near_copy_fraction``.
    """

    name: str
    test_bits_per_code: float
    code_hamming: float
    pixel_rms: float
    near_copy_fraction: float
    samples: Tensor
    sample_codes: Tensor
    memorisation: Memorisation


def prior_bits_per_code(priors: Any, codes: CodeDataset, batch_size: int = 64) -> float:
    """NLL in bits per code of a code set under its prior(s): one prior for VQ-VAE codes;
    ``(top_prior, bottom_prior)`` or ``{"top", "bottom"}`` for VQ-VAE-2 codes, whose bits add up
    over both levels and are divided by all positions of both grids.

    Raises:
        TypeError, ValueError: priors that do not fit the codes.
    """
    if codes.levels == ("codes",):
        prior = priors[0] if isinstance(priors, (tuple, list)) and len(priors) == 1 else priors
        return evaluate_prior(prior, codes, batch_size=batch_size)["bits_per_code"]
    pair = dict(priors) if isinstance(priors, Mapping) else dict(zip(("top", "bottom"), priors))
    bits = sum(evaluate_prior(pair[level], codes, level=level, batch_size=batch_size)
               ["bits_per_image"] for level in ("top", "bottom"))
    positions = sum(math.prod(codes.grid(level)) for level in ("top", "bottom"))
    return bits / positions


@torch.no_grad()
def evaluate_remedy(name: str, vqvae: nn.Module, priors: Any, test_codes: CodeDataset | None,
                    train_codes: CodeDataset | Tensor, train_images: Tensor | None = None,
                    config: AnalysisConfig | None = None, temperature: float = 1.0,
                    label: int | Tensor | None = None, generator: torch.Generator | None = None
                    ) -> RemedyResult:
    """Test NLL, sample diversity and near-copy fraction of one prior setting.

    Args:
        name: the row's name.
        vqvae: the frozen VQ-VAE (or VQ-VAE-2) whose codes the prior(s) model.
        priors: one :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior`, or ``(top_prior, bottom_prior)``
            for a VQ-VAE-2 (as :func:`~vqlesson.prior.sample_images`).
        test_codes: :class:`~vqlesson.prior.CodeDataset` of the test split (for the NLL);
            ``None`` skips the NLL (``test_bits_per_code`` is then NaN).
        train_codes: the memorisation references: the training :class:`~vqlesson.prior.CodeDataset`,
            or (M, H, W) int64 code maps (e.g. with augmented versions added).
        train_images: optional (M, C, H, W) training images in [-1, 1] (same order as
            ``train_codes``) for the pixel-space near-copy test.
        config: thresholds and ``num_samples`` (:class:`AnalysisConfig` defaults when ``None``).
        temperature: sampling temperature (0: greedy).
        label: class label(s) for class-conditional priors (``None``: the classes in turn).
        generator: for reproducible samples.

    Returns:
        :class:`RemedyResult`; for a VQ-VAE-2 the code distances count the positions of both
        levels and ``sample_codes`` holds them side by side, (N, L_top + L_bottom).

    Raises:
        TypeError, ValueError: priors that do not fit the VQ-VAE or the codes, or arguments
            that :meth:`~vqlesson.pixelcnn_prior.PixelCNNPrior.sample` rejects.
    """
    config = config if config is not None else AnalysisConfig()
    n = config.num_samples
    members = list(priors.values()) if isinstance(priors, Mapping) else (
        list(priors) if isinstance(priors, (tuple, list)) else [priors])
    num_classes = max(p.config.num_classes for p in members)
    if num_classes and label is None:
        label = torch.arange(n) % num_classes  # (n,) the classes in turn
    test_bits = prior_bits_per_code(priors, test_codes) if test_codes is not None else math.nan
    codes = sample_codes(vqvae, priors, n, label if num_classes else None,
                         temperature=temperature, generator=generator)
    images = decode_codes(vqvae, codes).float().cpu()  # (n, C, S, S)
    flat = flat_codes({k: v.cpu() for k, v in codes.items()}, "samples")  # (n, L)
    spread = diversity(flat, images)
    memo = memorisation(flat, flat_codes(train_codes, "train_codes"),
                        images if train_images is not None else None, train_images,
                        config.near_copy_hamming, config.near_copy_pixel_rms)
    return RemedyResult(name, test_bits, spread.code_hamming, spread.pixel_rms,
                        memo.near_copy_fraction, images, flat, memo)


def remedy_table(results: Sequence[RemedyResult], reference: Diversity | None = None) -> str:
    """A markdown table of remedy results (and the real test images' diversity for reference).

    Returns:
        The table as a string, one row per result.
    """
    lines = ["| remedy | test NLL (bits/code) | diversity, codes (Hamming) | "
             "diversity, pixels (RMS) | near-copies |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.test_bits_per_code:.3f} | {r.code_hamming:.3f} | "
                     f"{r.pixel_rms:.3f} | {r.near_copy_fraction:.0%} |")
    if reference is not None:
        lines.append(f"| *real test images* | | {reference.code_hamming:.3f} | "
                     f"{reference.pixel_rms:.3f} | |")
    return "\n".join(lines)
