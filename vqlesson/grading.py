"""Grading a folder of submitted notebooks: one isolated, time-limited run each, one CSV.

Each submission is graded by otter-grader's non-containerised runner (``otter run``; the
Docker-based ``otter grade`` is not needed) in its own worker process, started in a fresh
temporary folder (its working directory and ``$TMPDIR``), with the course's profile, static
figures instead of widgets, and ``$VQLESSON_METRICS_FILE`` pointing at a file the notebook's
:func:`vqlesson.checks.record_metrics` calls fill. The worker executes the notebook headless (a
cell that raises does not stop it: otter runs every test afterwards) and writes its results as
JSON. A worker that exceeds the time limit is killed with its kernel, and the batch goes on.

Statuses: ``ok`` (graded, no cell raised), ``error`` (graded, but some cells raised; their
errors are in ``message``), ``timeout`` (killed at the limit; no scores), ``ungradable`` (the
notebook could not be executed or matched to an autograder; no scores).

Run as ``python -m vqlesson grade SUBMISSIONS --autograder ZIP_OR_FOLDER``; the worker is
``python -m vqlesson.grading SUBMISSION AUTOGRADER RESULT_JSON EXECUTED_IPYNB``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .checks import METRICS_ENV
from .runtime import PROFILES

GRADING_ENV = "VQLESSON_GRADING"
WIDGETS_ENV = "VQLESSON_WIDGETS"
STATUSES = ("ok", "error", "timeout", "ungradable")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
class SubmissionResult(NamedTuple):
    """The grade of one submission.

    Attributes:
        submission: the file name.
        status: one of :data:`STATUSES`.
        seconds: wall-clock seconds of its run.
        score, possible: otter's points (``None`` unless graded).
        checks: check name (``"nearest_code - 1"``, hidden ones end in ``" (hidden)"``) ->
            passed.
        failed: ``"check: hint"`` for every failed check.
        metrics: what the notebook recorded with :func:`vqlesson.checks.record_metrics`.
        message: cell errors, the time limit, or why it could not be graded.
    """

    submission: str
    status: str
    seconds: float
    score: float | None
    possible: float | None
    checks: dict[str, bool]
    failed: list[str]
    metrics: dict[str, float]
    message: str


class GradeReport(NamedTuple):
    """What :func:`grade` returns: the per-submission results and where it wrote them
    (``csv_path``, the markdown ``summary_path``, and ``logs_dir`` with each submission's log
    and executed notebook); ``summary_text`` is the summary's markdown."""

    results: list[SubmissionResult]
    csv_path: Path
    summary_path: Path
    logs_dir: Path
    summary_text: str


