"""Procedural dermoscopy-like lesions: the course's offline data set (nothing to download).

The course trains a VQ-VAE (van den Oord et al. 2017), a VQ-VAE-2 (Razavi et al. 2019) and
Gated PixelCNN priors (van den Oord et al. 2016) on dermoscopy images (ISIC 2016). For CI and
laptops without the real data, :class:`SyntheticLesions` draws images that look like dermoscopy
and carry a benign/malignant label derived the way a dermatologist scores a lesion, so that the
notebooks can still talk about codebooks, reconstructions and class-conditional priors.

How one image is drawn (all vectorised on a coordinate grid in ``[-1, 1]^2``, no pixel loops):

1. **Skin**: a skin tone (light to tan, varied per item) modulated by low-frequency noise, red
   erythema blotches and a little grain.
2. **Lesion**: a star-shaped outline ``r(theta) = R * (1 + sum_k a_k cos(k theta + phi_k))``,
   ``k = 1..10``, off-centre; the edge is a smooth step of the (radial) signed distance, so it is
   anti-aliased and its softness is a parameter. Inside, 1 to 6 dermoscopic colours (light brown,
   dark brown, black, blue-grey, red, white) are blended in patches with a radial preference and
   mottled, under an optional pigment network (a domain-warped honeycomb, faded out where it
   would alias at the chosen resolution), plus dots and globules.
3. **Hair** (with probability ``hair_probability``): thin dark circular arcs.
4. **Dermoscope**: black outside a slightly off-centre circle with a soft edge, and lens fall-off.

The label follows the dermoscopic ABCD rule (Stolz et al. 1994) and is computed from the
generator's parameters, never from pixels (:mod:`vqlesson.data.synthetic_abcd`: asymmetry, border,
colours and diameter of the outline and palette, the Total Dermoscopy Score, malignant above 5.45). A latent
*atypia* ``z ~ U(0, 1)`` drives all four features (plus independent noise per feature), so the
features are correlated as in real lesions and the classes differ visibly (malignant lesions are
larger, more irregular, more variegated, have sharper edges, more dots and atypical networks).
Measured malignant fraction: 0.486 over 1000 items with seed 0 (0.47–0.53 for seeds 0–10,
mean 0.493; 0.488 over 5000 items).
"""

from __future__ import annotations

import math
import operator
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from .synthetic_abcd import TDS_THRESHOLD, abcd_features
from ..validate import check_int, check_number

# --------------------------------------------------------------------------------------------
# Constants: colours, parameter ranges
# --------------------------------------------------------------------------------------------
#: The six dermoscopic colours of the ABCD rule, RGB in [0, 1].
COLOUR_NAMES = ("light brown", "dark brown", "black", "blue-grey", "red", "white")
COLOUR_RGB = np.array(
    [
        [0.62, 0.40, 0.26],  # light brown
        [0.36, 0.21, 0.13],  # dark brown
        [0.11, 0.08, 0.07],  # black
        [0.42, 0.45, 0.53],  # blue-grey
        [0.72, 0.30, 0.29],  # red
        [0.86, 0.82, 0.80],  # white
    ]
)  # (6, 3)
#: How much each colour prefers the lesion centre (+) or periphery (-).
COLOUR_RADIAL_PREFERENCE = np.array([-0.4, 0.5, 0.7, 0.4, -0.4, 0.0])  # (6,)
#: Offset of each colour's patch logit: accents (blue-grey, red, white) cover smaller areas.
COLOUR_PATCH_BIAS = np.array([0.0, 0.0, -0.2, -0.3, -0.4, -1.0])  # (6,)
#: Relative chance of each extra colour in a palette, for a benign-looking (z=0) and a
#: malignant-looking (z=1) lesion; interpolated in z.
COLOUR_WEIGHTS_TYPICAL = np.array([3.0, 3.0, 0.8, 0.4, 0.8, 0.4])  # (6,)
COLOUR_WEIGHTS_ATYPICAL = np.array([1.5, 2.5, 2.0, 2.0, 1.2, 1.2])  # (6,)
#: Skin tones from light to tan, RGB in [0, 1] (dermoscopy light makes skin pink-orange).
SKIN_TONES = np.array([[0.95, 0.78, 0.71], [0.88, 0.64, 0.53], [0.76, 0.53, 0.41]])  # (3, 3)
HAIR_RGB = np.array([0.12, 0.08, 0.06])  # (3,)

