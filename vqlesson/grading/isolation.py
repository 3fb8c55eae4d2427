"""What each isolation level gives, and refusing to grade without a sandbox (fail closed).

Grading runs hostile code, so ``grade`` only runs submissions in the bubblewrap sandbox unless
the instructor asks for less with ``--isolation none``. This module holds the words of that
policy, apart from the sandbox's mechanics (:mod:`vqlesson.grading.sandbox`, whose
:func:`~vqlesson.grading.sandbox.detect_isolation` probes bwrap and raises
:class:`SandboxUnavailable` with :func:`refusal_message`):

- why bwrap cannot work here, where the machine says so (:func:`namespace_blockers`: kernel
  settings against user namespaces, signs of a container);
- the refusal: why, how to get a sandbox (``apt-get install bubblewrap``; one container per
  submission where bwrap cannot work), and that ``--isolation none`` grades without it;
- the line that heads the summary and the ``grade`` command's output (:func:`isolation_line`).
"""

from __future__ import annotations

import os
from pathlib import Path

BWRAP, RLIMITS_ONLY = "bwrap", "rlimits-only"  # the CSV's ``isolation`` column
MISSING, CANNOT_WORK = "missing", "cannot-work"  # why bwrap does not sandbox here
# (file under /proc/sys, value that forbids, what it means): unprivileged user namespaces
USERNS_SETTINGS = (
    ("kernel/unprivileged_userns_clone", "0",
     "the kernel forbids unprivileged user namespaces (kernel.unprivileged_userns_clone = 0)"),
    ("user/max_user_namespaces", "0",
     "no user namespace may be created (user.max_user_namespaces = 0)"),
    ("kernel/apparmor_restrict_unprivileged_userns", "1",
     ("AppArmor restricts unprivileged user namespaces "
      "(kernel.apparmor_restrict_unprivileged_userns = 1, Ubuntu 23.10 and later)")),
)
CONTAINER_FILES = (".dockerenv", "run/.containerenv")  # Docker's and Podman's marks
BWRAP_LINE = ("ISOLATION: bwrap (each submission in its own namespaces: a read-only file "
              "system without the autograder, the hidden tests or the other submissions; no "
              "network)")
NONE_LINE = ("ISOLATION: NONE (limits only: submissions could read the hidden tests and each "
             "other, and every file the grader's user can read)")
NONE_WARNING = (
    "grading WITHOUT a sandbox (--isolation none): resource limits only; every submission runs "
    "with the grader's file system and network, so it can read the autograder (the hidden "
    "tests), the other submissions of the batch and whatever the grader's user can read")


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot sandbox the submissions here and ``--isolation none`` was not given;
    nothing was run. The message (:func:`refusal_message`) says why and what to do."""


def namespace_blockers(proc_sys: Path = Path("/proc/sys"), root: Path = Path("/"),
                       environ: dict[str, str] | None = None) -> list[str]:
    """What on this machine, as far as it can be read, keeps bwrap from creating namespaces.

    Args:
        proc_sys: the kernel settings folder (``/proc/sys``; another folder in tests).
        root: the file system's root, where container runtimes leave their marks.
        environ: the environment (``os.environ`` when None); ``container=...`` is set by
            systemd-nspawn, Podman and LXC.

    Returns:
        One sentence per setting that forbids unprivileged user namespaces, and one if this
        looks like a container; empty when nothing is known against them.
    """
    found = []
    for name, forbidding, meaning in USERNS_SETTINGS:
        try:
            if (proc_sys / name).read_text().strip() == forbidding:
                found.append(meaning)
        except OSError:
            pass
    environ = os.environ if environ is None else environ
    marks = [f"/{name}" for name in CONTAINER_FILES if (root / name).exists()]
    if environ.get("container"):
        marks.append(f"container={environ['container']}")
    if marks:
        found.append(f"this looks like a container ({', '.join(marks)}): container runtimes "
                     "usually forbid creating namespaces inside")
    return found


def refusal_message(cause: str, reason: str, require: str = "auto") -> str:
    """The error of ``grade`` when bwrap does not sandbox here.

    Args:
        cause: :data:`MISSING` (no ``bwrap`` on ``PATH``) or :data:`CANNOT_WORK` (installed,
            but it cannot create its sandbox here).
        reason: the probe's own words (bwrap's error, the blocking settings).
        require: the ``--isolation`` asked for (``auto`` or ``bwrap``).

    Returns:
        Several lines: the refusal and why; how to get a sandbox; ``--isolation none``.
    """
    if cause == MISSING:
        get = ("install bubblewrap and grade again: `sudo apt-get install bubblewrap` (Debian, "
               "Ubuntu; `dnf install bubblewrap` on Fedora). In a container without user "
               "namespaces it cannot work: then grade with one container per submission "
               "instead (below)")
    else:
        get = ("bubblewrap cannot work on this machine as it is (typically a container "
               "without user namespaces, or a kernel that forbids them): grade on a machine "
               "or virtual machine where it works (allow unprivileged user namespaces, or run "
               "the grader as root outside a container), or grade with one container per "
               "submission instead (below)")
    return "\n".join([
        f"refusing to grade (--isolation {require}): no working sandbox here. {reason}.",
        ("Without the sandbox a submission, which is code written by a student, could read "
         "the autograder (the hidden tests) and every other submission of the batch. To grade:"),
        f"- {get};",
        ("- one container per submission, the Gradescope model: upload the autograder zip from "
         "`python -m vqlesson student-version` to Gradescope, or run `otter grade -a "
         "AUTOGRADER.zip --no-network SUBMISSIONS/` on a machine with Docker (README, \"For "
         "instructors\");"),
        ("- or pass `--isolation none` to grade here without a sandbox, knowingly: resource "
         "limits only, each submission can read the hidden tests and the other submissions."),
    ])


def isolation_line(kind: str, row_kinds: list[str] | tuple[str, ...] = ()) -> str:
    """The line that heads the summary: ``ISOLATION: bwrap (...)`` or ``ISOLATION: NONE
    (...)`` for ``kind`` (:data:`BWRAP` or :data:`RLIMITS_ONLY`); ``MIXED`` when this run had
    bwrap but some of the rows (``row_kinds``: the CSV's ``isolation`` column, kept rows
    included) were graded without it."""
    if kind != BWRAP:
        return NONE_LINE
    unsandboxed = sum(1 for row_kind in row_kinds if row_kind == RLIMITS_ONLY)
    if unsandboxed:
        return (f"ISOLATION: MIXED (this run bwrap, but {unsandboxed} of {len(row_kinds)} rows, "
                "kept from an earlier run, were graded with NONE: limits only; pass --regrade "
                "to grade them again in the sandbox)")
    return BWRAP_LINE
