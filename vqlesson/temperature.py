"""Choosing the sampling temperature on the validation set by the realism measure, not by eye.

The temperature T divides the prior's logits before sampling: T = 1 samples the distribution the
prior learnt, T < 1 makes it sharper (cleaner images, less variety), T > 1 flatter. Which T gives
the most realistic images is a question about the samples, so it is answered by measuring them
against held-out data, the validation split (the test split stays untouched for the final
figures):

1. sample the same number of images at each candidate T, with the same random numbers (so the
   temperatures differ in nothing else);
2. score each set against VQ-VAE reconstructions of the validation images with the classifier
   two-sample test (Lopez-Paz & Oquab 2017, :func:`~vqlesson.two_sample.two_sample_test`: 0.5
   means a small CNN cannot tell samples from reconstructions), and measure the dermoscope's
   vignette (:func:`~vqlesson.realism.vignette_fractions`) and the diversity of the sampled
   codes (:func:`~vqlesson.memorisation.diversity`) beside the real images';
3. keep the temperatures whose vignette is within the issue's bounds (near-black outside the
   circle within ``outside_tolerance`` of real, inside at most ``inside_factor`` x real) and whose
   diversity is at least ``diversity_factor`` x real (a classifier that sees one image at a time
   hardly notices that a cold prior repeats itself), and choose the one with the lowest
   two-sample accuracy among them (among all of them when none qualifies; on a tie, the
   warmer one).

:func:`choose_temperature` returns the choice with the table of every candidate; the pipeline
prints it and samples ``samples.png`` at that temperature unless ``--temperature`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from .memorisation import diversity
from .pixelcnn_prior import AutoregressivePrior, SampleOptions
from .realism import reconstruct, vignette_fractions
from .runtime import model_device
from .sampling import decode_codes, sample_codes
from .two_sample import TwoSampleConfig, two_sample_test
from .validate import check_images, check_int, check_number
from .vqvae import DiscreteAutoencoder


@dataclass
class TemperatureSearch:
    """Settings of :func:`choose_temperature`.

    Attributes:
        temperatures: the candidates, each a number > 0, tried in this order.
        outside_tolerance: the samples' near-black fraction outside the inscribed circle may
            differ from the real images' by this fraction of it, >= 0 (0.25: within 25 %).
        inside_factor: the samples' near-black fraction inside the circle may be at most this
            multiple of the real images', > 0.
        diversity_factor: the samples' code diversity must be at least this multiple of the
            real images', >= 0.
        near_black: the brightness threshold of the vignette measure, in (0, 1].
        two_sample: the classifier two-sample test's settings.
        seed: of the samples (the same for every candidate) and of the tests, >= 0.
    """

    temperatures: tuple[float, ...] = (0.8, 0.9, 1.0)
    outside_tolerance: float = 0.25
    inside_factor: float = 2.0
    diversity_factor: float = 0.9
    near_black: float = 0.1
    two_sample: TwoSampleConfig = field(default_factory=TwoSampleConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        self.temperatures = tuple(self.temperatures)
        if not self.temperatures:
            raise ValueError("temperatures must name at least one candidate, e.g. (0.8, 0.9, 1.0)")
        for i, t in enumerate(self.temperatures):
            check_number(t, f"temperatures[{i}]", 0, low_open=True)
        check_number(self.outside_tolerance, "outside_tolerance", 0)
        check_number(self.inside_factor, "inside_factor", 0, low_open=True)
        check_number(self.diversity_factor, "diversity_factor", 0)
        check_number(self.near_black, "near_black", 0, 1, low_open=True)
        check_int(self.seed, "seed", 0)


class TemperatureChoice(NamedTuple):
    """What :func:`choose_temperature` returns.

    Attributes:
        temperature: the chosen temperature.
        rows: one dict per candidate, in order: ``temperature``, ``accuracy`` (two-sample test,
            samples vs reconstructions, in [0, 1]), ``standard_error``, ``outside`` and
            ``inside`` (near-black fractions, in [0, 1]), ``diversity`` (mean pairwise Hamming
            fraction of the codes, in [0, 1]) and ``within`` (the bounds, :func:`within_bounds`).
        reference: the real validation images' ``outside``, ``inside`` and ``diversity``.
        table: the rows as a markdown table, the choice marked.
    """

    temperature: float
    rows: list[dict]
    reference: dict
    table: str


def within_bounds(row: dict, reference: dict, search: TemperatureSearch) -> bool:
    """Whether a candidate's vignette and diversity are within the search's bounds: near-black
    outside the circle within ``outside_tolerance`` x real's of real's, inside at most
    ``inside_factor`` x real's, code diversity at least ``diversity_factor`` x real's.

    Args:
        row, reference: dicts with ``outside``, ``inside`` and ``diversity``, in [0, 1] (a
            candidate's and the real images', as in :class:`TemperatureChoice`).
    """
    outside_ok = abs(row["outside"] - reference["outside"]) <= (
        search.outside_tolerance * reference["outside"])
    inside_ok = row["inside"] <= search.inside_factor * reference["inside"]
    return outside_ok and inside_ok and row["diversity"] >= (
        search.diversity_factor * reference["diversity"])


def pick_temperature(rows: Sequence[dict]) -> float:
    """The rule of :func:`choose_temperature`: the lowest two-sample ``accuracy`` among the rows
    that are ``within`` the bounds (all rows when none is), the higher temperature on a tie
    (closer to the distribution the prior learnt).

    Args:
        rows: dicts with ``temperature``, ``accuracy`` and ``within`` (bool), at least one.

    Raises:
        ValueError: no rows.
    """
    if not rows:
        raise ValueError("rows must hold at least one candidate temperature")
    pool = [r for r in rows if r["within"]] or list(rows)
    return min(pool, key=lambda r: (r["accuracy"], -r["temperature"]))["temperature"]


def _table(rows: list[dict], reference: dict, chosen: float) -> str:
    lines = ["| temperature | two-sample accuracy (samples vs reconstructions) | near-black "
             "outside / inside the circle | code diversity | within the bounds |",
             "|---|---|---|---|---|"]
    for r in rows:
        mark = " (chosen)" if r["temperature"] == chosen else ""
        lines.append(f"| {r['temperature']:g}{mark} | {r['accuracy']:.3f} ± "
                     f"{r['standard_error']:.3f} | {r['outside']:.1%} / {r['inside']:.1%} | "
                     f"{r['diversity']:.3f} | {'yes' if r['within'] else 'no'} |")
    lines.append(f"| *real (validation)* | | {reference['outside']:.1%} / "
                 f"{reference['inside']:.1%} | {reference['diversity']:.3f} | |")
    return "\n".join(lines)


@torch.no_grad()
def choose_temperature(vqvae: DiscreteAutoencoder, priors: Sequence[AutoregressivePrior],
                       real: Tensor, search: TemperatureSearch | None = None, *,
                       label: int | Tensor | None = None) -> TemperatureChoice:
    """The sampling temperature whose samples look most like held-out images (module docstring).

    Args:
        vqvae: the trained VQ-VAE (or VQ-VAE-2).
        priors: its priors, one per level (``(prior,)`` or ``(top, bottom)``).
        real: (N, 3, S, S) float in [-1, 1], validation images, N >= 4 (N samples are drawn at
            each temperature; 128 take a few seconds per candidate on a CPU).
        search: :class:`TemperatureSearch` (candidates, bounds, seed).
        label: for class-conditional priors, a class index or (N,) int64 labels (e.g. the
            classes in turn).

    Returns:
        :class:`TemperatureChoice`: the chosen temperature, a row per candidate, the table.

    Raises:
        TypeError, ValueError: bad images (see :func:`~vqlesson.validate.check_images`), fewer
            than 4, or priors that do not fit the VQ-VAE.
    """
    search = search if search is not None else TemperatureSearch()
    check_images(real, "real")
    n = check_int(len(real), "len(real)", 4, note="the two-sample test needs 2 to train on, 2 "
                  "to test")
    reconstructions = reconstruct(vqvae, real)  # (N, 3, S, S) on the CPU
    device = model_device(vqvae)
    real_codes = tuple(c.cpu() for c in vqvae.encode(real.to(device)))  # one map per level
    vignette = vignette_fractions(real, search.near_black)
    reference = {"outside": vignette.outside, "inside": vignette.inside,
                 "diversity": diversity(real_codes, real).code_hamming}
    rows = []
    for t in search.temperatures:
        generator = torch.Generator(device=device).manual_seed(search.seed)
        codes = sample_codes(vqvae, priors, n, label, generator, SampleOptions(temperature=t))
        images = decode_codes(vqvae, codes).float().cpu()  # (N, 3, S, S)
        test = two_sample_test(images, reconstructions, search.two_sample, search.seed,
                               names=("samples", "reconstructions"))
        v = vignette_fractions(images, search.near_black)
        row = {"temperature": float(t), "accuracy": test.accuracy,
               "standard_error": test.standard_error, "outside": v.outside, "inside": v.inside,
               "diversity": diversity(tuple(c.cpu() for c in codes), images).code_hamming}
        row["within"] = within_bounds(row, reference, search)
        rows.append(row)
    chosen = pick_temperature(rows)
    return TemperatureChoice(chosen, rows, reference, _table(rows, reference, chosen))
