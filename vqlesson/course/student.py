"""Student versions and autograders: ``otter assign`` on every instructor notebook.

:func:`make_student_version` writes the student notebooks (solutions and hidden tests removed,
the :mod:`vqlesson.checks` calls kept) and one autograder zip per notebook with exercises, with
vqlesson's own wheel inside (:func:`build_wheel`). Grading itself is in :mod:`vqlesson.grading`."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from .cells import CONFIG_TAG, assignment_config, has_questions, has_tag, questions, synced
from .notebooks import NOTEBOOKS_DIR, course_notebooks, select_notebooks


STUDENT_DIR, AUTOGRADER_DIR, BUILD_DIR = "student", "autograder", "build"


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


def solution_lines(source: str) -> list[str]:
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
    answers = {line.strip() for c in cells if has_tag(c, "otter_answer_cell")
               for line in c.source.split("\n")}
    for question in questions(instructor):
        for source in question.solution_cells:
            for line in solution_lines(source):
                if len(line) > 3 and line in answers:
                    raise RuntimeError(f"{path.name}: solution line {line!r} of question "
                                       f"{question.name!r} is still in the student version")
    if re.search(r"#\s*(BEGIN|END) (SOLUTION|QUESTION|TESTS)", text):
        raise RuntimeError(f"{path.name}: an otter marker survived in the student version")


def checkout_root() -> Path:
    """The source checkout this vqlesson was imported from (``pyproject.toml`` lies there when
    it is one): the folder above the package."""
    return Path(__file__).resolve().parents[2]  # vqlesson/course/student.py -> the checkout


def build_wheel(out_dir: Path) -> Path:
    """Build vqlesson's wheel (no dependencies, no network) from a clean copy of this source
    checkout into ``out_dir`` with pip, for the autograder zip.

    Raises:
        RuntimeError: vqlesson was not imported from a source checkout (no ``pyproject.toml``
            beside the package), or pip failed (its output is in the message).
    """
    import subprocess
    import sys

    root = checkout_root()
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
            if has_tag(cell, CONFIG_TAG):
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
    paths = select_notebooks(course_notebooks(notebooks_dir), only, notebooks_dir)
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

