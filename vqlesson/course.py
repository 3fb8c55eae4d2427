"""The course layer: Colab set-up cells, measured run times, student versions, CLI commands.

The repository keeps the *instructor* version of every notebook: exercises with their solutions
and tests, marked in otter-grader's assignment format (otter-grader.readthedocs.io, "Otter
Assign"): a raw ``# ASSIGNMENT CONFIG`` cell, then per exercise raw cells ``# BEGIN QUESTION``
(YAML: ``name``, ``points``), ``# BEGIN SOLUTION`` / ``# END SOLUTION`` around the code cell whose
``# BEGIN SOLUTION`` ... ``# END SOLUTION`` lines are the solution, ``# BEGIN TESTS`` /
``# END TESTS`` around test cells (a first line ``# HIDDEN`` keeps a test out of the student
version), and ``# END QUESTION``. Every test calls a :mod:`vqlesson.checks` function, so the
students' instant feedback and the grades agree.

This module holds what must live in one place:

- :data:`REPO_URL`, from which the first code cell of every notebook (the Colab set-up cell) and
  the README's "Open in Colab" links are generated (:func:`sync_notebooks`,
  :func:`colab_links_markdown`);
- :data:`RUN_TIMES`, the measured run time of each notebook per profile, written into each
  notebook by :func:`sync_notebooks`;
- :func:`make_student_version`, which runs ``otter assign`` on every instructor notebook and
  writes the student notebooks (solutions and hidden tests removed, checks kept) and one
  autograder zip per notebook;
- :func:`add_course_commands`, the ``student-version``, ``grade``, ``sync-notebooks`` and
  ``colab-links`` commands of ``python -m vqlesson``. Grading itself is in
  :mod:`vqlesson.grading`.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

REPO_URL = "https://github.com/vqlesson/vqlesson"
BRANCH = "main"
NOTEBOOKS_DIR = "notebooks"  # relative to the repository root
STUDENT_DIR, AUTOGRADER_DIR, BUILD_DIR = "student", "autograder", "build"
#: The autograder zip's requirement that installs vqlesson: the wheel otter puts in the zip's
#: ``files/``. Gradescope unpacks the zip into /autograder/source and its setup runs pip from
#: there (conda/mamba run an environment file's pip section in the file's folder), so the path
#: is relative to the zip's root; it needs no network and no repository access.
AUTOGRADER_REQUIREMENT = "./files/{wheel}"
RUNTIME_TAG, COLAB_TAG, CONFIG_TAG = "course-runtime", "colab-setup", "otter-config"
MEASURED_ON = "a quiet 2-core x86_64 CPU without GPU (machine A in benchmarks/RESULTS.md)"


# --------------------------------------------------------------------------------------------
# Measured run times (seconds; None = not measured yet)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunTime:
    """The measured wall-clock run time of one notebook, in seconds, per profile.

    Attributes:
        ci, cpu, gpu: seconds under each profile, ``None`` when not measured yet (a figure goes
            here only from a measurement: nbval's end-of-run list for ``ci``, a full run for
            ``cpu``/``gpu``).
        note: what the figure assumes (e.g. a finished run in ``runs/``).
    """

    ci: float | None
    cpu: float | None
    gpu: float | None
    note: str = ""


RUN_TIMES: dict[str, RunTime] = {
    "01_data_and_augmentation": RunTime(
        ci=5, cpu=11, gpu=None,
        note="With ISIC 2016 the first run also resizes the 1279 images once (about a minute)."),
    "02_vqvae": RunTime(
        ci=7, cpu=227, gpu=None,
        note="Most of the time goes to the side studies (equal-budget runs, two seeds of the "
             "reference); a finished main run in `runs/` is loaded instead of retrained."),
    "03_vqvae2_hierarchy": RunTime(
        ci=17, cpu=217, gpu=None,
        note="Two VQ-VAE-2 models (the bypass and the course's) and the rate-distortion points; "
             "finished runs in `runs/` are loaded instead of retrained."),
    "04_pixelcnn_prior": RunTime(
        ci=8, cpu=195, gpu=None,
        note="With notebook 02's VQ-VAE already in `runs/`; add notebook 02's time otherwise. "
             "The last cell prints this run's time."),
    "05_test_set_failure_analysis": RunTime(
        ci=7, cpu=145, gpu=None,
        note="With notebook 02's VQ-VAE already in `runs/`; add notebook 02's time otherwise. "
             "Five priors are trained; a finished one in `runs/` is loaded instead. The last cell "
             "prints this run's time."),
    "06_hierarchical_prior": RunTime(
        ci=5, cpu=111, gpu=None,
        note="With notebook 03's VQ-VAE-2 already in `runs/`; add notebook 03's main model "
             "otherwise. Two priors are trained; finished ones in `runs/` are continued. The last "
             "cell prints this run's time."),
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    return f"about {seconds / 60:.0f} min"


def runtime_markdown(name: str) -> str:
    """The run-time statement of notebook ``name`` (its file stem), from :data:`RUN_TIMES`."""
    times = RUN_TIMES.get(name, RunTime(None, None, None))
    lines = [
        f"*Expected run time*, measured on {MEASURED_ON}: {_duration(times.cpu)} under the "
        f"`cpu` profile (a laptop CPU); {_duration(times.gpu)} under the `gpu` profile (one GPU); "
        f"{_duration(times.ci)} under `ci`.",
    ]
    if times.note:
        lines.append(times.note)
    lines.append("(`vqlesson/course.py` keeps these figures; `python -m vqlesson sync-notebooks` "
                 "writes them here.)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The Colab set-up cell and the Colab links
# --------------------------------------------------------------------------------------------
COLAB_CELL_TEMPLATE = '''\
# Set-up. In Colab: install the course, optionally fetch ISIC 2016 and keep runs/ and data/ on
# Google Drive, and pick the profile from the runtime. Elsewhere this cell does nothing heavy.
REPO_URL = "{repo_url}"  # written by `python -m vqlesson sync-notebooks`
BRANCH = "{branch}"
DOWNLOAD_ISIC = False       # True: fetch ISIC 2016 (about 830 MB) with data_download.sh
KEEP_RUNS_ON_DRIVE = False  # True: runs/ and data/ on Google Drive: a disconnected session
                            # resumes its training, and ISIC (and its resized cache) stays
import importlib, os, subprocess, sys
if "google.colab" in sys.modules:
    ROOT = "/content/vqlesson"
    if not os.path.isdir(ROOT):
        subprocess.run(["git", "clone", "--depth", "1", "--branch", BRANCH, REPO_URL, ROOT],
                       check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", ROOT], check=True)
    importlib.invalidate_caches()
    os.chdir(ROOT + "/notebooks")
    for name in ("runs", "data") if KEEP_RUNS_ON_DRIVE else ():
        here, kept = ROOT + "/" + name, "/content/drive/MyDrive/vqlesson/" + name
        if not os.path.islink(here):
            from google.colab import drive
            if not os.path.isdir("/content/drive/MyDrive"):
                drive.mount("/content/drive")
            os.makedirs(kept, exist_ok=True)
            if os.path.isdir(here):
                os.rename(here, here + ".local")
            os.symlink(kept, here)
    os.environ.setdefault("VQLESSON_DATA_DIR", ROOT + "/data")
    if DOWNLOAD_ISIC:
        subprocess.run(["bash", "../data_download.sh", ROOT + "/data/isic2016"], check=True)
    import torch
    os.environ.setdefault("VQLESSON_PROFILE", "gpu" if torch.cuda.is_available() else "cpu")
    print("Colab set-up done: profile", os.environ["VQLESSON_PROFILE"])
    if not torch.cuda.is_available():
        print("WARNING: this Colab session runs on a CPU runtime, so the small `cpu` profile "
              "is used and training is slow. Choose Runtime > Change runtime type > a GPU "
              "(e.g. T4), then run the notebook again from the top.")'''


def colab_cell_source(repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The source of the Colab set-up cell, the first code cell of every notebook.

    It cannot import vqlesson (it installs it), so the URL and branch are written into it.
    """
    return COLAB_CELL_TEMPLATE.format(repo_url=repo_url, branch=branch)


