"""The ABCD rule of dermatoscopy, estimated from pixels: the course's lesion-realism measure.

Dermatology describes a pigmented lesion by the ABCD rule of dermatoscopy (Stolz W, Riemann A,
Cognetta AB et al., "ABCD rule of dermatoscopy: a new practical method for early recognition of
malignant melanoma", Eur. J. Dermatol. 4, 1994, 521-527; Nachbar et al., J. Am. Acad. Dermatol.
30, 1994): asymmetry A in [0, 2] (axes of asymmetry), border B in [0, 8] (octants with an abrupt
border), colours C in {1..6} (of light brown, dark brown, black, blue-grey, red, white) and
differential structures D in {1..5} (pigment network, structureless areas, dots, globules,
branched streaks), combined into the Total Dermoscopy Score

    TDS = 1.3 A + 0.1 B + 0.5 C + 0.5 D,   benign below 4.75, suspicious up to 5.45,
                                            malignant (suspicious of melanoma) above 5.45.

This module measures those features on images, so that generated lesions can be compared with
real ones in the terms a dermatologist uses (no download, unlike FID; :mod:`vqlesson.realism`
does the comparing and the validation). Per image:

1. **Field of view**: dark pixels (the dermoscope's surround, vignette corners) connected to the
   image border are left out, and the field is eroded by a small margin.
2. **Hair**: a grey-level closing with a small disk removes dark lines thinner than the disk
   (the morphological step of DullRazor, Lee et al. 1997).
3. **Illumination**: a quadratic surface fitted to the skin's luminance (refitted twice without
   the darker pixels) divides out the lens fall-off; *darkness* = 1 - luminance / surface.
4. **Segmentation**: Otsu's threshold (Otsu N., "A threshold selection method from gray-level
   histograms", IEEE Trans. Syst. Man Cybern. 9, 1979, 62-66) on the darkness inside the field,
   grown by hysteresis halfway down to the skin's level (so that a dark centre keeps its lighter
   rim); an opening, the largest component, holes filled. No lesion is *found* when it is barely
   darker than the skin (``min_contrast``) or covers too little or too much of the field: its
   features are then NaN and ``found`` is False.
5. **Outline**: the radius ``r(theta)`` along 128 rays from the centroid (the integral of a
   sub-pixel soft mask along each ray) and its Fourier harmonics ``k = 1..10``: the outline
   ``r(theta) = R (1 + sum_k a_k cos(k theta + phi_k))`` the synthetic lesions are drawn from.
   A, B and the diameter are then computed by :func:`vqlesson.data.synthetic_abcd.abcd_features`, exactly
   as the generator scores its own lesions: A from the area without a mirror partner about each
   principal axis, B from the high-frequency irregularity of the outline per octant, the
   diameter from the area. A is thus the *shape* part of Stolz's asymmetry (the asymmetry of
   colours and structures is not measured), and B measures irregularity, not the abruptness of
   the pigment's cut-off.
6. **C**: each pixel of the lesion's core takes the nearest of the six dermoscopic colours
   (:data:`vqlesson.data.synthetic.COLOUR_RGB`, seen through the epidermis: blended with the image's
   own skin) in CIELAB; a colour counts when it covers at least ``colour_min_fraction``.
7. **D (differential structures)** is approximated by the structures that can be seen at the
   course's 32 to 128 px: *dots* (at least ``min_dots`` small dark blobs, by black top-hat),
   *globules* (as many larger ones) and *structureless areas* (at least
   ``structureless_fraction`` of the lesion without local texture); D = max(1, count) in
   {1, 2, 3}. Pigment network and branched streaks are not detected: their meshes are a few
   pixels wide at these sizes, and a texture measure could not tell them from mottling and dots
   on the synthetic lesions. D (and with it Stolz's TDS) is thus a lower, coarse estimate.

The synthetic lesions (:mod:`vqlesson.data.synthetic`) score D as the lesion's *diameter* (the clinical
ABCD rule, mapped to 1..5), not as the number of differential structures. This module reports
both: ``structures`` (Stolz's D) with ``score`` (Stolz's TDS), and ``diameter`` with
``score_diameter`` (the synthetic lesions' TDS, the one their labels use).

Functions take ``(B, 3, H, W)`` float images in [-1, 1] (the course's range; square or not, any
size >= 16 px) and return NamedTuples of tensors, one row per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.color import rgb2lab
from skimage.filters import apply_hysteresis_threshold, threshold_otsu
from skimage.morphology import disk

from .data.synthetic import COLOUR_RGB
from .data.synthetic_abcd import TDS_THRESHOLD, total_dermoscopy_score
from .data.synthetic_abcd import abcd_features as outline_features
from .validate import check_int, check_number

#: The estimated features, in the order of :class:`ABCDFeatures` (``found`` aside).
FEATURES = ("asymmetry", "border", "colour", "structures", "diameter", "score", "score_diameter")
#: Stolz's bands of the TDS: benign below the first, suspicious up to the second, then malignant.
TDS_BANDS = (4.75, TDS_THRESHOLD)
#: Names of the bands (index 0, 1, 2 of :func:`tds_band`).
BAND_NAMES = ("benign", "suspicious", "malignant")
#: ITU-R BT.601 luma weights (R, G, B).
LUMA = np.array([0.299, 0.587, 0.114])
#: ABCDConfig's integer fields with their minimum, and its fields in (0, 1).
_INT_FIELDS = {"angles": 32, "harmonics": 3, "min_dots": 1}
_UNIT_FIELDS = ("field_level", "skin_band", "grow", "min_contrast", "min_area", "max_area",
                "pigment_opacity", "colour_min_fraction", "structureless_fraction")


# --------------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------------
@dataclass
class ABCDConfig:
    """Settings of the estimator. Lengths are fractions of the field width W (the image's smaller
    side), so one setting works at 32, 64 or 1000 px; each becomes at least one pixel. The
    defaults were chosen on synthetic lesions of seed 2 (``validate_on_synthetic`` uses seed 1).

    Attributes:
        field_level: the dermoscope's surround is the pixels darker than this fraction of the
            image's 95th-percentile luminance that are connected to the image border, in (0, 1).
        field_margin: the field of view is eroded by this (x W), >= 0.
        hair_radius: radius of the closing disk that removes hair (x W), > 0.
        skin_band: the illumination surface is refitted on pixels at least ``1 - skin_band``
            times the previous fit (the darker ones are lesion), in (0, 1).
        grow: hysteresis: the lesion grows from Otsu's threshold down to this fraction of the way
            to the skin's darkness (a lesion with a dark centre keeps its lighter rim), in (0, 1).
        min_contrast: a lesion is found only when its median darkness (1 - luminance / skin
            illumination) exceeds the skin's by this fraction of the rest, in (0, 1) ...
        min_area, max_area: ... and when it covers this fraction of the field of view, in (0, 1).
        edge_band: half-width of the sub-pixel band at the lesion's border (x W), > 0.
        angles: rays of the polar outline ``r(theta)``, >= 32.
        harmonics: Fourier harmonics of the outline kept (as the synthetic lesions: 10), >= 3
            and below ``angles / 2``.
        pigment_opacity: the six reference colours are blended with the image's skin at this
            opacity before the nearest is taken, in (0, 1).
        colour_min_fraction: a dermoscopic colour counts when it covers at least this fraction of
            the lesion, in (0, 1).
        dot_radius: dots are dark blobs up to this radius (x W), globules up to twice it, > 0.
        dot_contrast: a dot is at least this much darker than its surroundings (flattened
            luminance, skin = 1), > 0.
        min_dots: dots (or globules) count as a structure from this many on, >= 1.
        texture_radius: half-width of the window of the local texture (x W), > 0.
        structureless_level: local standard deviation of the flattened luminance (skin = 1) below
            which the lesion is structureless, > 0.
        structureless_fraction: structureless areas count from this fraction of the lesion on,
            in (0, 1).

    Raises:
        ValueError: a value out of range (the message names it).
    """

    field_level: float = 0.3
    field_margin: float = 0.02
    hair_radius: float = 0.02
    skin_band: float = 0.1
    grow: float = 0.5
    min_contrast: float = 0.08
    min_area: float = 0.005
    max_area: float = 0.9
    edge_band: float = 0.03
    angles: int = 128
    harmonics: int = 10
    pigment_opacity: float = 0.87
    colour_min_fraction: float = 0.03
    dot_radius: float = 0.02
    dot_contrast: float = 0.08
    min_dots: int = 4
    texture_radius: float = 0.05
    structureless_level: float = 0.06
    structureless_fraction: float = 0.1

    def __post_init__(self) -> None:
        for f in fields(self):
            value, name = getattr(self, f.name), f"ABCDConfig.{f.name}"
            if f.name in _INT_FIELDS:
                check_int(value, name, _INT_FIELDS[f.name])
            elif f.name in _UNIT_FIELDS:
                check_number(value, name, 0, 1, low_open=True, high_open=True)
            else:
                check_number(value, name, 0, low_open=f.name != "field_margin")
        if self.harmonics >= self.angles // 2:
            raise ValueError(f"ABCDConfig.harmonics ({self.harmonics}) must be below angles / 2 "
                             f"({self.angles // 2})")
        if self.min_area >= self.max_area:
            raise ValueError(f"ABCDConfig.min_area ({self.min_area}) must be below max_area "
                             f"({self.max_area})")

    def pixels(self, fraction: float, width: int) -> int:
        """A length given as a fraction of the field width, in whole pixels (at least 1)."""
        return max(1, int(round(fraction * width)))


class ABCDFeatures(NamedTuple):
    """Estimated ABCD features, one row per image; NaN where no lesion was found.

    Attributes (all tensors (B,)):
        found: bool, a lesion was segmented.
        asymmetry: A in [0, 2], shape asymmetry about the two principal axes.
        border: B in [0, 8], octants with an irregular outline.
        colour: C in {1..6}, dermoscopic colours covering enough of the lesion.
        structures: Stolz's D, the differential structures seen: {1, 2, 3} (dots, globules,
            structureless areas; network and streaks are not detected).
        diameter: in [1, 5], equivalent diameter mapped as the synthetic lesions do.
        score: Stolz's TDS ``1.3 A + 0.1 B + 0.5 C + 0.5 structures``.
        score_diameter: the synthetic lesions' TDS ``1.3 A + 0.1 B + 0.5 C + 0.5 diameter``.
        area: lesion area as a fraction of the image, in [0, 1].
    All but ``found`` are float32.
    """

    found: torch.Tensor
    asymmetry: torch.Tensor
    border: torch.Tensor
    colour: torch.Tensor
    structures: torch.Tensor
    diameter: torch.Tensor
    score: torch.Tensor
    score_diameter: torch.Tensor
    area: torch.Tensor


class Segmentation(NamedTuple):
    """Lesion masks of a batch.

    Attributes:
        masks: (B, H, W) bool, the lesion (all False where none was found).
        found: (B,) bool.
    """

    masks: torch.Tensor
    found: torch.Tensor


class _Lesion(NamedTuple):
    """One segmented image (internal): the lesion ``mask`` (H, W) bool, its ``core`` without the
    border band, and its sub-pixel ``soft`` version (H, W) in [0, 1]; ``texture``, the flattened
    luminance with hair and dots kept (H, W, skin = 1); ``rgb``, the image with the lens fall-off
    divided out (H, W, 3); ``skin`` (H, W) bool, the field of view outside the lesion's band."""

    mask: np.ndarray
    core: np.ndarray
    soft: np.ndarray
    texture: np.ndarray
    rgb: np.ndarray
    skin: np.ndarray


