"""Where the data sets live on disk (``$VQLESSON_DATA_DIR`` or ``data/`` beside the notebooks)."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "VQLESSON_DATA_DIR"


def default_data_root(name: str) -> Path:
    """Where data set ``name`` is looked for: ``$VQLESSON_DATA_DIR/NAME``, else the first of
    ``./data/NAME`` and ``../data/NAME`` that exists (notebooks run from ``notebooks/``), else
    ``./data/NAME``."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser() / name
    for candidate in (Path("data") / name, Path("..") / "data" / name):
        if candidate.is_dir():
            return candidate
    return Path("data") / name


def default_isic_root() -> Path:
    """Where ISIC 2016 is looked for: :func:`default_data_root` of ``"isic2016"``."""
    return default_data_root("isic2016")
