"""The course layer's commands of ``python -m vqlesson``: ``student-version``, ``grade``,
``sync-notebooks`` and ``colab-links``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..course import (NOTEBOOKS_DIR, colab_links_markdown, make_student_version,
                      sync_notebooks)



# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def _cmd_student_version(args: argparse.Namespace) -> int:
    made = make_student_version(args.notebooks, args.out, args.only, args.verify)
    print(f"student notebooks: {made.student_dir}/")
    for name, path in made.autograders.items():
        print(f"autograder for {name}: {path}")
    print(f"otter-grader's full output (solutions, hidden tests): {made.build_dir}/")
    return 0


def _cmd_grade(args: argparse.Namespace) -> int:
    from ..grading import GradeSettings, SandboxUnavailable, grade
    from ..grading.sandbox import SandboxLimits

    memory = args.memory_mb if args.memory_mb is not None else (
        None if args.profile == "gpu" else SandboxLimits.memory_mb)
    limits = SandboxLimits(memory_mb=memory or None, disk_mb=args.disk_mb, tasks=args.tasks)
    settings = GradeSettings(limits=limits, isolation=args.isolation,
                             data_dir=Path(args.data_dir) if args.data_dir else None)
    try:
        report = grade(args.submissions, args.autograder, out_csv=args.out,
                       timeout_s=args.timeout, profile=args.profile, jobs=args.jobs,
                       regrade=args.regrade, settings=settings)
    except SandboxUnavailable as error:  # nothing was run: say why and what to do
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report.summary_text)  # its first line is the isolation
    print(f"CSV: {report.csv_path}\nsummary: {report.summary_path}\nlogs and executed "
          f"notebooks: {report.logs_dir}/\n{report.isolation_line}")
    return 0


def _cmd_sync_notebooks(args: argparse.Namespace) -> int:
    changed = sync_notebooks(args.notebooks, check=args.check, only=args.only)
    verb = "out of date" if args.check else "rewritten"
    for path in changed:
        print(f"{verb}: {path}")
    if not changed:
        print("all notebooks are up to date")
    return 1 if (args.check and changed) else 0


def _cmd_colab_links(args: argparse.Namespace) -> int:
    print(colab_links_markdown(args.notebooks))
    return 0


def _add_grade_command(sub) -> None:
    from ..grading.sandbox import SandboxLimits

    grade = sub.add_parser(
        "grade", help="grade a folder of submitted notebooks into a CSV, each in a sandbox",
        description="Grades every .ipynb in SUBMISSIONS: each runs headless in a sandbox of its "
                    "own (bubblewrap; without a working bubblewrap it refuses to run "
                    "anything unless --isolation none; the CSV's isolation column and the "
                    "summary's first line say which) with a time limit; its exercise functions "
                    "are called there on the tests' inputs and a separate process scores what "
                    "they returned. A submission that errors or hangs is reported and the "
                    "batch goes on; each row is written as soon as it is graded, and a rerun "
                    "skips the submissions already graded. Writes a CSV (status, seconds, "
                    "score, pass/fail of every test, the failing tests with their hints, the "
                    "metrics the notebook recorded ('[recorded by notebook]': PSNR, perplexity, "
                    "prior NLL) and the figures the grader measured itself for the open "
                    "exercises ('[measured by grader]': e.g. a prior's held-out NLL)) and a "
                    "markdown summary beside it.")
    grade.add_argument("submissions", help="folder of submitted notebooks (*.ipynb)")
    grade.add_argument("--autograder", required=True,
                       help="an autograder zip from student-version, or the folder holding them "
                            "(each submission is matched to its notebook's zip)")
    grade.add_argument("--out", default="grades.csv", help="CSV to write (default grades.csv)")
    grade.add_argument("--timeout", type=float, default=1200.0,
                       help="seconds per submission before it counts as timed out (default 1200)")
    grade.add_argument("--profile", default="ci",
                       help="VQLESSON_PROFILE the submissions run under (default ci: fast; cpu "
                            "or gpu for meaningful metrics)")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    grade.add_argument("--regrade", action="store_true",
                       help="grade every submission again, even those already in the CSV")
    grade.add_argument("--isolation", choices=("auto", "bwrap", "none"), default="auto",
                       help="auto (default) or bwrap, the same: grade each submission in the "
                            "bubblewrap sandbox, refuse to grade where it does not work; none: "
                            "no sandbox, resource limits only (submissions can read the hidden "
                            "tests and each other)")
    grade.add_argument("--memory-mb", type=int, default=None,
                       help="address space per process in MiB (default 8192; none under the "
                            "gpu profile, CUDA needs more; 0: no limit)")
    grade.add_argument("--disk-mb", type=int, default=SandboxLimits.disk_mb,
                       help=f"size of each sandbox's /tmp in MiB (default {SandboxLimits.disk_mb})")
    grade.add_argument("--tasks", type=int, default=SandboxLimits.tasks,
                       help=f"processes and threads a submission may start (default "
                            f"{SandboxLimits.tasks})")
    grade.add_argument("--data-dir", default=None,
                       help="a folder holding isic2016/, given read-only to every submission "
                            "(default: none, the synthetic data)")
    grade.set_defaults(func=_cmd_grade)


def add_course_commands(sub) -> None:
    """Register ``student-version``, ``grade``, ``sync-notebooks`` and ``colab-links`` on the
    ``add_subparsers()`` object of ``python -m vqlesson``."""
    notebooks_help = "folder of the instructor notebooks (default: notebooks)"
    student = sub.add_parser(
        "student-version", help="generate the student notebooks and the autograders (otter-grader)",
        description="Runs otter-grader's `otter assign` on every instructor notebook: writes "
                    "OUT/student/ (every notebook, solutions and hidden tests removed, the "
                    "vqlesson.checks calls kept), OUT/autograder/NN_name.zip (one per notebook "
                    "with exercises, for `grade` or Gradescope) and OUT/build/ (otter's full "
                    "output).")
    student.add_argument("--notebooks", default=NOTEBOOKS_DIR, help=notebooks_help)
    student.add_argument("--out", default="dist", help="output folder (default dist)")
    student.add_argument("--only", nargs="+", default=None, metavar="NAME",
                         help="only these notebooks, e.g. 02_vqvae")
    student.add_argument("--verify", action="store_true",
                         help="also execute each instructor notebook under otter (current "
                              "VQLESSON_PROFILE) and fail unless it scores full marks")
    student.set_defaults(func=_cmd_student_version)

    _add_grade_command(sub)

    sync = sub.add_parser(
        "sync-notebooks", help="rewrite each notebook's Colab cell, run time and otter config",
        description="Writes the generated cells of every notebook from vqlesson/course/: the "
                    "run-time statement (RUN_TIMES), the Colab set-up cell (REPO_URL) and, in "
                    "notebooks with exercises, otter-grader's assignment config.")
    sync.add_argument("--notebooks", default=NOTEBOOKS_DIR, help=notebooks_help)
    sync.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 if a notebook is out of date")
    sync.add_argument("--only", nargs="+", default=None, metavar="NAME",
                      help="only these notebooks, e.g. 05_test_set_failure_analysis")
    sync.set_defaults(func=_cmd_sync_notebooks)

    links = sub.add_parser(
        "colab-links", help="print the README's 'Open in Colab' table, built from REPO_URL",
        description="Prints a markdown table with one Open-in-Colab link per notebook.")
    links.add_argument("--notebooks", default=NOTEBOOKS_DIR, help=notebooks_help)
    links.set_defaults(func=_cmd_colab_links)