def _github_path(repo_url: str) -> str:
    match = re.fullmatch(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?", repo_url)
    if match is None:
        raise ValueError(f"REPO_URL must be a GitHub repository URL such as "
                         f"https://github.com/OWNER/REPO, got {repo_url!r}")
    return f"{match.group(1)}/{match.group(2)}"


def colab_url(notebook: str, repo_url: str = REPO_URL, branch: str = BRANCH) -> str:
    """The "Open in Colab" URL of ``notebook`` (a file name such as ``02_vqvae.ipynb``)."""
    return (f"https://colab.research.google.com/github/{_github_path(repo_url)}/blob/{branch}/"
            f"{NOTEBOOKS_DIR}/{notebook}")


def colab_links_markdown(notebooks_dir: str | Path = NOTEBOOKS_DIR, repo_url: str = REPO_URL
                         ) -> str:
    """A markdown table with one "Open in Colab" link per notebook, for the README."""
    rows = ["| notebook | Colab |", "|---|---|"]
    for path in _notebooks(notebooks_dir):
        badge = "![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)"
        rows.append(f"| `{path.name}` | [{badge}]({colab_url(path.name, repo_url)}) |")
    return "\n".join(rows)


# --------------------------------------------------------------------------------------------
# Notebook structure: generated cells, the assignment config, questions
# --------------------------------------------------------------------------------------------
def _notebooks(notebooks_dir: str | Path) -> list[Path]:
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"notebook folder {folder} not found; run from the repository "
                                "root or pass --notebooks DIR")
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no course notebooks (NN_name.ipynb) in {folder}")
    return paths


