"""The grader's parts, without running notebooks: the autograder reader, the data-only I/O and
its safe reads, the trusted judge against forged outputs, the CSV, the sandbox's environment,
output cap and clean-up."""

from __future__ import annotations

import csv
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from grading_course import make_tiny_course
from vqlesson import checks
from vqlesson.check_core import Mismatch, Opaque, Outputs, collect_safely
from vqlesson.pixelcnn import PriorConfig
from vqlesson.grading.report import SubmissionResult, csv_safe, read_csv, summary, write_csv
from vqlesson.grading.io import (UnsafeFileError, decode_inputs, encode_inputs, load_outputs,
                                 parse_metrics, read_regular_file, save_arrays)
from vqlesson.grading.judge import NO_RESULT, judge_test, read_metrics
from vqlesson.grading.isolation import (CANNOT_WORK, MISSING, RLIMITS_ONLY, SandboxUnavailable,
                                       isolation_line, namespace_blockers, refusal_message)
from vqlesson.grading.sandbox import (BWRAP, SandboxLimits, bwrap_command, detect_isolation,
                              make_layout, package_dir, run_confined, sandbox_tmp,
                              scrubbed_env)

otter = pytest.importorskip("otter", reason="otter-grader is part of the dev install")


def build_mask(k, kind):
    mask = torch.zeros(k, k)
    mask[: k // 2] = 1
    mask[k // 2, : k // 2 + (kind == "B")] = 1
    return mask


# --------------------------------------------------------------------------------------------
# The autograder zip
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory):
    return make_tiny_course(tmp_path_factory.mktemp("tiny")).autograders["01_tiny"]


def test_the_autograder_gives_each_tests_check_seed_and_points(tiny_zip):
    from vqlesson.grading.autograder import read_autograder

    autograder = read_autograder(tiny_zip)
    assert autograder.assignment == "01_tiny"
    got = [(t.column, t.exercise, t.function, t.seed, t.points) for t in autograder.tests]
    assert got == [("bits_per_code - 1", "bits_per_code", "bits_per_code", 0, 0.5),
                   ("bits_per_code - 2 (hidden)", "bits_per_code", "bits_per_code", 1, 0.5),
                   ("build_mask - 1", "causal_mask", "build_mask", 0, 0.5),
                   ("build_mask - 2 (hidden)", "causal_mask", "build_mask", 1, 0.5)]
    assert len({t.id for t in autograder.tests}) == 4


@pytest.mark.parametrize("body, error", [
    ("assert build_mask(1, 'A') is not None", "expected one call"),
    ("checks.check_nope(build_mask)", "has no check_nope"),
    ("checks.check_causal_mask(build_mask, seed=SEED)", "integer literal"),
    ("checks.check_causal_mask(other)", "the test's parameter"),
])
def test_an_autograder_test_the_grader_cannot_run_is_refused_by_name(tmp_path, body, error):
    from vqlesson.grading.autograder import read_autograder

    source = ("from otter.test_files import test_case\nOK_FORMAT = False\nname = 'q'\n"
              "points = 1\n@test_case(points=None, hidden=False)\ndef test_q(build_mask):\n"
              f"    from vqlesson import checks\n    {body}\n")
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tests/q.py", source)
    with pytest.raises(ValueError, match=error) as info:
        read_autograder(path)
    assert "bad.zip" in str(info.value) and "tests/q.py" in str(info.value)


# --------------------------------------------------------------------------------------------
# Data across the wall
# --------------------------------------------------------------------------------------------
def test_inputs_travel_as_arrays_and_come_back_equal(tmp_path):
    inputs = checks.EXERCISES["sampling_loop"].make_inputs(3)  # a prior's config and weights
    save_arrays(tmp_path / "in.npz", encode_inputs(inputs))
    with np.load(tmp_path / "in.npz", allow_pickle=False) as data:
        back = decode_inputs({k: data[k] for k in data.files})
    assert back.keys() == inputs.keys()  # the config as data: tuples come back as lists
    assert PriorConfig(**back["prior_config"]) == PriorConfig(**inputs["prior_config"])
    assert all(torch.equal(back[k], v) for k, v in inputs.items() if isinstance(v, torch.Tensor))
    with pytest.raises(TypeError, match="cannot be sent"):
        encode_inputs({"fn": print})


def test_outputs_record_results_as_data_and_decode_them():
    outputs = Outputs()
    outputs.call("tensor", lambda: torch.arange(3))
    outputs.call("pair", lambda: (torch.zeros(2), 1.5))
    outputs.call("opaque", lambda: True and object())
    outputs.call("raised", lambda: 1 / 0)
    back = Outputs.from_arrays(outputs.to_arrays())
    assert torch.equal(back.got("tensor"), torch.arange(3))
    pair = back.got("pair")
    assert isinstance(pair, tuple) and pair[1] == 1.5 and torch.equal(pair[0], torch.zeros(2))
    assert isinstance(back.got("opaque"), Opaque) and not isinstance(back.got("opaque"), tuple)
    with pytest.raises(Mismatch, match="ZeroDivisionError"):
        back.got("raised")
    with pytest.raises(Mismatch, match="no result"):
        back.got("absent")
    assert all(a.dtype.kind != "O" for a in outputs.to_arrays().values())


@pytest.mark.parametrize("text, error", [
    (b"{not json", "not valid JSON"), (b"[1, 2]", "not a JSON object"),
    (b'{"psnr": "high"}', "metric 'psnr' is not a number"),
    (b'{"psnr": true}', "metric 'psnr' is not a number"),
    (b'{"=cmd()": 1}', "not a plain name"),
])
def test_bad_metrics_are_named(text, error):
    with pytest.raises(ValueError, match=error):
        parse_metrics(text)


def test_metrics_may_be_infinite_or_nan_and_may_not_take_a_columns_name(tmp_path):
    metrics = parse_metrics(b'{"psnr": Infinity, "ssim": NaN, "n": 3}')
    assert metrics["psnr"] == float("inf") and metrics["n"] == 3.0
    (tmp_path / "metrics.json").write_text('{"score": 10}')
    assert read_metrics(tmp_path / "metrics.json", {"score"}) == (
        {}, "metric name 'score' is reserved for a column of the grades")
    assert read_metrics(tmp_path / "absent.json", set()) == ({}, None)


def test_outputs_are_read_only_from_regular_files_of_bounded_size(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("instructor")
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")  # opening it blocking would hang the grader
    (tmp_path / "big").write_bytes(b"x" * 2000)
    with pytest.raises(UnsafeFileError, match="opened safely"):
        read_regular_file(tmp_path / "link", 10_000)
    with pytest.raises(UnsafeFileError, match="not a regular file"):
        read_regular_file(tmp_path / "fifo", 10_000)
    with pytest.raises(UnsafeFileError, match="over the limit"):
        read_regular_file(tmp_path / "big", 1000)
    assert read_regular_file(secret, 100) == b"instructor"


def test_pickled_or_oversized_outputs_are_refused(tmp_path):
    with open(tmp_path / "pickled.npz", "wb") as handle:
        np.savez(handle, __records__=np.array("{}"), a0=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickled|Object arrays"):
        load_outputs(tmp_path / "pickled.npz")
    with open(tmp_path / "odd.npz", "wb") as handle:
        np.savez(handle, __records__=np.array("{}"), payload=np.zeros(3))
    with pytest.raises(ValueError, match="unexpected entries"):
        load_outputs(tmp_path / "odd.npz")
    with open(tmp_path / "large.npz", "wb") as handle:
        np.savez(handle, __records__=np.array("{}"), a0=np.zeros(100_000))
    with pytest.raises((ValueError, UnsafeFileError), match="limit|declares"):
        load_outputs(tmp_path / "large.npz", max_bytes=200_000)


# --------------------------------------------------------------------------------------------
# The judge: only correct values pass
# --------------------------------------------------------------------------------------------
def _collected(tmp_path: Path, fn, seed: int) -> Path:
    exercise = checks.EXERCISES["causal_mask"]
    outputs = collect_safely(exercise, fn, exercise.make_inputs(seed))
    path = tmp_path / f"out{seed}.npz"
    save_arrays(path, outputs.to_arrays())
    return path


def test_the_judge_passes_correct_outputs_and_fails_forged_missing_or_linked_ones(tmp_path):
    honest = _collected(tmp_path, build_mask, 1)
    assert judge_test("causal_mask", 1, honest).passed
    forged = tmp_path / "forged.npz"
    records = {f"{k}{t}": {"kind": "tensor", "type": "Tensor", "array": "a0"}
               for k in (1, 3, 5, 7) for t in "AB"}
    save_arrays(forged, {"__records__": np.array(json.dumps(records)), "a0": np.ones((3, 3))})
    assert not judge_test("causal_mask", 1, forged).passed
    assert judge_test("causal_mask", 1, tmp_path / "absent.npz").message == NO_RESULT
    (tmp_path / "linked.npz").symlink_to(honest)
    linked = judge_test("causal_mask", 1, tmp_path / "linked.npz")
    assert not linked.passed and "opened safely" in linked.message
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK garbage")
    assert not judge_test("causal_mask", 1, broken).passed


def _forged_prior_outputs(tmp_path: Path, weights: bytes) -> Path:
    """Outputs of the open prior exercise as a hostile notebook would forge them: the records
    claim a prior, the weights record holds ``weights``."""
    outputs = Outputs()
    outputs.records["result"] = {"kind": "other", "type": "PixelCNNPrior", "number": None}
    outputs.put_bytes("weights", weights)
    path = tmp_path / "forged.npz"
    save_arrays(path, outputs.to_arrays())
    return path


def test_the_judge_measures_a_prior_and_refuses_forged_weights(tmp_path):
    import io
    import pickle

    from vqlesson.exercises_heldout import MAX_WEIGHTS_BYTES
    from vqlesson.pixelcnn import PriorConfig
    from vqlesson.pixelcnn_prior import PixelCNNPrior
    from vqlesson.prior_weights import weights_file_bytes

    torch.manual_seed(0)
    prior = PixelCNNPrior(PriorConfig(codebook_size=16, channels=8, num_layers=1))
    checkpoint = io.BytesIO()
    torch.save(prior.state_dict(), checkpoint)
    cases = {weights_file_bytes(prior): "not below 3.00",  # measured: untrained
             pickle.dumps({"heldout_bits_per_code": 0.1}): "is a pickle",
             checkpoint.getvalue(): "PyTorch checkpoint",
             b"PK\x03\x04 truncated": "not an .npz archive",
             bytes(MAX_WEIGHTS_BYTES + 1): "over the limit"}
    for weights, hint in cases.items():
        verdict = judge_test("heldout_prior", 1, _forged_prior_outputs(tmp_path, weights))
        assert not verdict.passed and hint in verdict.message, verdict.message
    measured = judge_test("heldout_prior", 1, _forged_prior_outputs(
        tmp_path, weights_file_bytes(prior)), secret="s3cret").measured
    assert measured["heldout_bits_per_code"] > 3.5 and set(measured) >= {
        "train_bits_per_code", "near_copy_fraction", "sample_diversity", "heldout_diversity"}
    figures = Outputs()
    figures.call("result", lambda: (0.1, 0.0, 512))
    save_arrays(tmp_path / "figures.npz", figures.to_arrays())
    verdict = judge_test("heldout_prior", 1, tmp_path / "figures.npz")
    assert not verdict.passed and "you returned figures (0.1, 0, 512)" in verdict.message


def test_the_judges_verdict_is_the_instant_feedback_of_the_same_function(tmp_path):
    wrong = lambda k, kind: build_mask(k, kind).T  # noqa: E731
    for fn in (build_mask, wrong, lambda k, kind: None):
        assert judge_test("causal_mask", 0, _collected(tmp_path, fn, 0)) == \
            checks.check_causal_mask(fn)


# --------------------------------------------------------------------------------------------
# The CSV
# --------------------------------------------------------------------------------------------
def _row(name, **changes):
    row = SubmissionResult(name, "ok", 3.25, 1.5, 2.0, {"q - 1": True, "q - 2 (hidden)": False},
                           ["q - 2 (hidden): =HYPERLINK(\"x\")"], {"psnr": 21.5}, "", "bwrap",
                           "ab" * 32)
    return row._replace(**changes)


def test_the_csv_says_which_figures_the_grader_measured_and_which_the_notebook_recorded(tmp_path):
    from vqlesson.grading.report import MEASURED, RECORDED

    measured = {"prior - 2 (hidden): heldout_bits_per_code": 2.25}
    rows = [_row("a.ipynb", measured=measured), _row("b.ipynb")]
    write_csv(rows, tmp_path / "grades.csv")
    with open(tmp_path / "grades.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert "psnr [recorded by notebook]" in header and "psnr" not in header
    assert "prior - 2 (hidden): heldout_bits_per_code [measured by grader]" in header
    back = read_csv(tmp_path / "grades.csv")
    assert back[0].measured == measured and back[1].measured == {}
    assert back[0].metrics == back[1].metrics == {"psnr": 21.5}
    text = summary(back, ["header"])
    assert f"| psnr{RECORDED} | 21.5 |" in text
    assert f"| prior - 2 (hidden): heldout_bits_per_code{MEASURED} | 2.25 |" in text


def test_a_grades_csv_written_before_the_labels_is_read_as_recorded_and_rewritten(tmp_path):
    old = tmp_path / "grades.csv"
    old.write_text("submission,status,isolation,seconds,score,possible,q - 1,failed,psnr,"
                   "perplexity,message,sha256\n"
                   f"a.ipynb,ok,bwrap,3.2,1,1,pass,,21.5,180,,{'ab' * 32}\n")
    (row,) = read_csv(old)
    assert row.metrics == {"psnr": 21.5, "perplexity": 180.0} and row.measured == {}
    write_csv([row, _row("b.ipynb", metrics={"psnr": 20.0})], old)
    with open(old, newline="") as handle:
        header = next(csv.reader(handle))
    assert [h for h in header if "psnr" in h] == ["psnr [recorded by notebook]"]
    assert [r.metrics["psnr"] for r in read_csv(old)] == [21.5, 20.0]


def test_the_csv_round_trips_and_defuses_spreadsheet_formulas(tmp_path):
    rows = [_row("=cmd|' /C calc'!A0.ipynb", message="-2+3"), _row("b.ipynb", score=None)]
    write_csv(rows, tmp_path / "grades.csv")
    text = (tmp_path / "grades.csv").read_text()
    assert "\n=cmd" not in text and "'=cmd" in text and ",'-2+3," in text
    assert [p.name for p in tmp_path.iterdir()] == ["grades.csv"]  # no temporary file left
    back = read_csv(tmp_path / "grades.csv")
    assert [r._replace(seconds=round(r.seconds, 1)) for r in back] == \
        [r._replace(seconds=round(r.seconds, 1)) for r in rows]
    assert "| b.ipynb | ok | - |" in summary(back, ["header"])
    assert csv_safe("@SUM(1)") == "'@SUM(1)" and csv_safe("a\x00b") == "a b"


def test_the_summary_starts_with_the_isolation_and_says_when_rows_were_not_sandboxed():
    rows = [_row("a.ipynb"), _row("b.ipynb", isolation=RLIMITS_ONLY)]
    assert isolation_line(BWRAP, ["bwrap", "bwrap"]).startswith("ISOLATION: bwrap (")
    assert isolation_line(RLIMITS_ONLY, ["bwrap"]).startswith("ISOLATION: NONE (limits only")
    mixed = isolation_line(BWRAP, [r.isolation for r in rows])
    assert mixed.startswith("ISOLATION: MIXED (") and "1 of 2 rows" in mixed
    assert "--regrade" in mixed
    text = summary(rows, ["header"], first_line=mixed)
    assert text.splitlines()[:3] == [mixed, "", "# Grades: 2 submissions"]
    assert summary(rows, ["header"]).startswith("# Grades: 2 submissions")


def test_what_forbids_namespaces_is_read_from_the_kernel_and_the_container_marks(tmp_path):
    proc_sys, root = tmp_path / "sys", tmp_path / "root"
    (proc_sys / "kernel").mkdir(parents=True)
    (proc_sys / "user").mkdir()
    root.mkdir()
    (proc_sys / "user" / "max_user_namespaces").write_text("63000\n")
    assert namespace_blockers(proc_sys, root, {}) == []
    (proc_sys / "kernel" / "unprivileged_userns_clone").write_text("0\n")
    (proc_sys / "kernel" / "apparmor_restrict_unprivileged_userns").write_text("1\n")
    (root / ".dockerenv").write_text("")
    found = namespace_blockers(proc_sys, root, {"container": "podman"})
    assert len(found) == 3 and "unprivileged_userns_clone = 0" in found[0]
    assert "AppArmor" in found[1] and "/.dockerenv, container=podman" in found[2]


def test_the_refusal_says_why_how_to_get_a_sandbox_and_how_to_go_without(tmp_path,
                                                                         monkeypatch):
    missing = refusal_message(MISSING, "no bwrap on PATH", "bwrap")
    cannot = refusal_message(CANNOT_WORK, "exit 1, 'No permissions to create new namespace'")
    assert missing.startswith("refusing to grade (--isolation bwrap): no working sandbox here. "
                              "no bwrap on PATH.")
    assert "apt-get install bubblewrap" in missing and "cannot work on this machine" in cannot
    for message in (missing, cannot):
        assert "one container per submission" in message and "otter grade -a" in message
        assert "`--isolation none`" in message and "hidden tests" in message
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without bwrap
    with pytest.raises(SandboxUnavailable, match="not installed"):
        detect_isolation()
    assert detect_isolation("none").kind == RLIMITS_ONLY


def test_a_csv_of_another_format_is_refused_by_name(tmp_path):
    (tmp_path / "grades.csv").write_text("name,grade\nann,A\n")
    with pytest.raises(ValueError, match="grades.csv.*--regrade"):
        read_csv(tmp_path / "grades.csv")


# --------------------------------------------------------------------------------------------
# The sandbox
# --------------------------------------------------------------------------------------------
def test_the_sandbox_environment_is_an_allow_list(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cret")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    layout = make_layout(tmp_path / "box", BWRAP, None)
    env = scrubbed_env(layout, {"VQLESSON_PROFILE": "ci"})
    assert "AWS_SECRET_ACCESS_KEY" not in env and env["OMP_NUM_THREADS"] == "1"
    assert env["HOME"] == f"{sandbox_tmp()}/home" and env["PYTHONPATH"] == str(package_dir().parent)


def test_bwrap_mounts_the_package_but_not_its_repository(tmp_path):
    layout = make_layout(tmp_path / "box", BWRAP, None)
    command = bwrap_command(layout, SandboxLimits(), ["python"], None)
    sources = [command[i + 1] for i, a in enumerate(command) if a in ("--ro-bind", "--bind")]
    repo = package_dir().parent
    assert str(package_dir()) in sources and str(repo) not in sources
    assert [command[i + 1] for i, a in enumerate(command) if a == "--bind"] == [
        str(layout.outbox)]
    assert "--unshare-all" in command or "--unshare-net" in command
    with pytest.raises(ValueError, match="auto, bwrap or none"):
        detect_isolation("docker")


def test_a_confined_run_is_capped_and_leaves_no_process(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    token = "vqlesson-parts-daemon-91c"
    script = ("import subprocess, sys\n"
              f"subprocess.Popen([sys.executable, '-c', 'import time\\nwhile 1: time.sleep(.2)"
              f"  # {token}'], start_new_session=True)\n"
              "sys.stdout.write('z' * 3_000_000)\n")
    run = run_confined([sys.executable, "-c", script], {"PATH": "/usr/bin:/bin"}, 60,
                       SandboxLimits(output_kb=64), None, None, scratch, cwd=scratch)
    assert run.returncode == 0 and not run.timed_out and run.killed >= 1
    assert len(run.output) < 70_000 and "bytes of output dropped" in run.output
    assert not [p for p in psutil.process_iter(["cmdline"])
                if token in " ".join(p.info["cmdline"] or [])]


def test_a_confined_run_is_stopped_at_its_time_limit(tmp_path):
    run = run_confined([sys.executable, "-c", "import time; time.sleep(60)"],
                       {"PATH": "/usr/bin:/bin"}, 1, SandboxLimits(), None, None, tmp_path,
                       cwd=tmp_path)
    assert run.timed_out and run.returncode is None and run.seconds < 30


def test_a_confined_run_that_fills_the_disk_is_stopped(tmp_path):
    script = ("import os, time\nfor i in range(10_000):\n"
              "    open(f'f{i}', 'wb').write(b'x' * 100_000)\n    time.sleep(0.001)\n"
              "time.sleep(60)\n")
    run = run_confined([sys.executable, "-c", script], {"PATH": "/usr/bin:/bin"}, 120,
                       SandboxLimits(disk_mb=2), None, None, tmp_path, cwd=tmp_path,
                       watched=(tmp_path,))
    assert run.stopped == "it wrote more than 2 MiB to disk" and not run.timed_out
    assert run.seconds < 60


def test_two_root_batches_get_disjoint_sandbox_users():
    """A batch kills its leftovers by user: two batches on one machine must never share one."""
    from vqlesson.grading.sandbox import UID_BLOCK, Isolation, reserved_users, sandbox_uid

    own = Isolation("bwrap", "test", own_user=True)
    with reserved_users(own, jobs=4) as first, reserved_users(own, jobs=4) as second:
        users_first = {sandbox_uid(slot, first) for slot in range(4)}
        users_second = {sandbox_uid(slot, second) for slot in range(4)}
        assert not users_first & users_second
        assert abs(first.uid_base - second.uid_base) >= UID_BLOCK
    with reserved_users(own, jobs=1) as again:  # released at the end of a batch: reused
        assert again.uid_base == first.uid_base
    shared = Isolation("rlimits", "test", own_user=False)
    with reserved_users(shared, jobs=2) as same:
        assert same is shared and sandbox_uid(0, same) is None
