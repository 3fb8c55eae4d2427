"""The course's lesion-realism measure: ABCD features of image sets, validated and compared.

Do generated lesions look like lesions? Dermatology's own description of a pigmented lesion, the
ABCD rule of dermatoscopy and its Total Dermoscopy Score (Stolz et al. 1994), measured on pixels
by :mod:`vqlesson.abcd`, answers it in the domain's terms and without downloading anything
(unlike FID's Inception network, which also means little on a few hundred 64-px images):

- :func:`validate_on_synthetic`: on the synthetic lesions, whose features are known from their
  parameters, how well the estimator recovers each one (Pearson correlation, mean absolute
  error, agreement of the benign/malignant label through the TDS threshold 5.45, ROC AUC).
- :func:`compare_features`: the distance between two sets' feature distributions (samples
  against real test lesions), per feature (Wasserstein-1, in the feature's units, and the
  Kolmogorov-Smirnov statistic, Massey 1951), overall and per class, with per-set summaries;
  :func:`comparison_table` puts several comparisons in one markdown table.

Figures: :func:`vqlesson.plots.abcd_distributions` and :func:`vqlesson.plots.abcd_validation`.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from scipy import stats

from .abcd import BAND_NAMES, FEATURES, ABCDConfig, ABCDFeatures, abcd_features, tds_band
from .data.synthetic_abcd import TDS_THRESHOLD
from .data.synthetic import SyntheticLesions
from .validate import check_int

#: Ground-truth features of the synthetic lesions and the estimates they are compared with.
VALIDATED = (("asymmetry", "asymmetry"), ("border", "border"), ("colour", "colour"),
             ("diameter", "diameter"), ("score", "score_diameter"))


# --------------------------------------------------------------------------------------------
# Validation on the synthetic lesions, whose features are known from their parameters
# --------------------------------------------------------------------------------------------
class SyntheticValidation(NamedTuple):
    """How well the estimator recovers the synthetic lesions' ground truth.

    Attributes:
        n: images measured; found_fraction: the fraction where a lesion was found, in [0, 1].
        correlation: Pearson r per ground-truth feature (``asymmetry``, ``border``, ``colour``,
            ``diameter``, ``score``) against the estimate (``score``: ``score_diameter``, the
            synthetic lesions' TDS), over the images where a lesion was found.
        mean_abs_error: the mean absolute error per feature, in the feature's units.
        label_agreement: fraction of found images whose estimated TDS falls on the same side of
            5.45 as the true one (the true label), in [0, 1].
        auc: the probability that a malignant image gets a higher estimated TDS than a benign
            one (ROC AUC, threshold-free), in [0, 1].
        structures_correlation: Pearson r of the estimated structures (Stolz's D) with the
            generator's structure atypia (which drives its dots and network; there is no
            ground-truth D).
        estimated: the :class:`ABCDFeatures`; truth: the data set's features (dict of (n,)
            float32 tensors) and ``labels`` (n,) int64.
    """

    n: int
    found_fraction: float
    correlation: dict
    mean_abs_error: dict
    label_agreement: float
    auc: float
    structures_correlation: float
    estimated: ABCDFeatures
    truth: dict


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r, NaN when either side is constant or has fewer than 3 values."""
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC of ``score`` for ``label`` (the Mann-Whitney U statistic); NaN for one class."""
    positive, negative = score[label == 1], score[label == 0]
    if not len(positive) or not len(negative):
        return math.nan
    return float(stats.mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def validate_on_synthetic(dataset: SyntheticLesions | None = None, n: int = 256,
                          image_size: int = 64, seed: int = 1,
                          config: ABCDConfig | None = None) -> SyntheticValidation:
    """Measure the estimator against the ground truth of synthetic lesions.

    Args:
        dataset: a :class:`~vqlesson.data.synthetic.SyntheticLesions` (its first ``n`` items, without
            a transform); None draws ``SyntheticLesions(n, image_size, seed)``.
        n: images to measure, >= 3. image_size, seed: of the data set drawn when ``dataset`` is
            None (seed 1 by default; the estimator's settings were chosen on seed 2).
        config: the estimator's settings.

    Returns:
        :class:`SyntheticValidation`.

    Raises:
        TypeError: ``dataset`` is not a SyntheticLesions (other data sets have no ground truth).
        ValueError: ``n < 3``, or a dataset with a transform.
    """
    if dataset is None:
        dataset = SyntheticLesions(n, image_size=image_size, seed=seed)
    if not isinstance(dataset, SyntheticLesions):
        raise TypeError(f"dataset must be a SyntheticLesions (the only data with known ABCD "
                        f"features), got {type(dataset).__name__}")
    if dataset.transform is not None:
        raise ValueError("dataset has a transform: its images no longer match the features its "
                         "parameters give (a crop changes the diameter); pass a SyntheticLesions "
                         "without one")
    n = check_int(min(int(n), len(dataset)), "n", 3, note="images to correlate")
    images = torch.stack([dataset[i][0] for i in range(n)])  # (n, 3, S, S)
    estimated = abcd_features(images, config)
    truth = {k: v[:n] for k, v in dataset.features.items()}
    truth["labels"] = dataset.labels[:n]
    ok = estimated.found.numpy()
    correlation, error = {}, {}
    for true_name, estimate_name in VALIDATED:
        t, e = truth[true_name].numpy()[ok], getattr(estimated, estimate_name).numpy()[ok]
        correlation[true_name] = _pearson(t, e)
        error[true_name] = float(np.abs(t - e).mean()) if ok.any() else math.nan
    score, labels = estimated.score_diameter.numpy()[ok], truth["labels"].numpy()[ok]
    atypia = np.array([dataset.params(i)["atypia_structures"] for i in range(n)])[ok]
    return SyntheticValidation(
        n, float(ok.mean()), correlation, error,
        float(((score > TDS_THRESHOLD) == (labels == 1)).mean()) if ok.any() else math.nan,
        _auc(score, labels), _pearson(estimated.structures.numpy()[ok], atypia), estimated, truth)


# --------------------------------------------------------------------------------------------
# Comparing the feature distributions of image sets (samples against real lesions)
# --------------------------------------------------------------------------------------------
class FeatureComparison(NamedTuple):
    """Distances between the ABCD feature distributions of two image sets, ``a`` and ``b``.

    Attributes:
        wasserstein: Wasserstein-1 (earth mover's) distance per feature of :data:`FEATURES`, in
            the feature's own units (e.g. 0.5 for ``colour``: on average half a colour apart),
            over the images where a lesion was found; NaN when a set has fewer than 2.
        ks: the two-sample Kolmogorov-Smirnov statistic per feature, in [0, 1].
        summaries: ``{"a": ..., "b": ...}`` from :func:`summarise_features`.
        by_class: ``{class name: {feature: Wasserstein-1}}`` between the two sets' images of each
            class, when both sets have labels (else empty).
    """

    wasserstein: dict
    ks: dict
    summaries: dict
    by_class: dict


def _as_features(x: object, config: ABCDConfig | None) -> ABCDFeatures:
    """Features as given, or measured from ``(B, 3, H, W)`` images."""
    return x if isinstance(x, ABCDFeatures) else abcd_features(x, config)


def _found_rows(features: ABCDFeatures, labels: torch.Tensor | None = None,
                label: int | None = None) -> np.ndarray:
    """bool (B,): the rows with a lesion (of class ``label`` when given)."""
    keep = features.found.numpy().copy()
    if label is not None:
        keep &= torch.as_tensor(labels).numpy() == label
    return keep


def _distances(a: ABCDFeatures, b: ABCDFeatures, keep_a: np.ndarray, keep_b: np.ndarray
               ) -> tuple[dict, dict]:
    """Wasserstein-1 and KS per feature between the kept rows of two feature sets."""
    w1, ks = {}, {}
    for name in FEATURES:
        u, v = getattr(a, name).numpy()[keep_a], getattr(b, name).numpy()[keep_b]
        enough = len(u) >= 2 and len(v) >= 2
        w1[name] = float(stats.wasserstein_distance(u, v)) if enough else math.nan
        ks[name] = float(stats.ks_2samp(u, v).statistic) if enough else math.nan
    return w1, ks


def summarise_features(features: ABCDFeatures, labels: torch.Tensor | None = None,
                       classes: Sequence[str] = ()) -> dict:
    """Per-set (and per-class) summary of ABCD features.

    Args:
        features: from :func:`abcd_features`, (B,) rows.
        labels: optional (B,) int class of each image (e.g. the label a class-conditional prior
            was given); classes: their names (index -> name; ``class k`` where missing).

    Returns:
        ``{"all": row, class name: row, ...}``; a row is a dict with ``n`` (images), ``found``
        (fraction with a lesion), the mean of every feature of :data:`FEATURES` over the found
        images, and ``benign`` / ``suspicious`` / ``malignant``: the fraction of found images in
        each band of Stolz's TDS (``score``). Means and fractions are NaN without any lesion.
    """
    groups = {"all": None}
    if labels is not None:
        labels = torch.as_tensor(labels).long().cpu()
        for k in sorted(set(labels.tolist())):
            groups[classes[k] if 0 <= k < len(classes) else f"class {k}"] = k
    out = {}
    for group, label in groups.items():
        rows = np.ones(len(features.found), bool) if label is None else labels.numpy() == label
        keep = rows & features.found.numpy()
        row = {"n": int(rows.sum()), "found": float(keep.sum() / max(rows.sum(), 1))}
        for name in FEATURES:
            row[name] = float(getattr(features, name).numpy()[keep].mean()) if keep.any() \
                else math.nan
        bands = tds_band(features.score[torch.from_numpy(keep)]).numpy()
        for k, band in enumerate(BAND_NAMES):
            row[band] = float((bands == k).mean()) if keep.any() else math.nan
        out[group] = row
    return out


def compare_features(a: object, b: object, labels_a: torch.Tensor | None = None,
                     labels_b: torch.Tensor | None = None, classes: Sequence[str] = (),
                     config: ABCDConfig | None = None) -> FeatureComparison:
    """Compare the ABCD feature distributions of two image sets (e.g. samples against real test
    lesions): the lesion-realism measure of the course.

    Args:
        a, b: (B, 3, H, W) float images in [-1, 1], or :class:`ABCDFeatures` already measured
            (cheaper when one set is compared with several).
        labels_a, labels_b: optional (B,) int classes (the labels a class-conditional prior was
            sampled with, the test set's labels); with both, distances are also given per class.
        classes: class names (index -> name).
        config: the estimator's settings (for image inputs).

    Returns:
        :class:`FeatureComparison` (Wasserstein-1 and KS per feature, summaries, per class).

    Raises:
        TypeError, ValueError: images that :func:`abcd_features` rejects, or labels whose length
            differs from their set's.
    """
    a, b = _as_features(a, config), _as_features(b, config)
    for name, labels, feats in (("labels_a", labels_a, a), ("labels_b", labels_b, b)):
        if labels is not None and len(labels) != len(feats.found):
            raise ValueError(f"{name} has {len(labels)} labels for {len(feats.found)} images")
    w1, ks = _distances(a, b, _found_rows(a), _found_rows(b))
    by_class = {}
    if labels_a is not None and labels_b is not None:
        shared = sorted(set(torch.as_tensor(labels_a).tolist()) &
                        set(torch.as_tensor(labels_b).tolist()))
        for k in shared:
            name = classes[k] if 0 <= k < len(classes) else f"class {k}"
            by_class[name] = _distances(a, b, _found_rows(a, labels_a, k),
                                        _found_rows(b, labels_b, k))[0]
    summaries = {"a": summarise_features(a, labels_a, classes),
                 "b": summarise_features(b, labels_b, classes)}
    return FeatureComparison(w1, ks, summaries, by_class)


def comparison_table(comparisons: Mapping[str, FeatureComparison], reference: str = "real") -> str:
    """A markdown table: one row per compared set (its Wasserstein-1 distance per feature to the
    reference, the fraction of images with a lesion, the share Stolz's TDS calls malignant),
    then the reference's own found and malignant fractions.

    Args:
        comparisons: ``{name: compare_features(set, reference)}``, all with the same ``b``.
        reference: the reference set's name in the last row.

    Returns:
        The table as a string.
    """
    header = " | ".join(f"W1 {name}" for name in FEATURES)
    lines = [f"| set | {header} | lesion found | TDS malignant |",
             "|---|" + "---|" * (len(FEATURES) + 2)]
    def number(value: float, spec: str) -> str:
        return "n/a" if math.isnan(value) else format(value, spec)

    for name, c in comparisons.items():
        row = c.summaries["a"]["all"]
        cells = " | ".join(number(c.wasserstein[f], ".3f") for f in FEATURES)
        lines.append(f"| {name} | {cells} | {row['found']:.0%} | {number(row['malignant'], '.0%')} |")
    if comparisons:
        row = next(iter(comparisons.values())).summaries["b"]["all"]
        blank = " | ".join("" for _ in FEATURES)
        lines.append(f"| *{reference}* | {blank} | {row['found']:.0%} | "
                     f"{number(row['malignant'], '.0%')} |")
    return "\n".join(lines)