# --------------------------------------------------------------------------------------------
# Segmentation (Otsu 1979 on the hair-free, illumination-flattened luminance)
# --------------------------------------------------------------------------------------------
def _field_of_view(lum: np.ndarray, config: ABCDConfig) -> np.ndarray:
    """(H, W) bool: everything but the dark surround connected to the image border, eroded."""
    dark = lum < config.field_level * np.percentile(lum, 95)  # (H, W)
    labels, _ = ndi.label(dark)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    field = ~np.isin(labels, edge[edge > 0])
    if config.field_margin > 0:
        margin = config.pixels(config.field_margin, min(lum.shape))
        field = ndi.binary_erosion(field, disk(margin), border_value=1)
    return field


def _illumination(lum: np.ndarray, field: np.ndarray, config: ABCDConfig) -> np.ndarray:
    """(H, W) quadratic surface fitted to the skin's luminance (lesion pixels dropped by refits;
    fitted on every second row and column, which is plenty for six coefficients)."""
    h, w = lum.shape
    y, x = np.mgrid[0:h, 0:w]
    x, y = x / max(w - 1, 1) * 2.0 - 1.0, y / max(h - 1, 1) * 2.0 - 1.0  # (H, W) in [-1, 1]
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1)  # (H, W, 6)
    sub_basis, sub_lum, sub_field = basis[::2, ::2], lum[::2, ::2], field[::2, ::2]
    keep, coef = sub_field, None
    for _ in range(3):
        if keep.sum() < 4 * basis.shape[-1]:
            break
        rows = sub_basis[keep]  # (N, 6); normal equations: a 6 x 6 solve
        coef = np.linalg.solve(rows.T @ rows + 1e-9 * np.eye(6), rows.T @ sub_lum[keep])  # (6,)
        keep = sub_field & (sub_lum >= (1.0 - config.skin_band) * (sub_basis @ coef))
    if coef is None:
        return np.full_like(lum, max(float(np.median(lum[field])), 1e-3))
    return np.maximum(basis @ coef, 1e-3)


