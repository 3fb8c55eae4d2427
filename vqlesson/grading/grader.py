"""Grading a folder of submitted notebooks: each in a sandbox of its own, scored outside it.

For each submission (``python -m vqlesson grade SUBMISSIONS --autograder ZIP_OR_FOLDER``):

1. The trusted grader reads it as a notebook, picks its autograder (:mod:`vqlesson.grading.autograder`:
   the tests, their points, the check and seed of each) and writes a sandbox's inbox: the
   notebook, a manifest and each test's inputs as data (:mod:`vqlesson.grading.io`). No test
   code, no expected result, no other submission.
2. The sandbox (:mod:`vqlesson.grading.sandbox`: bubblewrap; where it does not work, nothing
   runs unless ``isolation="none"`` asks for limits only: :mod:`vqlesson.grading.isolation`) runs
   :mod:`vqlesson.grading.runner`: the notebook headless in a fresh kernel (a cell that raises
   does not stop it), then one more cell that calls each test's student function on its inputs
   and writes what it returned as arrays. Then everything left of the sandbox is killed.
3. A separate process, :mod:`vqlesson.grading.judge`, that never runs student code, rebuilds each
   test's inputs from its seed, compares the outputs with the library's reference (the same
   code as the notebooks' instant feedback) and validates the recorded metrics.
4. The row is written to the CSV at once (:mod:`vqlesson.grading.report`: atomic rewrite), so a
   stopped batch keeps what it graded; run again, it skips submissions already graded (same
   file content) unless ``regrade``.

A student's notebook can therefore only change its own outputs: replacing ``checks.check_*``,
editing test files or patching ``torch.isclose`` has no effect on its score.
"""

from __future__ import annotations

import hashlib
import json
import queue
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from .autograder import Autograder, autograder_for, read_autograder
from ..checks import EXERCISES, METRICS_ENV
from .isolation import NONE_WARNING, isolation_line
from .report import (RESERVED, STATUSES, SubmissionResult, read_csv, summary, write_csv)
from .io import (MANIFEST_NAME, METRICS_NAME, OUTPUTS_DIR, UnsafeFileError,
                         encode_inputs, read_regular_file, save_arrays)
from ..profiles import PROFILES
from ..validate import check_int, check_number
from .sandbox import (BWRAP, DATA_DIR, Isolation, SandboxLimits, check_python, detect_isolation,
                      launcher_command, package_dir, reserved_users, sandbox_tempdir, sandboxed)

GRADING_ENV = "VQLESSON_GRADING"
WIDGETS_ENV = "VQLESSON_WIDGETS"
MAX_SUBMISSION_BYTES = 64 * 2**20
MAX_EXECUTED_BYTES = 32 * 2**20  # the executed notebook copied into the logs
JUDGE_TIMEOUT_S, JUDGE_MEMORY_MB = 300, 8192
TIMING = "sandbox {:.2f} s, checks {:.2f} s"  # the last line of each submission's log
RUNNER = Path(__file__).with_name("runner.py")  # run as a script inside the sandbox
__all__ = ["GradeReport", "GradeSettings", "STATUSES", "SubmissionResult", "grade"]


class GradeReport(NamedTuple):
    """What :func:`grade` returns: every row of the CSV (this run's and the earlier ones it
    kept), where it wrote them (``csv_path``, the markdown ``summary_path``, and ``logs_dir``
    with each submission's log and executed notebook), ``summary_text`` (the summary's
    markdown), the ``isolation`` the runs had, the submissions ``skipped`` as already
    graded, and ``isolation_line``, the summary's first line (``ISOLATION: bwrap (...)``,
    ``ISOLATION: NONE (...)`` or ``ISOLATION: MIXED (...)``:
    :func:`vqlesson.grading.isolation.isolation_line`)."""

    results: list[SubmissionResult]
    csv_path: Path
    summary_path: Path
    logs_dir: Path
    summary_text: str
    isolation: Isolation | None = None
    skipped: tuple[str, ...] = ()
    isolation_line: str = ""


