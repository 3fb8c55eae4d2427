"""The run folder: every file one course run writes, named in one place.

A run folder (``runs/NAME``) is what ``python -m vqlesson train-vqvae --out runs/NAME`` starts
and ``train-prior``, ``sample`` and ``pipeline`` add to. The workflows (:mod:`vqlesson.runs`),
the pipeline and the notebooks find their files through :class:`RunFolder`, so no file name is
written twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .prior import best_checkpoint_path


class RunFolder:
    """Every file of a run folder, named in one place.

    ``RunFolder("runs/x").checkpoint`` is ``runs/x/checkpoint.pt``; the attributes below are
    paths, the methods build the names that depend on a level or a split.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.checkpoint = self.root / "checkpoint.pt"  # the VQ-VAE / VQ-VAE-2
        self.metrics = self.root / "metrics.json"
        self.reconstructions = self.root / "reconstructions.png"
        self.codebook_usage = self.root / "codebook_usage.png"
        self.training_curves = self.root / "training_curves.png"
        self.prior_metrics = self.root / "prior_metrics.json"
        self.prior_curves = self.root / "prior_curves.png"
        self.temperature = self.root / "temperature.json"  # the sampling temperature (pipeline)
        self.samples = self.root / "samples.png"
        self.analysis = self.root / "analysis.json"
        self.pipeline_state = self.root / "pipeline.json"
        self.report = self.root / "report.md"
        self.training_batch = self.root / "training_batch.png"  # data-preview
        self.data_summary = self.root / "data.json"  # data-preview

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __fspath__(self) -> str:  # a RunFolder is accepted wherever a path is
        return str(self.root)

    def codes(self, split: str) -> Path:
        """The code file of a split: ``codes_train.pt``, ``codes_val.pt``, ``codes_test.pt``."""
        return self.root / f"codes_{split}.pt"

    def prior(self, level: str | None = None) -> Path:
        """A prior's checkpoint: ``prior.pt`` (VQ-VAE), ``prior_top.pt`` / ``prior_bottom.pt``."""
        return self.root / ("prior.pt" if level in (None, "codes") else f"prior_{level}.pt")

    def prior_best(self, level: str | None = None) -> Path:
        """A prior's best-validation weights: ``prior_best.pt``, ``prior_top_best.pt``..."""
        return best_checkpoint_path(self.prior(level))

    def prior_levels(self, two_levels: bool) -> tuple[str | None, ...]:
        """The prior levels of a run: ``(None,)`` for a VQ-VAE, ``("top", "bottom")`` for a
        VQ-VAE-2."""
        return ("top", "bottom") if two_levels else (None,)

    def split_metrics(self, split: str) -> Path:
        """``metrics_SPLIT.json``, written by ``evaluate --out``."""
        return self.root / f"metrics_{split}.json"

    def analysis_figure(self, name: str) -> Path:
        """A failure-analysis figure: ``analysis_NAME.png``."""
        return self.root / f"analysis_{name}.png"

    def require_vqvae(self) -> Path:
        """``checkpoint.pt``, or a FileNotFoundError that says how to make it."""
        if not self.checkpoint.is_file():
            raise FileNotFoundError(
                f"no VQ-VAE run at {str(self.root)!r} (no {self.checkpoint.name} there); train "
                f"one first: python -m vqlesson train-vqvae --out {self.root}"
            )
        return self.checkpoint

    def recorded_profile(self) -> str | None:
        """The profile ``train-vqvae`` recorded in ``metrics.json``, if any."""
        try:
            return json.loads(self.metrics.read_text()).get("profile")
        except (OSError, ValueError, AttributeError):
            return None
