"""The dermoscopic ABCD rule, computed from the outline and palette of a synthetic lesion.

The labels of :class:`~vqlesson.data.synthetic.SyntheticLesions` follow the ABCD rule of dermoscopy
(Stolz et al. 1994, *ABCD rule of dermatoscopy: a new practical method for early recognition of
malignant melanoma*; Nachbar et al. 1994) and are computed from the generator's parameters, never
from pixels. The outline is star-shaped, ``r(theta) = R (1 + sum_k a_k cos(k theta + phi_k))``:

- ``asymmetry`` A in [0, 2]: for each principal axis of the outline (through its centroid), the
  fraction of the lesion area without a mirror partner, ``|M xor mirror(M)| / (2 |M|)`` (on a
  36 x 36 grid), ramped from 0 at ``0.02`` to 1 at ``0.08``; the two axes are added (Stolz
  scores 0, 1 or 2 asymmetric axes).
- ``border`` B in [0, 8]: for each of the 8 octants around the lesion centre, the RMS of the
  high-frequency (``k >= 3``) part of ``d ln r / d theta`` ramped from 0 at ``0.15`` to 1 at
  ``0.6``; the octants are added (Stolz counts octants with an abrupt border).
- ``colour`` C in {1, ..., 6}: the number of dermoscopic colours in the lesion's palette.
- ``diameter`` D in [1, 5]: the equivalent diameter ``2 sqrt(area / pi)`` as a fraction of the
  field width, mapped linearly from 1 at ``0.2`` to 5 at ``0.65``. *Variant*: in Stolz's
  dermoscopic rule D is the number of differential structures; here it is the diameter of the
  clinical ABCD rule, put on the same 1–5 range so that the weights still apply.

The score is the Total Dermoscopy Score ``TDS = 1.3 A + 0.1 B + 0.5 C + 0.5 D`` and an item is
malignant when ``TDS > 5.45`` (Stolz's threshold for "suspicious of melanoma").

Everything is vectorised over items (NumPy, float64).
"""

from __future__ import annotations

import numpy as np
import torch

TDS_WEIGHTS = (1.3, 0.1, 0.5, 0.5)  # A, B, C, D (Stolz et al. 1994)
TDS_THRESHOLD = 5.45  # TDS above this: malignant
ASYMMETRY_RAMP = (0.02, 0.08)  # per-axis unmatched area fraction -> 0..1
BORDER_RAMP = (0.15, 0.6)  # per-octant RMS of high-frequency d ln r / d theta -> 0..1
DIAMETER_RAMP = (0.2, 0.65)  # equivalent diameter / field width -> D from 1 to 5
FEATURE_GRID = 36  # grid side for the asymmetry masks (in units of the lesion radius)
FEATURE_ANGLES = 128  # samples of r(theta) for the outline geometry
FEATURE_CHUNK = 256  # items per vectorised chunk when computing features