@dataclass(frozen=True)
class GradeSettings:
    """How each submission runs.

    Attributes:
        timeout_s: wall-clock seconds per submission's sandbox (> 0).
        profile: ``VQLESSON_PROFILE`` of the runs.
        limits: the sandbox's resource limits.
        data_dir: a folder holding ``isic2016/``, readable by the runs (read-only).
        isolation: ``"auto"`` (the default) or ``"bwrap"``: grade in the bubblewrap sandbox,
            refuse to grade without one (the same since grading fails closed; ``auto`` is kept
            for existing commands); ``"none"``: no sandbox, resource limits only, knowingly
            (submissions can read the hidden tests and each other).
    """

    timeout_s: float = 1200.0
    profile: str = "ci"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    data_dir: Path | None = None
    isolation: str = "auto"


# --------------------------------------------------------------------------------------------
# One submission
# --------------------------------------------------------------------------------------------
class _Batch(NamedTuple):
    """What every submission of a batch shares."""

    autograders: list[Autograder]
    inputs: dict[tuple[str, int], dict]  # (exercise, seed) -> encoded arrays
    settings: GradeSettings
    isolation: Isolation
    logs_dir: Path
    slots: queue.Queue


def _write_inbox(inbox: Path, in_path: str, out_path: str, notebook: str,
                 autograder: Autograder, inputs: dict) -> None:
    """The sandbox's read-only inbox: the notebook, the manifest, each test's inputs."""
    (inbox / "inputs").mkdir()
    tests = []
    for test in autograder.tests:
        name = f"{test.exercise}-seed{test.seed}.npz"
        if not (inbox / "inputs" / name).exists():
            save_arrays(inbox / "inputs" / name, inputs[(test.exercise, test.seed)])
        tests.append({"id": test.id, "exercise": test.exercise, "function": test.function,
                      "inputs": name})
    (inbox / "submission.ipynb").write_text(notebook)
    (inbox / MANIFEST_NAME).write_text(json.dumps({
        "tests": tests, "inputs_dir": f"{in_path}/inputs",
        "outputs_dir": f"{out_path}/{OUTPUTS_DIR}"}))
    for path in [inbox / "inputs", *inbox.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _judge(autograder: Autograder, outbox: Path) -> dict:
    """Run :mod:`vqlesson.grading.judge` on a sandbox's outbox, in a process of its own."""
    spec = {"tests": [{"id": t.id, "exercise": t.exercise, "seed": t.seed}
                      for t in autograder.tests], "reserved": sorted(RESERVED),
            "secret": autograder.secret}  # never in the sandbox: the held-out data's seed
    limits = {"RLIMIT_AS": JUDGE_MEMORY_MB * 2**20, "RLIMIT_CORE": 0}
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(package_dir().parent),
           "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(launcher_command(limits, None) + [
        sys.executable, "-m", "vqlesson.grading.judge", str(outbox)], input=json.dumps(spec),
        capture_output=True, text=True, timeout=JUDGE_TIMEOUT_S, env=env, cwd=outbox)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"the check process failed (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def _run_info(outbox: Path) -> dict:
    """``run.json`` of the runner, checked (it was written beside student code)."""
    try:
        info = json.loads(read_regular_file(outbox / "run.json", 2**20))
        errors = [str(e)[:400] for e in info.get("cell_errors", [])][:50]
        failure = info.get("failure")
        return {"cell_errors": errors, "failure": str(failure)[:400] if failure else None}
    except (UnsafeFileError, ValueError, AttributeError, TypeError) as error:
        return {"cell_errors": [], "failure": f"the runner's report is unusable ({error})"}


def _keep_logs(run, outbox: Path, log_path: Path, executed_path: Path) -> None:
    note = f"\n[grader: {run.killed} processes left running were killed]\n" if run.killed else ""
    log_path.write_text(run.output + note)
    try:
        executed_path.write_bytes(read_regular_file(outbox / "executed.ipynb",
                                                    MAX_EXECUTED_BYTES))
    except UnsafeFileError:
        executed_path.unlink(missing_ok=True)


