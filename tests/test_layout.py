"""What finds files by location points at the right folder after the package's sub-packages.

Each of these names a folder or a module by where it lies, so moving a file silently breaks it:
the sandbox mounts the package folder, the instant feedback tells library frames from the
student's by folder, the grader runs a script and a module by path or name, the autograder
builds the wheel from the checkout, and checkpoints find their model classes by module name.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import vqlesson
from vqlesson import check_core, checkpoint
from vqlesson.course import student
from vqlesson.grading import grader, sandbox

PACKAGE = Path(vqlesson.__file__).resolve().parent
ROOT = PACKAGE.parent


def test_the_sandbox_mounts_the_package_folder_itself():
    assert sandbox.package_dir() == PACKAGE
    assert (sandbox.package_dir() / "__init__.py").is_file()


def test_library_frames_are_told_apart_by_the_package_folder():
    assert check_core.LIBRARY_DIRS[0] == str(PACKAGE)


def test_the_grader_runs_the_runner_script_that_exists():
    assert grader.RUNNER.is_file()
    assert grader.RUNNER.parent == PACKAGE / "grading"


def test_the_wheel_is_built_from_the_checkout_root():
    assert student.checkout_root() == ROOT
    assert (student.checkout_root() / "pyproject.toml").is_file()


def test_every_checkpointed_model_class_is_found_by_its_module_name():
    for module_name, config_name, model_name in checkpoint._MODEL_MODULES:
        module = importlib.import_module(module_name)
        assert hasattr(module, config_name) and hasattr(module, model_name), module_name


def test_the_module_entry_points_run():
    for module in ("vqlesson", "vqlesson.data.download"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout
        assert "Warning" not in done.stderr
    judged = subprocess.run([sys.executable, "-m", "vqlesson.grading.judge", str(ROOT)],
                            input='{"tests": []}', capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert judged.returncode == 0, judged.stderr
    assert '"tests": []' in judged.stdout


def test_the_package_has_its_sub_packages_and_a_flat_student_surface():
    for name in ("data", "grading", "course", "cli"):
        assert (PACKAGE / name / "__init__.py").is_file(), name
    for name in ("quantize", "vqvae", "vqvae2", "pixelcnn", "pixelcnn_prior", "train", "prior",
                 "codes", "sampling", "metrics", "analysis", "plots"):
        assert (PACKAGE / f"{name}.py").is_file(), name


def test_the_layer_contracts_hold():
    """``lint-imports`` checks pyproject's [tool.importlinter] contracts (the layers, grading
    apart from the course and the CLI, models without profiles or data)."""
    done = subprocess.run([str(Path(sys.executable).with_name("lint-imports"))], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout
