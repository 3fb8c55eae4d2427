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

Whether samples *look like the data* as a whole, and where the dermoscope's dark surround lies:

- :func:`~vqlesson.two_sample.two_sample_test`: a classifier two-sample test (Lopez-Paz &
  Oquab 2017, *Revisiting Classifier Two-Sample Tests*, ICLR, §2-3): a small CNN learns to tell
  two image sets apart on half of their union; its accuracy on the other half is the statistic
  (0.5: indistinguishable, 1.0: always told apart), with its binomial error and a p-value under
  the null hypothesis that the sets come from one distribution (then the number correct is
  Binomial(n_test, 1/2)).
- :func:`vignette_fractions`: the fraction of near-black pixels outside the inscribed circle
  (the dermoscope's surround; notebooks 01 and 05) and inside it (dark blobs within the field).
- :func:`found_fraction`: the fraction of images in which the ABCD estimator finds a lesion.
- :func:`hue_outside`: the fraction of pixels whose hue no reference image has (a colour that
  does not exist in the data; notebook 01 measures hue jitter and RGB shift with it).
- :func:`realism_report` (printed by :func:`realism_table`): all of it for samples, VQ-VAE
  reconstructions and real images, as the pipeline, ``benchmarks/bench_samples.py`` and
  notebook 05 show it.

FID (Heusel et al. 2017) compares Inception-v3 features: it needs the Inception weights (about
100 MB, downloaded on first use, which a student's machine may not be allowed to do) and the
``torch-fidelity`` package, and on a few hundred 64-px images it is dominated by its own bias.
It is therefore optional: :func:`frechet_inception_distance` uses torchmetrics' FID where
``pip install "vqlesson[fid]"`` and the weights are available, and otherwise returns ``None``
with the reason; nothing else here downloads anything.

Figures: :func:`vqlesson.plots.abcd_distributions` and :func:`vqlesson.plots.abcd_validation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from .abcd import BAND_NAMES, FEATURES, ABCDConfig, ABCDFeatures, abcd_features, tds_band
from .data.synthetic_abcd import TDS_THRESHOLD
from .data.synthetic import SyntheticLesions
from .runtime import eval_mode
from .two_sample import TwoSampleConfig, two_sample_test
from .validate import check_images, check_int, check_number

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


# --------------------------------------------------------------------------------------------
# The dermoscope's vignette, lesions found, reconstructions
# --------------------------------------------------------------------------------------------
class Vignette(NamedTuple):
    """Near-black pixels of an image set, outside and inside the inscribed circle.

    Attributes:
        outside: fraction of the pixels outside the inscribed circle that are near-black, in
            [0, 1]: the dermoscope's dark surround (about 0.6 for the synthetic lesions).
        inside: the same inside the circle, in [0, 1]: dark blobs within the field of view
            (a few per cent for real lesions; a prior that scatters black anywhere raises it).
        n: images.
    """

    outside: float
    inside: float
    n: int


def vignette_fractions(images: Tensor, threshold: float = 0.1) -> Vignette:
    """The dark surround's measure of notebooks 01 and 05 (one function, so that both measure
    the same thing): a pixel is near-black when the mean of its channels, mapped to [0, 1], is
    below ``threshold``; counted outside the circle inscribed in the image (radius half the
    smaller side, about the image's centre) and inside it.

    Args:
        images: (N, C, H, W) float in [-1, 1].
        threshold: in (0, 1], on the [0, 1] brightness.

    Returns:
        :class:`Vignette`: both fractions over all N images.

    Raises:
        TypeError, ValueError: not a float image batch, a threshold out of range.
    """
    check_images(images, "images")
    threshold = check_number(threshold, "threshold", 0, 1, low_open=True)
    height, width = images.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    radius = ((yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2).sqrt()  # (H, W) px
    outside = radius > min(height, width) / 2  # (H, W) bool
    dark = (images.detach().float().cpu().mean(dim=1) + 1) / 2 < threshold  # (N, H, W) bool
    return Vignette(float(dark[:, outside].float().mean()), float(dark[:, ~outside].float().mean()),
                    len(images))


def hue_outside(images: Tensor, reference: Tensor, quantile: float = 0.99,
                min_saturation: float = 0.1, min_value: float = 0.1) -> float:
    """The fraction of ``images``' coloured pixels whose hue no ``reference`` image has: a
    colour that does not exist in the data (notebook 01's measure of hue jitter and RGB shift).

    The reference's hue range is the arc of the hue circle centred on its circular mean hue
    that holds ``quantile`` of its coloured pixels; a pixel is *coloured* when its HSV
    saturation exceeds ``min_saturation`` and its value ``min_value`` (black, white and grey
    have no hue). ``hue_outside(reference, reference)`` is therefore about ``1 - quantile``.

    Args:
        images: (N, 3, H, W) float in [-1, 1], the set measured.
        reference: (M, 3, H', W') float in [-1, 1], e.g. the unaugmented images.
        quantile: in (0, 1], the share of the reference's coloured pixels inside its range.
        min_saturation, min_value: in [0, 1), the HSV thresholds of a coloured pixel.

    Returns:
        A fraction in [0, 1] (0.0 when ``images`` has no coloured pixel).

    Raises:
        TypeError, ValueError: not float RGB image batches, a setting out of range, or a
            reference without any coloured pixel.
    """
    from skimage.color import rgb2hsv

    check_number(quantile, "quantile", 0, 1, low_open=True)
    for value, name in ((min_saturation, "min_saturation"), (min_value, "min_value")):
        check_number(value, name, 0, 1, high_open=True)

    def hues(batch: Tensor, name: str) -> np.ndarray:
        check_images(batch, name, channels=3)
        rgb = ((batch.detach().float().cpu() + 1) / 2).clamp(0, 1)  # (N, 3, H, W) in [0, 1]
        hsv = rgb2hsv(rgb.permute(0, 2, 3, 1).numpy())  # (N, H, W, 3), hue in [0, 1)
        coloured = (hsv[..., 1] > min_saturation) & (hsv[..., 2] > min_value)  # (N, H, W)
        return hsv[..., 0][coloured]  # (P,) the coloured pixels' hues

    ref = hues(reference, "reference")
    if ref.size == 0:
        raise ValueError("reference has no coloured pixel (all black, white or grey): pass "
                         "images whose hue range can be measured, e.g. the unaugmented set")
    angle = 2 * np.pi * ref
    centre = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) / (2 * np.pi) % 1.0

    def distance(h: np.ndarray) -> np.ndarray:  # circular distance to the centre, in [0, 0.5]
        d = np.abs(h - centre)
        return np.minimum(d, 1.0 - d)

    radius = np.quantile(distance(ref), quantile)
    got = hues(images, "images")
    return float((distance(got) > radius).mean()) if got.size else 0.0


def found_fraction(images: object, config: ABCDConfig | None = None) -> float:
    """The fraction of images in which the ABCD estimator finds a lesion, in [0, 1].

    Args:
        images: (N, 3, H, W) float in [-1, 1], or their :class:`ABCDFeatures`.
        config: the estimator's settings (for images).
    """
    return float(_as_features(images, config).found.float().mean())


@torch.no_grad()
def reconstruct(vqvae: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """A VQ-VAE's (or VQ-VAE-2's) reconstructions, in eval mode: the reference set of the
    two-sample test (images that passed through the decoder).

    Args:
        vqvae: any model whose ``model(x).x_hat`` is the reconstruction.
        images: (N, C, H, W) float in [-1, 1], any device; batch_size: images per pass.

    Returns:
        (N, C, H, W) float32 in [-1, 1] on the CPU, in the order of ``images``.
    """
    check_images(images, "images")
    device = next(vqvae.parameters()).device
    with eval_mode(vqvae):
        return torch.cat([vqvae(x.to(device)).x_hat.float().cpu()
                          for x in images.split(batch_size)])  # (N, C, H, W)


# --------------------------------------------------------------------------------------------
# The realism report: samples, reconstructions and real images side by side
# --------------------------------------------------------------------------------------------
@dataclass
class RealismConfig:
    """Settings of :func:`realism_report`.

    Attributes:
        two_sample: the classifier two-sample tests' settings.
        near_black: the brightness threshold of :func:`vignette_fractions`, in (0, 1].
        abcd: the ABCD estimator's settings (``None``: its defaults).
        seed: of both two-sample tests, >= 0.
    """

    two_sample: TwoSampleConfig = field(default_factory=TwoSampleConfig)
    near_black: float = 0.1
    abcd: ABCDConfig | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_number(self.near_black, "near_black", 0, 1, low_open=True)
        check_int(self.seed, "seed", 0)


#: The image sets of a :class:`RealismReport`, and its two tests: (set a, set b).
SETS = ("samples", "reconstructions", "real")
TESTS = {"samples vs reconstructions": ("samples", "reconstructions"),
         "reconstructions vs real": ("reconstructions", "real")}


class RealismReport(NamedTuple):
    """Do samples look like the data? Every figure of :func:`realism_report`.

    Attributes:
        two_sample: ``{"samples vs reconstructions": ..., "reconstructions vs real": ...}``,
            :class:`~vqlesson.two_sample.TwoSampleResult` each (accuracy 0.5: indistinguishable).
        vignette: ``{"samples": ..., "reconstructions": ..., "real": ...}``, :class:`Vignette`
            each (near-black fractions outside and inside the inscribed circle).
        lesion_found: ``{set: fraction of its images with a lesion}``, in [0, 1].
        abcd: ``{"samples": ..., "reconstructions": ...}``, :class:`FeatureComparison` each
            against the real images (Wasserstein-1 per ABCD feature, in its units).
        features: ``{set: ABCDFeatures}`` (for figures, without measuring again).
    """

    two_sample: dict
    vignette: dict
    lesion_found: dict
    abcd: dict
    features: dict


def realism_report(samples: Tensor, reconstructions: Tensor, real: Tensor,
                   config: RealismConfig | None = None, *, sample_labels: Tensor | None = None,
                   real_labels: Tensor | None = None, classes: Sequence[str] = ()
                   ) -> RealismReport:
    """The realism of a prior's samples, measured three ways against the data.

    1. Two classifier two-sample tests (:func:`~vqlesson.two_sample.two_sample_test`): samples
       against reconstructions (the prior's errors alone: both passed through the decoder) and
       reconstructions against the real images (the decoder's own yardstick, the floor).
    2. The dermoscope's vignette (:func:`vignette_fractions`) of each set: the issue's targets
       read as outside within 25 % of real's, inside at most twice real's.
    3. The ABCD features: the fraction with a lesion found, and the Wasserstein-1 distances of
       samples and of reconstructions to the real images (:func:`compare_features`).

    Args:
        samples: (N, 3, H, W) float in [-1, 1], the prior's decoded samples.
        reconstructions: (M, 3, H, W) the VQ-VAE's reconstructions of ``real``, in its order
            (:func:`reconstruct`).
        real: (M, 3, H, W) float in [-1, 1], held-out real images (the test split).
        config: :class:`RealismConfig`.
        sample_labels, real_labels: optional (N,) and (M,) int classes (a class-conditional
            prior's labels, the test labels): the ABCD distances are then also given per class.
        classes: class names (index -> name).

    The samples-vs-reconstructions test uses the first min(N, M) images of each set (a classifier
    test needs sets of one size); the ABCD distances use all images.

    Returns:
        :class:`RealismReport`; :func:`realism_table` prints it.

    Raises:
        TypeError, ValueError: images that the tests reject (see
            :func:`~vqlesson.two_sample.two_sample_test`), fewer than 4 images, ``real`` and
            ``reconstructions`` of different sizes.
    """
    config = config if config is not None else RealismConfig()
    if len(reconstructions) != len(real):
        raise ValueError(f"reconstructions must be the reconstructions of real, one per image; "
                         f"got {len(reconstructions)} for {len(real)} real images")
    sets = {"samples": samples, "reconstructions": reconstructions, "real": real}
    n = min(len(samples), len(real))
    pairs = {"samples vs reconstructions": (samples[:n], reconstructions[:n]),
             "reconstructions vs real": (reconstructions, real)}
    two_sample = {name: two_sample_test(*pairs[name], config.two_sample, config.seed,
                                        names=TESTS[name]) for name in TESTS}
    features = {name: abcd_features(images.float().cpu(), config.abcd)
                for name, images in sets.items()}
    abcd = {name: compare_features(features[name], features["real"],
                                   sample_labels if name == "samples" else real_labels,
                                   real_labels, classes)
            for name in ("samples", "reconstructions")}
    return RealismReport(
        two_sample,
        {name: vignette_fractions(images, config.near_black) for name, images in sets.items()},
        {name: found_fraction(f) for name, f in features.items()}, abcd, features)


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}x" if reference > 0 else "n/a"


def realism_table(report: RealismReport, sample_name: str = "samples") -> str:
    """Two markdown tables: per set the two-sample test against its reference (accuracy,
    interval, p-value), the vignette (near-black outside and inside the circle, and as a
    multiple of real's) and the fraction with a lesion; then the ABCD Wasserstein-1 table
    (:func:`comparison_table`).

    Args:
        report: from :func:`realism_report`; sample_name: the samples' row name (e.g.
            ``"samples (T = 1)"``).
    """
    real = report.vignette["real"]
    header = ("| set | two-sample test: accuracy [95 % CI] (p) | against | near-black outside "
              "the circle (x real) | near-black inside (x real) | lesion found |")
    lines = [header, "|---|---|---|---|---|---|"]
    against = {a: (name, b) for name, (a, b) in TESTS.items()}
    for key in SETS:
        test = ""
        if key in against:
            t = report.two_sample[against[key][0]]
            test = f"{t.accuracy:.3f} [{t.ci_low:.2f}, {t.ci_high:.2f}] (p {t.p_value:.1g}; n {t.n})"
        v = report.vignette[key]
        name = {"samples": sample_name, "reconstructions": "VQ-VAE reconstructions",
                "real": "*real images*"}[key]
        lines.append(f"| {name} | {test} | {against.get(key, ('', ''))[1]} | {v.outside:.1%} "
                     f"({_ratio(v.outside, real.outside)}) | {v.inside:.1%} "
                     f"({_ratio(v.inside, real.inside)}) | {report.lesion_found[key]:.0%} |")
    abcd = comparison_table({sample_name: report.abcd["samples"],
                             "VQ-VAE reconstructions": report.abcd["reconstructions"]},
                            reference="real images")
    return "\n".join(lines) + "\n\n" + abcd


# --------------------------------------------------------------------------------------------
# FID, optional (Inception weights from the network)
# --------------------------------------------------------------------------------------------
class FID(NamedTuple):
    """What :func:`frechet_inception_distance` returns: the FID (``None`` when it could not be
    computed) and a line saying what was done or why it was skipped."""

    value: float | None
    message: str


def frechet_inception_distance(a: Tensor, b: Tensor, feature: int = 2048) -> FID:
    """FID (Heusel et al. 2017) between two image sets through torchmetrics, **optional**: it
    needs ``torch-fidelity`` (``pip install "vqlesson[fid]"``) and downloads the Inception-v3
    weights on first use. Where either is missing it returns ``FID(None, reason)`` instead of
    raising, so a course run never depends on it. On a few hundred images FID is strongly
    biased upwards (compare sets of one size only).

    Args:
        a, b: (N, 3, H, W) float in [-1, 1] (resized to 299 px inside), N >= 2 each.
        feature: the Inception layer's width: 64, 192, 768 or 2048.

    Returns:
        :class:`FID`.

    Raises:
        TypeError, ValueError: bad images, fewer than 2 per set, an unknown ``feature``.
    """
    check_images(a, "a", channels=3)
    check_images(b, "b", channels=3)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(a)} and {len(b)}")
    if feature not in (64, 192, 768, 2048):
        raise ValueError(f"feature must be one of (64, 192, 768, 2048), got {feature!r}")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance

        metric = FrechetInceptionDistance(feature=feature, normalize=True)
    except (ImportError, OSError, RuntimeError) as error:  # no torch-fidelity, no weights
        return FID(None, f"FID skipped ({type(error).__name__}: {error}); it needs "
                         "pip install \"vqlesson[fid]\" and a one-off download of the Inception "
                         "weights")
    for images, real in ((a, True), (b, False)):
        for chunk in images.detach().float().cpu().split(64):
            metric.update((chunk.clamp(-1, 1) + 1) / 2, real=real)  # [0, 1] for normalize=True
    return FID(float(metric.compute()), f"FID over {len(a)} and {len(b)} images, "
                                        f"{feature} Inception features")