def assignment_config(name: str, wheel: str | None = None) -> str:
    """The ``# ASSIGNMENT CONFIG`` raw cell of notebook ``name`` for otter-grader.

    No otter cells are added to the notebooks (students need no otter; instant feedback comes
    from :mod:`vqlesson.checks`), tests are exception-based files (hidden ones only in the
    autograder), and no PDFs are made.

    With ``wheel`` (a wheel's file name beside the master notebook; :func:`make_student_version`
    builds it), the wheel goes into the autograder zip (``files/``) and the zip's requirements
    install it: :data:`AUTOGRADER_REQUIREMENT` with the name filled in. The notebooks keep the
    config without it.
    """
    package = [] if wheel is None else [
        "files:", f"  - {wheel}",
        "requirements:", f"  - {AUTOGRADER_REQUIREMENT.format(wheel=wheel)}",
        "overwrite_requirements: false"]
    return "\n".join([
        "# ASSIGNMENT CONFIG",
        f"name: {name}",
        "init_cell: false",
        "check_all_cell: false",
        "export_cell: false",
        "run_tests: false",
        "tests:",
        "  files: true",
        "  ok_format: false",
        "generate:",
        "  pdf: false",
        "  show_stdout: true",
        "  show_hidden: false",
        *package,
    ])


def _tagged(cell, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def _is_raw_marker(cell, marker: str) -> bool:
    return (cell.cell_type == "raw"
            and re.match(rf"#\s+{marker}\b", cell.source.lstrip(), flags=re.IGNORECASE) is not None)


def has_questions(nb) -> bool:
    """Whether a notebook holds otter-format exercises (a raw ``# BEGIN QUESTION`` cell)."""
    return any(_is_raw_marker(cell, "BEGIN QUESTION") for cell in nb.cells)


class Question(NamedTuple):
    """One exercise of an instructor notebook.

    Attributes:
        name: the otter question name (also the check's name).
        solution_cells: the sources of its solution code cells.
        tests: ``(source, hidden)`` of each test cell.
    """

    name: str
    solution_cells: list[str]
    tests: list[tuple[str, bool]]


def questions(nb) -> list[Question]:
    """The exercises of an instructor notebook, in order (parsed from the otter markers)."""
    import yaml

    found, current, block = [], None, None
    for cell in nb.cells:
        if _is_raw_marker(cell, "BEGIN QUESTION"):
            config = yaml.safe_load(cell.source.split("\n", 1)[1]) or {}
            current = Question(str(config.get("name")), [], [])
        elif _is_raw_marker(cell, "END QUESTION"):
            found.append(current)
            current = None
        elif _is_raw_marker(cell, "BEGIN SOLUTION"):
            block = "solution"
        elif _is_raw_marker(cell, "BEGIN TESTS"):
            block = "tests"
        elif _is_raw_marker(cell, "END SOLUTION") or _is_raw_marker(cell, "END TESTS"):
            block = None
        elif current is not None and cell.cell_type == "code":
            if block == "solution":
                current.solution_cells.append(cell.source)
            elif block == "tests":
                first = cell.source.lstrip().split("\n", 1)[0]
                hidden = first.startswith("#") and "hidden" in first.lower()
                current.tests.append((cell.source, hidden))
    return found


def _new_cell(kind: str, source: str, tag: str):
    import nbformat

    factory = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell,
               "raw": nbformat.v4.new_raw_cell}[kind]
    cell = factory(source)
    cell.metadata["tags"] = [tag]
    return cell


