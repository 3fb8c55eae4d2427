"""The grader against hostile submissions (vqlesson.grading, sandbox, judge).

One batch of submissions written the way a determined student writes them is graded once
(module fixture); each test checks one verdict: cheats score no more than an empty submission,
nothing outside the sandbox is read or changed, no process survives, output is capped, bad
metrics are that submission's error and the batch goes on, the honest submission gets full
marks. Where bubblewrap cannot run, the batch is graded with ``isolation="none"`` (the default
refuses to grade without a sandbox: tested on a simulated machine without bwrap), the tests of
what only bwrap gives are skipped with the reason, and the limits-only grading is tested on its
own.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from grading_course import (isolation_here, make_prior_course, make_tiny_course, solution, student,
                            with_cell)
from vqlesson.grading import GradeSettings, SandboxUnavailable, grade, grader
from vqlesson.grading.sandbox import BWRAP, RLIMITS_ONLY

otter = pytest.importorskip("otter", reason="otter-grader is part of the dev install")
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "vqlesson-test-daemon-7f3a"  # in the command line of every daemon a submission starts
SECRET = "VQLESSON_TEST_INSTRUCTOR_SECRET"

CHEAT_CHECKS = """\
from vqlesson import check_core, checks
passed = lambda *args, **kwargs: check_core.CheckResult("x", True, "passed (cheat)")
for name in [n for n in vars(checks) if n.startswith("check_")]:
    setattr(checks, name, passed)
check_core.run_check = check_core.judge_outputs = passed
for name, exercise in list(checks.EXERCISES.items()):
    checks.EXERCISES[name] = exercise._replace(judge=lambda inputs, outputs: "cheat")
print(checks.check_causal_mask(build_mask))
"""
CHEAT_TESTS = """\
import glob, os, pathlib
for root in ("/grader", os.getcwd(), os.path.expanduser("~"), os.environ.get("TMPDIR", "/tmp")):
    for path in glob.glob(f"{root}/**/*", recursive=True):
        try:
            text = pathlib.Path(path).read_text()
            pathlib.Path(path).write_text(text.replace("assert", "pass  #"))
        except (OSError, UnicodeDecodeError):
            pass
os.makedirs("tests", exist_ok=True)
for name in ("build_mask", "bits_per_code"):
    pathlib.Path(f"tests/{name}.py").write_text(f"OK_FORMAT = False\\nname = {name!r}\\n")
"""
CHEAT_TORCH = """\
import math, numpy, torch
torch.isclose = lambda a, b, *args, **kwargs: torch.ones(torch.as_tensor(a).shape, dtype=torch.bool)
torch.allclose = torch.equal = numpy.allclose = math.isclose = lambda *args, **kwargs: True
torch.Tensor.__eq__ = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
torch.Tensor.__ne__ = lambda self, other: torch.zeros(self.shape, dtype=torch.bool)
"""
CHEAT_FORGE = """\
import glob, json, os, threading, time, numpy
outputs = os.path.join(os.path.dirname(os.environ["VQLESSON_METRICS_FILE"]), "outputs")
names = ["case0", "case1", "1A", "1B", "3A", "3B", "5A", "5B", "7A", "7B"]
records = json.dumps({k: {"kind": "number", "type": "float", "value": 0.0} for k in names})
def overwrite():  # whatever the grader's call writes is replaced by forged records
    while True:
        for path in glob.glob(outputs + "/*.npz"):
            try:
                with open(path, "wb") as handle:
                    numpy.savez(handle, __records__=numpy.array(records))
            except OSError:
                pass
        time.sleep(0.005)
threading.Thread(target=overwrite, daemon=True).start()
"""
ATTACK = """\
import json, os, pathlib, subprocess, sys
from vqlesson import checks
paths = json.loads({paths!r})
def readable(path):
    try:
        if os.path.isdir(path):
            return bool(os.listdir(path))
        with open(path, "rb") as handle:
            return len(handle.read(16)) > 0
    except OSError:
        return False
