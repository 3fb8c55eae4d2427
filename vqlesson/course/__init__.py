"""The course layer: the notebooks' generated cells, measured run times, Colab links, student
versions and autograders, the website and the README gallery.

- :mod:`~vqlesson.course.notebooks`: which notebooks, in order;
- :mod:`~vqlesson.course.run_times`: :data:`RUN_TIMES`, measured per notebook and profile;
- :mod:`~vqlesson.course.colab`: :data:`REPO_URL`, the Colab set-up cell and the Colab links;
- :mod:`~vqlesson.course.cells`: the generated cells and otter's exercise format
  (:func:`sync_notebooks`);
- :mod:`~vqlesson.course.student`: :func:`make_student_version` (``otter assign``, the wheel in
  each autograder zip);
- :mod:`~vqlesson.course.site` and :mod:`~vqlesson.course.gallery`: the website and the README's
  figures.

Grading submissions is :mod:`vqlesson.grading`, which imports nothing from here.
"""

from .cells import (
    AUTOGRADER_REQUIREMENT,
    COLAB_TAG,
    CONFIG_TAG,
    RUNTIME_TAG,
    Question,
    assignment_config,
    has_questions,
    questions,
    sync_notebooks,
    synced,
)
from .colab import BRANCH, REPO_URL, colab_cell_source, colab_links_markdown, colab_url
from .notebooks import NOTEBOOKS_DIR, course_notebooks
from .run_times import MEASURED_ON, RUN_TIMES, RunTime, runtime_markdown
from .student import StudentVersion, build_wheel, make_student_version

__all__ = [
    "AUTOGRADER_REQUIREMENT", "BRANCH", "COLAB_TAG", "CONFIG_TAG", "MEASURED_ON", "NOTEBOOKS_DIR",
    "REPO_URL", "RUNTIME_TAG", "RUN_TIMES", "Question", "RunTime", "StudentVersion",
    "assignment_config", "build_wheel", "colab_cell_source", "colab_links_markdown", "colab_url",
    "course_notebooks", "has_questions", "make_student_version", "questions", "runtime_markdown",
    "sync_notebooks", "synced",
]
