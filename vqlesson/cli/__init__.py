"""The command line, ``python -m vqlesson COMMAND`` (or ``vqlesson COMMAND``): it only parses
arguments and calls one workflow per command.

- :mod:`~vqlesson.cli.commands`: the parser, :func:`main` and one handler per command;
- :mod:`~vqlesson.cli.options`: each subcommand's help texts, settings dataclasses and the
  options no dataclass holds;
- :mod:`~vqlesson.cli.fields`: the options generated from the settings dataclasses' fields (each
  written once, its docstring line the help text), and parsed options back into the dataclasses;
- :mod:`~vqlesson.cli.course_commands`: ``student-version``, ``grade``, ``sync-notebooks``,
  ``colab-links``;
- :mod:`~vqlesson.cli.pipeline`: ``pipeline``, the whole course headless in resumable stages.
"""

from .commands import build_parser, main

__all__ = ["build_parser", "main"]
