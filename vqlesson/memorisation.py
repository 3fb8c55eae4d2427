"""Sample diversity and memorisation: do a prior's samples differ, and are they copies?

The samples' half of the test-set failure analysis (:mod:`vqlesson.analysis` measures the model
itself: encoding, reconstruction, codebook usage, the prior's NLL). A VQ-VAE plus an
autoregressive prior over its codes (van den Oord et al. 2017, *Neural Discrete Representation
Learning*, §3.3 and §4; Razavi et al. 2019, *Generating Diverse High-Fidelity Images with
VQ-VAE-2*, §3.2 for the two-level version) can draw samples that all look alike, or that copy
training images:

- **Sample diversity**: the mean pairwise distance between samples, in code space (Hamming) and
  in pixel space, against the same figure for real test images.
- **Memorisation**: each sample's nearest training image (code-space Hamming and pixel RMS) and
  the fraction of samples that are near-copies. A nearest-neighbour test only catches copies,
   not a model that has merely learnt a few modes, and a pixel distance is a poor judge of
   similarity (Theis, van den Oord & Bethge 2016, *A note on the evaluation of generative
   models*, on nearest-neighbour tests); hence both distances, and the diversity figure above.

The remedy table (:func:`evaluate_remedy`, :func:`remedy_table`) puts the prior's test NLL,
its sample diversity and the near-copy fraction of one prior and sampling setting in one row.

Distances are in [0, 1]: Hamming distances are the fraction of code positions that differ, pixel
distances the root-mean-square difference on images mapped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .analysis import prior_bits_per_code
from .codes import CodeDataset, flat_codes
from .metrics import to_unit_range
from .pixelcnn_prior import AutoregressivePrior, SampleOptions
from .sampling import check_priors, decode_codes, sample_codes
from .validate import check_images, check_int, check_number
from .vqvae import check_autoencoder


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
@dataclass
class MemorisationConfig:
    """The settings of the sample diversity and near-copy analysis (the pipeline, notebook 05,
    :func:`evaluate_remedy`).

    Attributes:
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

    near_copy_hamming: float = 0.1
    near_copy_pixel_rms: float = 0.0
    num_samples: int = 32
    temperatures: tuple[float, ...] = (0.3, 0.5, 0.7, 1.0)

    def __post_init__(self) -> None:
        check_number(self.near_copy_hamming, "near_copy_hamming", 0, 1)
        check_number(self.near_copy_pixel_rms, "near_copy_pixel_rms", 0, note="0 disables it")
        check_int(self.num_samples, "num_samples", 2)
        self.temperatures = tuple(float(t) for t in self.temperatures)
        if not self.temperatures or min(self.temperatures) < 0:
            raise ValueError(f"temperatures must be non-empty and >= 0, got {self.temperatures!r}")


# --------------------------------------------------------------------------------------------
# Helpers: flat items and distances
# --------------------------------------------------------------------------------------------
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


@torch.no_grad()
def evaluate_remedy(name: str, vqvae: nn.Module, priors: Sequence[AutoregressivePrior],
                    test_codes: CodeDataset | None, train_codes: CodeDataset | Tensor,
                    train_images: Tensor | None = None,
                    config: MemorisationConfig | None = None, temperature: float = 1.0,
                    label: int | Tensor | None = None, generator: torch.Generator | None = None
                    ) -> RemedyResult:
    """Test NLL, sample diversity and near-copy fraction of one prior setting.

    Args:
        name: the row's name.
        vqvae: the frozen VQ-VAE (or VQ-VAE-2) whose codes the prior(s) model.
        priors: one :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` per level, as a tuple:
            ``(prior,)``, or ``(top_prior, bottom_prior)`` for a VQ-VAE-2 (as
            :func:`~vqlesson.sampling.sample_images`).
        test_codes: :class:`~vqlesson.prior.CodeDataset` of the test split (for the NLL);
            ``None`` skips the NLL (``test_bits_per_code`` is then NaN).
        train_codes: the memorisation references: the training :class:`~vqlesson.prior.CodeDataset`,
            or (M, H, W) int64 code maps (e.g. with augmented versions added).
        train_images: optional (M, C, H, W) training images in [-1, 1] (same order as
            ``train_codes``) for the pixel-space near-copy test.
        config: thresholds and ``num_samples`` (:class:`MemorisationConfig` defaults when
            ``None``).
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
    config = config if config is not None else MemorisationConfig()
    n = config.num_samples
    priors = check_priors(check_autoencoder(vqvae, "vqvae"), priors)
    num_classes = max(p.config.num_classes for p in priors)
    if num_classes and label is None:
        label = torch.arange(n) % num_classes  # (n,) the classes in turn
    test_bits = prior_bits_per_code(priors, test_codes) if test_codes is not None else math.nan
    codes = sample_codes(vqvae, priors, n, label if num_classes else None, generator,
                         SampleOptions(temperature=temperature))
    images = decode_codes(vqvae, codes).float().cpu()  # (n, C, S, S)
    flat = flat_codes(codes, "samples").cpu()  # (n, L): the levels side by side
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