# --------------------------------------------------------------------------------------------
# The score
# --------------------------------------------------------------------------------------------
def _ramp(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear ramp clipped to [0, 1]: 0 at ``lo``, 1 at ``hi``."""
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def total_dermoscopy_score(
    asymmetry: np.ndarray | torch.Tensor,
    border: np.ndarray | torch.Tensor,
    colour: np.ndarray | torch.Tensor,
    diameter: np.ndarray | torch.Tensor,
) -> np.ndarray | torch.Tensor:
    """``TDS = 1.3 A + 0.1 B + 0.5 C + 0.5 D`` (Stolz et al. 1994), elementwise.

    Args: A in [0, 2], B in [0, 8], C in [1, 6], D in [1, 5] (any matching shapes). Returns the
    score in [1, 8.9]; above :data:`TDS_THRESHOLD` (5.45) a lesion counts as malignant.
    """
    wa, wb, wc, wd = TDS_WEIGHTS
    return wa * asymmetry + wb * border + wc * colour + wd * diameter


# --------------------------------------------------------------------------------------------
# Outline geometry
# --------------------------------------------------------------------------------------------
def _outline_profile(amplitudes: np.ndarray, phases: np.ndarray, theta: np.ndarray) -> tuple:
    """``r(theta) / R`` and the high-frequency (``k >= 3``) part of ``d r / d theta / R``.

    amplitudes, phases: (n, K), theta: (M,) radians -> two float64 arrays (n, M).
    """
    k = np.arange(1, amplitudes.shape[1] + 1, dtype=np.float64)  # (K,)
    arg = k[None, :, None] * theta[None, None, :] + phases[:, :, None]  # (n, K, M)
    r = 1.0 + np.einsum("nk,nkm->nm", amplitudes, np.cos(arg))  # (n, M)
    dr_high = -np.einsum("nk,nkm->nm", (amplitudes * k[None, :])[:, 2:], np.sin(arg[:, 2:]))
    return r, dr_high


def _polygon_moments(r: np.ndarray, theta: np.ndarray) -> tuple:
    """Area, centroid and central second moments of the polygon with vertices r(theta).

    r: (n, M), theta: (M,) -> area (n,), centroid (n, 2), covariance (n, 2, 2) (per unit area).
    """
    x = r * np.cos(theta)[None, :]  # (n, M)
    y = r * np.sin(theta)[None, :]  # (n, M)
    x1, y1 = np.roll(x, -1, axis=1), np.roll(y, -1, axis=1)  # next vertex, (n, M)
    cross = x * y1 - x1 * y  # (n, M)
    area = 0.5 * cross.sum(axis=1)  # (n,)
    cx = ((x + x1) * cross).sum(axis=1) / (6.0 * area)
    cy = ((y + y1) * cross).sum(axis=1) / (6.0 * area)
    ixx = ((x * x + x * x1 + x1 * x1) * cross).sum(axis=1) / 12.0
    iyy = ((y * y + y * y1 + y1 * y1) * cross).sum(axis=1) / 12.0
    ixy = ((x * y1 + 2 * x * y + 2 * x1 * y1 + x1 * y) * cross).sum(axis=1) / 24.0
    cov = np.empty((r.shape[0], 2, 2))
    cov[:, 0, 0] = ixx / area - cx * cx
    cov[:, 1, 1] = iyy / area - cy * cy
    cov[:, 0, 1] = cov[:, 1, 0] = ixy / area - cx * cy
    return area, np.stack([cx, cy], axis=1), cov


def _inside(r_table: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Whether points lie inside the outlines; r(theta) looked up (linear) in ``r_table``.

    r_table: (n, M) samples of r at theta = 2 pi m / M; px, py: (n, P) -> bool (n, P).
    """
    m = r_table.shape[1]
    pos = (np.arctan2(py, px) % (2.0 * np.pi)) * (m / (2.0 * np.pi))  # (n, P) in [0, M)
    lo = np.floor(pos).astype(np.int64) % m
    frac = pos - np.floor(pos)
    r_lo = np.take_along_axis(r_table, lo, axis=1)
    r_hi = np.take_along_axis(r_table, (lo + 1) % m, axis=1)
    return np.hypot(px, py) < r_lo + frac * (r_hi - r_lo)


# --------------------------------------------------------------------------------------------
# The four features
# --------------------------------------------------------------------------------------------
def outline_abcd_features(
    amplitudes: np.ndarray, phases: np.ndarray, radius: np.ndarray, n_colours: np.ndarray
) -> dict[str, np.ndarray]:
    """The four ABCD features and the TDS of star-shaped lesions (see the module docstring).

    The outline is ``r(theta) = R (1 + sum_k a_k cos(k theta + phi_k))``, ``k = 1..K``.

    Args:
        amplitudes: (n, K) float, a_k, with ``sum_k |a_k| < 1`` per row (so r > 0).
        phases: (n, K) float, phi_k in radians.
        radius: (n,) float > 0, R in field half-widths (the image spans [-1, 1]).
        n_colours: (n,) int in [1, 6], the number of dermoscopic colours.

    Returns:
        dict of float64 arrays (n,): ``asymmetry`` in [0, 2], ``border`` in [0, 8], ``colour``
        in [1, 6], ``diameter`` in [1, 5], ``score`` (TDS, see :func:`total_dermoscopy_score`).

    Raises:
        ValueError: mismatched shapes, ``sum_k |a_k| >= 1``, a radius <= 0 or a colour count
            outside [1, 6].
    """
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    phases = np.asarray(phases, dtype=np.float64)
    radius = np.asarray(radius, dtype=np.float64)
    n_colours = np.asarray(n_colours)
    _check_outlines(amplitudes, phases, radius, n_colours)
    asym, border, area = _outline_features(amplitudes, phases)
    equivalent_diameter = 2.0 * radius * np.sqrt(area / np.pi)  # field half-widths
    diameter = 1.0 + 4.0 * _ramp(equivalent_diameter / 2.0, *DIAMETER_RAMP)
    colour = n_colours.astype(np.float64)
    score = total_dermoscopy_score(asym, border, colour, diameter)
    return {"asymmetry": asym, "border": border, "colour": colour, "diameter": diameter,
            "score": score}


def _check_outlines(amplitudes: np.ndarray, phases: np.ndarray, radius: np.ndarray,
                    n_colours: np.ndarray) -> None:
    """Raise the ValueErrors :func:`outline_abcd_features` documents."""
    if amplitudes.ndim != 2 or phases.shape != amplitudes.shape:
        raise ValueError(f"amplitudes and phases must both be (n, K); got {amplitudes.shape} "
                         f"and {phases.shape}")
    n = amplitudes.shape[0]
    if radius.shape != (n,) or n_colours.shape != (n,):
        raise ValueError(f"radius and n_colours must be ({n},); got {radius.shape} and "
                         f"{n_colours.shape}")
    harmonic_sum = np.abs(amplitudes).sum(axis=1)  # (n,)
    if np.any(harmonic_sum >= 1.0):
        raise ValueError("each row of amplitudes must have sum |a_k| < 1 so that r(theta) > 0; "
                         f"the largest is {harmonic_sum.max():.3f}")
    if np.any(radius <= 0):
        raise ValueError("radius must be > 0 (field half-widths)")
    if np.any((n_colours < 1) | (n_colours > 6)):
        raise ValueError("n_colours must be in [1, 6] (the six dermoscopic colours)")


def _outline_features(amplitudes: np.ndarray, phases: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetry (n,) in [0, 2], border (n,) in [0, 8] and area (n,) in units of R^2 of the
    outlines, computed in chunks of ``FEATURE_CHUNK`` items."""
    n = amplitudes.shape[0]
    harmonic_sum = np.abs(amplitudes).sum(axis=1)  # (n,)
    theta = np.arange(FEATURE_ANGLES) * (2.0 * np.pi / FEATURE_ANGLES)  # (M,)
    axis = (np.arange(FEATURE_GRID) + 0.5) / FEATURE_GRID * 2.0 - 1.0  # (G,) in [-1, 1]
    unit_x, unit_y = np.meshgrid(axis, axis)  # (G, G) each
    unit_x, unit_y = unit_x.reshape(1, -1), unit_y.reshape(1, -1)  # (1, G*G)
    asym = np.empty(n)
    border = np.empty(n)
    area = np.empty(n)
    octant = (np.arange(FEATURE_ANGLES) * 8) // FEATURE_ANGLES  # (M,) octant of each angle
    for start in range(0, n, FEATURE_CHUNK):
        sl = slice(start, min(start + FEATURE_CHUNK, n))
        r, dr_high = _outline_profile(amplitudes[sl], phases[sl], theta)  # (c, M) each
        a, centroid, cov = _polygon_moments(r, theta)
        extent = 1.05 + harmonic_sum[sl, None]  # (c, 1) each item's grid just covers it
        area[sl] = a
        asym[sl] = _asymmetry(r, centroid, cov, unit_x * extent, unit_y * extent)
        # Border: high-frequency (k >= 3) part of d ln r / d theta, RMS per octant.
        hf = dr_high / r  # (c, M)
        rms = np.sqrt(np.stack([(hf[:, octant == o] ** 2).mean(axis=1) for o in range(8)], 1))
        border[sl] = _ramp(rms, *BORDER_RAMP).sum(axis=1)  # (c,)
    return asym, border, area


def _asymmetry(r: np.ndarray, centroid: np.ndarray, cov: np.ndarray, gx: np.ndarray,
               gy: np.ndarray) -> np.ndarray:
    """Asymmetry (c,) in [0, 2]: the grid (gx, gy) (c, G*G) reflected about each principal axis
    through the centroid (c, 2); the unmatched area per axis, ramped, summed over both axes.
    ``r`` (c, M) is the outline, ``cov`` (c, 2, 2) its second moments."""
    _, vecs = np.linalg.eigh(cov)  # (c, 2, 2), columns = axes (minor, major)
    inside = _inside(r, gx, gy)  # (c, G*G)
    count = inside.sum(axis=1)  # (c,) lesion area in grid cells
    total = np.zeros(r.shape[0])
    for j in range(2):
        u = vecs[:, :, j]  # (c, 2) unit axis direction
        dx = gx - centroid[:, :1]  # (c, G*G)
        dy = gy - centroid[:, 1:]
        along = dx * u[:, :1] + dy * u[:, 1:]  # (c, G*G)
        qx = centroid[:, :1] + 2.0 * along * u[:, :1] - dx  # mirror image of each point
        qy = centroid[:, 1:] + 2.0 * along * u[:, 1:] - dy
        mirrored = _inside(r, qx, qy)
        unmatched = (inside != mirrored).sum(axis=1) / (2.0 * np.maximum(count, 1))
        total += _ramp(unmatched, *ASYMMETRY_RAMP)
    return total