def _hint(message: str) -> str:
    """The useful last line of an otter failure message (our checks' hint)."""
    lines = [line.strip() for line in (message or "").strip().split("\n") if line.strip()]
    if not lines:
        return "failed"
    last = lines[-1]
    return last.split("AssertionError: ", 1)[1] if last.startswith("AssertionError: ") else last


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill a worker, its process group and every descendant (the notebook's kernel runs in a
    session of its own)."""
    try:
        import psutil

        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:  # psutil missing or the process already gone
        children = []
    for child in children:
        try:
            child.kill()
        except Exception:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        process.kill()
    process.wait()


def _autograder_for(submission: Path, autograder: Path) -> Path:
    """The autograder zip of a submission: ``autograder`` itself, or, for a folder of zips, the
    one named after the notebook (its otter assignment name, else a matching file stem)."""
    if autograder.is_file():
        return autograder
    zips = {p.stem: p for p in sorted(autograder.glob("*.zip"))}
    if len(zips) == 1:
        return next(iter(zips.values()))
    name = None
    try:
        name = json.loads(submission.read_text()).get("metadata", {}).get("otter", {}).get(
            "assignment_name")
    except (OSError, ValueError, AttributeError):
        pass
    if name in zips:
        return zips[name]
    matches = [zip_path for stem, zip_path in zips.items() if stem in submission.stem]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"cannot tell which of the autograders {sorted(zips)} grades "
                     f"{submission.name}; pass --autograder with one zip")


def _grade_one(submission: Path, autograder: Path, logs_dir: Path, timeout_s: float,
               profile: str) -> SubmissionResult:
    """Grade one submission in a worker process in its own temporary folder."""
    start = time.perf_counter()
    try:
        zip_path = _autograder_for(submission, autograder)
    except ValueError as error:
        return SubmissionResult(submission.name, "ungradable", 0.0, None, None, {}, [], {},
                                str(error))
    log_path = logs_dir / f"{submission.stem}.log"
    executed = logs_dir / f"{submission.stem}.executed.ipynb"
    with tempfile.TemporaryDirectory(prefix="vqlesson-grade-") as tmp:
        result_path, metrics_path = Path(tmp) / "result.json", Path(tmp) / "metrics.json"
        env = dict(os.environ)
        env.update({
            "VQLESSON_PROFILE": profile, METRICS_ENV: str(metrics_path), GRADING_ENV: "1",
            WIDGETS_ENV: "0", "MPLBACKEND": "Agg", "TMPDIR": tmp, "PYTHONUNBUFFERED": "1",
        })
        command = [sys.executable, "-m", "vqlesson.grading", str(submission.resolve()),
                   str(zip_path.resolve()), str(result_path), str(executed.resolve())]
        with open(log_path, "w") as log:
            process = subprocess.Popen(command, cwd=tmp, env=env, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                process.wait(timeout=timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_tree(process)
                timed_out = True
        seconds = time.perf_counter() - start
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        if timed_out:
            return SubmissionResult(submission.name, "timeout", seconds, None, None, {}, [],
                                    metrics, f"killed after the time limit of {timeout_s:g} s")
        if process.returncode != 0 or not result_path.is_file():
            tail = log_path.read_text(errors="replace").strip().split("\n")[-1:]
            return SubmissionResult(submission.name, "ungradable", seconds, None, None, {}, [],
                                    metrics, f"the grader failed (exit {process.returncode}): "
                                             f"{' '.join(tail)[-300:]}; see {log_path}")
        payload = json.loads(result_path.read_text())
    if payload.get("catastrophic"):
        return SubmissionResult(submission.name, "ungradable", seconds, None, None, {}, [],
                                metrics, f"otter could not grade it: {payload['catastrophic']}")
    checks, failed = {}, []
    for test in payload["tests"]:
        name = test["name"] + (" (hidden)" if test["hidden"] else "")
        checks[name] = bool(test["passed"])
        if not test["passed"]:
            failed.append(f"{name}: {_hint(test['message'])}")
    errors = payload.get("cell_errors", [])
    return SubmissionResult(submission.name, "error" if errors else "ok", seconds,
                            payload["total"], payload["possible"], checks, failed, metrics,
                            "; ".join(errors))


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def _write_csv(results: list[SubmissionResult], path: Path) -> None:
    check_names = list(dict.fromkeys(name for r in results for name in r.checks))
    metric_names = list(dict.fromkeys(name for r in results for name in r.metrics))
    header = (["submission", "status", "seconds", "score", "possible"] + check_names
              + ["failed"] + metric_names + ["message"])
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for r in results:
            writer.writerow(
                [r.submission, r.status, f"{r.seconds:.1f}", _format(r.score), _format(r.possible)]
                + [{True: "pass", False: "fail"}.get(r.checks.get(n), "") for n in check_names]
                + [" | ".join(r.failed)]
                + [_format(r.metrics.get(n)) for n in metric_names]
                + [r.message])


def _summary(results: list[SubmissionResult], autograder: Path, profile: str,
             timeout_s: float) -> str:
    lines = [f"# Grades: {len(results)} submissions",
             "",
             f"Autograder `{autograder}`, profile `{profile}`, time limit {timeout_s:g} s per "
             "submission.",
             "",
             "| submission | status | score | seconds | failed checks |",
             "|---|---|---|---|---|"]
    for r in results:
        score = f"{r.score:g} / {r.possible:g}" if r.score is not None else "-"
        failed = "; ".join(f.split(":", 1)[0] for f in r.failed) or ("-" if r.checks else r.message)
        lines.append(f"| {r.submission} | {r.status} | {score} | {r.seconds:.1f} | {failed} |")
    check_names = list(dict.fromkeys(name for r in results for name in r.checks))
    if check_names:
        lines += ["", "| check | passed by |", "|---|---|"]
        for name in check_names:
            graded = [r for r in results if name in r.checks]
            lines.append(f"| {name} | {sum(r.checks[name] for r in graded)} of {len(graded)} |")
    metric_names = list(dict.fromkeys(name for r in results for name in r.metrics))
    if metric_names:
        lines += ["", "| metric | mean | min | max |", "|---|---|---|---|"]
        for name in metric_names:
            values = [r.metrics[name] for r in results if name in r.metrics]
            lines.append(f"| {name} | {sum(values) / len(values):.4g} | {min(values):.4g} | "
                         f"{max(values):.4g} |")
    timed = [r.seconds for r in results if r.status in ("ok", "error")]
    if timed:
        lines += ["", f"Seconds per graded submission: mean {sum(timed) / len(timed):.1f}, "
                      f"max {max(timed):.1f}."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------
def grade(submissions: str | Path, autograder: str | Path, out_csv: str | Path = "grades.csv",
          timeout_s: float = 1200.0, profile: str = "ci", jobs: int = 1) -> GradeReport:
    """Grade every ``*.ipynb`` in a folder; write a CSV, a markdown summary and per-submission
    logs and executed notebooks.

    Args:
        submissions: folder of submitted notebooks (one file per student; the file stem names
            the submission).
        autograder: an autograder zip made by :func:`vqlesson.course.make_student_version`, or a
            folder of them (each submission is matched to its notebook's zip).
        out_csv: the CSV to write; the summary goes beside it (``NAME.md``), logs and executed
            notebooks into ``NAME_logs/``.
        timeout_s: seconds per submission (> 0) before it is killed and reported as timed out.
        profile: ``VQLESSON_PROFILE`` for the runs (``ci`` is fast; ``cpu``/``gpu`` give
            meaningful metrics).
        jobs: submissions graded at once (>= 1).

    Returns:
        :class:`GradeReport`, results in file-name order.

    Raises:
        FileNotFoundError: no such folder or autograder, or no notebooks in the folder.
        ValueError: a non-positive ``timeout_s`` or ``jobs``, or an unknown profile.
    """
    folder, autograder = Path(submissions), Path(autograder)
    if not folder.is_dir():
        raise FileNotFoundError(f"submissions folder {folder} not found")
    if not autograder.exists():
        raise FileNotFoundError(f"autograder {autograder} not found; make it with "
                                "`python -m vqlesson student-version`")
    if autograder.is_dir() and not list(autograder.glob("*.zip")):
        raise FileNotFoundError(f"no autograder zip in {autograder}")
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no submitted notebooks (*.ipynb) in {folder}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an int >= 1, got {jobs!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    csv_path = Path(out_csv)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    logs_dir = csv_path.with_name(csv_path.stem + "_logs")
    shutil.rmtree(logs_dir, ignore_errors=True)
    logs_dir.mkdir()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(
            lambda p: _grade_one(p, autograder, logs_dir, timeout_s, profile), paths))
    _write_csv(results, csv_path)
    text = _summary(results, autograder, profile, timeout_s)
    summary_path = csv_path.with_suffix(".md")
    summary_path.write_text(text)
    return GradeReport(results, csv_path, summary_path, logs_dir, text)


# --------------------------------------------------------------------------------------------
# Worker: one submission, in its own process
# --------------------------------------------------------------------------------------------
def _cell_errors(nb) -> list[str]:
    errors = []
    for cell in nb.cells if nb is not None else []:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                first = cell.source.strip().split("\n", 1)[0][:60]
                errors.append(f"{output.get('ename')}: {str(output.get('evalue'))[:200]} "
                              f"(in the cell starting `{first}`)")
    return errors


def _worker(argv: list[str]) -> int:
    """Grade one submission with ``otter run`` and write the results as JSON."""
    submission, autograder, result_path, executed_path = argv
    import nbformat
    from otter.run import main as otter_run

    results = otter_run(submission, autograder=autograder, output_dir=None, no_logo=True)
    tests = []
    for question, test_file in results.results.items():
        for case in test_file.test_case_results:
            tests.append({"question": question, "name": case.test_case.name,
                          "hidden": bool(case.test_case.hidden), "passed": bool(case.passed),
                          "message": case.message or ""})
    payload = {
        "total": float(results.total), "possible": float(results.possible), "tests": tests,
        "cell_errors": _cell_errors(results.notebook),
        "catastrophic": (f"{type(results.catastrophic_error).__name__}: "
                         f"{results.catastrophic_error}" if results.catastrophic_error else None),
    }
    if results.notebook is not None:
        nbformat.write(results.notebook, executed_path)
    Path(result_path).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1:]))