def _set_cell(nb, tag: str, kind: str, source: str, index: int) -> bool:
    """Make the cell tagged ``tag`` hold ``source``, inserting it at ``index`` if missing.
    Returns whether the notebook changed."""
    for i, cell in enumerate(nb.cells):
        if _tagged(cell, tag):
            if cell.cell_type == kind and cell.source == source:
                return False
            replacement = _new_cell(kind, source, tag)
            replacement["id"] = cell.get("id", replacement.get("id"))
            nb.cells[i] = replacement
            return True
    nb.cells.insert(index, _new_cell(kind, source, tag))
    return True


#: Notebook metadata every course notebook carries: Colab opens it on a GPU runtime (a T4 on the
#: free tier), and the kernelspec is the one JupyterLab writes, so a notebook does not open
#: "modified".
NOTEBOOK_METADATA = {
    "accelerator": "GPU",
    "colab": {"provenance": [], "gpuType": "T4"},
    "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
}


def synced(nb, name: str, repo_url: str = REPO_URL):
    """A copy of notebook ``nb`` (file stem ``name``) with its generated cells up to date: the
    run-time statement and the Colab set-up cell right after the first markdown cell, and,
    where the notebook has exercises, the assignment config right after them; and the notebook
    metadata of :data:`NOTEBOOK_METADATA` (Colab's GPU runtime, the kernelspec)."""
    nb = copy.deepcopy(nb)
    # A set-up cell from before the tags existed is replaced, not duplicated.
    for cell in nb.cells:
        if (cell.cell_type == "code" and not _tagged(cell, COLAB_TAG)
                and cell.source.startswith("# Set-up.") and "REPO_URL" in cell.source):
            cell.metadata["tags"] = [COLAB_TAG]
            break
    first = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    _set_cell(nb, RUNTIME_TAG, "markdown", runtime_markdown(name), first)
    position = next(i for i, c in enumerate(nb.cells) if _tagged(c, RUNTIME_TAG)) + 1
    _set_cell(nb, COLAB_TAG, "code", colab_cell_source(repo_url), position)
    if has_questions(nb):
        position = next(i for i, c in enumerate(nb.cells) if _tagged(c, COLAB_TAG)) + 1
        _set_cell(nb, CONFIG_TAG, "raw", assignment_config(name), position)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.update(NOTEBOOK_METADATA)
    return nb


def _select(paths: list[Path], only: list[str] | None, folder: str | Path) -> list[Path]:
    if not only:
        return paths
    wanted = {Path(n).stem for n in only}
    unknown = wanted - {p.stem for p in paths}
    if unknown:
        raise FileNotFoundError(f"no notebook named {sorted(unknown)} in {folder}")
    return [p for p in paths if p.stem in wanted]


def sync_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR, check: bool = False,
                   repo_url: str = REPO_URL, only: list[str] | None = None) -> list[Path]:
    """Rewrite the generated cells of every notebook (see :func:`synced`) from :data:`REPO_URL`
    and :data:`RUN_TIMES`.

    Args:
        notebooks_dir: the folder of ``NN_name.ipynb`` notebooks.
        check: only report which notebooks are out of date; write nothing.
        repo_url: the repository the Colab cell installs from.
        only: notebook stems or file names to process (default: all).

    Returns:
        The notebooks that were (or, with ``check``, would be) changed.

    Raises:
        FileNotFoundError: no notebook folder, no notebooks in it, or a name in ``only`` that
            matches none.
    """
    import nbformat

    changed = []
    for path in _select(_notebooks(notebooks_dir), only, notebooks_dir):
        nb = nbformat.read(path, as_version=4)
        new = synced(nb, path.stem, repo_url)
        if new != nb:
            changed.append(path)
            if not check:
                nbformat.validate(new)
                nbformat.write(new, path)
    return changed


