"""Show the library's own source, with file and line, so that a notebook never quotes stale code.

The notebooks open the models they teach (e.g. the quantiser's lookup, loss and straight-through
lines of :meth:`vqlesson.quantize.VectorQuantizer.forward`, van den Oord et al. 2017 §3.1-3.2) by
reading the installed library with :mod:`inspect`, never by copying it into a cell.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, NamedTuple


class SourceExcerpt(NamedTuple):
    """Lines of the library's source.

    Attributes:
        path: the file, relative to the folder holding the ``vqlesson`` package
            (``"vqlesson/quantize.py"``), or absolute for a file outside it.
        first_line, last_line: 1-based line numbers of the excerpt in that file (inclusive).
        lines: the excerpt's lines, without line endings.
    """

    path: str
    first_line: int
    last_line: int
    lines: list[str]

    def __str__(self) -> str:
        width = len(str(self.last_line))
        body = "\n".join(f"{self.first_line + i:>{width}}  {line}"
                         for i, line in enumerate(self.lines))
        return f"# {self.path}, lines {self.first_line}-{self.last_line}\n{body}"

    @property
    def text(self) -> str:
        """The excerpt as plain source (no line numbers)."""
        return "\n".join(self.lines)


def _relative(path: Path) -> str:
    package_parent = Path(__file__).resolve().parent.parent
    try:
        return path.resolve().relative_to(package_parent).as_posix()
    except ValueError:
        return path.as_posix()


def _find(lines: list[str], marker: str, start: int, what: str, name: str) -> int:
    for i in range(start, len(lines)):
        if marker in lines[i]:
            return i
    raise ValueError(f"the {what} marker {marker!r} is not in the source of {name}: the library "
                     f"changed; update the marker")


def source_excerpt(obj: Any, first: str | None = None, last: str | None = None) -> SourceExcerpt:
    """The source of a function, method or class, or the part of it from the first line holding
    ``first`` to the next line holding ``last`` (both inclusive).

    Args:
        obj: a function, method, class or module of the installed library.
        first: a substring of the first line to show; ``None``: the object's first line.
        last: a substring of the last line to show (searched from ``first`` on); ``None``: the
            object's last line.

    Returns:
        :class:`SourceExcerpt` with the file and line numbers; ``str()`` gives numbered lines.

    Raises:
        TypeError: ``obj`` has no Python source (a builtin).
        ValueError: a marker is not found (the library changed).
    """
    try:
        lines, start = inspect.getsourcelines(obj)
        path = Path(inspect.getsourcefile(obj) or inspect.getfile(obj))
    except (TypeError, OSError) as error:
        raise TypeError(f"no Python source for {obj!r}: {error}") from None
    lines = [line.rstrip("\n") for line in lines]
    start = max(start, 1)  # a module starts at line 0 in getsourcelines
    name = getattr(obj, "__qualname__", getattr(obj, "__name__", repr(obj)))
    i = _find(lines, first, 0, "first", name) if first is not None else 0
    j = _find(lines, last, i, "last", name) if last is not None else len(lines) - 1
    return SourceExcerpt(_relative(path), start + i, start + j, lines[i:j + 1])
