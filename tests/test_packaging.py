"""The install files agree with each other, and the notebooks are stored clean."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "VQLESSON_PROFILE=ci python -m pytest"


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pip_requirements_of_dev_install() -> set[str]:
    """Everything `pip install -e ".[dev]"` asks for: dependencies plus the dev extra, with the
    self-references (vqlesson[notebooks]) expanded."""
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    out = set(project["dependencies"])
    todo = list(extras["dev"])
    while todo:
        req = Requirement(todo.pop())
        if req.name == "vqlesson":
            for extra in req.extras:
                todo.extend(extras[extra])
        else:
            out.add(str(req))
    return {str(Requirement(r)) for r in out}


def test_environment_yml_installs_the_same_packages_as_pip():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["name"] == "vqlesson"
    assert env["channels"] == ["conda-forge"]
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_block, "environment.yml must install the package itself, editable"
    conda_pip = {str(Requirement(r)) for r in pip_block if not r.startswith("-e")}
    assert conda_pip == _pip_requirements_of_dev_install()
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    lowest = re.search(r">=\s*([\d.]+)", python).group(1)
    assert _pyproject()["project"]["requires-python"] == f">={lowest}"


def test_dependencies_are_ranges_and_ci_pins_fall_inside_them():
    reqs = {Requirement(r).name: Requirement(r) for r in _pip_requirements_of_dev_install()}
    for req in reqs.values():
        assert not any(s.operator == "==" for s in req.specifier), f"{req} pins users"
    pins = [Requirement(line) for line in (ROOT / ".ci/constraints.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert {p.name for p in pins} == {"torch", "torchvision"}
    for pin in pins:
        version = Version(next(iter(pin.specifier)).version)
        assert reqs[pin.name].specifier.contains(version), f"CI pin {pin} outside {reqs[pin.name]}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert TEST_COMMAND in readme
    ci = (ROOT / ".ci/run").read_text()
    assert "export VQLESSON_PROFILE=ci" in ci and "\npython -m pytest\n" in ci
    assert "-c .ci/constraints.txt -e \".[dev]\"" in ci
    assert 'python -m pip install -e ".[dev]"' in readme


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_course_notebooks_exist_in_order():
    names = [nb.name for nb in NOTEBOOKS]
    assert names, "no notebooks found"
    assert names[0] == "01_data_and_augmentation.ipynb"
    assert names == sorted(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} carry outputs; run "
                       f"`jupyter nbconvert --clear-output --inplace {path}` before committing")


def test_the_license_and_citation_agree_with_pyproject():
    project = _pyproject()["project"]
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["license"] == "MIT" and citation["version"] == project["version"]
    assert citation["cff-version"] == "1.2.0" and citation["title"].startswith(project["name"])
