"""What a finished run gives: its models, loaded (:func:`load_run`), and new images sampled
from its prior(s) (:func:`sample_run`, the ``sample`` command, which writes ``samples.png``).

The workflows that make a run (train the VQ-VAE, extract the codes, train the priors) are in
:mod:`vqlesson.runs`; these read what they wrote, through :class:`~vqlesson.runfolder.RunFolder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from .checkpoint import load_checkpoint
from .runfolder import RunFolder
from .runtime import get_device
from .vqvae import check_autoencoder


class LoadedRun(NamedTuple):
    """A finished run, loaded: the VQ-VAE, its priors with their best weights (a tuple, one per
    level: ``(prior,)`` or ``(top, bottom)``), the class names, and each prior's full training
    history by file stem (``prior``, or ``prior_top`` and ``prior_bottom``), all in eval mode."""

    vqvae: torch.nn.Module
    priors: tuple[Any, ...]
    classes: list[str]
    histories: dict[str, dict]


def load_run(run: RunFolder | str | Path, device: Any = None) -> LoadedRun:
    """Load a run's VQ-VAE and the best weights of its prior(s).

    Raises:
        FileNotFoundError: no VQ-VAE, or no prior trained yet (the message says what to run).
        ValueError: a prior trained on the codes of other VQ-VAE weights.
    """
    from .checkpoint import read_checkpoint
    from .codes import model_fingerprint
    from .pixelcnn_prior import AutoregressivePrior

    run = RunFolder(run)
    vqvae = load_checkpoint(run.require_vqvae(), map_location=device).model.eval()
    check_autoencoder(vqvae, f"the model of {run.checkpoint}")
    priors, classes, histories = [], [], {}
    for level in vqvae.levels:
        path, best = run.prior(level.name), run.prior_best(level.name)
        chosen = best if best.is_file() else path
        if not chosen.is_file():
            raise FileNotFoundError(
                f"no prior trained yet in {run.root} ({path.name} is missing); train it first: "
                f"python -m vqlesson train-prior --vqvae {run.root}")
        checkpoint = load_checkpoint(chosen, map_location=device)
        if not isinstance(checkpoint.model, AutoregressivePrior):
            raise ValueError(f"{chosen} holds a {type(checkpoint.model).__name__}, not a prior; "
                             f"train one: python -m vqlesson train-prior --vqvae {run.root}")
        made_by = (checkpoint.extra.get("codes_fingerprint") or "").partition("|")[0]
        if made_by and made_by != f"model:{model_fingerprint(vqvae)}":
            raise ValueError(
                f"{chosen} was trained on the codes of other VQ-VAE weights than "
                f"{run.checkpoint} (was the VQ-VAE trained again?); train the prior again: "
                f"python -m vqlesson train-prior --vqvae {run.root}")
        priors.append(checkpoint.model.eval())
        classes = list(checkpoint.extra.get("classes") or classes)
        histories[path.stem] = read_checkpoint(path).get("history", {})
    return LoadedRun(vqvae, tuple(priors), classes, histories)


@dataclass
class SampleConfig:
    """Settings of :func:`sample_run`.

    Attributes:
        n: number of images, >= 1.
        temperature: divides the logits: 1 samples the model, < 1 sharper, 0 greedy.
        top_k: sample only among the k most likely codes at each position (default: all codes).
        label: class name (e.g. ``malignant``) or index, for class-conditional priors (default:
            the classes in turn).
        seed: random seed of the sampling generator.
        out: the PNG file (default: ``RUN/samples.png``).
        device: ``cpu``, ``cuda``, ``mps`` (default: the best available).
    """

    n: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    label: str | None = None
    seed: int = 0
    out: str | None = None
    device: str | None = None


class Samples(NamedTuple):
    """What :func:`sample_run` returns: the images ``(n, 3, S, S)`` float in [-1, 1], the PNG
    written, the sampling time (s), which labels were used, and the device."""

    images: torch.Tensor
    path: Path
    seconds: float
    labels: str
    device: torch.device


def sampling_label(label: str | None, loaded: LoadedRun, n: int) -> Any:
    """The ``label`` argument of :func:`~vqlesson.sampling.sample_images`: a class index,
    the classes in turn (``None`` for a class-conditional prior), or ``None``.

    Raises:
        ValueError: a label for unconditional priors, or an unknown label.
    """
    num_classes = max(p.config.num_classes for p in loaded.priors)
    if label is None:  # a class-conditional prior needs a label: show the classes in turn
        return torch.arange(n) % num_classes if num_classes else None
    if not num_classes:
        raise ValueError(
            "the prior(s) of this run were trained without labels; leave out --label, or train "
            "class-conditional priors: python -m vqlesson train-prior --vqvae RUN "
            "--label-conditional")
    if label in loaded.classes:
        return loaded.classes.index(label)
    if label.isdigit() and int(label) < num_classes:
        return int(label)
    choices = ", ".join(loaded.classes) if loaded.classes else f"0..{num_classes - 1}"
    raise ValueError(f"unknown label {label!r}; choose one of {choices}")


def sample_run(run: RunFolder | str | Path, config: SampleConfig | None = None) -> Samples:
    """Sample images from a run's prior(s) (VQ-VAE-2: top codes, then bottom codes conditioned
    on them), decode them and write a PNG grid.

    Raises:
        FileNotFoundError, ValueError: see :func:`load_run` and :func:`sampling_label`;
            ``n`` < 1.
    """
    import math
    import time

    from torchvision.utils import save_image

    from .pixelcnn_prior import SampleOptions
    from .sampling import sample_images

    run, config = RunFolder(run), config or SampleConfig()
    if config.n < 1:
        raise ValueError(f"--n must be >= 1, got {config.n}")
    device = get_device(config.device)
    loaded = load_run(run, device)
    label = sampling_label(config.label, loaded, config.n)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    start = time.perf_counter()
    options = SampleOptions(temperature=config.temperature, top_k=config.top_k, progress=True)
    images = sample_images(loaded.vqvae, loaded.priors, config.n, label, generator, options)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = Path(config.out) if config.out else run.samples
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image((images.float().cpu() + 1) / 2, out, nrow=math.ceil(math.sqrt(config.n)), padding=2)
    labels = (f"label {config.label}" if config.label is not None
              else "classes in turn" if label is not None else "unconditional")
    return Samples(images, out, seconds, labels, device)