def _measured(autograder: Autograder, verdicts: dict) -> dict[str, float]:
    """The figures the judge measured, one column per test and figure: ``"TEST: NAME"``."""
    measured = {}
    for test in autograder.tests:
        figures = verdicts.get(test.id, {}).get("measured") or {}
        for name, value in figures.items() if isinstance(figures, dict) else ():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                measured[f"{test.column}: {name}"] = float(value)
    return measured


def _scored(name: str, autograder: Autograder, judged: dict, info: dict, run, seconds: float,
            isolation: str, digest: str) -> SubmissionResult:
    verdicts = {t["id"]: t for t in judged["tests"]}
    checks, failed, score, possible = {}, [], 0.0, 0.0
    for test in autograder.tests:
        verdict = verdicts.get(test.id, {"passed": False, "message": "not judged"})
        checks[test.column] = bool(verdict["passed"])
        possible += test.points
        if verdict["passed"]:
            score += test.points
        else:
            failed.append(f"{test.column}: {verdict['message']}")
    errors = list(info["cell_errors"]) + [e for e in (info["failure"],
                                                      judged.get("metrics_error")) if e]
    if run.stopped:
        errors.append(f"stopped early: {run.stopped}")
    elif run.returncode not in (0, None) and not info["failure"]:
        errors.append(f"the sandbox exited with status {run.returncode}")
    notes = [f"{run.killed} processes left running were killed"] if run.killed else []
    return SubmissionResult(name, "error" if errors else "ok", seconds, round(score, 6),
                            round(possible, 6), checks, failed, judged.get("metrics", {}),
                            "; ".join(errors + notes), isolation, digest,
                            _measured(autograder, verdicts))