NUM_HARMONICS = 10  # k = 1..10 in r(theta)
MAX_HARMONIC_SUM = 0.75  # sum_k |a_k| <= this keeps r(theta) > 0 and the outline star-shaped
MAX_DOTS = 40
MAX_HAIRS = 8

# Noise fields: number of control points per side (more = finer texture).
NOISE_NODES = (4, 6, 7, 9, 12, 16)


# --------------------------------------------------------------------------------------------
# Helpers: grids, noise, smooth steps
# --------------------------------------------------------------------------------------------
def _noise_basis(size: int, nodes: int) -> np.ndarray:
    """Gaussian interpolation weights ``(size, nodes)`` whose rows have unit L2 norm.

    ``W @ G @ W.T`` for ``G ~ N(0, 1)^(nodes x nodes)`` is then smooth noise with unit variance at
    every pixel (the variance of a weighted sum of independent normals is the sum of squared
    weights).
    """
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0  # (size,) pixel centres in [-1, 1]
    centres = np.linspace(-1.25, 1.25, nodes)  # (nodes,)
    spacing = centres[1] - centres[0]
    weights = np.exp(-0.5 * ((coords[:, None] - centres[None, :]) / spacing) ** 2)
    weights[weights < 1e-6] = 0.0  # float32 denormals would make the matmuls crawl
    weights /= np.sqrt((weights**2).sum(axis=1, keepdims=True))
    return weights.astype(np.float32)


