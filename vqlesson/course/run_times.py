"""The measured run time of every notebook per profile, written into each notebook by
``python -m vqlesson sync-notebooks`` (:func:`~vqlesson.course.cells.sync_notebooks`).

A figure goes into :data:`RUN_TIMES` only from a measurement: nbval's end-of-run list for ``ci``,
a full run for ``cpu``/``gpu`` (DEVELOPERS.md, "Run times")."""

from __future__ import annotations

from dataclasses import dataclass

from .colab import COLAB_SENTENCE


MEASURED_ON = "a quiet 2-core x86_64 CPU without GPU (machine A in benchmarks/RESULTS.md)"


# --------------------------------------------------------------------------------------------
# Measured run times (seconds; None = not measured yet)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunTime:
    """The measured wall-clock run time of one notebook, in seconds, per profile.

    Attributes:
        ci, cpu, gpu: seconds under each profile, ``None`` when not measured yet (a figure goes
            here only from a measurement: nbval's end-of-run list for ``ci``, a full run for
            ``cpu``/``gpu``).
        note: what the figure assumes (e.g. a finished run in ``runs/``).
    """

    ci: float | None
    cpu: float | None
    gpu: float | None
    note: str = ""


RUN_TIMES: dict[str, RunTime] = {
    "01_data_and_augmentation": RunTime(
        ci=7, cpu=14, gpu=None,
        note="With ISIC 2016 the first run also resizes the 1279 images once (about a minute)."),
    "02_vqvae": RunTime(
        ci=9, cpu=343, gpu=None,
        note="Most of the time goes to the side studies (equal-budget runs, two seeds of the "
             "reference); a finished main run in `runs/` is loaded instead of retrained."),
    "03_vqvae2_hierarchy": RunTime(
        ci=26, cpu=354, gpu=None,
        note="Two VQ-VAE-2 models (the bypass and the course's) and the rate-distortion points; "
             "finished runs in `runs/` are loaded instead of retrained."),
    "04_pixelcnn_prior": RunTime(
        ci=22, cpu=325, gpu=None,
        note="With notebook 02's VQ-VAE already in `runs/`; add notebook 02's time otherwise. "
             "Six priors (three compared at equal time, the plain one, the two probes) and three "
             "one-epoch mistake nets are trained; finished priors in `runs/` are loaded. The last "
             "cell prints this run's time."),
    "05_test_set_failure_analysis": RunTime(
        ci=15, cpu=262, gpu=None,
        note="With notebook 02's VQ-VAE already in `runs/`; add notebook 02's time otherwise. "
             "Five priors are trained; a finished one in `runs/` is loaded instead. The last cell "
             "prints this run's time."),
    "06_hierarchical_prior": RunTime(
        ci=21, cpu=188, gpu=None,
        note="With both of notebook 03's VQ-VAE-2 models already in `runs/`; add notebook 03's "
             "time otherwise. Four priors are trained (top and bottom, for each model); finished "
             "ones in `runs/` are continued. The last cell prints this run's time."),
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min"


def runtime_markdown(name: str) -> str:
    """The markdown cell above the Colab set-up cell of notebook ``name`` (its file stem): the
    run-time statement from :data:`RUN_TIMES`, then what the set-up cell does."""
    times = RUN_TIMES.get(name, RunTime(None, None, None))
    lines = [
        f"*Expected run time*, measured on {MEASURED_ON}: {_duration(times.cpu)} under the "
        f"`cpu` profile (a laptop CPU); {_duration(times.gpu)} under the `gpu` profile (one GPU); "
        f"{_duration(times.ci)} under `ci`.",
    ]
    if times.note:
        lines.append(times.note)
    lines.append("(`vqlesson/course/run_times.py` keeps these figures; `python -m vqlesson sync-notebooks` "
                 "writes them here.)")
    return "\n".join(lines) + "\n\n" + COLAB_SENTENCE