def writes(path, data=b"overwritten by a classmate"):
    try:
        pathlib.Path(path).write_bytes(data)
        return True
    except OSError:
        return False
cmdlines = ""
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        cmdlines += open(f"/proc/{{pid}}/cmdline", "rb").read().decode(errors="replace")
    except OSError:
        pass
leaks = dict(
    read_autograder=readable(paths["autograder"]), read_solutions=readable(paths["build"]),
    read_classmate=readable(paths["classmate"]), read_submissions=readable(paths["submissions"]),
    read_home=readable(paths["home_file"]), read_env=os.environ.get({secret!r}) is not None,
    read_cmdline=paths["autograder"] in cmdlines or paths["submissions"] in cmdlines,
    wrote_classmate=writes(paths["classmate"]), wrote_autograder=writes(paths["autograder"]),
    wrote_home=writes(paths["home_file"]), wrote_csv=writes(paths["csv"]),
    wrote_submissions=writes(paths["submissions"] + "/zz_planted.ipynb"),
)
daemon = (f"import pathlib, time\\nwhile True:\\n    time.sleep(0.2)\\n"
          f"    try: pathlib.Path({{paths['csv']!r}}).write_text('HACKED')\\n"
          f"    except OSError: pass\\n# {token}")
subprocess.Popen([sys.executable, "-c", daemon], start_new_session=True)
if os.fork() == 0:  # a double-forked daemon too
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", daemon])
    os._exit(0)
checks.record_metrics(**{{name: float(value) for name, value in leaks.items()}})
"""
LOUD = """\
import os
print("x" * 30_000_000)
os.write(1, b"y" * 5_000_000)
"""
LIMITS = """\
import threading, time
from vqlesson import checks
started = 0
try:
    for _ in range(3000):
        threading.Thread(target=time.sleep, args=(2,), daemon=True).start()
        started += 1
except RuntimeError:
    pass
try:
    block = bytearray(64 * 2**30)
    allocated = 1.0
except MemoryError:
    allocated = 0.0
