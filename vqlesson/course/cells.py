"""The generated cells of the instructor notebooks and their otter-grader exercises.

The repository keeps the *instructor* version of every notebook: exercises with their solutions
and tests, marked in otter-grader's assignment format (otter-grader.readthedocs.io, "Otter
Assign"): a raw ``# ASSIGNMENT CONFIG`` cell, then per exercise raw cells ``# BEGIN QUESTION``
(YAML: ``name``, ``points``), ``# BEGIN SOLUTION`` / ``# END SOLUTION`` around the code cell whose
``# BEGIN SOLUTION`` ... ``# END SOLUTION`` lines are the solution, ``# BEGIN TESTS`` /
``# END TESTS`` around test cells (a first line ``# HIDDEN`` keeps a test out of the student
version), and ``# END QUESTION``. Every test calls a :mod:`vqlesson.checks` function, so the
students' instant feedback and the grades agree.

:func:`sync_notebooks` writes, right after each notebook's title, the run-time statement
(:mod:`~vqlesson.course.run_times`), the Colab set-up cell (:mod:`~vqlesson.course.colab`) and,
in notebooks with exercises, otter's assignment config (:func:`assignment_config`)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import NamedTuple

from .colab import COLAB_CELL_METADATA, REPO_URL, colab_cell_source
from .notebooks import NOTEBOOKS_DIR, course_notebooks, select_notebooks
from .run_times import runtime_markdown


RUNTIME_TAG, COLAB_TAG, CONFIG_TAG = "course-runtime", "colab-setup", "otter-config"
#: The autograder zip's requirement that installs vqlesson: the wheel otter puts in the zip's
#: ``files/``. Gradescope unpacks the zip into /autograder/source and its setup runs pip from
#: there (conda/mamba run an environment file's pip section in the file's folder), so the path
#: is relative to the zip's root; it needs no network and no repository access.
AUTOGRADER_REQUIREMENT = "./files/{wheel}"


# --------------------------------------------------------------------------------------------
# Notebook structure: generated cells, the assignment config, questions
# --------------------------------------------------------------------------------------------


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


def has_tag(cell, tag: str) -> bool:
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


def _new_cell(kind: str, source: str, tag: str, metadata: dict | None = None):
    import nbformat

    factory = {"markdown": nbformat.v4.new_markdown_cell, "code": nbformat.v4.new_code_cell,
               "raw": nbformat.v4.new_raw_cell}[kind]
    cell = factory(source)
    cell.metadata.update(copy.deepcopy(metadata or {}))
    cell.metadata["tags"] = [tag]
    return cell


def _set_cell(nb, tag: str, kind: str, source: str, index: int,
              metadata: dict | None = None) -> bool:
    """Make the cell tagged ``tag`` hold ``source`` (and ``metadata``), inserting it at ``index``
    if missing. Returns whether the notebook changed."""
    metadata = metadata or {}
    for i, cell in enumerate(nb.cells):
        if has_tag(cell, tag):
            if (cell.cell_type == kind and cell.source == source
                    and all(cell.metadata.get(k) == v for k, v in metadata.items())):
                return False
            replacement = _new_cell(kind, source, tag, metadata)
            replacement["id"] = cell.get("id", replacement.get("id"))
            nb.cells[i] = replacement
            return True
    nb.cells.insert(index, _new_cell(kind, source, tag, metadata))
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
        if (cell.cell_type == "code" and not has_tag(cell, COLAB_TAG)
                and cell.source.startswith("# Set-up.") and "REPO_URL" in cell.source):
            cell.metadata["tags"] = [COLAB_TAG]
            break
    first = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    _set_cell(nb, RUNTIME_TAG, "markdown", runtime_markdown(name), first)
    position = next(i for i, c in enumerate(nb.cells) if has_tag(c, RUNTIME_TAG)) + 1
    _set_cell(nb, COLAB_TAG, "code", colab_cell_source(repo_url), position, COLAB_CELL_METADATA)
    if has_questions(nb):
        position = next(i for i, c in enumerate(nb.cells) if has_tag(c, COLAB_TAG)) + 1
        _set_cell(nb, CONFIG_TAG, "raw", assignment_config(name), position)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.update(NOTEBOOK_METADATA)
    return nb


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
    for path in select_notebooks(course_notebooks(notebooks_dir), only, notebooks_dir):
        nb = nbformat.read(path, as_version=4)
        new = synced(nb, path.stem, repo_url)
        if new != nb:
            changed.append(path)
            if not check:
                nbformat.validate(new)
                nbformat.write(new, path)
    return changed