# --------------------------------------------------------------------------------------------
# Student version and autograder
# --------------------------------------------------------------------------------------------
class StudentVersion(NamedTuple):
    """What :func:`make_student_version` wrote.

    Attributes:
        student_dir: the student notebooks (every notebook; solutions and hidden tests removed).
        autograders: notebook stem -> autograder zip (notebooks with exercises only).
        build_dir: otter-grader's full output per notebook (the autograder notebook with
            solutions, all tests including hidden ones, the student tests).
    """

    student_dir: Path
    autograders: dict[str, Path]
    build_dir: Path


def _solution_lines(source: str) -> list[str]:
    """The lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` in a code cell."""
    inside, lines = False, []
    for line in source.split("\n"):
        if re.match(r"\s*# BEGIN SOLUTION", line):
            inside = True
        elif re.match(r"\s*# END SOLUTION", line):
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def _check_student_notebook(path: Path, instructor) -> None:
    """Fail loudly if a solution line survived in a student notebook."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    text = "\n".join(c.source for c in cells)
    answers = {line.strip() for c in cells if _tagged(c, "otter_answer_cell")
               for line in c.source.split("\n")}
    for question in questions(instructor):
        for source in question.solution_cells:
            for line in _solution_lines(source):
                if len(line) > 3 and line in answers:
                    raise RuntimeError(f"{path.name}: solution line {line!r} of question "
                                       f"{question.name!r} is still in the student version")
    if re.search(r"#\s*(BEGIN|END) (SOLUTION|QUESTION|TESTS)", text):
        raise RuntimeError(f"{path.name}: an otter marker survived in the student version")


def build_wheel(out_dir: Path) -> Path:
    """Build vqlesson's wheel (no dependencies, no network) from a clean copy of this source
    checkout into ``out_dir`` with pip, for the autograder zip.

    Raises:
        RuntimeError: vqlesson was not imported from a source checkout (no ``pyproject.toml``
            beside the package), or pip failed (its output is in the message).
    """
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise RuntimeError(f"the autograder needs vqlesson's wheel, built from the source "
                           f"checkout, but {root} holds no pyproject.toml: run student-version "
                           "from a clone of the repository (pip install -e .)")
    with tempfile.TemporaryDirectory() as tmp:  # a clean copy: no stale build/ in the wheel
        source = Path(tmp) / "vqlesson-source"
        shutil.copytree(root / "vqlesson", source / "vqlesson",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy(root / name, source / name)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                               "--no-build-isolation", "--wheel-dir", str(out_dir), str(source)],
                              capture_output=True, text=True)
    wheels = sorted(Path(out_dir).glob("vqlesson-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise RuntimeError(f"building vqlesson's wheel failed:\n{done.stdout}{done.stderr}")
    return wheels[0]


def _otter_assign(path: Path, nb, wheel: Path, result: Path, verify: bool) -> Path:
    """Run ``otter assign`` on instructor notebook ``nb`` (read from ``path``) with vqlesson's
    ``wheel`` in its autograder; returns otter's output folder ``result``."""
    import nbformat
    from otter.assign import main as otter_assign

    with tempfile.TemporaryDirectory() as tmp:
        master = Path(tmp) / path.name
        shutil.copy(wheel, Path(tmp) / wheel.name)
        config = assignment_config(path.stem, wheel.name)
        if verify:
            config = config.replace("run_tests: false", "run_tests: true")
        master_nb = synced(nb, path.stem)
        for cell in master_nb.cells:
            if _tagged(cell, CONFIG_TAG):
                cell.source = config
        nbformat.write(master_nb, master)
        otter_assign(str(master), str(result), no_pdfs=True, no_run_tests=not verify)
    return result


