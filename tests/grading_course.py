"""A tiny two-exercise course for the grading tests (test_course.py, test_grading.py): its
instructor notebook, student version and autograder, and helpers to write submissions."""

from __future__ import annotations

import functools
from pathlib import Path

import nbformat

from vqlesson import course

MASK = '''def build_mask(kernel_size, mask_type):
    # BEGIN SOLUTION
    mask = torch.zeros(kernel_size, kernel_size)
    mask[: kernel_size // 2] = 1
    mask[kernel_size // 2, : kernel_size // 2 + (mask_type == "B")] = 1
    return mask
    # END SOLUTION'''
BITS = '''def bits_per_code(logits, codes):
    # BEGIN SOLUTION
    return float(F.cross_entropy(logits, codes) / math.log(2))
    # END SOLUTION'''


PRIOR = '''from vqlesson.pixelcnn import PriorConfig
from vqlesson.pixelcnn_prior import PixelCNNPrior
from vqlesson.prior import PriorTrainConfig, train_prior

def fit_prior(train, val):
    model = dict(embed_dim=32, channels=64, num_layers=5, first_kernel_size=5, dropout=0.0)
    training = dict(epochs=40, batch_size=8, lr=3e-3, early_stopping_patience=None,
                    restore_best=False, progress=False)
    # BEGIN SOLUTION
    training.update(early_stopping_patience=3, restore_best=True)
    model.update(dropout=0.2)
    # END SOLUTION
    prior = PixelCNNPrior(PriorConfig(codebook_size=train.codebook_sizes["codes"], **model))
    train_prior(prior, train, val, PriorTrainConfig(**training))
    return prior'''


def read(path):
    return nbformat.read(path, as_version=4)


def question(name, prompt, solution, check):
    """The otter-format cells of one exercise (public and hidden test)."""
    test = (f"def test_{name}({name}):\n    from vqlesson import checks\n"
            f"    result = checks.{check}({name}{{seed}})\n    assert result.passed, result.message\n")
    v4 = nbformat.v4
    return [v4.new_raw_cell(f"# BEGIN QUESTION\nname: {name}\npoints: 1\ncheck_cell: false"),
            v4.new_markdown_cell(prompt), v4.new_raw_cell("# BEGIN SOLUTION"),
            v4.new_code_cell(f"{solution}\n\nchecks.{check}({name})"),
            v4.new_raw_cell("# END SOLUTION"), v4.new_raw_cell("# BEGIN TESTS"),
            v4.new_code_cell(test.format(seed="")),
            v4.new_code_cell("# HIDDEN\n" + test.format(seed=", seed=1").replace(
                f"test_{name}(", f"test_{name}_hidden(")),
            v4.new_raw_cell("# END TESTS"), v4.new_raw_cell("# END QUESTION")]


def make_tiny_course(root: Path):
    """Write ``root/notebooks/01_tiny.ipynb`` (two exercises, recorded metrics) and its student
    version and autograder under ``root/dist``; returns :class:`course.StudentVersion`."""
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell("# 01 · A tiny course"),
             v4.new_code_cell("import math, torch\nimport torch.nn.functional as F\n"
                              "from vqlesson import checks")]
    cells += question("build_mask", "Write the mask.", MASK, "check_causal_mask")
    cells += question("bits_per_code", "Write the NLL.", BITS, "check_bits_per_code")
    cells.append(v4.new_code_cell("checks.record_metrics(psnr=12.5, perplexity=3.0)"))
    nb = v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    (root / "notebooks").mkdir()
    nbformat.write(course.synced(nb, "01_tiny"), root / "notebooks" / "01_tiny.ipynb")
    return course.make_student_version(root / "notebooks", root / "dist")


def make_prior_course(root: Path):
    """Write ``root/notebooks/01_prior.ipynb``, one open exercise (the notebooks' template of
    ``fit_prior``, an over-trained prior, with the reference remedy as its solution; public
    test seed 0, hidden seed 1), and its student version and autograder under ``root/dist``."""
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell("# 01 · A prior that generalises"),
             v4.new_code_cell("import torch\nfrom vqlesson import checks")]
    cells += question("fit_prior", "Make the prior generalise.", PRIOR, "check_heldout_prior")
    cells.append(v4.new_code_cell("checks.record_metrics(prior_nll_bits_per_code=0.01)"))
    nb = v4.new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    (root / "notebooks").mkdir()
    nbformat.write(course.synced(nb, "01_prior"), root / "notebooks" / "01_prior.ipynb")
    return course.make_student_version(root / "notebooks", root / "dist")


def solution(made, name="01_tiny"):
    """The instructor's notebook of a tiny course (full marks)."""
    return read(made.build_dir / name / "autograder" / f"{name}.ipynb")


def student(made, name="01_tiny"):
    """The student version of a tiny course, unfinished (no marks)."""
    return read(made.student_dir / f"{name}.ipynb")


def fill(nb, function, body):
    """Replace the `...` of an exercise in a student notebook."""
    for cell in nb.cells:
        if cell.source.startswith(f"def {function}(") or f"\ndef {function}(" in cell.source:
            cell.source = cell.source.replace("    ...", body, 1)
            return nb
    raise AssertionError(function)


def with_cell(nb, source, index=None):
    """``nb`` with one more code cell (at the end, or at ``index``)."""
    cell = nbformat.v4.new_code_cell(source)
    nb.cells.insert(len(nb.cells) if index is None else index, cell)
    return nb


@functools.cache
def isolation_here() -> str:
    """The ``isolation`` setting that grades here: ``"auto"`` (the default, bubblewrap) where
    bubblewrap works, else ``"none"``, asked for explicitly, since the default refuses to grade
    without a sandbox; the tests of what only bwrap gives skip themselves then."""
    from vqlesson.grading import SandboxUnavailable
    from vqlesson.grading.sandbox import detect_isolation

    try:
        detect_isolation("auto")
    except SandboxUnavailable:
        return "none"
    return "auto"
