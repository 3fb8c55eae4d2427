"""Reading an otter-grader autograder zip into the grader's test list, without running a test.

``python -m vqlesson student-version`` writes one autograder zip per notebook with otter-grader
(``otter assign``): ``tests/QUESTION.py`` files in otter's exception-based format, one
``@test_case`` per public or hidden test, each calling a :mod:`vqlesson.checks` function::

    @test_case(points=None, hidden=True)
    def test_nearest_code_hidden(nearest_code):
        from .. import checks
        result = checks.check_nearest_code(nearest_code, seed=7)
        assert result.passed, result.message

The grader does not run these functions (that would run them beside the student's code). It
takes from each test its name, points and hidden flag (otter's own parser,
``ExceptionTestFile``), and from its source (Python's ``ast``) the check it calls, the name of
the student's function and the seed: a :class:`TestSpec`. A test of another form is refused
with an error naming the zip and the test.
"""

from __future__ import annotations

import ast
import hashlib
import json
import zipfile
from pathlib import Path
from typing import NamedTuple

CHECK_PREFIX = "check_"


class TestSpec(NamedTuple):
    """One test of an autograder, as the grader runs it.

    Attributes:
        id: a file-name-safe key (``"t0"``, ``"t1"``...), unique within the autograder.
        name: otter's test name, e.g. ``"nearest_code - 2"``.
        question: the question (exercise cell) it belongs to.
        hidden: whether students never saw it.
        points: its share of the question's points (otter's rule: the question's points split
            evenly over its tests unless a test sets its own).
        exercise: the :data:`vqlesson.checks.EXERCISES` key of the check it calls.
        function: the name of the student's function in the notebook.
        seed: the check's seed.
    """

    id: str
    name: str
    question: str
    hidden: bool
    points: float
    exercise: str
    function: str
    seed: int

    @property
    def column(self) -> str:
        """The CSV column: the name, with ``" (hidden)"`` for hidden tests."""
        return self.name + (" (hidden)" if self.hidden else "")


class Autograder(NamedTuple):
    """An autograder zip: its path, assignment name (otter's ``assignment_name``, else the
    file stem) and tests, in question order; ``secret``, the zip's SHA-256 (hex), which only
    the trusted judge gets (:data:`vqlesson.check_core.JUDGE_SECRET`): the sandbox cannot read
    the zip, so a submission cannot know it."""

    path: Path
    assignment: str
    tests: list[TestSpec]
    secret: str = ""


def _check_calls(function: ast.FunctionDef) -> list[ast.Call]:
    calls = []
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            target = node.func
            name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
            if name.startswith(CHECK_PREFIX):
                calls.append(node)
    return calls


def _call_of(function: ast.FunctionDef, where: str, known: set[str]) -> tuple[str, str, int]:
    """(exercise, student function, seed) of the single check call in a test function."""
    form = "checks.check_NAME(function, seed=N)"
    calls = _check_calls(function)
    if len(calls) != 1:
        raise ValueError(f"{where}: expected one call of the form {form}, found {len(calls)}")
    call = calls[0]
    target = call.func
    exercise = (target.attr if isinstance(target, ast.Attribute) else target.id)[
        len(CHECK_PREFIX):]
    if exercise not in known:
        raise ValueError(f"{where}: vqlesson.checks has no check_{exercise}")
    params = {a.arg for a in function.args.args}
    if not call.args or not isinstance(call.args[0], ast.Name) or call.args[0].id not in params:
        raise ValueError(f"{where}: the check's first argument must be the test's parameter "
                         f"(the student's function), as in {form}")
    seed_node = next((k.value for k in call.keywords if k.arg == "seed"),
                     call.args[1] if len(call.args) > 1 else ast.Constant(0))
    if not isinstance(seed_node, ast.Constant) or not isinstance(seed_node.value, int) or \
            isinstance(seed_node.value, bool) or seed_node.value < 0:
        raise ValueError(f"{where}: the seed must be a non-negative integer literal")
    return exercise, call.args[0].id, int(seed_node.value)


def _tests_of_file(source: str, member: str, zip_name: str, known: set[str], start: int
                   ) -> list[TestSpec]:
    from otter.test_files import ExceptionTestFile

    where = f"autograder {zip_name}, {member}"
    try:
        test_file = ExceptionTestFile.from_string(source, path=member)
        tree = ast.parse(source)
    except Exception as error:  # otter's or Python's message, with the file named
        raise ValueError(f"{where}: not an otter exception-based test file ({error})") from None
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    specs = []
    for case in test_file.test_cases:
        body = getattr(case.body, "test_func", case.body)  # otter wraps the function
        function = functions.get(getattr(body, "__name__", ""))
        if function is None:
            raise ValueError(f"{where}: cannot find the source of test {case.name!r}")
        exercise, student_fn, seed = _call_of(function, f"{where}, test {case.name!r}", known)
        specs.append(TestSpec(f"t{start + len(specs)}", case.name, test_file.name,
                              bool(case.hidden), float(case.points or 0.0), exercise,
                              student_fn, seed))
    return specs


def read_autograder(path: str | Path) -> Autograder:
    """The tests of an autograder zip made by ``python -m vqlesson student-version``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a zip, no tests, or a test that does not call one
            :mod:`vqlesson.checks` check as ``checks.check_NAME(function, seed=N)`` (the
            message names the zip, the file and the test).
    """
    from ..checks import EXERCISES

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"autograder {path} not found; make it with "
                                "`python -m vqlesson student-version`")
    try:
        secret = hashlib.sha256(path.read_bytes()).hexdigest()
        with zipfile.ZipFile(path) as archive:
            names = sorted(n for n in archive.namelist()
                           if n.startswith("tests/") and n.endswith(".py"))
            sources = {n: archive.read(n).decode("utf-8") for n in names}
            config = (json.loads(archive.read("otter_config.json"))
                      if "otter_config.json" in archive.namelist() else {})
    except (zipfile.BadZipFile, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"autograder {path} is not a readable otter zip ({error})") from None
    tests: list[TestSpec] = []
    for member, source in sources.items():
        tests += _tests_of_file(source, member, path.name, set(EXERCISES), len(tests))
    if not tests:
        raise ValueError(f"autograder {path} holds no tests (tests/*.py)")
    return Autograder(path, str(config.get("assignment_name") or path.stem), tests, secret)


def autograder_for(notebook: dict, file_name: str, autograders: list[Autograder]) -> Autograder:
    """The autograder of a submission: the only one, or the one whose assignment name is in the
    notebook's otter metadata, else the one whose name is in the file name.

    Raises:
        ValueError: none or several fit (the message lists them).
    """
    if len(autograders) == 1:
        return autograders[0]
    by_name = {a.assignment: a for a in autograders}
    metadata = notebook.get("metadata", {}) if isinstance(notebook, dict) else {}
    otter = metadata.get("otter", {}) if isinstance(metadata, dict) else {}
    name = otter.get("assignment_name") if isinstance(otter, dict) else None
    if isinstance(name, str) and name in by_name:
        return by_name[name]
    matches = [a for a in autograders if a.assignment in Path(file_name).stem]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"cannot tell which of the autograders {sorted(by_name)} grades "
                     f"{file_name}; pass --autograder with one zip")
