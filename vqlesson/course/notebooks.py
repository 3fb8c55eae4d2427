"""The course's notebooks on disk: where they are, which ones, in order."""

from __future__ import annotations

from pathlib import Path


NOTEBOOKS_DIR = "notebooks"  # relative to the repository root


def course_notebooks(notebooks_dir: str | Path = NOTEBOOKS_DIR) -> list[Path]:
    """The course notebooks ``NN_name.ipynb`` of a folder, in order.

    Raises:
        FileNotFoundError: the folder is missing or holds no ``NN_name.ipynb`` file.
    """
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"notebook folder {folder} not found; run from the repository "
                                "root or pass --notebooks DIR")
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"no course notebooks (NN_name.ipynb) in {folder}; run from the "
                                "repository root or pass --notebooks DIR")
    return paths


def select_notebooks(paths: list[Path], only: list[str] | None, folder: str | Path) -> list[Path]:
    """The ``paths`` whose stems are named in ``only`` (all of them when ``only`` is empty).

    Raises:
        FileNotFoundError: a name in ``only`` that is not a notebook of ``folder``.
    """
    if not only:
        return paths
    wanted = {Path(n).stem for n in only}
    unknown = wanted - {p.stem for p in paths}
    if unknown:
        raise FileNotFoundError(f"no notebook named {sorted(unknown)} in {folder}")
    return [p for p in paths if p.stem in wanted]