def _read_submission(path: Path) -> tuple[str, dict | None, str]:
    """(sha256, notebook as a dict or None, why not) of a submitted file."""
    try:
        data = read_regular_file(path, MAX_SUBMISSION_BYTES)
    except UnsafeFileError as error:
        return "", None, str(error)
    digest = hashlib.sha256(data).hexdigest()
    try:
        import nbformat

        nb = nbformat.reads(data.decode("utf-8"), as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # any parse or schema error: not a notebook
        return digest, None, f"not a Jupyter notebook ({type(error).__name__}: {str(error)[:200]})"
    return digest, nb, ""


def _grade_one(path: Path, batch: _Batch) -> SubmissionResult:
    """Grade one submission: sandbox, checks, row."""
    import nbformat

    start, name, settings = time.perf_counter(), path.name, batch.settings
    digest, nb, why = _read_submission(path)
    kind = batch.isolation.kind
    if nb is None:
        return SubmissionResult(name, "ungradable", 0.0, None, None, {}, [], {}, why, kind, digest)
    try:
        autograder = autograder_for(nb, name, batch.autograders)
    except ValueError as error:
        return SubmissionResult(name, "ungradable", 0.0, None, None, {}, [], {}, str(error),
                                kind, digest)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    notebook = nbformat.writes(nb)
    slot = batch.slots.get()
    try:
        with sandbox_tempdir() as tmp:
            run = _sandbox_run(tmp, notebook, autograder, batch, slot)
            outbox = run.layout.outbox
            _keep_logs(run, outbox, batch.logs_dir / f"{path.stem}.log",
                       batch.logs_dir / f"{path.stem}.executed.ipynb")
            if run.timed_out:
                return SubmissionResult(
                    name, "timeout", time.perf_counter() - start, None, None, {}, [], {},
                    f"killed after the time limit of {settings.timeout_s:g} s", kind, digest)
            info, checked = _run_info(outbox), time.perf_counter()
            try:
                judged = _judge(autograder, outbox)
            except (RuntimeError, ValueError, subprocess.TimeoutExpired) as error:
                return SubmissionResult(name, "ungradable", time.perf_counter() - start, None,
                                        None, {}, [], {}, str(error)[:500], kind, digest)
            timing = TIMING.format(run.seconds, time.perf_counter() - checked)
            with open(batch.logs_dir / f"{path.stem}.log", "a") as log:
                log.write(f"\n[grader: {timing}]\n")
    finally:
        batch.slots.put(slot)
    return _scored(name, autograder, judged, info, run, time.perf_counter() - start, kind, digest)


def _sandbox_run(tmp: Path, notebook: str, autograder: Autograder, batch: _Batch, slot: int):
    settings = batch.settings
    bwrap = batch.isolation.kind == BWRAP

    def command(layout):
        return [sys.executable, "-I", str(RUNNER), layout.in_path, layout.out_path,
                layout.work, str(settings.timeout_s), str(settings.limits.output_kb)]

    def prepare(layout):
        _write_inbox(layout.inbox, layout.in_path, layout.out_path, notebook, autograder,
                     batch.inputs)

    def env(layout):
        variables = {"VQLESSON_PROFILE": settings.profile, GRADING_ENV: "1", WIDGETS_ENV: "0",
                     METRICS_ENV: f"{layout.out_path}/{METRICS_NAME}"}
        if settings.data_dir is not None:
            variables["VQLESSON_DATA_DIR"] = DATA_DIR if bwrap else str(settings.data_dir)
        return variables

    return sandboxed(tmp / "box", batch.isolation, slot, settings.limits, settings.timeout_s,
                     command, env, gpu=settings.profile == "gpu", data_dir=settings.data_dir,
                     prepare=prepare)


# --------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------
def _autograders(autograder: Path) -> list[Autograder]:
    if not autograder.exists():
        raise FileNotFoundError(f"autograder {autograder} not found; make it with "
                                "`python -m vqlesson student-version`")
    zips = [autograder] if autograder.is_file() else sorted(autograder.glob("*.zip"))
    if not zips:
        raise FileNotFoundError(f"no autograder zip in {autograder}")
    return [read_autograder(z) for z in zips]


def _check_arguments(folder: Path, settings: GradeSettings, jobs: int) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"submissions folder {folder} not found")
    paths = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not paths:
        raise FileNotFoundError(f"no submitted notebooks (*.ipynb) in {folder}")
    check_number(settings.timeout_s, "timeout_s", 0, low_open=True, note="seconds")
    check_int(jobs, "jobs", 1)
    if settings.profile not in PROFILES:
        raise ValueError(f"unknown profile {settings.profile!r}; choose one of "
                         f"{', '.join(PROFILES)}")
    if settings.data_dir is not None and not Path(settings.data_dir).is_dir():
        raise FileNotFoundError(f"data folder {settings.data_dir} not found")
    return paths


def _inputs(autograders: list[Autograder]) -> dict[tuple[str, int], dict]:
    """Each test's inputs, encoded once per batch (trusted side)."""
    wanted = {(t.exercise, t.seed) for a in autograders for t in a.tests}
    return {key: encode_inputs(EXERCISES[key[0]].make_inputs(key[1])) for key in sorted(wanted)}


def _grade_all(batch: _Batch, todo: list[Path], results: dict[str, SubmissionResult],
               csv_path: Path, jobs: int) -> dict[str, SubmissionResult]:
    """Grade ``todo`` with ``jobs`` sandboxes at once into ``results`` (the kept rows), writing
    the CSV after every submission. Returns ``results``."""
    lock = threading.Lock()
    write_csv(list(results.values()), csv_path)

    def work(path: Path) -> None:
        try:
            result = _grade_one(path, batch)
        except Exception as error:  # a fault of the grader or the machine: this row, not the batch
            result = SubmissionResult(path.name, "ungradable", 0.0, None, None, {}, [], {},
                                      f"the grader failed: {type(error).__name__}: {error}",
                                      batch.isolation.kind)
        with lock:
            results[result.submission] = result
            write_csv(list(results.values()), csv_path)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(work, todo))
    return results


