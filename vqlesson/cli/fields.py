"""Command-line options generated from the workflow dataclasses, so that each option is written
once: as a dataclass field (its name, type and default) and its line in the class docstring's
``Attributes:`` section (its help text).

The rules, for a field ``name`` of a settings dataclass:

- the option is ``--name`` with ``_`` as ``-`` (``field(metadata={"flag": "--data"})`` renames it);
- a ``bool`` field is a switch that sets the opposite of its default: ``resume: bool = False``
  gives ``--resume``, ``ema: bool = True`` gives ``--no-ema``;
- ``int``, ``float`` and ``str`` fields (also ``X | None``) take a value of that type; a
  ``Literal[...]`` field, or ``metadata={"choices": ...}``, allows only those values;
- the help text is the field's docstring line in plain text (reST markup dropped), followed by
  ``(default: X)`` where the default is not ``None``; a ``None`` default says in the docstring
  what it means (``(default: the profile's)``);
- every option's parsed default is ``None`` (an unset switch too), and :func:`from_args` leaves
  the ``None`` values out, so an unset option means the dataclass's (or the profile's) default.

Fields that are not options of a command are left out by name (``leave_out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..runtime import given

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its text in ``cls``'s docstring ``Attributes:`` section (one line per field,
    continuation lines indented further, as in the Google docstring style), in plain text.

    Raises:
        TypeError: ``cls``'s docstring has no ``Attributes:`` section.
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    if "Attributes:" not in lines:
        raise TypeError(f"{cls.__name__}'s docstring has no 'Attributes:' section; the command "
                        "line takes each option's help text from it")
    docs: dict[str, str] = {}
    name = None
    for line in lines[lines.index("Attributes:") + 1:]:
        entry = re.match(r" {4}(\w+): (.*)", line)
        if entry:
            name, docs[entry[1]] = entry[1], entry[2]
        elif name is not None and line.startswith(" " * 8):
            docs[name] += " " + line.strip()
        else:
            break
    return {name: plain(text) for name, text in docs.items()}


def plain(text: str) -> str:
    """``text`` without reST markup: ``:class:`~a.b.C``` -> ``C``, double backquotes dropped."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", text)
    return text.replace("``", "")


def _value_type(hint: Any) -> tuple[type, tuple | None]:
    """The type an option's value is parsed as, and its choices (``None``: any value)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
        hint = kinds[0] if len(kinds) == 1 else (str if str in kinds else hint)
    if typing.get_origin(hint) is typing.Literal:
        values = typing.get_args(hint)
        return type(values[0]), values
    if hint in (int, float, str):
        return hint, None
    raise TypeError(f"no command-line form for a field of type {hint!r}; give it a type int, "
                    "float, str, bool, a Literal or X | None, or leave the field out")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _argument(spec: dataclasses.Field, hint: Any, doc: str,
              choices: tuple | None) -> tuple[str, dict[str, Any]]:
    """The flag and the ``add_argument`` keywords of one field."""
    if spec.default is dataclasses.MISSING:
        raise TypeError(f"field {spec.name!r} has no default; an option needs one (or leave the "
                        "field out)")
    doc = doc.rstrip(".")
    if hint is bool:
        default = bool(spec.default)
        switch = ("--no-" if default else "--") + spec.name.replace("_", "-")
        flag = spec.metadata.get("flag", switch)
        text = f"{doc}: on by default, this switch turns it off" if default else doc
        return flag, {"dest": spec.name, "action": "store_const", "const": not default,
                      "default": None, "help": text}
    flag = spec.metadata.get("flag", "--" + spec.name.replace("_", "-"))
    kind, allowed = _value_type(hint)
    allowed = choices or spec.metadata.get("choices") or allowed
    text = doc if spec.default is None else f"{doc} (default: {_show(spec.default)})"
    metavar = None if allowed else flag.lstrip("-").upper().replace("-", "_")
    return flag, {"dest": spec.name, "type": kind, "choices": allowed, "default": None,
                  "metavar": metavar, "help": text}


def option_fields(cls: type, leave_out: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` that are options (all but ``leave_out``).

    Raises:
        ValueError: a name in ``leave_out`` that is not a field of ``cls``.
    """
    names = [spec.name for spec in dataclasses.fields(cls)]
    unknown = sorted(set(leave_out) - set(names))
    if unknown:
        raise ValueError(f"leave_out names {unknown}, which are not fields of {cls.__name__} "
                         f"({', '.join(names)})")
    return [spec for spec in dataclasses.fields(cls) if spec.name not in leave_out]


def add_fields(parser: argparse.ArgumentParser, cls: type, leave_out: Iterable[str] = (),
               choices: Mapping[str, tuple] | None = None) -> None:
    """Add an option to ``parser`` for each field of dataclass ``cls`` (all but ``leave_out``;
    ``choices`` overrides the allowed values by field name), in an argument group named after
    ``cls`` with the first line of its docstring. See the module docstring for the rules.

    Raises:
        TypeError: a field without a docstring line or of a type with no command-line form.
        ValueError: a name in ``leave_out`` that is not a field.
    """
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    summary = plain(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]).replace("\n", " ")
    group = parser.add_argument_group(cls.__name__, summary)
    for spec in option_fields(cls, leave_out):
        if spec.name not in docs:
            raise TypeError(f"{cls.__name__}.{spec.name} has no line in the class docstring's "
                            "Attributes section; write one (it is the option's help text)")
        flag, keywords = _argument(spec, hints[spec.name], docs[spec.name],
                                   (choices or {}).get(spec.name))
        group.add_argument(flag, **keywords)


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """The dataclass ``cls`` of parsed arguments: the options given, and the dataclass's defaults
    for those unset (``None``) or not options of this command."""
    values = {spec.name: getattr(args, spec.name, None) for spec in dataclasses.fields(cls)}
    return cls(**given(values))
