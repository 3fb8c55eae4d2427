"""The trusted check process: scores what a sandboxed submission's functions returned.

Run by the grader after the sandbox of a submission has ended and every process of it is gone::

    python -m vqlesson.grading.judge OUTPUTS_DIR < spec.json > result.json

It never imports or runs anything from the submission and never unpickles: for each test of the
spec (``id``, ``exercise``, ``seed``) it rebuilds the inputs from the seed itself
(``make_inputs``, not the copy the sandbox saw), adds the spec's ``secret`` (the autograder's,
which the sandbox never saw: :data:`vqlesson.check_core.JUDGE_SECRET`; an open exercise draws
its held-out data with it), reads ``OUTPUTS_DIR/outputs/ID.npz`` with
:func:`vqlesson.grading.io.load_outputs` and compares with the library's reference, or measures
what the student's function made, through the same judging code as the notebook's instant
feedback (:func:`vqlesson.check_core.judge_outputs`); the figures it measured come back with the
verdict. It also validates ``OUTPUTS_DIR/metrics.json``. A missing, malformed or oversized
output fails its test with a message; it never passes one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..check_core import JUDGE_SECRET, CheckResult, judge_outputs
from ..checks import EXERCISES
from .io import (MAX_METRICS_BYTES, METRICS_NAME, OUTPUTS_DIR, UnsafeFileError,
                         load_outputs, parse_metrics, read_regular_file)

NO_RESULT = ("no result was recorded: the notebook did not reach the grader's call of your "
             "functions (did the kernel die, or a cell run past the time limit?)")


def judge_test(exercise_name: str, seed: int, path: Path, secret: str = "") -> CheckResult:
    """The verdict of one test: the outputs in ``path`` against the reference for ``seed``
    (``secret``: the autograder's, given to the exercise's judge as an input)."""
    exercise = EXERCISES[exercise_name]
    inputs = exercise.make_inputs(seed)
    if secret:
        inputs[JUDGE_SECRET] = secret
    try:
        outputs = load_outputs(path)
    except UnsafeFileError as error:
        message = NO_RESULT if "was not written" in str(error) else f"unusable result: {error}"
        return CheckResult(exercise_name, False, message)
    except Exception as error:  # a malformed file fails its test, named
        return CheckResult(exercise_name, False, f"unusable result: {type(error).__name__}: "
                                                 f"{str(error)[:300]}")
    try:
        return judge_outputs(exercise, inputs, outputs)
    except Exception as error:  # crafted data that breaks the comparison fails, never passes
        return CheckResult(exercise_name, False, "the result could not be compared "
                                                 f"({type(error).__name__}: {str(error)[:300]})")


def read_metrics(path: Path, reserved: set[str]) -> tuple[dict[str, float], str | None]:
    """``(metrics, None)``, or ``({}, why)`` when the metrics file is unusable; no file is no
    metrics."""
    try:
        data = read_regular_file(path, MAX_METRICS_BYTES)
    except UnsafeFileError as error:
        return {}, (None if "was not written" in str(error) else f"metrics: {error}")
    try:
        metrics = parse_metrics(data)
    except ValueError as error:
        return {}, str(error)
    clash = sorted(set(metrics) & reserved)
    if clash:
        return {}, f"metric name {clash[0]!r} is reserved for a column of the grades"
    return metrics, None


def judge(spec: dict, outputs_dir: Path) -> dict:
    """Score every test of ``spec`` (``tests``: ``id``, ``exercise``, ``seed``; ``secret``: the
    autograder's; ``reserved``: column names a metric may not take) from the files under
    ``outputs_dir``.

    Returns:
        ``{"tests": [{"id", "passed", "message", "measured"}], "metrics": {...},
        "metrics_error": str or None}``; ``measured``: the figures the judge measured for that
        test (name -> float; empty for a comparison).
    """
    tests = []
    for test in spec["tests"]:
        result = judge_test(test["exercise"], int(test["seed"]),
                            outputs_dir / OUTPUTS_DIR / f"{test['id']}.npz",
                            str(spec.get("secret", "")))
        tests.append({"id": test["id"], "passed": bool(result.passed),
                      "message": result.message,
                      "measured": {k: float(v) for k, v in result.measured.items()}})
    metrics, error = read_metrics(outputs_dir / METRICS_NAME, set(spec.get("reserved", [])))
    return {"tests": tests, "metrics": metrics, "metrics_error": error}


def main(argv: list[str]) -> int:
    """Read the spec from stdin, write the result as one JSON line to stdout."""
    spec = json.loads(sys.stdin.read())
    result = judge(spec, Path(argv[0]))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