def _soft_mask(mask: np.ndarray, core: np.ndarray, outer: np.ndarray, darkness: np.ndarray,
               skin: float) -> np.ndarray:
    """(H, W) float in [0, 1]: 1 in the ``core``, 0 outside ``outer``, coverage in between.

    Across the border the darkness goes from the lesion's rim level to the skin's; the fraction
    of that step is the lesion's sub-pixel coverage, so ray integrals of this mask give the
    outline's radius to a fraction of a pixel.
    """
    rim = mask & ~core
    level = float(np.median(darkness[rim if rim.any() else mask]))
    coverage = np.clip((darkness - skin) / max(level - skin, 1e-3), 0.0, 1.0)  # (H, W)
    return np.where(core, 1.0, np.where(outer, coverage, 0.0))


def _segment(rgb: np.ndarray, config: ABCDConfig) -> _Lesion | None:
    """Segment one image ``(H, W, 3)`` float64 in [0, 1]; None when no lesion is found."""
    lum = rgb @ LUMA  # (H, W)
    field = _field_of_view(lum, config)
    if field.sum() < 16:
        return None
    hairless = ndi.grey_closing(lum, footprint=disk(config.pixels(config.hair_radius,
                                                                   min(lum.shape))))
    surface = _illumination(hairless, field, config)  # (H, W)
    darkness = 1.0 - hairless / surface  # (H, W), skin about 0, lesion towards 1
    high = threshold_otsu(darkness[field])
    low = high - config.grow * (high - np.median(darkness[field & (darkness <= high)]))
    dark = apply_hysteresis_threshold(np.where(field, darkness, -np.inf), low, high)
    labels, count = ndi.label(ndi.binary_opening(dark, disk(1)))
    if count == 0:
        return None
    sizes = ndi.sum_labels(labels > 0, labels, index=np.arange(1, count + 1))  # (count,)
    mask = ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    skin = darkness[field & ~mask]
    skin = float(np.median(skin)) if skin.size else 0.0
    if not config.min_area <= mask.sum() / field.sum() <= config.max_area \
            or np.median(darkness[mask]) - skin < config.min_contrast * (1.0 - skin):
        return None
    band = disk(config.pixels(config.edge_band, min(lum.shape)))
    core, outer = ndi.binary_erosion(mask, band), ndi.binary_dilation(mask, band)
    soft = _soft_mask(mask, core, outer, darkness, skin)
    gain = np.percentile(surface[field], 90) / surface  # (H, W) divides the lens fall-off out
    texture = lum / surface / (1.0 - skin)  # (H, W) dots and hair kept, skin = 1
    skin_area = field & ~outer
    return _Lesion(mask, core if core.sum() >= 8 else mask, soft, texture,
                   rgb * gain[..., None], skin_area if skin_area.any() else field)