time.sleep(2.5)
checks.record_metrics(threads_started=started, allocated_64_gib=allocated)
"""
BAD_JSON = 'import os\nopen(os.environ["VQLESSON_METRICS_FILE"], "w").write("{not json")'
TEXT_METRIC = ('import json, os\n'
               'open(os.environ["VQLESSON_METRICS_FILE"], "w").write(json.dumps({"psnr": "high"}))')


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _daemons() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if TOKEN in " ".join(process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            pass
    return found


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_course(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def attacked(tiny, tmp_path_factory):
    """The attack batch, graded once with two jobs."""
    root = tmp_path_factory.mktemp("attack")
    subs, home = root / "submissions", root / "home"
    subs.mkdir()
    home.mkdir()
    (home / "secret.txt").write_text("the instructor's notes")
    zip_path = tiny.autograders["01_tiny"]
    paths = {"autograder": str(zip_path), "build": str(tiny.build_dir), "home_file":
             str(home / "secret.txt"), "classmate": str(subs / "b_honest.ipynb"),
             "submissions": str(subs), "csv": str(root / "grades.csv")}
    notebooks = {
        "a_empty": student(tiny),
        "b_honest": solution(tiny),
        "c_cheat_checks": with_cell(student(tiny), CHEAT_CHECKS),
        "d_cheat_tests": with_cell(student(tiny), CHEAT_TESTS),
        "e_cheat_torch": with_cell(student(tiny), CHEAT_TORCH),
        "f_cheat_forge": with_cell(student(tiny), CHEAT_FORGE),
        "g_attacker": with_cell(solution(tiny), ATTACK.format(
            paths=json.dumps(paths), secret=SECRET, token=TOKEN)),
        "h_loud": with_cell(solution(tiny), LOUD),
        "i_bad_json": with_cell(solution(tiny), BAD_JSON),
        "j_text_metric": with_cell(solution(tiny), TEXT_METRIC),
        "k_limits": with_cell(solution(tiny), LIMITS),
    }
    for name, nb in notebooks.items():
        nbformat.write(nb, subs / f"{name}.ipynb")
    (subs / "l_garbage.ipynb").write_text("not a notebook at all")
    before = {p.name: _sha(p) for p in [*subs.iterdir(), zip_path]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET, "s3cret")
        patch.setenv("HOME", str(home))
        report = grade(subs, zip_path, out_csv=root / "grades.csv", timeout_s=300, jobs=2,
                       settings=GradeSettings(isolation=isolation_here()))
    time.sleep(1.0)  # a surviving daemon would now rewrite grades.csv
    return {"report": report, "rows": {r.submission[:-6]: r for r in report.results},
            "subs": subs, "home": home, "zip": zip_path, "before": before, "csv": root / "grades.csv"}


def _bwrap_only(report):
    if report.isolation.kind != BWRAP:
        pytest.skip(f"bubblewrap is unusable here ({report.isolation.detail}): without it the "
                    "grader promises limits and a scrubbed environment, not a private file "
                    "system")


def test_the_honest_submission_gets_full_marks(attacked):
    honest = attacked["rows"]["b_honest"]
    assert (honest.status, honest.score, honest.possible) == ("ok", 2, 2), honest
    assert honest.metrics == {"psnr": 12.5, "perplexity": 3.0} and honest.failed == []
    assert honest.isolation == attacked["report"].isolation.kind


@pytest.mark.parametrize("cheat", ["c_cheat_checks", "d_cheat_tests", "e_cheat_torch",
                                   "f_cheat_forge"])
def test_cheats_score_no_more_than_an_empty_submission(attacked, cheat):
    empty, row = attacked["rows"]["a_empty"], attacked["rows"][cheat]
    assert empty.score == 0 and empty.possible == 2
    assert row.score is not None and row.score <= empty.score, row
    assert row.checks and not any(row.checks.values())


def test_the_sandbox_reads_no_instructor_environment_variable(attacked):
    attacker = attacked["rows"]["g_attacker"]
    assert attacker.metrics["read_env"] == 0.0
    assert attacker.score == 2  # its own solutions still count


def test_nothing_outside_the_sandbox_is_readable(attacked):
    _bwrap_only(attacked["report"])
    metrics = attacked["rows"]["g_attacker"].metrics
    for leak in ("read_autograder", "read_solutions", "read_classmate", "read_submissions",
                 "read_home", "read_cmdline"):
        assert metrics[leak] == 0.0, leak


def test_nothing_outside_the_sandbox_changes(attacked):
    _bwrap_only(attacked["report"])
    metrics = attacked["rows"]["g_attacker"].metrics
    for attempt in ("wrote_classmate", "wrote_autograder", "wrote_home", "wrote_csv",
                    "wrote_submissions"):
        assert metrics[attempt] == 0.0, attempt
    after = {p.name: _sha(p) for p in [*attacked["subs"].iterdir(), attacked["zip"]]}
    assert after == attacked["before"]
    assert [p.name for p in attacked["home"].iterdir()] == ["secret.txt"]
    assert attacked["rows"]["b_honest"].score == 2


def test_no_process_survives_and_the_csv_is_the_graders(attacked):
    assert _daemons() == []
    with open(attacked["csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and "HACKED" not in attacked["csv"].read_text()


def test_huge_output_is_capped(attacked):
    loud = attacked["rows"]["h_loud"]
    assert (loud.status, loud.score) == ("ok", 2), loud
    logs = attacked["report"].logs_dir
    assert (logs / "h_loud.log").stat().st_size < 600_000
    assert "bytes of output dropped" in (logs / "h_loud.log").read_text()
    assert (logs / "h_loud.executed.ipynb").stat().st_size < 1_000_000
    assert "output dropped by the grader" in (logs / "h_loud.executed.ipynb").read_text()


def test_memory_and_tasks_are_limited(attacked):
    limits = attacked["rows"]["k_limits"]
    assert limits.score == 2, limits
    assert limits.metrics["allocated_64_gib"] == 0.0
    assert limits.metrics["threads_started"] < 3000


@pytest.mark.parametrize("name, message", [("i_bad_json", "not valid JSON"),
                                           ("j_text_metric", "metric 'psnr' is not a number")])
def test_bad_metrics_are_that_submissions_error_and_the_batch_goes_on(attacked, name, message):
    row = attacked["rows"][name]
    assert row.status == "error" and message in row.message, row
    assert row.score == 2 and row.metrics == {}
    assert attacked["rows"]["l_garbage"].status == "ungradable"
    assert len(attacked["report"].results) == 12


def test_a_rerun_skips_graded_submissions_and_grades_changed_or_missing_ones(attacked, tiny):
    csv_path, subs = attacked["csv"], attacked["subs"]
    with open(csv_path) as handle:
        rows = list(csv.reader(handle))
    kept = [row for row in rows if not row[0].startswith("j_text_metric")]
    with open(csv_path, "w", newline="") as handle:  # as if the batch was killed before it
        csv.writer(handle).writerows(kept)
    changed = with_cell(student(tiny), "x = 1")
    nbformat.write(changed, subs / "a_empty.ipynb")
    report = grade(subs, attacked["zip"], out_csv=csv_path, timeout_s=300,
                   settings=GradeSettings(isolation=isolation_here()))
    assert sorted(report.skipped) == sorted(
        f"{n}.ipynb" for n in attacked["rows"] if n not in ("a_empty", "j_text_metric"))
    rows = {r.submission: r for r in report.results}
    assert len(rows) == 12 and rows["j_text_metric.ipynb"].status == "error"
    assert rows["a_empty.ipynb"].sha256 == _sha(subs / "a_empty.ipynb")
    assert rows["b_honest.ipynb"] == attacked["rows"]["b_honest"]._replace(
        seconds=rows["b_honest.ipynb"].seconds)


def test_regrade_grades_every_submission_again(tmp_path, tiny):
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "x.ipynb").write_text("not a notebook")
    here = GradeSettings(isolation=isolation_here())
    first = grade(subs, tiny.autograders["01_tiny"], out_csv=tmp_path / "g.csv", settings=here)
    assert first.results[0].status == "ungradable"
    text = (tmp_path / "g.csv").read_text().replace("ungradable", "ok")
    (tmp_path / "g.csv").write_text(text)  # a row the grader would not write again
    assert grade(subs, tiny.autograders["01_tiny"], out_csv=tmp_path / "g.csv",
                 settings=here).results[0].status == "ok"
    again = grade(subs, tiny.autograders["01_tiny"], out_csv=tmp_path / "g.csv", regrade=True,
                  settings=here)
    assert again.results[0].status == "ungradable" and again.skipped == ()


def test_without_bwrap_grading_runs_with_limits_and_kills_every_process(tmp_path, tiny):
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(solution(tiny), subs / "honest.ipynb")
    daemon = (f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
              f"'import time\\nwhile True: time.sleep(0.2)  # {TOKEN}'], start_new_session=True)")
    nbformat.write(with_cell(solution(tiny), daemon), subs / "daemon.ipynb")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SECRET, "s3cret")
        report = grade(subs, tiny.autograders["01_tiny"], out_csv=tmp_path / "g.csv",
                       timeout_s=300, settings=GradeSettings(isolation="none"))
    assert report.isolation.kind == RLIMITS_ONLY
    assert [(r.status, r.score, r.isolation) for r in report.results] == [
        ("ok", 2, RLIMITS_ONLY)] * 2
    assert re.search(r"\d+ processes left running were killed", report.results[0].message)
    assert _daemons() == []
    with open(tmp_path / "g.csv") as handle:
        assert {row["isolation"] for row in csv.DictReader(handle)} == {RLIMITS_ONLY}
    assert report.summary_text.splitlines()[0].startswith("ISOLATION: NONE (limits only")


FAKE_BWRAP = """\
#!/bin/sh
echo 'bwrap: No permissions to create new namespace, likely because the kernel does not allow non-privileged user namespaces.' >&2
exit 1
"""


def _machine_without_bwrap(tmp_path: Path, monkeypatch, fake: str | None = None) -> Path:
    """Make ``PATH`` a folder without ``bwrap`` (bubblewrap not installed) or with ``fake``
    as ``bwrap`` (installed, but failing as where namespaces are forbidden); returns it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    if fake is not None:
        (folder / "bwrap").write_text(fake)
        (folder / "bwrap").chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))
    return folder


