"""Grading submitted notebooks: one security unit, readable on its own.

A submission is hostile code. Nothing of it runs in the grader's process: each notebook runs in
a sandbox of its own and only data crosses the wall.

- :mod:`~vqlesson.grading.grader`: :func:`grade`, a folder of submissions, one sandbox each,
  scored outside it;
- :mod:`~vqlesson.grading.autograder`: an otter autograder zip -> its tests (check, seed,
  points), read, never run;
- :mod:`~vqlesson.grading.sandbox`: bubblewrap (or limits only): mounts, environment, rlimits,
  capped output, every process killed at the end;
- :mod:`~vqlesson.grading.isolation`: fail closed: no grading without bubblewrap unless
  ``--isolation none`` (the refusal says why and what to do), and the ``ISOLATION:`` line;
- :mod:`~vqlesson.grading.runner`: the script run inside the sandbox (nbclient executes the
  notebook, then the collecting cell);
- :mod:`~vqlesson.grading.io`: data-only inputs and outputs across the wall, safe reads;
- :mod:`~vqlesson.grading.judge`: the trusted check process (``python -m
  vqlesson.grading.judge``): outputs against the library's reference;
- :mod:`~vqlesson.grading.report`: ``grades.csv`` (atomic rows, resume) and the summary.

Nothing here imports :mod:`vqlesson.course` or :mod:`vqlesson.cli`.
"""

from .grader import GradeReport, GradeSettings, STATUSES, SubmissionResult, grade
from .isolation import SandboxUnavailable

__all__ = ["GradeReport", "GradeSettings", "STATUSES", "SandboxUnavailable", "SubmissionResult",
           "grade"]