# --------------------------------------------------------------------------------------------
# Measurements on one segmented lesion
# --------------------------------------------------------------------------------------------
def _outline(soft: np.ndarray, config: ABCDConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """Fourier outline of a lesion: ``a_k``, ``phi_k`` (K,) and R in field half-widths.

    ``r(theta)`` is the integral of the soft mask along ``config.angles`` rays from its centroid
    (theta measured from the +x (column) axis towards +y (row), as the synthetic lesions do).
    """
    h, w = soft.shape
    total = soft.sum()
    rows, cols = np.indices(soft.shape)
    cy, cx = (soft * rows).sum() / total, (soft * cols).sum() / total
    step = 0.5  # pixels along a ray
    theta = np.arange(config.angles) * (2.0 * np.pi / config.angles)  # (M,)
    rho = (np.arange(int(math.hypot(h, w) / step) + 1) + 0.5) * step  # (J,)
    ys = cy + rho[None, :] * np.sin(theta)[:, None]  # (M, J)
    xs = cx + rho[None, :] * np.cos(theta)[:, None]
    along = ndi.map_coordinates(soft, [ys.ravel(), xs.ravel()], order=1, cval=0.0)
    r = along.reshape(config.angles, -1).sum(axis=1) * step  # (M,) radius in pixels
    spectrum = np.fft.rfft(r) / config.angles  # c_k = (R a_k / 2) e^{i phi_k} for k >= 1
    mean = float(spectrum[0].real)
    amplitudes = 2.0 * np.abs(spectrum[1:config.harmonics + 1]) / mean  # (K,)
    total_amplitude = amplitudes.sum()
    if total_amplitude > 0.95:  # keep r(theta) > 0, as synthetic_abcd.abcd_features requires
        amplitudes *= 0.95 / total_amplitude
    return amplitudes, np.angle(spectrum[1:config.harmonics + 1]), mean / (min(h, w) / 2.0)


def _colour_count(lesion: _Lesion, config: ABCDConfig) -> int:
    """C: how many of the six dermoscopic colours cover at least ``colour_min_fraction``.

    Pigment is seen through the epidermis, so each reference colour is first blended with the
    image's own skin (opacity ``pigment_opacity``); pixels take the nearest reference in CIELAB
    (Delta E 1976).
    """
    skin = np.median(lesion.rgb[lesion.skin], axis=0)  # (3,)
    blend = config.pigment_opacity * COLOUR_RGB + (1.0 - config.pigment_opacity) * skin  # (6, 3)
    reference = rgb2lab(np.clip(blend, 0.0, 1.0)[None])[0]  # (6, 3)
    lab = rgb2lab(np.clip(lesion.rgb[lesion.core], 0.0, 1.0)[None])[0]  # (N, 3)
    nearest = ((lab[:, None, :] - reference[None]) ** 2).sum(axis=-1).argmin(axis=1)  # (N,)
    share = np.bincount(nearest, minlength=len(reference)) / nearest.size  # (6,)
    return max(1, int((share >= config.colour_min_fraction).sum()))


def _blobs(depth: np.ndarray, core: np.ndarray, radius: int) -> tuple[int, int]:
    """Dark blobs in ``core``: (dots up to ``radius`` px, globules up to twice that); lines such
    as hair, longer than a globule, are not counted."""
    labels, count = ndi.label(depth & core)
    dots = globules = 0
    for box in ndi.find_objects(labels):
        extent = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
        if extent <= 2 * radius + 1:
            dots += 1
        elif extent <= 4 * radius + 1:
            globules += 1
    return dots, globules


def _structure_count(lesion: _Lesion, config: ABCDConfig) -> int:
    """D: the differential structures detected (dots, globules, structureless areas), 1 to 3."""
    width, core = min(lesion.mask.shape), lesion.core
    radius = config.pixels(config.dot_radius, width)
    texture = lesion.texture
    depth = ndi.grey_closing(texture, footprint=disk(2 * radius)) - texture  # black top-hat
    dots, globules = _blobs(depth > config.dot_contrast, core, radius)
    window = 2 * config.pixels(config.texture_radius, width) + 1
    mean = ndi.uniform_filter(texture, window)
    local_sd = np.sqrt(np.maximum(ndi.uniform_filter(texture ** 2, window) - mean ** 2, 0.0))
    structureless = (local_sd[core] < config.structureless_level).mean()
    found = [dots >= config.min_dots, globules >= config.min_dots,
             structureless >= config.structureless_fraction]
    return max(1, int(sum(found)))


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------
def _as_rgb(images: object, name: str = "images") -> np.ndarray:
    """``(B, 3, H, W)`` in [-1, 1] (tensor or array) -> ``(B, H, W, 3)`` float64 in [0, 1]."""
    if not isinstance(images, (torch.Tensor, np.ndarray)):
        raise TypeError(f"{name} must be a (B, 3, H, W) tensor in [-1, 1], got "
                        f"{type(images).__name__}")
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    if x.ndim != 4 or x.shape[1] != 3 or min(x.shape[2:]) < 16:
        raise ValueError(f"{name} must be (B, 3, H, W) RGB images with H, W >= 16 pixels, got "
                         f"shape {tuple(x.shape)}; add a batch dimension with x[None]")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be float images in [-1, 1], got {x.dtype}; convert uint8 "
                        "images with x / 127.5 - 1")
    x = x.astype(np.float64).transpose(0, 2, 3, 1)  # (B, 3, H, W) -> (B, H, W, 3)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return (np.clip(x, -1.0, 1.0) + 1.0) / 2.0


