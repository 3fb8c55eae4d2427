"""The grader's records: one row per submission in ``grades.csv``, kept up to date atomically
after every submission, read back to resume a stopped batch, and a markdown summary.

Columns: ``submission``, ``status``, ``isolation``, ``seconds``, ``score``, ``possible``, one
``pass``/``fail`` column per test (hidden ones end in ``" (hidden)"``), ``failed`` (each failed
test with its hint, ``" | "``-separated), the metrics, ``message``, and ``sha256`` (of the
submitted file: a changed file is graded again). Text that a spreadsheet would take for a
formula (``=``, ``+``, ``-``, ``@`` first) is prefixed with ``'``.

The metric columns say who produced each figure:

- ``NAME [recorded by notebook]``: what the submission's notebook recorded with
  :func:`vqlesson.checks.record_metrics` (PSNR, perplexity, prior NLL...): computed by the
  student's code, so a claim, not a measurement;
- ``TEST: NAME [measured by grader]``: what the trusted judge measured itself for that test of
  an open exercise (e.g. ``prior_result - 2 (hidden): heldout_bits_per_code``: the held-out NLL
  of the prior the student's function trained, on code maps it never saw).

A ``grades.csv`` written before these labels (metric columns without a suffix, all of them
recorded by the notebook) is read as such, and rewritten with the labels.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

STATUSES = ("ok", "error", "timeout", "ungradable")
HEAD = ("submission", "status", "isolation", "seconds", "score", "possible")
TAIL = ("message", "sha256")
FAILED = "failed"
RESERVED = set(HEAD) | set(TAIL) | {FAILED}
FORMULA_START = "=+-@\t\r"
MAX_CELL = 2000  # characters kept per text cell
RECORDED = " [recorded by notebook]"  # the suffix of a metric the notebook recorded (a claim)
MEASURED = " [measured by grader]"  # the suffix of a figure the trusted judge measured
NONE_MEASURED: Mapping[str, float] = MappingProxyType({})


class SubmissionResult(NamedTuple):
    """The grade of one submission.

    Attributes:
        submission: the file name.
        status: one of :data:`STATUSES`: ``ok``; ``error`` (graded, but cells raised, the
            kernel died or the metrics were unusable: ``message`` says which); ``timeout``
            (killed at the time limit; no scores); ``ungradable`` (not a notebook, no
            autograder fits, or the check process failed; no scores).
        seconds: wall-clock seconds of its grading (sandbox and checks).
        score, possible: points (``None`` unless graded).
        checks: test column (``"nearest_code - 1"``, hidden ones end in ``" (hidden)"``) ->
            passed.
        failed: ``"test: hint"`` for every failed test.
        metrics: what the notebook recorded with :func:`vqlesson.checks.record_metrics`
            (columns ``NAME [recorded by notebook]``).
        message: cell errors, the time limit, or why it could not be graded.
        isolation: ``bwrap`` or ``rlimits-only`` (see :mod:`vqlesson.grading.sandbox`).
        sha256: of the submitted file.
        measured: what the trusted judge measured for the open exercises' tests,
            ``"TEST: NAME"`` -> float (columns ``TEST: NAME [measured by grader]``).
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
    isolation: str = ""
    sha256: str = ""
    measured: Mapping[str, float] = NONE_MEASURED


def csv_safe(text: str) -> str:
    """``text`` shortened and made inert for spreadsheets (no leading formula character, no
    control characters)."""
    text = "".join(c if c.isprintable() or c == "\n" else " " for c in str(text))[:MAX_CELL]
    return "'" + text if text[:1] and text[0] in FORMULA_START + "'" else text


def _unsafe(text: str) -> str:
    return text[1:] if text.startswith("'") and text[1:2] and text[1] in FORMULA_START + "'" \
        else text


