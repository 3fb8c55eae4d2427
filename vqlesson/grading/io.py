"""What crosses the sandbox's wall when grading, as data only (numbers, booleans, JSON text;
never a pickle), and how each side reads it.

Into the sandbox: a manifest (``exercises.json``: for each test, the exercise, the name of the
student's function and an inputs file) and one ``.npz`` of inputs per test (tensors, numbers and
JSON text, :func:`encode_inputs`). No test code, no expected result.

Out of the sandbox: one ``.npz`` per test with what the student's function returned
(:class:`vqlesson.check_core.Outputs`), written by :func:`collect_outputs` inside the
notebook's kernel after its last cell; ``metrics.json`` from
:func:`vqlesson.checks.record_metrics`; the executed notebook and ``run.json``. The trusted side
reads them with :func:`read_regular_file` (no symbolic links, no FIFOs, a size limit),
:func:`load_outputs` (``allow_pickle=False``, declared sizes checked first) and
:func:`parse_metrics` (a JSON object of numbers under plain names).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..check_core import RECORDS_KEY, Outputs, collect_safely, read_npz_bytes

MANIFEST_NAME = "exercises.json"
OUTPUTS_DIR, METRICS_NAME = "outputs", "metrics.json"
MAX_OUTPUT_BYTES = 64 * 2**20      # one test's outputs file
MAX_METRICS_BYTES = 2**20
MAX_METRICS = 32
METRIC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
ARRAY_NAME = re.compile(r"(__records__|a[0-9]{1,6})\.npy")
PREFIXES = {"t": "tensor", "i": "int", "f": "float", "j": "json"}


class UnsafeFileError(ValueError):
    """An output file that is missing, not a regular file, or too large."""


# --------------------------------------------------------------------------------------------
# Inputs: trusted side writes, sandbox reads
# --------------------------------------------------------------------------------------------
def encode_inputs(inputs: dict) -> dict[str, np.ndarray]:
    """A check's inputs as named arrays: ``t:NAME`` tensors, ``i:NAME``/``f:NAME`` numbers,
    ``j:NAME`` JSON text of dicts.

    Raises:
        TypeError: a value of another type.
    """
    arrays = {}
    for name, value in inputs.items():
        if isinstance(value, torch.Tensor):
            arrays[f"t:{name}"] = value.detach().cpu().numpy()
        elif isinstance(value, bool) or not isinstance(value, (int, float, dict)):
            raise TypeError(f"input {name!r} of type {type(value).__name__} cannot be sent")
        elif isinstance(value, int):
            arrays[f"i:{name}"] = np.array(value, dtype=np.int64)
        elif isinstance(value, float):
            arrays[f"f:{name}"] = np.array(value, dtype=np.float64)
        else:
            arrays[f"j:{name}"] = np.array(json.dumps(value))
    return arrays


def decode_inputs(arrays: dict[str, np.ndarray]) -> dict:
    """The inverse of :func:`encode_inputs`."""
    inputs: dict[str, Any] = {}
    for key, array in arrays.items():
        prefix, _, name = key.partition(":")
        if prefix == "t":
            inputs[name] = torch.from_numpy(np.array(array, copy=True))
        elif prefix == "i":
            inputs[name] = int(array)
        elif prefix == "f":
            inputs[name] = float(array)
        elif prefix == "j":
            inputs[name] = json.loads(str(array))
        else:
            raise ValueError(f"unknown input key {key!r}")
    return inputs


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays as an uncompressed ``.npz`` (numbers and text only)."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read an ``.npz`` written by :func:`save_arrays` (``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# --------------------------------------------------------------------------------------------
# Inside the sandbox: call the student's functions (runs in the notebook's kernel)
# --------------------------------------------------------------------------------------------
def collect_outputs(manifest: str | Path, namespace: dict) -> int:
    """Call each test's student function on its inputs and write what it returned.

    Runs in the submission's kernel after its last cell (the grader appends a cell calling
    it). Reads ``manifest`` (``exercises.json``: ``tests``, each with ``id``, ``exercise``,
    ``function``, ``inputs``; ``inputs_dir``, ``outputs_dir``) and writes
    ``OUTPUTS_DIR/ID.npz`` per test. An error of one test is recorded in its outputs.

    Returns:
        The number of tests collected.
    """
    from ..checks import EXERCISES

    spec = json.loads(Path(manifest).read_text())
    out_dir = Path(spec["outputs_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    for test in spec["tests"]:
        exercise = EXERCISES[test["exercise"]]
        inputs = decode_inputs(load_arrays(Path(spec["inputs_dir"]) / test["inputs"]))
        outputs = collect_safely(exercise, namespace.get(test["function"]), inputs)
        save_arrays(out_dir / f"{test['id']}.npz", outputs.to_arrays())
    return len(spec["tests"])


# --------------------------------------------------------------------------------------------
# Trusted side: read what came out, carefully
# --------------------------------------------------------------------------------------------
def read_regular_file(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a symbolic link, FIFO or device) of
    at most ``max_bytes``.

    Raises:
        UnsafeFileError: missing, not a regular file, or too large.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UnsafeFileError(f"{path.name} was not written") from None
    except OSError as error:
        raise UnsafeFileError(f"{path.name} cannot be opened safely ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path.name} is not a regular file")
        if info.st_size > max_bytes:
            raise UnsafeFileError(f"{path.name} is {info.st_size} bytes, over the limit of "
                                  f"{max_bytes}")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise UnsafeFileError(f"{path.name} grew over the limit of {max_bytes} bytes")
    return data


def load_outputs(path: Path, max_bytes: int = MAX_OUTPUT_BYTES) -> Outputs:
    """One test's outputs, read without following links and without unpickling
    (:func:`vqlesson.check_core.read_npz_bytes`).

    Raises:
        UnsafeFileError: see :func:`read_regular_file`.
        ValueError: not an ``.npz`` of numeric arrays and a records string, or arrays whose
            declared sizes exceed ``max_bytes``.
    """
    arrays = read_npz_bytes(read_regular_file(path, max_bytes), path.name, max_bytes, ARRAY_NAME)
    if RECORDS_KEY not in arrays:
        raise ValueError(f"{path.name} holds no records")
    return Outputs.from_arrays(arrays)


def parse_metrics(data: bytes) -> dict[str, float]:
    """The metrics a notebook recorded: a JSON object of numbers (``Infinity`` and ``NaN``
    allowed, as :func:`vqlesson.checks.record_metrics` writes them) under
    plain names (letters, digits, ``_``; at most 64 characters, at most 32 metrics).

    Raises:
        ValueError: invalid JSON, not an object, a bad name, or a value that is not a number
            (the message names the metric).
    """
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"the metrics file is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"the metrics file holds a {type(value).__name__}, not a JSON object "
                         "of name: number")
    if len(value) > MAX_METRICS:
        raise ValueError(f"the metrics file holds {len(value)} metrics, more than {MAX_METRICS}")
    metrics = {}
    for name, number in value.items():
        if not METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name[:40]!r} is not a plain name (letters, digits, _)")
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"metric {name!r} is not a number: {json.dumps(number)[:40]}")
        metrics[name] = float(number)
    return metrics