def make_student_version(notebooks_dir: str | Path = NOTEBOOKS_DIR, out_dir: str | Path = "dist",
                         only: list[str] | None = None, verify: bool = False) -> StudentVersion:
    """Generate the student notebooks and the autograders from the instructor notebooks.

    Each notebook with exercises goes through ``otter assign`` (otter-grader); the student
    notebook keeps every ``checks.check_*`` call and loses every solution and hidden test. A
    notebook without exercises is copied as it is. Every autograder zip carries vqlesson's wheel
    (:func:`build_wheel`) and installs it (:data:`AUTOGRADER_REQUIREMENT`), so it grades on
    Gradescope as it is. Writes ``OUT/student/NN_name.ipynb``,
    ``OUT/autograder/NN_name.zip`` and ``OUT/build/NN_name/`` (replacing those three folders'
    previous contents).

    Args:
        notebooks_dir: the instructor notebooks.
        out_dir: where to write.
        only: notebook stems or file names to process (default: all).
        verify: also let otter run every test against the instructor notebook (it executes the
            whole notebook under the current profile) and fail unless it scores full marks.

    Returns:
        :class:`StudentVersion`.

    Raises:
        FileNotFoundError: no notebooks, or a name in ``only`` that matches none.
        RuntimeError: otter-grader is not installed, the wheel could not be built, or a
            solution survived in a student notebook.
    """
    import nbformat

    try:
        import otter.assign  # noqa: F401  (used by _otter_assign)
    except ImportError:
        raise RuntimeError("otter-grader is not installed: pip install -e \".[grading]\" "
                           "(or \".[dev]\")") from None
    paths = _select(_notebooks(notebooks_dir), only, notebooks_dir)
    out = Path(out_dir)
    student, autograder, build = out / STUDENT_DIR, out / AUTOGRADER_DIR, out / BUILD_DIR
    for folder in (student, autograder, build):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    autograders = {}
    with tempfile.TemporaryDirectory() as wheel_dir:
        wheel = build_wheel(Path(wheel_dir))
        for path in paths:
            nb = nbformat.read(path, as_version=4)
            if not has_questions(nb):
                nbformat.write(synced(nb, path.stem), student / path.name)
                continue
            result = _otter_assign(path, nb, wheel, build / path.stem, verify)
            shutil.copy(result / STUDENT_DIR / path.name, student / path.name)
            _check_student_notebook(student / path.name, nb)
            zips = sorted((result / AUTOGRADER_DIR).glob("*-autograder_*.zip"))
            if len(zips) != 1:
                raise RuntimeError(f"otter assign wrote {len(zips)} autograder zips for "
                                   f"{path.name}")
            autograders[path.stem] = Path(shutil.copy(zips[0], autograder / f"{path.stem}.zip"))
    return StudentVersion(student, autograders, build)


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
    from .grading import GradeSettings, grade
    from .sandbox import SandboxLimits

    memory = args.memory_mb if args.memory_mb is not None else (
        None if args.profile == "gpu" else SandboxLimits.memory_mb)
    limits = SandboxLimits(memory_mb=memory or None, disk_mb=args.disk_mb, tasks=args.tasks)
    settings = GradeSettings(limits=limits, isolation=args.isolation,
                             data_dir=Path(args.data_dir) if args.data_dir else None)
    report = grade(args.submissions, args.autograder, out_csv=args.out, timeout_s=args.timeout,
                   profile=args.profile, jobs=args.jobs, regrade=args.regrade,
                   settings=settings)
    print(report.summary_text)
    print(f"CSV: {report.csv_path}\nsummary: {report.summary_path}\nlogs and executed "
          f"notebooks: {report.logs_dir}/")
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
    from .sandbox import SandboxLimits

    grade = sub.add_parser(
        "grade", help="grade a folder of submitted notebooks into a CSV, each in a sandbox",
        description="Grades every .ipynb in SUBMISSIONS: each runs headless in a sandbox of its "
                    "own (bubblewrap where it works, else resource limits only; the CSV's "
                    "isolation column says which) with a time limit; its exercise functions "
                    "are called there on the tests' inputs and a separate process scores what "
                    "they returned. A submission that errors or hangs is reported and the "
                    "batch goes on; each row is written as soon as it is graded, and a rerun "
                    "skips the submissions already graded. Writes a CSV (status, seconds, "
                    "score, pass/fail of every test, the failing tests with their hints, the "
                    "metrics the notebook recorded: PSNR, perplexity, prior NLL) and a markdown "
                    "summary beside it.")
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
                       help="auto: bubblewrap where it works, else limits only (default); "
                            "bwrap: refuse to grade without it; none: limits only")
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
        description="Writes the generated cells of every notebook from vqlesson/course.py: the "
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
