"""The otter autograder zip is Gradescope-ready: it carries vqlesson and installs it.

A fresh virtual environment gets vqlesson only from the zip (the requirement its
``environment.yml`` lists, installed offline from the zip's root as Gradescope's set-up does),
then ``otter run`` grades the instructor version of notebook 02 to full marks there. The
environment sees this one's packages (torch, otter-grader, ipykernel) through a path file, so
nothing is downloaded; it does not see this checkout (no PYTHONPATH, no editable install).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from vqlesson import course

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "02_vqvae"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    pytest.importorskip("otter")
    return course.make_student_version(ROOT / "notebooks", tmp_path_factory.mktemp("dist"),
                                       only=[NOTEBOOK])


def _requirements(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        env = yaml.safe_load(archive.read("environment.yml"))
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_the_zip_carries_vqlesson_s_wheel_and_requires_it(made):
    zip_path = made.autograders[NOTEBOOK]
    with zipfile.ZipFile(zip_path) as archive:
        wheels = [n for n in archive.namelist() if n.startswith("files/vqlesson-")]
    assert len(wheels) == 1 and wheels[0].endswith("-py3-none-any.whl")
    assert f"./{wheels[0]}" in _requirements(zip_path)
    assert any(r.startswith("otter-grader") for r in _requirements(zip_path))
    notebook = (ROOT / "notebooks" / f"{NOTEBOOK}.ipynb").read_text()
    assert "requirements:" not in notebook, "the notebooks keep the config without the wheel"


def _fresh_venv(folder: Path) -> Path:
    """A venv without pip or setuptools of its own that sees this environment's packages."""
    subprocess.run([sys._base_executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(folder)], check=True)
    site = next(folder.glob("lib/python*/site-packages"))
    (site / "_parent_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return folder / "bin" / "python"


def test_otter_run_in_a_fresh_venv_gives_the_instructor_version_full_marks(made, tmp_path):
    python = _fresh_venv(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUPYTER_PATH")}
    env.update(HOME=str(tmp_path / "home"), JUPYTER_PREFER_ENV_PATH="1", VQLESSON_PROFILE="ci")
    source = tmp_path / "source"  # where Gradescope unpacks the zip
    with zipfile.ZipFile(made.autograders[NOTEBOOK]) as archive:
        archive.extractall(source)
    wheel = [r for r in _requirements(made.autograders[NOTEBOOK]) if r.startswith("./files/")]
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-index", *wheel], cwd=source, env=env, check=True)
    where = subprocess.run([str(python), "-c", "import vqlesson; print(vqlesson.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where.stdout
    subprocess.run([str(python), "-m", "ipykernel", "install", "--prefix", str(tmp_path / "venv"),
                    "--name", "python3"], env=env, check=True, capture_output=True)
    instructor = made.build_dir / NOTEBOOK / "autograder" / f"{NOTEBOOK}.ipynb"
    out = tmp_path / "results"
    out.mkdir()
    run = subprocess.run([str(python), "-m", "otter", "run", "-a", str(made.autograders[NOTEBOOK]),
                          "-o", str(out), str(instructor)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    scored = [t for t in results["tests"] if t.get("max_score")]
    assert len(scored) == 5, results  # notebook 02: four exercises and one open exercise
    assert sum(t["score"] for t in scored) == sum(t["max_score"] for t in scored) == 5, results
