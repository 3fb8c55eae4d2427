"""The workflow commands' options, generated from the settings dataclasses (vqlesson.cli.fields):
every field is an option with its documented name and default, no options give the dataclass
defaults, and each option reaches its field."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from typing import Literal

import pytest

from vqlesson.cli import build_parser, commands, main
from vqlesson.cli.fields import add_fields, field_docs, from_args, option_fields
from vqlesson.cli.options import COMMANDS

# The options README.md, DEVELOPERS.md and the commands' --help documented before the options
# were generated: they keep their names.
DATA = ["--data", "--data-root", "--profile", "--image-size", "--batch-size", "--dataset-size",
        "--seed", "--on-error"]
DOCUMENTED = {
    "train-vqvae": [*DATA, "--num-workers", "--out", "--model", "--resume", "--epochs", "--lr",
                    "--optimizer", "--codebook-size", "--code-dim", "--hidden-channels",
                    "--downsample", "--beta", "--no-ema", "--init", "--no-augment", "--no-amp",
                    "--device"],
    "evaluate": ["--checkpoint", *DATA, "--split", "--out", "--device"],
    "data-preview": [*DATA, "--out"],
    "train-prior": ["--vqvae", *DATA, "--num-workers", "--epochs", "--label-conditional",
                    "--dropout", "--augment-passes", "--patience", "--lr", "--resume", "--no-amp",
                    "--device", "--threads", "--prior-arch", "--bottom-arch", "--lr-schedule",
                    "--warmup-steps"],
    "sample": ["--run", "--n", "--temperature", "--top-k", "--label", "--seed", "--out",
               "--device", "--threads"],
    "pipeline": [*DATA, "--out", "--model", "--label-conditional", "--temperature",
                 "--num-samples", "--realism-samples", "--stop-after", "--device", "--threads",
                 "--prior-arch"],
}
REQUIRED = {"train-vqvae": ["--out", "o"], "evaluate": ["--checkpoint", "c.pt"],
            "data-preview": [], "train-prior": ["--vqvae", "r"], "sample": ["--run", "r"],
            "pipeline": ["--out", "o"]}
WORKFLOW_COMMANDS = [name for name, command in COMMANDS.items() if command.settings]


def _fields(name: str):
    """(dataclass, field, type) of each field that is an option of command ``name``."""
    command = COMMANDS[name]
    for cls in command.settings:
        names, hints = {spec.name for spec in dataclasses.fields(cls)}, typing.get_type_hints(cls)
        for spec in option_fields(cls, names & set(command.leave_out)):
            yield cls, spec, hints[spec.name]


def _flag(spec: dataclasses.Field, hint) -> str:
    if hint is bool and spec.default:
        return "--no-" + spec.name.replace("_", "-")
    return spec.metadata.get("flag", "--" + spec.name.replace("_", "-"))


def _help_blocks(name: str, monkeypatch, capsys) -> dict[str, str]:
    """Each option's line(s) in ``python -m vqlesson NAME --help``, whitespace collapsed."""
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit):
        main([name, "--help"])
    blocks: dict[str, str] = {}
    flag = None
    for line in capsys.readouterr().out.splitlines():
        start = re.match(r"  (--[\w-]+)", line)
        if start:
            flag = start[1]
            blocks[flag] = ""
        if flag is not None and line.startswith("  "):
            blocks[flag] += " " + line.strip()
        elif not line.strip():
            flag = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


def test_the_workflow_commands_are_generated():
    assert set(WORKFLOW_COMMANDS) == set(DOCUMENTED)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_field_is_an_option_in_help_with_its_default(name, monkeypatch, capsys):
    blocks = _help_blocks(name, monkeypatch, capsys)
    assert set(blocks) == set(DOCUMENTED[name]), "documented option names changed"
    for cls, spec, hint in _fields(name):
        text = blocks.get(_flag(spec, hint))
        assert text, (name, cls.__name__, spec.name)
        if hint is bool:
            assert ("on by default" in text) == spec.default, (name, spec.name, text)
        elif spec.default is None:  # what None means is written out: "(default: the profile's)"
            assert "(default: " in text, (name, spec.name, text)
        else:
            shown = f"{spec.default:g}" if isinstance(spec.default, float) else str(spec.default)
            assert f"(default: {shown})" in text, (name, spec.name, text)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_no_options_give_the_dataclass_defaults(name):
    args = build_parser().parse_args([name, *REQUIRED[name]])
    for cls in COMMANDS[name].settings:
        assert from_args(cls, args) == cls(), (name, cls.__name__)


def _other_value(spec: dataclasses.Field, hint, name: str) -> tuple[list[str], object]:
    """Arguments setting field ``spec`` to a value other than its default, and that value."""
    flag = _flag(spec, hint)
    if hint is bool:
        return [flag], not spec.default
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = [k for k in typing.get_args(hint) if k is not type(None)] if union else [hint]
    allowed = ((COMMANDS[name].choices or {}).get(spec.name) or spec.metadata.get("choices")
               or (typing.get_args(kinds[0]) if typing.get_origin(kinds[0]) is Literal else None))
    if allowed:
        value = next(v for v in allowed if v != spec.default)
    elif float in kinds:
        value = 0.125
    elif int in kinds:
        value = 7 if spec.default != 7 else 8
    else:
        value = "x1"
    return [flag, str(value)], value


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_each_option_reaches_its_field_and_only_it(name):
    for cls, spec, hint in _fields(name):
        argv, value = _other_value(spec, hint, name)
        args = build_parser().parse_args([name, *REQUIRED[name], *argv])
        assert from_args(cls, args) == dataclasses.replace(cls(), **{spec.name: value}), argv


def test_the_handlers_call_the_workflows_with_the_parsed_settings(monkeypatch, capsys):
    calls = []

    def record(*args, **kwargs):
        calls.append(args)
        raise ValueError("recorded")  # main prints it and returns 2

    monkeypatch.setattr(commands, "train_vqvae_run", record)
    monkeypatch.setattr(commands, "sample_run", record)
    assert main(["train-vqvae", "--out", "runs/x", "--data", "synthetic", "--profile", "cpu",
                 "--no-ema", "--lr", "0.01", "--downsample", "8"]) == 2
    out, data, config = calls.pop()
    assert out == "runs/x" and (data.source, data.profile, data.root) == ("synthetic", "cpu", None)
    assert (config.ema, config.lr, config.downsample, config.augment) == (False, 0.01, 8, True)
    assert main(["sample", "--run", "r", "--label", "1"]) == 2
    assert calls.pop()[1].label == "1"  # a class index stays a string: sampling_label reads it
    assert "recorded" in capsys.readouterr().err


def test_a_field_without_help_or_an_unknown_leave_out_is_a_clear_error():
    @dataclass
    class Settings:
        """Settings.

        Attributes:
            size: the size.
        """

        size: int = 1
        mode: Literal["a", "b"] = "a"

    assert field_docs(Settings) == {"size": "the size."}
    with pytest.raises(TypeError, match="Settings.mode has no line"):
        add_fields(build_parser(), Settings)
    with pytest.raises(ValueError, match="not fields of Settings"):
        option_fields(Settings, ["nope"])


def test_plain_help_drops_the_markup():
    from vqlesson.cli.fields import plain

    assert plain("a :class:`~vqlesson.profiles.Profile` or ``ci``") == "a Profile or ci"