def segment_lesions(images: torch.Tensor, config: ABCDConfig | None = None) -> Segmentation:
    """Segment the lesion of every image (Otsu 1979; see the module docstring, steps 1 to 4).

    Args:
        images: (B, 3, H, W) float in [-1, 1] (tensor or array), H, W >= 16.
        config: the estimator's settings (:class:`ABCDConfig` defaults when None).

    Returns:
        :class:`Segmentation`: masks (B, H, W) bool, found (B,) bool.

    Raises:
        TypeError, ValueError: images of another type, shape or dtype, or with NaNs.
    """
    config = config if config is not None else ABCDConfig()
    rgb = _as_rgb(images)
    masks = np.zeros(rgb.shape[:3], bool)
    found = np.zeros(len(rgb), bool)
    for i, image in enumerate(rgb):
        lesion = _segment(image, config)
        if lesion is not None:
            masks[i], found[i] = lesion.mask, True
    return Segmentation(torch.from_numpy(masks), torch.from_numpy(found))


def abcd_features(images: torch.Tensor, config: ABCDConfig | None = None) -> ABCDFeatures:
    """The ABCD features and TDS of every image (see the module docstring for each step).

    Args:
        images: (B, 3, H, W) float in [-1, 1] (tensor or array), H, W >= 16; real ISIC images,
            synthetic lesions or decoded samples alike.
        config: the estimator's settings (:class:`ABCDConfig` defaults when None).

    Returns:
        :class:`ABCDFeatures`, tensors (B,): ``found`` bool; ``asymmetry`` [0, 2], ``border``
        [0, 8], ``colour`` {1..6}, ``structures`` {1, 2, 3}, ``diameter`` [1, 5], ``score``
        (Stolz's TDS), ``score_diameter`` (the synthetic lesions' TDS), ``area`` [0, 1], all
        float32 and NaN where no lesion was found.

    Raises:
        TypeError, ValueError: images of another type, shape or dtype, or with NaNs.

    About 2 to 5 ms per 64-px image on one shared CPU core: 0.14 to 0.33 s per 64 images
    (``benchmarks/bench_abcd.py``).
    """
    config = config if config is not None else ABCDConfig()
    rgb = _as_rgb(images)
    out = {name: np.full(len(rgb), np.nan) for name in ABCDFeatures._fields[1:]}
    found = np.zeros(len(rgb), bool)
    outlines = []  # (index, a_k, phi_k, R, colours) of each found lesion
    for i, image in enumerate(rgb):
        lesion = _segment(image, config)
        if lesion is None:
            continue
        found[i] = True
        outlines.append((i, *_outline(lesion.soft, config), _colour_count(lesion, config)))
        out["structures"][i] = _structure_count(lesion, config)
        out["area"][i] = lesion.mask.mean()
    if outlines:
        index, amplitudes, phases, radius, colours = (np.array(v) for v in zip(*outlines))
        shape = outline_features(amplitudes, phases, radius, colours)  # dict of (n,) arrays
        for name in ("asymmetry", "border", "colour", "diameter"):
            out[name][index] = shape[name]
        out["score_diameter"][index] = shape["score"]
        out["score"][index] = total_dermoscopy_score(shape["asymmetry"], shape["border"],
                                                     shape["colour"], out["structures"][index])
    return ABCDFeatures(torch.from_numpy(found),
                        *(torch.from_numpy(out[k].astype(np.float32)) for k in out))


def tds_band(score: torch.Tensor) -> torch.Tensor:
    """Stolz's band of each TDS: 0 benign (< 4.75), 1 suspicious (4.75 to 5.45), 2 malignant
    (> 5.45), -1 where the score is NaN (no lesion found). score: (B,) float -> (B,) int64."""
    score = torch.as_tensor(score, dtype=torch.float64)
    band = (score >= TDS_BANDS[0]).long() + (score > TDS_BANDS[1]).long()  # (B,)
    return torch.where(torch.isnan(score), torch.full_like(band, -1), band)