def _refused(tmp_path: Path, tiny, monkeypatch, settings_list) -> list[str]:
    """Grade one honest submission with each of ``settings_list``: each must raise
    :class:`SandboxUnavailable` before a sandbox runs, the sandbox's Python is checked or a
    row or folder is written; returns the messages."""
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(solution(tiny), subs / "honest.ipynb")
    called = []
    for name in ("sandboxed", "check_python", "write_csv"):
        monkeypatch.setattr(grader, name, lambda *args, _name=name, **kw: called.append(_name))
    messages = []
    for settings in settings_list:
        with pytest.raises(SandboxUnavailable) as refused:
            grade(subs, tiny.autograders["01_tiny"], out_csv=tmp_path / "out" / "g.csv",
                  timeout_s=300, settings=settings)
        messages.append(str(refused.value))
    assert called == [] and not (tmp_path / "out").exists()
    return messages


def test_without_bwrap_the_default_refuses_before_running_anything(tmp_path, tiny, monkeypatch):
    _machine_without_bwrap(tmp_path, monkeypatch)
    messages = _refused(tmp_path, tiny, monkeypatch,
                        [None, GradeSettings(), GradeSettings(isolation="bwrap")])
    for message in messages:
        for words in ("bubblewrap (bwrap) is not installed", "apt-get install bubblewrap",
                      "one container per submission", "--isolation none", "hidden tests"):
            assert words in message, (words, message)
    assert "(--isolation auto)" in messages[0] and "(--isolation bwrap)" in messages[2]


