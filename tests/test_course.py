"""The course layer: Colab cells, run times, student versions and grading (vqlesson.course,
vqlesson.grading)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

from grading_course import (fill, isolation_here, make_tiny_course, solution, student,
                            with_cell)
from vqlesson import course
from vqlesson.course.student import solution_lines
from vqlesson.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
otter = pytest.importorskip("otter", reason="otter-grader is part of the dev install")


def _read(path):
    return nbformat.read(path, as_version=4)


def _tagged(nb, tag):
    return [c for c in nb.cells if tag in c.metadata.get("tags", [])]


# --------------------------------------------------------------------------------------------
# Generated cells: Colab set-up, run time, assignment config
# --------------------------------------------------------------------------------------------
def test_every_notebook_starts_with_the_generated_colab_cell_and_run_time():
    assert course.sync_notebooks(NOTEBOOKS, check=True) == [], (
        "run `python -m vqlesson sync-notebooks`")
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = _read(path)
        first_code = next(c for c in nb.cells if c.cell_type == "code")
        assert first_code.source == course.colab_cell_source(), path.name
        assert f'REPO_URL = "{course.REPO_URL}"' in first_code.source
        index = nb.cells.index(first_code)
        runtime = nb.cells[index - 1]
        assert runtime.source == course.runtime_markdown(path.stem)
        assert "`cpu` profile" in runtime.source and "`gpu` profile" in runtime.source
        config = _tagged(nb, course.CONFIG_TAG)
        if course.has_questions(nb):
            assert [c.source for c in config] == [course.assignment_config(path.stem)]
            assert nb.cells.index(config[0]) < next(
                i for i, c in enumerate(nb.cells) if c.source.startswith("# BEGIN QUESTION"))
        else:
            assert config == []


def test_run_times_are_measured_figures_or_say_not_measured():
    text = course.runtime_markdown("01_data_and_augmentation")
    assert "about 14 s under the `cpu` profile" in text
    assert "not measured yet under the `gpu` profile" in text
    assert "not measured yet" in course.runtime_markdown("99_unknown")


def test_the_model_notebooks_have_at_least_three_exercises_each():
    for name in ("02_vqvae", "03_vqvae2_hierarchy", "04_pixelcnn_prior"):
        found = course.questions(_read(NOTEBOOKS / f"{name}.ipynb"))
        assert len(found) >= 3, name
        for question in found:
            assert question.solution_cells and any(hidden for _, hidden in question.tests)
            assert all("checks.check_" in source for source, _ in question.tests)
            assert all("# BEGIN SOLUTION" in s and "checks.check_" in s
                       for s in question.solution_cells)


def test_notebooks_05_and_06_have_their_checked_exercises():
    for name, least in (("05_test_set_failure_analysis", 4), ("06_hierarchical_prior", 2)):
        found = course.questions(_read(NOTEBOOKS / f"{name}.ipynb"))
        assert len(found) >= least, name
        for question in found:
            assert question.solution_cells and any(hidden for _, hidden in question.tests)
            assert all("checks.check_" in source for source, _ in question.tests)


def _run_colab_cell(tmp_path, monkeypatch, cuda: bool, **flags):
    """Execute the Colab cell as Colab would, with /content in tmp_path and no real installs."""
    source = course.colab_cell_source().replace("/content", str(tmp_path / "content"))
    for flag, value in flags.items():
        source = re.sub(rf"^{flag} = False", f"{flag} = {value}", source, flags=re.M)
    commands, mounted = [], []

    def fake_run(command, check=False):
        commands.append(command)
        if command[:2] == ["git", "clone"]:
            Path(command[-1], "notebooks").mkdir(parents=True)
        return subprocess.CompletedProcess(command, 0)

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=lambda path: (mounted.append(path),
                                                            Path(path, "MyDrive").mkdir(parents=True)))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr("torch.cuda.is_available", lambda: cuda)
    for name in ("VQLESSON_PROFILE", "VQLESSON_DATA_DIR"):  # the cell sets them: undone after
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "colab-cell", "exec"), {})
    return commands, mounted


def test_the_colab_cell_is_shown_collapsed_under_one_sentence():
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        cells = nbformat.read(path, as_version=4).cells
        index = next(i for i, c in enumerate(cells) if c.cell_type == "code")
        cell, above = cells[index], cells[index - 1]
        assert cell.metadata.get("cellView") == "form", path.name  # Colab: the #@title only
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, path.name
        assert cell.source.startswith("#@title Set-up"), path.name
        assert above.cell_type == "markdown" and "next cell is the set-up" in above.source, path.name


def test_the_colab_cell_does_nothing_heavy_outside_colab(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    monkeypatch.chdir(tmp_path)
    before = dict(__import__("os").environ)
    exec(compile(course.colab_cell_source(), "colab-cell", "exec"), {})
    assert Path.cwd() == tmp_path and dict(__import__("os").environ) == before


def test_the_colab_cell_installs_and_picks_the_gpu_profile(monkeypatch, tmp_path, capsys):
    commands, mounted = _run_colab_cell(tmp_path, monkeypatch, cuda=True)
    assert commands[0] == ["git", "clone", "--depth", "1", "--branch", course.BRANCH,
                           course.REPO_URL, str(tmp_path / "content/vqlesson")]
    assert commands[1][-3:] == ["install", "-q", str(tmp_path / "content/vqlesson")]
    assert len(commands) == 2 and mounted == []  # no download, no Drive unless asked
    assert Path.cwd() == tmp_path / "content/vqlesson/notebooks"
    assert __import__("os").environ["VQLESSON_PROFILE"] == "gpu"
    assert "WARNING" not in capsys.readouterr().out


def test_the_colab_cell_warns_on_a_cpu_runtime_downloads_and_keeps_runs_on_drive(
        monkeypatch, tmp_path, capsys):
    commands, mounted = _run_colab_cell(tmp_path, monkeypatch, cuda=False, DOWNLOAD_ISIC=True,
                                        KEEP_RUNS_ON_DRIVE=True)
    root = tmp_path / "content/vqlesson"
    assert ["bash", "../data_download.sh", f"{root}/data/isic2016"] in commands
    assert mounted == [str(tmp_path / "content/drive")]
    for name in ("runs", "data"):  # ISIC and its resized cache survive the session too
        kept = root / name
        assert kept.is_symlink() and kept.resolve() == tmp_path / f"content/drive/MyDrive/vqlesson/{name}"
    assert __import__("os").environ["VQLESSON_DATA_DIR"] == f"{root}/data"
    assert __import__("os").environ["VQLESSON_PROFILE"] == "cpu"
    out = capsys.readouterr().out
    assert "WARNING: this Colab session runs on a CPU runtime" in out
    assert "Change runtime type" in out


def test_notebooks_open_on_a_colab_gpu_runtime_with_jupyterlab_s_kernelspec():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        metadata = nbformat.read(path, as_version=4).metadata
        assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4", path.name
        assert metadata["kernelspec"]["name"] == "python3", path.name


def test_colab_links_are_built_from_the_one_repository_url():
    assert course.colab_url("02_vqvae.ipynb") == (
        "https://colab.research.google.com/github/vqlesson/vqlesson/blob/main/notebooks/"
        "02_vqvae.ipynb")
    table = course.colab_links_markdown(NOTEBOOKS)
    for path in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"):
        assert table.count(course.colab_url(path.name)) == 1
    with pytest.raises(ValueError, match="GitHub repository URL"):
        course.colab_url("x.ipynb", repo_url="https://example.org/course")


def test_the_readme_has_one_colab_link_per_notebook_built_from_the_url():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"https://colab\.research\.google\.com/github/[^\s)\]]+", readme)
    expected = {course.colab_url(p.name) for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    assert sorted(links) == sorted(expected), (
        "paste the output of `python -m vqlesson colab-links` into README.md")


def test_the_commands_are_registered(capsys):
    args = build_parser().parse_args(["grade", "subs", "--autograder", "dist/autograder"])
    assert (args.timeout, args.profile, args.jobs, args.out) == (1200.0, "ci", 1, "grades.csv")
    assert (args.regrade, args.isolation, args.memory_mb) == (False, "auto", None)
    args = build_parser().parse_args(["student-version", "--only", "02_vqvae"])
    assert args.only == ["02_vqvae"] and args.out == "dist"
    assert main(["colab-links", "--notebooks", str(NOTEBOOKS)]) == 0
    assert course.colab_url("04_pixelcnn_prior.ipynb") in capsys.readouterr().out
    assert main(["sync-notebooks", "--notebooks", str(NOTEBOOKS), "--check",
                 "--only", "02_vqvae"]) == 0


# --------------------------------------------------------------------------------------------
# Student versions of the real notebooks
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_version(tmp_path_factory):
    return course.make_student_version(NOTEBOOKS, tmp_path_factory.mktemp("dist"))


def _solution_lines(source):
    return [line.strip() for line in solution_lines(source) if len(line.strip()) > 3]


def test_student_version_removes_every_solution_and_keeps_every_check(real_version):
    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert sorted(p.name for p in real_version.student_dir.iterdir()) == [p.name for p in notebooks]
    for path in notebooks:
        instructor, student = _read(path), _read(real_version.student_dir / path.name)
        text = "\n".join(c.source for c in student.cells)
        assert not re.search(r"BEGIN (SOLUTION|QUESTION|TESTS)|END (SOLUTION|QUESTION|TESTS)", text)
        assert not re.search(r"ASSIGNMENT CONFIG|# HIDDEN", text)
        assert all(not c.get("outputs") for c in student.cells if c.cell_type == "code")
        assert student.cells[[c.cell_type for c in student.cells].index("code")].source == \
            course.colab_cell_source()
        student_lines = {line.strip() for line in text.split("\n")}
        for question in course.questions(instructor):
            for source in question.solution_cells:
                leaked = [ln for ln in _solution_lines(source) if ln in student_lines]
                assert not leaked, f"{path.name}/{question.name}: {leaked}"
                for call in re.findall(r"checks\.check_\w+\(\w+\)", source):
                    assert call in text, f"{path.name}: the check {call} was removed"
            zip_path = real_version.autograders[path.stem]
            with zipfile.ZipFile(zip_path) as archive:
                test_file = archive.read(f"tests/{question.name}.py").decode()
            public = (real_version.build_dir / path.stem / "student" / "tests" /
                      f"{question.name}.py").read_text()
            assert test_file.count("hidden=True") >= 1 and "hidden=True" not in public
            assert public.count("@test_case") == sum(not hidden for _, hidden in question.tests)


def _answer_env(nb, tag):
    """Execute the cells tagged ``tag`` (the exercises) in a fresh namespace."""
    env = {}
    exec("import math, torch\nimport torch.nn.functional as F\nfrom vqlesson import checks", env)
    for cell in nb.cells:
        if tag in cell.metadata.get("tags", []):
            exec(compile(cell.source, "cell", "exec"), env)
    return env


def test_the_student_version_fails_its_checks_and_the_instructor_version_passes(real_version,
                                                                                 one_thread):
    from otter.test_files import ExceptionTestFile

    for name, zip_path in real_version.autograders.items():
        solution = _read(real_version.build_dir / name / "autograder" / f"{name}.ipynb")
        student = _read(real_version.student_dir / f"{name}.ipynb")
        envs = {"instructor": _answer_env(solution, "otter_assign_solution_cell"),
                "student": _answer_env(student, "otter_answer_cell")}
        with zipfile.ZipFile(zip_path) as archive:
            sources = {n: archive.read(n).decode() for n in archive.namelist()
                       if n.startswith("tests/")}
            tests = [ExceptionTestFile.from_string(text, n) for n, text in sources.items()]
        assert len(tests) >= 2  # every notebook with exercises has two or more (06: two)
        for who, env in envs.items():
            for test_file in tests:
                test_file.run(env)
                results = test_file.test_case_results
                assert len(results) >= 2
                for result in results:
                    assert result.passed == (who == "instructor"), (name, who, result.message)
                    if who == "student" and "check_heldout_prior" in sources[test_file.path]:
                        # the open exercise's template runs: an over-trained prior, measured
                        assert "measured by the check" in result.message, result.message
                        assert "learnt its training maps" in result.message
                    elif who == "student":
                        assert "not done yet" in result.message or "still 0" in result.message


def test_the_generated_student_notebook_runs_up_to_its_first_exercise(real_version, tmp_path):
    from nbclient import NotebookClient

    nb = _read(real_version.student_dir / "02_vqvae.ipynb")
    first = next(i for i, c in enumerate(nb.cells)
                 if "otter_answer_cell" in c.metadata.get("tags", []))
    nb.cells = nb.cells[:first + 1]
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, errors
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in nb.cells[first].outputs)
    assert "❌ nearest_code: not done yet" in shown


# --------------------------------------------------------------------------------------------
# Grading a batch: correct, wrong, erroring, hanging and broken submissions
# (attacks on the grader: tests/test_grading.py)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_course(tmp_path_factory):
    """A two-exercise instructor notebook, its student version and autograder."""
    root = tmp_path_factory.mktemp("tiny")
    return root, make_tiny_course(root)


def test_the_grader_scores_correct_wrong_erroring_and_hanging_submissions_in_one_batch(
        tiny_course, tmp_path):
    from vqlesson.grading import GradeSettings, grade

    root, made = tiny_course
    subs = tmp_path / "submissions"
    subs.mkdir()
    nbformat.write(solution(made), subs / "dan_correct.ipynb")
    wrong = fill(student(made), "build_mask", "    return torch.ones(kernel_size, kernel_size)")
    wrong = fill(wrong, "bits_per_code",
                 "    return float(F.cross_entropy(logits, codes) / math.log(2))")
    nbformat.write(wrong, subs / "ben_wrong.ipynb")
    erroring = with_cell(student(made), "raise ValueError('my own bug')", index=3)
    nbformat.write(erroring, subs / "cat_erroring.ipynb")
    hanging = with_cell(solution(made), "import time\ntime.sleep(3600)")
    nbformat.write(hanging, subs / "abe_hanging.ipynb")  # first: it holds a worker longest
    (subs / "eve_broken.ipynb").write_text("this is not a notebook")

    report = grade(subs, made.autograders["01_tiny"], out_csv=tmp_path / "grades.csv",
                   timeout_s=45, jobs=2, settings=GradeSettings(isolation=isolation_here()))
    by_name = {r.submission: r for r in report.results}
    assert list(by_name) == ["abe_hanging.ipynb", "ben_wrong.ipynb", "cat_erroring.ipynb",
                             "dan_correct.ipynb", "eve_broken.ipynb"]

    correct = by_name["dan_correct.ipynb"]
    assert (correct.status, correct.score, correct.possible) == ("ok", 2, 2), correct
    assert correct.checks == {"build_mask - 1": True, "build_mask - 2 (hidden)": True,
                              "bits_per_code - 1": True, "bits_per_code - 2 (hidden)": True}
    assert correct.metrics == {"psnr": 12.5, "perplexity": 3.0} and correct.failed == []
    assert correct.isolation == report.isolation.kind
    assert report.summary_text.splitlines()[0] == report.isolation_line
    assert report.isolation_line.startswith(
        "ISOLATION: bwrap (" if report.isolation.kind == "bwrap" else "ISOLATION: NONE (")

    ben = by_name["ben_wrong.ipynb"]
    assert ben.status == "ok" and ben.score == 1 < ben.possible
    assert not ben.checks["build_mask - 1"] and ben.checks["bits_per_code - 1"]
    assert ben.failed[0].startswith("build_mask - 1: ") and "mask" in ben.failed[0][16:]

    cat = by_name["cat_erroring.ipynb"]
    assert cat.status == "error" and cat.score == 0 and "ValueError: my own bug" in cat.message
    assert all("not done yet" in f for f in cat.failed) and len(cat.failed) == 4

    assert by_name["abe_hanging.ipynb"].status == "timeout"
    assert by_name["abe_hanging.ipynb"].score is None
    assert by_name["eve_broken.ipynb"].status == "ungradable"
    assert "not a Jupyter notebook" in by_name["eve_broken.ipynb"].message

    with open(report.csv_path) as handle:
        rows = {row["submission"]: row for row in csv.DictReader(handle)}
    assert rows["dan_correct.ipynb"]["build_mask - 2 (hidden)"] == "pass"
    assert rows["ben_wrong.ipynb"]["build_mask - 1"] == "fail"
    assert rows["ben_wrong.ipynb"]["psnr [recorded by notebook]"] == "12.5"
    assert rows["abe_hanging.ipynb"]["status"] == "timeout"
    assert "build_mask - 1" in rows["ben_wrong.ipynb"]["failed"]
    summary = report.summary_path.read_text()
    assert "| ben_wrong.ipynb | ok | 1 / 2 |" in summary
    assert "| psnr [recorded by notebook] |" in summary  # labelled: the notebook wrote it
    assert (report.logs_dir / "dan_correct.executed.ipynb").is_file()


def test_grade_refuses_bad_input_clearly(tiny_course, tmp_path):
    from vqlesson.grading import grade

    _, made = tiny_course
    with pytest.raises(FileNotFoundError, match="submissions folder"):
        grade(tmp_path / "missing", made.autograders["01_tiny"])
    with pytest.raises(FileNotFoundError, match="no submitted notebooks"):
        grade(tmp_path, made.autograders["01_tiny"])
    (tmp_path / "a.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError, match="student-version"):
        grade(tmp_path, tmp_path / "nope.zip")
    with pytest.raises(ValueError, match="timeout_s"):
        grade(tmp_path, made.autograders["01_tiny"], timeout_s=0)
    with pytest.raises(ValueError, match="profile"):
        grade(tmp_path, made.autograders["01_tiny"], profile="tpu")


def test_make_student_version_names_unknown_notebooks():
    with pytest.raises(FileNotFoundError, match="99_nothing"):
        course.make_student_version(NOTEBOOKS, "/nonexistent-never-written", only=["99_nothing"])
    with pytest.raises(FileNotFoundError, match="notebook folder"):
        course.sync_notebooks("/no/such/folder")


def test_otter_writes_the_metadata_that_matches_submissions_to_autograders(tiny_course):
    _, made = tiny_course
    meta = json.loads((made.student_dir / "01_tiny.ipynb").read_text())["metadata"]
    assert meta["otter"]["assignment_name"] == "01_tiny"