def _smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Hermite smooth step: 0 at ``edge0``, 1 at ``edge1`` (either order), C1 in between."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def _to_builtin(value: Any) -> Any:
    """NumPy scalars/arrays (also inside lists/dicts) -> Python floats/ints/lists (copies)."""
    if isinstance(value, dict):
        return {k: _to_builtin(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_builtin(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# --------------------------------------------------------------------------------------------
# Blocks: sampling the parameters of one item, rendering one item
# --------------------------------------------------------------------------------------------
def _sample_params(rng: np.random.Generator, hair_rng: np.random.Generator,
                   hair_probability: float) -> dict[str, Any]:
    """All generator parameters of one item (NumPy values; see :meth:`SyntheticLesions.params`).

    The steps draw from ``rng`` in a fixed order (skin, outline, colours, structures), hair from
    its own ``hair_rng``; the same generators give the same item.
    """
    z = rng.random()  # latent atypia: 0 = banal naevus, 1 = florid melanoma

    def driver() -> float:  # per-feature atypia: z plus independent noise
        return float(np.clip(z + 0.2 * rng.standard_normal(), 0.0, 1.0))

    z_asym, z_border, z_colour, z_size, z_struct = (driver() for _ in range(5))
    p: dict[str, Any] = {"atypia": z, "atypia_asymmetry": z_asym, "atypia_border": z_border,
                         "atypia_colour": z_colour, "atypia_size": z_size,
                         "atypia_structures": z_struct}
    _sample_skin(rng, p)
    _sample_outline(rng, p, z_asym, z_border, z_size)
    _sample_colours(rng, p, z_colour)
    _sample_structures(rng, p, z_struct)
    p["hairs"] = _sample_hairs(hair_rng, hair_probability)
    return p


def _sample_skin(rng: np.random.Generator, p: dict[str, Any]) -> None:
    """Skin tone and the dermoscope's brightness and vignette, into ``p``."""
    tone = rng.beta(2.0, 2.0) * (len(SKIN_TONES) - 1)
    lo = min(int(tone), len(SKIN_TONES) - 2)
    skin = SKIN_TONES[lo] + (tone - lo) * (SKIN_TONES[lo + 1] - SKIN_TONES[lo])
    p["skin_rgb"] = np.clip(skin + rng.normal(0.0, 0.02, 3), 0.0, 1.0)
    p["brightness"] = rng.uniform(0.85, 1.05)
    p["erythema"] = rng.uniform(0.0, 0.06)
    p["vignette_center"] = rng.uniform(-0.05, 0.05, 2)
    p["vignette_radius"] = rng.uniform(0.95, 1.25)
    p["vignette_softness"] = rng.uniform(0.02, 0.08)
    p["vignette_falloff"] = rng.uniform(0.1, 0.35)


def _sample_outline(rng: np.random.Generator, p: dict[str, Any], z_asym: float, z_border: float,
                    z_size: float) -> None:
    """Centre, radius and the harmonics of r(theta) (asymmetry, border), into ``p``."""
    angle, offset = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(0.03, 0.2)
    p["lesion_center"] = offset * np.array([np.cos(angle), np.sin(angle)])
    p["lesion_radius"] = rng.uniform(0.23, 0.39) + 0.26 * z_size
    k = np.arange(1, NUM_HARMONICS + 1)
    size = 0.04 + 0.30 * z_asym  # overall harmonic amplitude
    slope = 1.8 - 1.1 * z_border  # spectral slope: flatter = more high-frequency border energy
    amps = size * k ** (-slope) * rng.uniform(0.3, 1.7, NUM_HARMONICS)
    amps[1] += rng.uniform(0.0, 0.18)  # k = 2: an oval, still mirror-symmetric
    amps *= min(1.0, MAX_HARMONIC_SUM / amps.sum())
    p["harmonic_amplitudes"] = amps
    p["harmonic_phases"] = rng.uniform(0.0, 2.0 * np.pi, NUM_HARMONICS)
    p["edge_softness"] = rng.uniform(0.03, 0.13) * (1.0 - 0.7 * z_border)  # in units of R
    p["edge_roughness"] = 0.01 + 0.05 * z_border  # small-scale noise on the outline, units of R


def _sample_colours(rng: np.random.Generator, p: dict[str, Any], z_colour: float) -> None:
    """The palette (1..6 colours, the first light or dark brown) and pigment, into ``p``."""
    n_colours = 1 + rng.binomial(5, 0.2 + 0.8 * z_colour)
    first = int(rng.integers(0, 2))
    weights = (1 - z_colour) * COLOUR_WEIGHTS_TYPICAL + z_colour * COLOUR_WEIGHTS_ATYPICAL
    weights[first] = 0.0
    extra = rng.choice(6, size=n_colours - 1, replace=False, p=weights / weights.sum())
    palette = np.concatenate([[first], extra]).astype(np.int64)
    p["palette"] = palette
    p["colour_names"] = [COLOUR_NAMES[c] for c in palette]
    strength = rng.uniform(-0.6, 0.2, n_colours)
    strength[0] = rng.uniform(0.5, 0.9)  # the base colour dominates
    p["colour_strengths"] = strength
    p["pigment_density"] = rng.uniform(0.75, 0.98)
    p["central_darkening"] = rng.uniform(0.0, 0.35)


def _sample_structures(rng: np.random.Generator, p: dict[str, Any], z_struct: float) -> None:
    """Pigment network (typical: regular, fading at the periphery; atypical: thick, broken) and
    dots and globules, in lesion polar coordinates (angle, fraction of r(theta)), into ``p``."""
    p["network"] = bool(rng.random() < 0.7)
    p["network_period"] = rng.uniform(0.05, 0.09)
    p["network_angle"] = rng.uniform(0.0, np.pi)
    p["network_contrast"] = rng.uniform(0.35, 0.65)
    p["network_atypia"] = z_struct
    n_dots = int(min(MAX_DOTS, rng.poisson(1.0 + 18.0 * z_struct**1.5)))
    reach = 0.5 + 0.45 * z_struct  # atypical: dots out to the periphery
    p["dots_angle"] = rng.uniform(0.0, 2.0 * np.pi, n_dots)
    p["dots_fraction"] = reach * np.sqrt(rng.random(n_dots))
    growth = 1.0 + 0.8 * rng.random(n_dots) * z_struct  # atypical: some dots become globules
    p["dots_radius"] = rng.uniform(0.008, 0.02, n_dots) * growth
    p["dots_colour"] = rng.choice([1, 2, 3], size=n_dots, p=[0.6, 0.3, 0.1]).astype(np.int64)


def _sample_hairs(hair_rng: np.random.Generator, hair_probability: float) -> list[dict]:
    """Hairs (circular arcs) from their own stream, so ``hair_probability`` changes nothing
    else: none with probability ``1 - hair_probability``, else 1..``MAX_HAIRS``."""
    hairs = []
    if hair_rng.random() < hair_probability:
        for _ in range(1 + min(MAX_HAIRS - 1, int(hair_rng.geometric(0.3)) - 1)):
            hairs.append({
                "point": hair_rng.uniform(-0.85, 0.85, 2),
                "direction": hair_rng.uniform(0.0, 2.0 * np.pi),
                "curvature_radius": hair_rng.uniform(0.6, 4.0) * hair_rng.choice([-1.0, 1.0]),
                "length": hair_rng.uniform(0.5, 2.0),
                "width": hair_rng.uniform(0.006, 0.016),
                "darkness": hair_rng.uniform(0.6, 0.95),
            })
    return hairs


class _Canvas:
    """Pixel grid and noise bases for one image size (built once per data set)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pixel = 2.0 / size  # width of one pixel in field coordinates
        coords = ((np.arange(size) + 0.5) / size * 2.0 - 1.0).astype(np.float32)  # (S,)
        self.x = np.broadcast_to(coords[None, :], (size, size))  # (S, S) column coordinate
        self.y = np.broadcast_to(coords[:, None], (size, size))  # (S, S) row coordinate
        self.bases = {nodes: _noise_basis(size, nodes) for nodes in NOISE_NODES}

    def noise(self, rng: np.random.Generator, nodes: int) -> np.ndarray:
        """Smooth noise (S, S) float32, zero mean, unit variance, ``nodes`` control points/side."""
        basis = self.bases[nodes]  # (S, nodes)
        g = rng.standard_normal((nodes, nodes), dtype=np.float32)
        # einsum, not BLAS: a multithreaded GEMM this small costs more in thread wake-ups than it
        # saves (badly so inside DataLoader workers); einsum stays on one core.
        rows = np.einsum("ij,jk->ik", basis, g)  # (S, nodes)
        return np.einsum("ik,lk->il", rows, basis)  # (S, S)


def _render(p: dict[str, Any], canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Draw one item from its parameters ``p``: (3, S, S) float32 in [0, 1].

    ``rng`` supplies only the textures (noise fields), drawn in a fixed order by the steps
    below, so the geometry is fully in ``p``. Scalars are used as Python floats and arrays as
    float32, so nothing promotes to float64.
    """
    image = _draw_skin(p, canvas, rng)  # (3, S, S)
    mask, frac = _outline_mask(p, canvas, rng)  # (S, S) each
    lesion, pigmented = _lesion_colours(p, canvas, rng, frac)  # (3, S, S), (S, S)
    _pigment_network(p, canvas, rng, lesion, frac, pigmented)
    # Composite the lesion over the skin.
    density = p["pigment_density"] * (1.0 - 0.25 * frac**2) * (1.0 + 0.1 * canvas.noise(rng, 9))
    alpha = np.clip(mask * density, 0.0, 1.0)[None]  # (1, S, S)
    image = image * (1.0 - alpha) + lesion * alpha
    _draw_dots(p, canvas, image)
    image = _draw_hairs(p, canvas, image)
    return _dermoscope(p, canvas, rng, image)


def _draw_skin(p: dict[str, Any], canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Skin: tone x low-frequency shading, erythema (grain comes last). -> (3, S, S)."""
    shade = (1.0 + 0.05 * canvas.noise(rng, 4) + 0.025 * canvas.noise(rng, 9)
             + 0.015 * canvas.noise(rng, 16))  # (S, S)
    image = p["skin_rgb"].astype(np.float32)[:, None, None] * shade[None]  # (3, S, S)
    ery = p["erythema"] * np.clip(canvas.noise(rng, 6), 0.0, None)  # (S, S)
    image += np.array([0.6, -0.6, -0.4], np.float32)[:, None, None] * ery[None]
    return image


def _outline_mask(p: dict[str, Any], canvas: _Canvas, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The lesion outline r(theta), via powers of e^{i theta} (no per-harmonic trig).

    Returns ``(mask, frac)``: (S, S) soft inside-mask in [0, 1], and (S, S) the radius as a
    fraction of the outline's in that direction (0 centre, 1 outline, clipped to 1.5).
    """
    x, y, px, size = canvas.x, canvas.y, canvas.pixel, canvas.size
    cx, cy = (float(v) for v in p["lesion_center"])
    radius = float(p["lesion_radius"])
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    rho = np.hypot(dx, dy)  # (S, S)
    unit = (dx + 1j * dy) / np.maximum(rho, 1e-6)  # e^{i theta}, (S, S) complex
    power = np.ones_like(unit)
    profile = np.ones((size, size), np.float32)
    for a, phi in zip(p["harmonic_amplitudes"], p["harmonic_phases"]):
        power = power * unit  # e^{i k theta}
        profile += float(a) * (power * complex(np.exp(1j * phi))).real
    profile *= 1.0 + p["edge_roughness"] * canvas.noise(rng, 16)
    r_theta = radius * profile  # (S, S) outline radius in this direction
    signed = rho - r_theta  # radial signed distance, < 0 inside
    width = max(p["edge_softness"] * radius, 0.75 * px)
    mask = _smoothstep(width, -width, signed)  # (S, S) in [0, 1]
    frac = np.clip(rho / np.maximum(r_theta, 1e-6), 0.0, 1.5)  # 0 centre, 1 outline
    return mask, frac


def _lesion_colours(p: dict[str, Any], canvas: _Canvas, rng: np.random.Generator,
                    frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colours in patches with a radial preference (softmax over the palette), mottling
    (structureless blotches) and a darker centre.

    Returns ``(lesion, pigmented)``: (3, S, S) lesion colour, (S, S) share of browns and black.
    """
    size, palette = canvas.size, p["palette"]
    logits = np.stack([
        2.5 * (canvas.noise(rng, 7) + float(s + COLOUR_PATCH_BIAS[c])
               + float(COLOUR_RADIAL_PREFERENCE[c]) * (1.0 - 2.0 * frac))
        for c, s in zip(palette, p["colour_strengths"])
    ])  # (C, S, S)
    logits -= logits.max(axis=0, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=0, keepdims=True)
    lesion = np.zeros((3, size, size), np.float32)
    for w, c in zip(weights, palette):
        lesion += w[None] * COLOUR_RGB[c].astype(np.float32)[:, None, None]  # (3, S, S)
    pigmented = weights[palette <= 2].sum(axis=0)  # (S, S) share of browns and black
    mottle = 1.0 + 0.12 * canvas.noise(rng, 16) + 0.08 * canvas.noise(rng, 9)
    lesion *= (mottle * (1.0 - p["central_darkening"] * np.clip(1.0 - frac**2, 0.0, 1.0)))[None]
    return lesion, pigmented


def _pigment_network(p: dict[str, Any], canvas: _Canvas, rng: np.random.Generator,
                     lesion: np.ndarray, frac: np.ndarray, pigmented: np.ndarray) -> None:
    """Darken ``lesion`` (3, S, S) in place with the pigment network: a domain-warped
    honeycomb (three plane waves at 120 degrees) of dark lines over lighter holes, faded out
    where its period would alias at this resolution."""
    x, y, px = canvas.x, canvas.y, canvas.pixel
    period = p["network_period"]
    visibility = float(np.clip((period / px - 2.5) / 3.0, 0.0, 1.0))
    if not p["network"] or visibility <= 0.0:
        return
    atyp = p["network_atypia"]
    warp, jitter = np.float32(period * (1.0 + 1.5 * atyp)), np.float32(0.3 * period)
    wx = x + warp * canvas.noise(rng, 12) + jitter * canvas.noise(rng, 16)  # (S, S)
    wy = y + warp * canvas.noise(rng, 12) + jitter * canvas.noise(rng, 16)
    waves = np.zeros_like(wx)
    for j in range(3):
        ang = p["network_angle"] + j * 2.0 * np.pi / 3.0
        wavenumber = np.float32(2.0 * np.pi / period)
        waves += np.cos((wx * math.cos(ang) + wy * math.sin(ang)) * wavenumber)
    # waves in [-1.5, 3]: lines where it is lowest; atypical networks have thicker lines.
    lines = np.exp(-(waves + 1.5) / (0.9 + 1.2 * atyp))
    lines *= _smoothstep(-1.0, 0.5, canvas.noise(rng, 16))  # uneven line darkness
    lines *= pigmented  # only over the brown/black colours
    if atyp > 0.4:  # broken, irregular network
        lines *= _smoothstep(-0.3, 0.3, canvas.noise(rng, 9) + 1.2 - 1.5 * atyp)
    fade = _smoothstep(1.0, 0.5 - 0.4 * atyp, frac)  # typical: fades at the periphery
    lesion *= 1.0 - (visibility * p["network_contrast"] * lines * fade)[None]


def _draw_dots(p: dict[str, Any], canvas: _Canvas, image: np.ndarray) -> None:
    """Dots and globules into ``image`` (3, S, S), in place: Gaussian blobs drawn in small
    windows, placed in lesion polar coordinates."""
    x, y, px, size = canvas.x, canvas.y, canvas.pixel, canvas.size
    cx, cy = (float(v) for v in p["lesion_center"])
    radius = float(p["lesion_radius"])
    for ang, f, rad, col in zip(p["dots_angle"], p["dots_fraction"], p["dots_radius"],
                                p["dots_colour"]):
        prof = 1.0 + sum(a * math.cos((k + 1) * ang + phi) for k, (a, phi) in
                         enumerate(zip(p["harmonic_amplitudes"], p["harmonic_phases"])))
        dist = f * radius * prof
        ox, oy = float(cx + dist * math.cos(ang)), float(cy + dist * math.sin(ang))
        rad = float(rad)
        sigma = max(rad, 0.5 * px)
        half = 3.0 * sigma
        c0 = max(0, int((ox - half + 1.0) / px))
        c1 = min(size, int((ox + half + 1.0) / px) + 1)
        r0 = max(0, int((oy - half + 1.0) / px))
        r1 = min(size, int((oy + half + 1.0) / px) + 1)
        if c0 >= c1 or r0 >= r1:
            continue
        d2 = (x[r0:r1, c0:c1] - ox) ** 2 + (y[r0:r1, c0:c1] - oy) ** 2
        blob = 0.85 * np.exp(-d2 / (2.0 * sigma**2)) * min(1.0, rad / (0.5 * px))
        patch = image[:, r0:r1, c0:c1]
        dot_rgb = COLOUR_RGB[col].astype(np.float32)[:, None, None]  # (3, 1, 1)
        image[:, r0:r1, c0:c1] = patch * (1.0 - blob) + dot_rgb * blob


def _draw_hairs(p: dict[str, Any], canvas: _Canvas, image: np.ndarray) -> np.ndarray:
    """Hair over ``image`` (3, S, S): circular arcs, anti-aliased by coverage. -> (3, S, S)."""
    x, y, px = canvas.x, canvas.y, canvas.pixel
    for hair in p["hairs"]:
        hx, hy = (float(v) for v in hair["point"])
        d, rc = float(hair["direction"]), float(hair["curvature_radius"])
        ccx, ccy = hx - rc * math.sin(d), hy + rc * math.cos(d)  # centre of curvature
        rc_abs = abs(rc)
        mid = math.atan2(hy - ccy, hx - ccx)
        ddx, ddy = x - np.float32(ccx), y - np.float32(ccy)
        off = np.abs(np.hypot(ddx, ddy) - rc_abs)  # distance to the circle
        along = np.abs(_wrap_angle(np.arctan2(ddy, ddx) - mid)) * rc_abs  # arc length from mid
        half_len = 0.5 * hair["length"]
        taper = np.sqrt(np.clip((half_len - along) / (0.15 * hair["length"]), 0.0, 1.0))
        half_w = max(0.5 * hair["width"], 0.5 * px)
        coverage = np.clip((half_w - off) / px + 0.5, 0.0, 1.0)
        a_h = float(hair["darkness"]) * min(1.0, float(hair["width"]) / px) * coverage * taper
        image = image * (1.0 - a_h[None]) + HAIR_RGB.astype(np.float32)[:, None, None] * a_h[None]
    return image


def _dermoscope(p: dict[str, Any], canvas: _Canvas, rng: np.random.Generator,
                image: np.ndarray) -> np.ndarray:
    """The dermoscope: lens fall-off, black outside the field stop, grain; clipped to [0, 1].
    (3, S, S) -> (3, S, S) float32."""
    x, y, size = canvas.x, canvas.y, canvas.size
    vx, vy = (float(v) for v in p["vignette_center"])
    vr = np.hypot(x - np.float32(vx), y - np.float32(vy))
    vrad, vsoft = p["vignette_radius"], p["vignette_softness"]
    scope = _smoothstep(vrad, vrad - vsoft, vr) * (1.0 - p["vignette_falloff"] * (vr / vrad) ** 2)
    image *= (p["brightness"] * scope)[None]
    image += 0.01 * rng.standard_normal((1, size, size), dtype=np.float32) * scope[None]
    return np.clip(image, 0.0, 1.0).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------
# Main API
# --------------------------------------------------------------------------------------------
class SyntheticLesions(Dataset):
    """Procedural dermoscopy-like images with ABCD-rule benign/malignant labels.

    ``dataset[i] -> (image, label)``: image ``(3, S, S)`` float32 in ``[-1, 1]``, label int64
    scalar tensor (0 benign, 1 malignant), ``S = image_size``. Item ``i`` depends only on
    ``(seed, i)`` (NumPy generators seeded with ``[seed, i, stream]``), so any access order and any
    number of ``DataLoader`` workers give identical images. Labels and features are computed once,
    at construction, from the generator parameters (no rendering); about half the items are
    malignant (measured 48.6 % over 1000 items with seed 0, 47–53 % for seeds 0–10). The module
    docstring says how the images are drawn; :mod:`vqlesson.data.synthetic_abcd` how the ABCD
    features and the TDS are defined.

    Transform contract: ``transform`` receives the image as a float32 tensor ``(3, S, S)`` in
    ``[0, 1]`` (what ``torchvision.transforms.v2`` colour transforms such as ``ColorJitter``
    expect) and must return a float tensor (any shape it likes, e.g. after a crop); the result is
    clamped to ``[0, 1]`` and then mapped to ``[-1, 1]`` by ``x * 2 - 1``.

    Args:
        n: number of items, >= 1.
        image_size: side S of the square images in pixels, >= 16 (32, 64, 128, 256 are typical).
        seed: non-negative int; the whole data set is a function of it.
        transform: optional callable on the ``[0, 1]`` image tensor (see above).
        hair_probability: chance in [0, 1] that an item has hair (1 to 8 strands; default 0.35).
            Hair is drawn from its own random stream, so changing this leaves everything else
            (labels included) unchanged.

    Attributes:
        features: dict of float32 tensors ``(n,)``: ``asymmetry`` in [0, 2], ``border`` in
            [0, 8], ``colour`` in {1..6}, ``diameter`` in [1, 5], ``score`` (the TDS).
        labels: int64 tensor ``(n,)``, ``score > threshold``.
        threshold: the TDS threshold (5.45).
        classes: ``("benign", "malignant")``.

    Raises:
        ValueError: ``n < 1``, ``image_size < 16``, a negative ``seed`` or ``hair_probability``
            outside [0, 1].
        TypeError: a non-integer ``n``/``image_size``/``seed`` or a ``transform`` that is not
            callable.
    """

    classes = ("benign", "malignant")
    threshold = TDS_THRESHOLD

    def __init__(
        self,
        n: int,
        image_size: int = 64,
        seed: int = 0,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        hair_probability: float = 0.35,
    ) -> None:
        self.n = check_int(n, "n", 1, note="the number of items")
        self.image_size = check_int(image_size, "image_size", 16, note="pixels; e.g. 32 or 64")
        self.seed = check_int(seed, "seed", 0)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.transform = transform
        self.hair_probability = check_number(hair_probability, "hair_probability", 0, 1)
        self._canvas = _Canvas(self.image_size)
        self._params = [
            _sample_params(self._rng(i, 0), self._rng(i, 1), hair_probability)
            for i in range(self.n)
        ]
        feats = abcd_features(
            np.stack([p["harmonic_amplitudes"] for p in self._params]),  # (n, K)
            np.stack([p["harmonic_phases"] for p in self._params]),  # (n, K)
            np.array([p["lesion_radius"] for p in self._params]),  # (n,)
            np.array([len(p["palette"]) for p in self._params]),  # (n,)
        )
        self.features = {k: torch.from_numpy(v.astype(np.float32)) for k, v in feats.items()}
        self.labels = torch.from_numpy((feats["score"] > self.threshold).astype(np.int64))

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        """Generator for one item; stream 0: parameters, 1: hair, 2: textures."""
        return np.random.default_rng([self.seed, index, stream])

    def _index(self, index: Any) -> int:
        """``index`` as an int in [0, n) (negative counts back); TypeError / IndexError if bad."""
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        if not -self.n <= i < self.n:
            raise IndexError(f"index {i} out of range for SyntheticLesions of length {self.n}")
        return i % self.n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image (3, S, S) float32 in [-1, 1], label () int64)``; negative indices count back.

        Raises:
            IndexError: ``index`` outside [-n, n). TypeError: a non-integer index, or a
                ``transform`` that does not return a tensor.
        """
        i = self._index(index)
        pixels = _render(self._params[i], self._canvas, self._rng(i, 2))  # (3, S, S) in [0, 1]
        label = self.labels[i].clone()
        if self.transform is None:
            # NumPy, not torch: torch would spread these small element-wise ops over threads.
            return torch.from_numpy(pixels * np.float32(2.0) - np.float32(1.0)), label
        image = self.transform(torch.from_numpy(pixels))
        if not isinstance(image, torch.Tensor):
            raise TypeError(
                f"transform must return a torch.Tensor, got {type(image).__name__}; "
                "it receives and should return a float image tensor in [0, 1]"
            )
        return image.float().clamp(0.0, 1.0) * 2.0 - 1.0, label

    def params(self, index: int) -> dict[str, Any]:
        """The generator parameters of item ``index`` as plain Python values (a fresh copy).

        Keys: ``atypia`` (latent z in [0, 1]) and its per-feature versions ``atypia_*``;
        ``skin_rgb``, ``brightness``, ``erythema``; ``vignette_center`` / ``_radius`` /
        ``_softness`` / ``_falloff`` (field coordinates, the image spans [-1, 1]);
        ``lesion_center``, ``lesion_radius`` R, ``harmonic_amplitudes`` a_k and
        ``harmonic_phases`` phi_k (k = 1..10, radians), ``edge_softness`` and ``edge_roughness``
        (units of R); ``palette`` (indices into :data:`COLOUR_NAMES`), ``colour_names``,
        ``colour_strengths``, ``pigment_density``, ``central_darkening``; ``network`` (bool) and
        ``network_period`` / ``_angle`` / ``_contrast`` / ``_atypia``; ``dots_angle`` /
        ``_fraction`` (of r(theta)) / ``_radius`` / ``_colour``; ``hairs`` (list of dicts with
        ``point``, ``direction``, ``curvature_radius``, ``length``, ``width``, ``darkness``); and
        the item's ``label`` and ABCD ``features``.

        Raises:
            IndexError: ``index`` outside [-n, n). TypeError: a non-integer index.
        """
        i = self._index(index)
        out = _to_builtin(self._params[i])
        out["label"] = int(self.labels[i])
        out["features"] = {k: float(v[i]) for k, v in self.features.items()}
        return out

    @property
    def malignant_fraction(self) -> float:
        """Fraction of items labelled malignant."""
        return float(self.labels.float().mean())

    def __repr__(self) -> str:
        return (f"SyntheticLesions(n={self.n}, image_size={self.image_size}, seed={self.seed}, "
                f"malignant_fraction={self.malignant_fraction:.3f})")