def _number(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _columns(results: list[SubmissionResult]) -> tuple[list[str], list[str], list[str]]:
    checks = list(dict.fromkeys(name for r in results for name in r.checks))
    metrics = list(dict.fromkeys(name for r in results for name in r.metrics))
    measured = list(dict.fromkeys(name for r in results for name in r.measured))
    return checks, metrics, measured


def write_csv(results: list[SubmissionResult], path: Path) -> None:
    """Write every row (in submission order) to ``path`` atomically: a temporary file beside
    it, flushed to disk, then renamed over it; a crash leaves the previous complete file."""
    results = sorted(results, key=lambda r: r.submission)
    check_names, metric_names, measured_names = _columns(results)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(list(HEAD) + check_names + [FAILED]
                    + [csv_safe(n + RECORDED) for n in metric_names]
                    + [csv_safe(n + MEASURED) for n in measured_names] + list(TAIL))
    for r in results:
        writer.writerow(
            [csv_safe(r.submission), r.status, r.isolation, f"{r.seconds:.1f}", _number(r.score),
             _number(r.possible)]
            + [{True: "pass", False: "fail"}.get(r.checks.get(n), "") for n in check_names]
            + [csv_safe(" | ".join(r.failed))]
            + [_number(r.metrics.get(n)) for n in metric_names]
            + [_number(r.measured.get(n)) for n in measured_names]
            + [csv_safe(r.message), r.sha256])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _float(text: str) -> float | None:
    try:
        return float(text) if text != "" else None
    except ValueError:
        return None


def read_csv(path: Path) -> list[SubmissionResult]:
    """The rows of a ``grades.csv`` written by :func:`write_csv` (empty when there is none).

    Raises:
        ValueError: the file is not such a CSV (the message names it: move it away or pass
            ``--regrade``).
    """
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0] if rows else []
    if tuple(header[:len(HEAD)]) != HEAD or tuple(header[-len(TAIL):]) != TAIL or \
            FAILED not in header:
        raise ValueError(f"{path} is not a grades CSV of this grader (its header is "
                         f"{header[:4]}...); move it away or pass --regrade")
    failed_at = header.index(FAILED)
    check_names, figure_columns = header[len(HEAD):failed_at], header[failed_at + 1:-len(TAIL)]
    results = []
    for row in rows[1:]:
        if len(row) != len(header):
            continue  # a row cut short: that submission is graded again
        cell = dict(zip(header, row))
        checks = {n: cell[n] == "pass" for n in check_names if cell[n] in ("pass", "fail")}
        metrics, measured = _figures(cell, figure_columns)
        failed = _unsafe(cell[FAILED]).split(" | ") if cell[FAILED] else []
        results.append(SubmissionResult(
            _unsafe(cell["submission"]), cell["status"], _float(cell["seconds"]) or 0.0,
            _float(cell["score"]), _float(cell["possible"]), checks, failed, metrics,
            _unsafe(cell["message"]), cell["isolation"], cell["sha256"], measured))
    return results


def _figures(cell: dict[str, str], columns: list[str]
             ) -> tuple[dict[str, float], dict[str, float]]:
    """(recorded by the notebook, measured by the grader) of one CSV row; a column without a
    suffix comes from a CSV written before the labels, when every metric was the notebook's."""
    recorded, measured = {}, {}
    for column in columns:
        value = _float(cell[column])
        name = _unsafe(column)
        if value is None:
            continue
        if name.endswith(MEASURED):
            measured[name[:-len(MEASURED)]] = value
        else:
            recorded[name.removesuffix(RECORDED)] = value
    return recorded, measured


def summary(results: list[SubmissionResult], header: list[str], first_line: str = "") -> str:
    """The markdown summary: ``first_line`` (the isolation, where it cannot be missed), then
    ``header`` lines, one row per submission, each test's pass rate, each metric's range, the
    time per submission."""
    results = sorted(results, key=lambda r: r.submission)
    lines = [first_line, ""] if first_line else []
    lines += [f"# Grades: {len(results)} submissions", "", *header, "",
             "| submission | status | score | seconds | failed checks |", "|---|---|---|---|---|"]
    for r in results:
        score = f"{r.score:g} / {r.possible:g}" if r.score is not None else "-"
        failed = "; ".join(f.split(":", 1)[0] for f in r.failed) or ("-" if r.checks else
                                                                    r.message[:120])
        name = r.submission.replace("|", "/")
        lines.append(f"| {name} | {r.status} | {score} | {r.seconds:.1f} | "
                     f"{failed.replace('|', '/')} |")
    check_names, metric_names, measured_names = _columns(results)
    if check_names:
        lines += ["", "| check | passed by |", "|---|---|"]
        for name in check_names:
            graded = [r for r in results if name in r.checks]
            lines.append(f"| {name} | {sum(r.checks[name] for r in graded)} of {len(graded)} |")
    figures = [(n + RECORDED, [r.metrics.get(n) for r in results]) for n in metric_names]
    figures += [(n + MEASURED, [r.measured.get(n) for r in results]) for n in measured_names]
    if figures:
        lines += ["", "| metric | mean | min | max |", "|---|---|---|---|"]
        for name, column in figures:
            values = [v for v in column if v is not None and not math.isnan(v)]
            if values:
                lines.append(f"| {name.replace('|', '/')} | {sum(values) / len(values):.4g} "
                             f"| {min(values):.4g} | {max(values):.4g} |")
    timed = [r.seconds for r in results if r.status in ("ok", "error")]
    if timed:
        lines += ["", f"Seconds per graded submission: mean {sum(timed) / len(timed):.1f}, "
                      f"max {max(timed):.1f}."]
    return "\n".join(lines) + "\n"