def test_where_bwrap_cannot_work_the_refusal_says_so(tmp_path, tiny, monkeypatch):
    folder = _machine_without_bwrap(tmp_path, monkeypatch, FAKE_BWRAP)
    message, = _refused(tmp_path, tiny, monkeypatch, [GradeSettings()])
    for words in (f"bubblewrap ({folder / 'bwrap'}) is installed but cannot create a sandbox",
                  "No permissions to create new namespace", "cannot work on this machine",
                  "one container per submission", "otter grade", "--isolation none"):
        assert words in message, (words, message)
    assert "is not installed" not in message


def test_the_grade_command_refuses_without_bwrap_and_grades_with_isolation_none(tmp_path,
                                                                                 tiny):
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(solution(tiny), subs / "honest.ipynb")
    (tmp_path / "bin").mkdir()  # PATH without bwrap
    env = dict(os.environ, PATH=str(tmp_path / "bin"), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "vqlesson", "grade", str(subs), "--autograder",
               str(tiny.autograders["01_tiny"]), "--out", str(tmp_path / "g.csv"),
               "--timeout", "300"]
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300,
                             check=False)
    assert refused.returncode == 2 and refused.stdout == "", refused
    assert refused.stderr.startswith("error: refusing to grade (--isolation auto)")
    assert "apt-get install bubblewrap" in refused.stderr and "--isolation none" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "g.csv").exists()

    graded = subprocess.run(command + ["--isolation", "none"], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert graded.returncode == 0, graded.stderr
    lines = graded.stdout.splitlines()
    assert lines[0].startswith("ISOLATION: NONE (limits only: submissions could read the "
                               "hidden tests and each other") and lines[-1] == lines[0]
    assert (tmp_path / "g.md").read_text().splitlines()[0] == lines[0]
    assert "grading WITHOUT a sandbox (--isolation none)" in graded.stderr
    with open(tmp_path / "g.csv") as handle:
        assert [(row["status"], row["score"], row["isolation"]) for row in
                csv.DictReader(handle)] == [("ok", "2", RLIMITS_ONLY)]


def test_the_summary_says_the_isolation_in_its_first_line(attacked):
    report = attacked["report"]
    sandboxed = isolation_here() == "auto"  # bubblewrap works here: the default used it
    assert report.isolation.kind == (BWRAP if sandboxed else RLIMITS_ONLY)
    first = report.summary_text.splitlines()[0]
    assert first.startswith("ISOLATION: bwrap (each submission in its own namespaces" if sandboxed
                            else "ISOLATION: NONE (limits only") and first == report.isolation_line
    assert report.summary_path.read_text().splitlines()[0] == first
    with open(attacked["csv"]) as handle:
        assert {row["isolation"] for row in csv.DictReader(handle)} == {report.isolation.kind}


@pytest.mark.parametrize("name, metrics, measured", [
    ("02_vqvae", {"psnr", "perplexity", "revived_active_fraction"}, "active_fraction"),
    ("03_vqvae2_hierarchy", {"top_only_psnr", "mean_image_psnr", "swap_layout_shift"},
     "top_only_psnr"),
    ("04_pixelcnn_prior", {"prior_nll_bits_per_code", "prior_near_copy_fraction"},
     "heldout_bits_per_code"),
    ("05_test_set_failure_analysis", {"prior_nll_bits_per_code", "sample_diversity"},
     "heldout_bits_per_code"),
    ("06_hierarchical_prior", {"layout_top_share", "two_sample_accuracy"}, None),  # no open exercise
])
def test_a_real_course_notebook_graded_end_to_end_gets_full_marks(tmp_path, name, metrics,
                                                                  measured):
    from vqlesson import course

    made = course.make_student_version(ROOT / "notebooks", tmp_path / "dist", only=[name])
    subs = tmp_path / "subs"
    subs.mkdir()
    nbformat.write(nbformat.read(made.build_dir / name / "autograder" / f"{name}.ipynb",
                                 as_version=4), subs / "instructor.ipynb")
    report = grade(subs, made.autograders[name], out_csv=tmp_path / "g.csv", timeout_s=900,
                   settings=GradeSettings(isolation=isolation_here()))
    row = report.results[0]
    exercises = len(course.questions(nbformat.read(ROOT / "notebooks" / f"{name}.ipynb",
                                                   as_version=4)))
    assert (row.status, row.score, row.possible) == ("ok", exercises, exercises), row
    assert len(row.checks) == 2 * exercises and all(row.checks.values())  # public and hidden
    assert metrics <= set(row.metrics)
    if measured is not None:
        assert sum(k.endswith(f": {measured}") for k in row.measured) == 2  # the open exercise


# --------------------------------------------------------------------------------------------
# The open prior exercise: graded on what the judge measures, never on what a notebook claims
# --------------------------------------------------------------------------------------------
PRIOR_IMPORTS = ("import io, pickle, torch\nfrom vqlesson import checks\n"
                 "from vqlesson.pixelcnn import PriorConfig\n"
                 "from vqlesson.pixelcnn_prior import PixelCNNPrior\n")
FORGE_PRIOR = """\
import json, numpy, pickle
import vqlesson.grading.io
def forged(path, arrays):  # what the grader's call writes: a 'prior' whose weights are a pickle
    records = {"result": {"kind": "other", "type": "PixelCNNPrior", "number": None},
               "weights": {"kind": "bytes", "type": "bytes", "array": "a0"}}
    weights = numpy.frombuffer(pickle.dumps({"heldout_bits_per_code": 0.1}), numpy.uint8)
    with open(path, "wb") as handle:
        numpy.savez(handle, __records__=numpy.array(json.dumps(records)), a0=weights)
vqlesson.grading.io.save_arrays = forged
def fit_prior(train, val):
    return None"""
PRIOR_CHEATS = {
    "c_figures": "def fit_prior(train, val):\n    return 0.1, 0.0, 512",
    "d_untrained": "def fit_prior(train, val):\n"
                   "    return PixelCNNPrior(PriorConfig(codebook_size=16, channels=16, num_layers=2))",
    "e_other_k": "def fit_prior(train, val):\n"
                 "    return PixelCNNPrior(PriorConfig(codebook_size=32, channels=16, num_layers=2))",
    "f_checkpoint": "def fit_prior(train, val):\n"
                    "    prior = PixelCNNPrior(PriorConfig(codebook_size=16, channels=16, num_layers=2))\n"
                    "    torch.save(prior.state_dict(), 'prior.npz')\n    return 'prior.npz'",
    "g_forged": FORGE_PRIOR,
}
PRIOR_HINTS = {"a_template": "learnt its training maps", "c_figures": "you returned figures",
               "d_untrained": "has not learnt the maps it was given",
               "e_other_k": "codebook_size = 32", "f_checkpoint": "PyTorch checkpoint",
               "g_forged": "the weights file is a pickle"}


def _answered(nb, source):
    """``nb`` (a student version) with its exercise cell replaced by ``source``."""
    cell = next(c for c in nb.cells if "otter_answer_cell" in c.metadata.get("tags", []))
    cell.source = PRIOR_IMPORTS + source + "\n\nchecks.check_heldout_prior(fit_prior)"
    return nb


@pytest.fixture(scope="module")
def prior_graded(tmp_path_factory):
    """The open prior exercise's batch: the untouched template, the honest remedy, and cheats
    (figures, an untrained prior, another K, a checkpoint pickle, forged outputs)."""
    root = tmp_path_factory.mktemp("prior")
    made = make_prior_course(root)
    subs = root / "submissions"
    subs.mkdir()
    nbformat.write(student(made, "01_prior"), subs / "a_template.ipynb")
    nbformat.write(solution(made, "01_prior"), subs / "b_honest.ipynb")
    for name, source in PRIOR_CHEATS.items():
        nbformat.write(_answered(student(made, "01_prior"), source), subs / f"{name}.ipynb")
    report = grade(subs, made.autograders["01_prior"], out_csv=root / "grades.csv",
                   timeout_s=300, jobs=2, settings=GradeSettings(isolation=isolation_here()))
    return {"report": report, "rows": {r.submission[:-6]: r for r in report.results},
            "csv": root / "grades.csv"}


def test_the_honest_remedy_gets_full_marks_on_figures_the_grader_measured(prior_graded):
    honest = prior_graded["rows"]["b_honest"]
    assert (honest.status, honest.score, honest.possible) == ("ok", 1, 1), honest
    heldout = {k: v for k, v in honest.measured.items() if k.endswith(": heldout_bits_per_code")}
    assert len(heldout) == 2 and all(v < 3.0 for v in heldout.values())  # public and hidden
    assert honest.metrics == {"prior_nll_bits_per_code": 0.01}  # what the notebook claims
    with open(prior_graded["csv"], newline="") as handle:
        header = next(csv.reader(handle))
    assert "prior_nll_bits_per_code [recorded by notebook]" in header
    assert sum(h.endswith(": heldout_bits_per_code [measured by grader]") for h in header) == 2


@pytest.mark.parametrize("name", sorted(PRIOR_HINTS))
def test_the_template_and_every_cheat_fail_with_their_own_message(prior_graded, name):
    rows = prior_graded["rows"]
    row, template = rows[name], rows["a_template"]
    assert template.score == 0 and template.possible == 1
    assert row.score is not None and row.score <= template.score, row
    assert len(row.failed) == 2 and all(PRIOR_HINTS[name] in f for f in row.failed), row.failed