def grade(submissions: str | Path, autograder: str | Path, out_csv: str | Path = "grades.csv",
          timeout_s: float = 1200.0, profile: str = "ci", jobs: int = 1, *,
          regrade: bool = False, settings: GradeSettings | None = None) -> GradeReport:
    """Grade every ``*.ipynb`` in a folder, each in a sandbox; write a row of the CSV as soon as
    a submission is graded, then a markdown summary; keep each one's log and executed notebook.

    Args:
        submissions: folder of submitted notebooks (one file per student).
        autograder: an autograder zip made by :func:`vqlesson.course.make_student_version`, or a
            folder of them (each submission is matched to its notebook's zip).
        out_csv: the CSV; the summary goes beside it (``NAME.md``), logs and executed notebooks
            into ``NAME_logs/``. Rows already in it for an unchanged file are kept and that
            submission is not run again, unless ``regrade``.
        timeout_s, profile: the time limit per submission and its ``VQLESSON_PROFILE``
            (they override the fields of ``settings``).
        jobs: submissions graded at once (>= 1).
        regrade: grade every submission again.
        settings: sandbox limits, data folder and isolation (:class:`GradeSettings`).

    Returns:
        :class:`GradeReport`, rows in file-name order.

    Raises:
        FileNotFoundError: no such folder, autograder or data folder, or no notebooks.
        ValueError: a bad ``timeout_s``, ``jobs`` or profile, an autograder whose tests the
            grader cannot run, or an existing CSV of another format.
        SandboxUnavailable: (:mod:`vqlesson.grading.isolation`, a ``RuntimeError``)
            isolation ``"auto"`` or ``"bwrap"`` and bubblewrap missing or not working here:
            raised before any submission runs or any row is written; the message says why,
            how to get a sandbox, and that ``isolation="none"`` grades without one.
        RuntimeError: the sandbox cannot run Python (the message says why).
    """
    settings = replace(settings or GradeSettings(), timeout_s=timeout_s, profile=profile)
    folder, csv_path = Path(submissions), Path(out_csv)
    paths = _check_arguments(folder, settings, jobs)
    autograders = _autograders(Path(autograder))
    kept = {} if regrade else {r.submission: r for r in read_csv(csv_path)}
    isolation = detect_isolation(settings.isolation)
    if isolation.kind != BWRAP:
        warnings.warn(f"{NONE_WARNING} ({isolation.detail})", stacklevel=2)
    with reserved_users(isolation, jobs) as isolation:  # sandbox users of this batch alone
        check_python(isolation, settings.limits, settings.profile == "gpu", settings.data_dir)
        logs_dir = csv_path.with_name(csv_path.stem + "_logs")
        logs_dir.mkdir(parents=True, exist_ok=True)
        todo, skipped = [], []
        for path in paths:
            previous = kept.get(path.name)
            if previous is not None and previous.sha256 and \
                    previous.sha256 == _read_submission(path)[0]:
                skipped.append(path.name)
            else:
                todo.append(path)
        slots: queue.Queue = queue.Queue()
        for slot in range(jobs):
            slots.put(slot)
        batch = _Batch(autograders, _inputs(autograders), settings, isolation, logs_dir, slots)
        results = _grade_all(batch, todo, dict(kept), csv_path, jobs)
    header = [f"Autograder `{', '.join(str(a.path) for a in autograders)}`, profile "
              f"`{settings.profile}`, time limit {settings.timeout_s:g} s per submission.",
              f"Isolation of this run: {isolation.kind} ({isolation.detail}).",
              f"Graded now: {len(todo)}; kept from an earlier run: {len(skipped)}."]
    rows = sorted(results.values(), key=lambda r: r.submission)
    first = isolation_line(isolation.kind, [r.isolation for r in rows])
    text = summary(rows, header, first_line=first)
    summary_path = csv_path.with_suffix(".md")
    summary_path.write_text(text)
    return GradeReport(rows, csv_path, summary_path, logs_dir, text, isolation, tuple(skipped),
                       first)
