"""A small gallery of a finished pipeline run's figures, for the README.

:func:`make_gallery` copies the run's key figures (test reconstructions, codebook usage, prior
samples, and the failure analysis's sample diversity against temperature) into a folder as
small PNGs (resized with Pillow to at most :attr:`GalleryConfig.max_width` pixels wide, palette-
quantised) and writes a ``README.md`` there naming the run's profile and data, so a figure never
appears without saying where it came from.

``python -m vqlesson gallery --run runs/course --out docs/gallery`` is the command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..runfolder import RunFolder


@dataclass(frozen=True)
class GalleryConfig:
    """How the gallery images are made.

    Attributes:
        max_width: largest width of an image in pixels (narrower figures are kept as they are).
        colors: palette size of the saved PNGs (256: no visible loss on these figures).
    """

    max_width: int = 640
    colors: int = 256


class Gallery(NamedTuple):
    """What :func:`make_gallery` wrote.

    Attributes:
        images: gallery name (``reconstructions``, ...) -> the PNG written.
        readme: ``OUT/README.md``: the images with captions, the run's profile and data.
        total_bytes: the images' total size in bytes.
    """

    images: dict[str, Path]
    readme: Path
    total_bytes: int


def gallery_figures(run: RunFolder) -> dict[str, tuple[Path, str]]:
    """The figures of a pipeline run that the gallery shows: name -> (path, caption)."""
    return {
        "reconstructions": (run.reconstructions,
                            "Test images (top rows) and their VQ-VAE reconstructions"),
        "codebook_usage": (run.codebook_usage, "How often each code is used on the test set"),
        "samples": (run.samples, "New lesions: codes sampled from the prior, decoded"),
        "diversity": (run.analysis_figure("diversity"),
                      "Failure analysis: sample diversity against temperature"),
    }


def _run_summary(run: RunFolder) -> str:
    """One sentence naming the run's profile and data, from its ``metrics.json``."""
    try:
        metrics = json.loads(run.metrics.read_text())
    except (OSError, ValueError):
        return "Made from a pipeline run whose metrics.json could not be read."
    data = metrics.get("data")
    data = data.get("description", data) if isinstance(data, dict) else data
    return (f"Made by `python -m vqlesson gallery` from a `python -m vqlesson pipeline` run "
            f"under the `{metrics.get('profile', 'unknown')}` profile; data: {data}.")


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def prior_and_realism(run: RunFolder) -> list[str]:
    """Markdown lines naming the run's prior(s) (class, parameters' config, epochs, held-out bits
    per code), the sampling temperature (and whether it was chosen on the validation split),
    and the realism figures of its samples: the two-sample test against reconstructions, the
    vignette beside the real images', lesions found, ABCD W1 border and TDS, near-copies and
    diversity. Empty where the run's prior_metrics.json, temperature.json or analysis.json
    are missing."""
    lines = []
    priors = _read(run.prior_metrics)
    for name, p in priors.get("priors", {}).items():
        lines.append(f"- prior ({name}): {p.get('model', 'PixelCNNPrior')}, {p.get('epochs')} "
                     f"epochs (best {p.get('best_epoch')}), test NLL "
                     f"{p.get('test', {}).get('bits_per_code', float('nan')):.3f} bits per code")
    temperature = _read(run.temperature)
    if temperature:
        how = "chosen on the validation split by the realism measure" if temperature.get(
            "chosen") else "given"
        lines.append(f"- sampling temperature: {temperature['temperature']:g} ({how})")
    analysis = _read(run.analysis)
    tests, vignette = analysis.get("two_sample", {}), analysis.get("vignette", {})
    if tests and vignette:
        t, v = tests["samples vs reconstructions"], vignette
        w1 = analysis.get("realism", {}).get("wasserstein", {})
        lines.append(
            f"- realism of {t['n']} samples against VQ-VAE reconstructions of the test images: "
            f"two-sample test accuracy {t['accuracy']:.3f} (0.5: indistinguishable); near-black "
            f"outside / inside the circle {v['samples']['outside']:.1%} / "
            f"{v['samples']['inside']:.1%} (real {v['real']['outside']:.1%} / "
            f"{v['real']['inside']:.1%}); lesion found in "
            f"{analysis.get('lesion_found', {}).get('samples', float('nan')):.0%}; ABCD W1 to the "
            f"real test lesions, border {w1.get('border', float('nan')):.2f} and TDS "
            f"{w1.get('score', float('nan')):.2f}")
    reference = analysis.get("reference_diversity", {}).get("code_hamming")
    for row in analysis.get("temperatures", []):
        if temperature and row["temperature"] == temperature["temperature"] and reference:
            lines.append(f"- near-copies of training images {row['near_copy_fraction']:.0%}; "
                         f"code diversity {row['code_hamming']:.3f} (real test images "
                         f"{reference:.3f})")
    return lines


def make_gallery(run_dir: str | Path, out_dir: str | Path,
                 config: GalleryConfig = GalleryConfig()) -> Gallery:
    """Copy a finished pipeline run's key figures, resized, into ``out_dir``.

    Args:
        run_dir: a run folder where ``python -m vqlesson pipeline`` finished (it holds
            ``reconstructions.png``, ``codebook_usage.png``, ``samples.png`` and
            ``analysis_diversity.png``).
        out_dir: the gallery folder; ``NAME.png`` and ``README.md`` there are replaced.
        config: :class:`GalleryConfig`.

    Returns:
        :class:`Gallery`.

    Raises:
        FileNotFoundError: a figure is missing (the message names it and the command that
            makes it); nothing is written then.
        ValueError: ``config.max_width`` is under 64 pixels.
    """
    from PIL import Image

    if config.max_width < 64:
        raise ValueError(f"max_width must be at least 64 pixels, got {config.max_width}")
    run, out = RunFolder(run_dir), Path(out_dir)
    figures = gallery_figures(run)
    missing = [str(path) for path, _ in figures.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)} not found: finish the run first with "
                                f"python -m vqlesson pipeline --out {run.root}")
    out.mkdir(parents=True, exist_ok=True)
    images, lines = {}, ["# Gallery", "", _run_summary(run), "", *prior_and_realism(run), ""]
    for name, (path, caption) in figures.items():
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.width > config.max_width:
                height = round(image.height * config.max_width / image.width)
                image = image.resize((config.max_width, height), Image.Resampling.LANCZOS)
            image = image.quantize(config.colors, method=Image.Quantize.MEDIANCUT)
            target = out / f"{name}.png"
            image.save(target, optimize=True)
        images[name] = target
        lines += [f"**{caption}**", "", f"![{caption}]({target.name})", ""]
    readme = out / "README.md"
    readme.write_text("\n".join(lines), encoding="utf-8")
    return Gallery(images, readme, sum(p.stat().st_size for p in images.values()))
