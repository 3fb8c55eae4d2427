"""The machinery of the exercise checks: results, comparisons, and what a student's function
returned, recorded as data.

A check (:mod:`vqlesson.checks`) is an :class:`Exercise` in three steps:

1. ``make_inputs(seed)``: seeded inputs, a dict of tensors, numbers and JSON-able dicts;
2. ``collect(fn, inputs) -> Outputs``: call the student's function on them and record what it
   returned (tensors and numbers as arrays, everything else by its type name; an exception as
   its hint) -- this is the only step that runs student code;
3. ``judge(inputs, outputs) -> summary``: compute the library's reference from the inputs and
   compare; a difference raises :class:`Mismatch` with the hint. An open exercise's judge
   measures what the student's function made (a prior's held-out NLL, a codebook's use) and
   returns a :class:`Verdict`, its summary with the figures it measured (a :class:`Mismatch`
   carries them too), which the grader writes to its CSV as measured by the grader.

In a notebook (:func:`run_check`) the three run in the student's kernel, one after the other.
When grading, step 2 runs inside the sandbox and its :class:`Outputs` travel as arrays
(:meth:`Outputs.to_arrays`: numbers, booleans and a JSON string, never a pickle) to a separate
process that never runs student code and performs steps 1 and 3 (:mod:`vqlesson.grading.judge`). Both
paths decode the same arrays with the same code, so instant feedback and grades agree.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import re
import traceback
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .validate import check_int

NOT_DONE = ("not done yet: your function returned None. Replace the `...` with your code "
            "(and `return` the result).")
JUDGE_SECRET = "judge_secret"  # an input only the grader's judge adds: a text the sandbox never saw
RECORDS_KEY = "__records__"  # the array holding the JSON description of every record
COLLECT_KEY = "__collect__"  # set when collecting failed outside the student's function
MAX_ELEMENTS = 4_000_000     # a returned tensor with more elements is recorded by shape only
MAX_ITEMS = 16               # a returned sequence with more items is recorded by type only
MAX_DEPTH = 3                # nesting of sequences recorded
MAX_MESSAGE = 2000           # characters of an exception's hint kept
LIBRARY_DIRS = (str(Path(__file__).resolve().parent), str(Path(torch.__file__).resolve().parent))
ARRAY_KINDS = "biufc"        # numpy dtype kinds a recorded array may have
NUMPY_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                torch.float32, torch.float64, torch.complex64, torch.complex128)


# --------------------------------------------------------------------------------------------
# Results and mismatches
# --------------------------------------------------------------------------------------------
NO_FIGURES: Mapping[str, float] = MappingProxyType({})


class CheckResult(NamedTuple):
    """The outcome of one check.

    Attributes:
        name: the exercise, e.g. ``"nearest_code"``.
        passed: True when the student's function agreed with the reference on every case.
        message: what was checked (passed) or a hint saying what differs (failed).
        measured: the figures the judge measured itself (an open exercise: e.g.
            ``heldout_bits_per_code``), name -> float; empty for a comparison with a reference.

    ``bool(result)`` is ``result.passed``; in a notebook the result displays as one line,
    ``✅ name: ...`` or ``❌ name: ...``.
    """

    name: str
    passed: bool
    message: str
    measured: Mapping[str, float] = NO_FIGURES

    def __bool__(self) -> bool:
        return bool(self.passed)

    def __repr__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"

    __str__ = __repr__


class Mismatch(Exception):
    """Raised inside a check when the student's result differs; carries the hint, and the
    figures the judge measured before it failed (``measured``, name -> float)."""

    def __init__(self, message: str, measured: Mapping[str, float] | None = None) -> None:
        super().__init__(message)
        self.measured = dict(measured or {})


class Verdict(NamedTuple):
    """What an open exercise's judge returns when it passes: ``summary`` (what passed, one
    line) and ``measured``, the figures it measured (name -> float)."""

    summary: str
    measured: Mapping[str, float]


@dataclasses.dataclass(frozen=True)
class Opaque:
    """A returned value that is not a tensor, an array, a number, None or a sequence: its type
    name, and ``float(value)`` where that worked (e.g. a numpy integer). Deliberately not a
    sequence."""

    type_name: str
    number: float | None


class Exercise(NamedTuple):
    """One check, in the three steps described in the module docstring.

    Attributes:
        name: the exercise (``"nearest_code"``); ``check_<name>`` in :mod:`vqlesson.checks`.
        make_inputs: ``seed -> dict`` of tensors, ints, floats and JSON-able dicts; raises
            ``ValueError`` for a negative or non-int seed.
        collect: ``(fn, inputs) -> Outputs``; calls the student's function.
        judge: ``(inputs, outputs) -> str`` (what passed) or a :class:`Verdict` (what passed
            and the figures measured), or raises :class:`Mismatch`.
    """

    name: str
    make_inputs: Callable[[int], dict]
    collect: Callable[[Callable, dict], "Outputs"]
    judge: Callable[[dict, "Outputs"], str]


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (a non-negative int, else ``ValueError``)."""
    return torch.Generator().manual_seed(check_int(seed, "seed", 0))


# --------------------------------------------------------------------------------------------
# Calling the student's function and recording what it returned
# --------------------------------------------------------------------------------------------
def where_it_raised(error: BaseException) -> str:
    """`` (line N: `code`)`` of the last frame outside the library and torch, or ``""``."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(LIBRARY_DIRS)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f" (line {frame.lineno}{code})"


def call_student(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call the student's function; turn every exception into a :class:`Mismatch` hint."""
    if not callable(fn):
        raise Mismatch(f"expected your function, got {type(fn).__name__}: run the exercise's "
                       "cell (the one with `def ...`) first.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise Mismatch("not done yet: the function still raises NotImplementedError.") from None
    except Exception as error:  # any error in student code becomes a hint, never a traceback
        raise Mismatch(f"your function raised {type(error).__name__}: {error}"
                       f"{where_it_raised(error)}") from None


def _type_name(value: Any) -> str:
    try:
        return str(type(value).__name__)[:100]
    except Exception:  # a hostile metaclass
        return "object"


def _tensor_array(value: Tensor | np.ndarray) -> np.ndarray | None:
    """A numeric numpy copy of a tensor or array, or None when it cannot be one."""
    if isinstance(value, Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype not in NUMPY_DTYPES:  # bfloat16, float16, float8...: as float32
            tensor = tensor.float()
        array = tensor.resolve_conj().resolve_neg().numpy()
    else:
        array = value
    if array.dtype.kind not in ARRAY_KINDS or array.dtype.hasobject:
        return None
    return np.array(array, copy=True, order="C")  # (ascontiguousarray would make 0-dim 1-dim)


class Outputs:
    """What a student's function returned on a check's inputs, as data only.

    Each record is a JSON-able dict under a key (``"case0"``, ``"hot1"``...): ``none``,
    ``number`` (an int or float), ``tensor`` (an array, with ``requires_grad``), ``sequence``
    (records), ``bytes`` (a file's bytes as a uint8 array, e.g. a prior's weights file:
    :meth:`put_bytes`), ``other`` (a type name and, where it worked, ``float(value)``) or
    ``raised`` (the hint of the exception). Arrays are kept apart (:meth:`to_arrays`).
    """

    def __init__(self, records: dict | None = None, arrays: dict | None = None):
        self.records: dict[str, dict] = dict(records or {})
        self.arrays: dict[str, np.ndarray] = dict(arrays or {})

    # -- the sandbox's side: record -----------------------------------------------------------
    def call(self, key: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` (the student's function), record its result under ``key`` and return it
        (None when it raised; the hint is recorded)."""
        try:
            value = call_student(fn, *args, **kwargs)
        except Mismatch as mismatch:
            self.records[key] = {"kind": "raised", "message": str(mismatch)[:MAX_MESSAGE]}
            return None
        self.put(key, value)
        return value

    def put(self, key: str, value: Any) -> None:
        """Record ``value`` (a result, a gradient, a flag) under ``key``."""
        self.records[key] = self._encode(value, 0)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Record the bytes of a file (a weights file) under ``key``, as a (n,) uint8 array.
        Its size is the caller's to limit; the judge reads it as untrusted data."""
        name = f"a{len(self.arrays)}"
        self.arrays[name] = np.frombuffer(bytes(data), dtype=np.uint8).copy()  # (n,) uint8
        self.records[key] = {"kind": "bytes", "type": "bytes", "array": name}

    def fail(self, key: str, message: str) -> None:
        """Record under ``key`` a failure outside the student's function (its hint)."""
        self.records[key] = {"kind": "raised", "message": str(message)[:MAX_MESSAGE]}

    def _encode(self, value: Any, depth: int) -> dict:
        kind = _type_name(value)
        try:
            if value is None:
                return {"kind": "none", "type": kind}
            if isinstance(value, (bool, int, float)):
                number = (bool(value) if isinstance(value, bool) else int(value)
                          if isinstance(value, int) else float(value))
                return {"kind": "number", "type": kind, "value": number}
            if isinstance(value, (Tensor, np.ndarray)):
                return self._encode_array(value, kind)
            if isinstance(value, (list, tuple)) and depth < MAX_DEPTH and len(value) <= MAX_ITEMS:
                return {"kind": "sequence", "type": kind,
                        "items": [self._encode(item, depth + 1) for item in value]}
        except Exception:  # a value that breaks while being recorded is an opaque object
            pass
        try:
            number = float(value)
        except Exception:  # not a number
            number = None
        return {"kind": "other", "type": kind, "number": number}

    def _encode_array(self, value: Tensor | np.ndarray, kind: str) -> dict:
        shape = tuple(int(s) for s in value.shape)
        if math.prod(shape) > MAX_ELEMENTS:
            return {"kind": "other", "type": f"{kind} of shape {shape} (too large to record)",
                    "number": None}
        array = _tensor_array(value)
        if array is None:
            return {"kind": "other", "type": f"{kind} of dtype {value.dtype}", "number": None}
        name = f"a{len(self.arrays)}"
        self.arrays[name] = array
        grad = bool(isinstance(value, Tensor) and value.requires_grad)
        return {"kind": "tensor", "type": kind, "array": name, "requires_grad": grad}

    # -- the judge's side: decode -------------------------------------------------------------
    def got(self, key: str) -> Any:
        """The decoded result recorded under ``key``: None, a bool, int or float, a CPU tensor
        (a numpy array where the function returned one), a tuple or list of those, ``bytes``
        (:meth:`put_bytes`), or an :class:`Opaque`.

        Raises:
            Mismatch: the function raised (its hint), or nothing was recorded.
        """
        failure = self.records.get(COLLECT_KEY)
        if failure is not None:
            raise Mismatch(str(failure.get("message", "the grader could not call your function"))
                           [:MAX_MESSAGE])
        if key not in self.records:
            raise Mismatch("no result was recorded for this case: did the notebook define the "
                           "function and run to the end?")
        return self._decode(self.records[key], 0)

    def type_name(self, key: str) -> str:
        """The type name of what was recorded under ``key`` (``"ndarray"``, ``"tuple"``...)."""
        record = self.records.get(key)
        return str(record.get("type", "object"))[:100] if isinstance(record, dict) else "nothing"

    def _decode(self, record: Any, depth: int) -> Any:
        if not isinstance(record, dict) or depth > MAX_DEPTH:
            raise ValueError("malformed record")
        kind = record.get("kind")
        if kind == "raised":
            raise Mismatch(str(record.get("message", ""))[:MAX_MESSAGE])
        if kind == "none":
            return None
        if kind == "number":
            value = record.get("value")
            if not isinstance(value, (int, float)):  # bool included
                raise ValueError("malformed number")
            return value
        if kind == "tensor":
            return self._decode_tensor(record)
        if kind == "bytes":
            array = self.arrays.get(record.get("array"))
            if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 1:
                raise ValueError("malformed bytes record: not a (n,) uint8 array")
            return array.tobytes()
        if kind == "sequence":
            items = record.get("items")
            if not isinstance(items, list) or len(items) > MAX_ITEMS:
                raise ValueError("malformed sequence")
            decoded = [self._decode(item, depth + 1) for item in items]
            return decoded if record.get("type") == "list" else tuple(decoded)
        if kind == "other":
            number = record.get("number")
            ok = isinstance(number, (int, float)) and not isinstance(number, bool)
            return Opaque(str(record.get("type", "object"))[:200], float(number) if ok else None)
        raise ValueError(f"unknown record kind {kind!r}")

    def _decode_tensor(self, record: dict) -> Tensor | np.ndarray:
        array = self.arrays.get(record.get("array"))
        if not isinstance(array, np.ndarray) or array.dtype.kind not in ARRAY_KINDS:
            raise ValueError("missing or non-numeric array")
        if record.get("type") == "ndarray":
            return np.array(array, copy=True)
        tensor = torch.from_numpy(np.array(array, copy=True))
        if record.get("requires_grad") is True and (tensor.is_floating_point()
                                                    or tensor.is_complex()):
            tensor.requires_grad_(True)
        return tensor

    # -- as arrays: what travels from the sandbox to the judge --------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every array, plus the records as one JSON string under :data:`RECORDS_KEY`; save with
        ``np.savez`` and load with ``np.load(..., allow_pickle=False)``."""
        return {RECORDS_KEY: np.array(json.dumps(self.records)), **self.arrays}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Outputs":
        """The inverse of :meth:`to_arrays`; ``ValueError`` when the records are malformed."""
        text = arrays.get(RECORDS_KEY)
        if not isinstance(text, np.ndarray) or text.dtype.kind != "U" or text.shape != ():
            raise ValueError(f"no {RECORDS_KEY} string in the outputs")
        records = json.loads(str(text))
        if not isinstance(records, dict):
            raise ValueError("the records are not a JSON object")
        return cls(records, {k: v for k, v in arrays.items() if k != RECORDS_KEY})


def collect_settings(fn: Callable, inputs: dict) -> Outputs:
    """``collect`` of an open exercise whose function takes nothing and returns the settings the
    judge repeats a run with (recorded under ``"settings"``)."""
    outputs = Outputs()
    outputs.call("settings", fn)
    return outputs


def collect_safely(exercise: Exercise, fn: Callable, inputs: dict) -> Outputs:
    """``exercise.collect(fn, inputs)`` on one CPU thread with the global random state
    restored afterwards; an error outside the student's function (e.g. in backpropagation
    through a strange return value) is recorded, never raised."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            return exercise.collect(fn, inputs)
    except Exception as error:  # recorded as this exercise's failure
        outputs = Outputs()
        outputs.records[COLLECT_KEY] = {
            "kind": "raised", "message": f"calling your function failed: {type(error).__name__}: "
                                         f"{error}{where_it_raised(error)}"[:MAX_MESSAGE]}
        return outputs
    finally:
        torch.set_num_threads(threads)


def judge_outputs(exercise: Exercise, inputs: dict, outputs: Outputs) -> CheckResult:
    """Compare recorded outputs with the library's reference (or measure what they hold): the
    judging half of a check. The figures an open exercise's judge measured go to
    :attr:`CheckResult.measured`, whether it passed or not."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            verdict = exercise.judge(inputs, outputs)
    except Mismatch as mismatch:
        return CheckResult(exercise.name, False, str(mismatch),
                           MappingProxyType(dict(mismatch.measured)))
    finally:
        torch.set_num_threads(threads)
    if isinstance(verdict, Verdict):
        return CheckResult(exercise.name, True, f"passed ({verdict.summary}).",
                           MappingProxyType(dict(verdict.measured)))
    return CheckResult(exercise.name, True, f"passed ({verdict}).")


def run_check(exercise: Exercise, fn: Callable, seed: int = 0) -> CheckResult:
    """Run a whole check in this process: inputs, the student's function, the comparison.

    The outputs go through :meth:`Outputs.to_arrays` and back, exactly as when grading. The
    global random state and torch's thread count are restored afterwards.

    Raises:
        ValueError: a negative or non-int ``seed``.
    """
    with torch.random.fork_rng(devices=[]):
        inputs = exercise.make_inputs(seed)
    outputs = collect_safely(exercise, fn, inputs)
    return judge_outputs(exercise, inputs, Outputs.from_arrays(outputs.to_arrays()))


def read_npz_bytes(data: bytes, what: str, max_bytes: int, names: re.Pattern,
                   max_members: int = 1000) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive held in ``data``, read as data only: the archive's
    members are listed first (each name must match ``names``, their declared sizes may add up
    to ``max_bytes`` at most), then loaded with ``allow_pickle=False``, so an object array (a
    pickle inside) is refused, never unpickled.

    Args:
        data: the archive's bytes (the caller limits their number).
        what: names the file in messages, e.g. ``"the weights file"``.
        max_bytes: the most bytes of arrays the members may declare.
        names: the member names allowed, e.g. ``re.compile("a[0-9]{1,6}[.]npy")``.

    Raises:
        ValueError: not a zip archive, too many members or bytes declared, a member of another
            name, or pickled data (each message starts with ``what``).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise ValueError(f"{what} is not an .npz archive") from None
    if sum(m.file_size for m in members) > max_bytes or len(members) > max_members:
        raise ValueError(f"{what} declares more than {max_bytes} bytes of arrays")
    odd = [m.filename for m in members if not names.fullmatch(m.filename)]
    if odd:
        raise ValueError(f"{what} holds unexpected entries ({odd[0][:60]!r}"
                         f"{f' and {len(odd) - 1} more' if len(odd) > 1 else ''})")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except ValueError as error:
        if "pickle" in str(error) or "Object arrays" in str(error):
            raise ValueError(f"{what} holds pickled data (an object array), which is never "
                             "unpickled") from None
        raise ValueError(f"{what} holds a malformed array ({str(error)[:200]})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:
        raise ValueError(f"{what} is a damaged .npz archive ({type(error).__name__})") from None


# --------------------------------------------------------------------------------------------
# Comparing values (judge side)
# --------------------------------------------------------------------------------------------
def as_tensor(value: Any, what: str) -> Tensor:
    """``value`` as a CPU tensor, or :class:`Mismatch` (not done / not a tensor)."""
    if value is None:
        raise Mismatch(NOT_DONE)
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    name = value.type_name if isinstance(value, Opaque) else type(value).__name__
    raise Mismatch(f"{what} should be a torch.Tensor, got {name}.")


def as_float(value: Any, what: str) -> float:
    """``value`` as one float, or :class:`Mismatch` (not done / not one number)."""
    if value is None:
        raise Mismatch(NOT_DONE)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise Mismatch(f"{what} should be one number (a float or a 0-dim tensor), got a "
                           f"tensor of shape {tuple(value.shape)}.")
        return float(value.detach().cpu().reshape(()))
    if isinstance(value, (int, float)):  # bool included, as float(True)
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
        return float(value.reshape(()))
    if isinstance(value, Opaque):
        if value.number is None:
            raise Mismatch(f"{what} should be a number, got {value.type_name}.")
        return value.number
    raise Mismatch(f"{what} should be a number, got {type(value).__name__}.")


def as_sequence(value: Any, length: int, hint: str) -> Sequence:
    """``value`` as a sequence of ``length`` items, or :class:`Mismatch`: not done, or ``hint``
    (what to return) for a tensor, a non-sequence or another length."""
    if value is None:
        raise Mismatch(NOT_DONE)
    if isinstance(value, Tensor) or not isinstance(value, Sequence) or len(value) != length:
        raise Mismatch(hint)
    return value


def index_str(flat_index: int, shape: Sequence[int]) -> str:
    """The multi-index of position ``flat_index`` in a tensor of ``shape``, as text."""
    if not shape:
        return "()"
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return str(tuple(reversed(index)))


def compare(got: Any, expected: Tensor, what: str, *, atol: float = 1e-5, rtol: float = 1e-4,
            integer: bool | None = None) -> Tensor:
    """Check ``got`` against ``expected`` (type, shape, dtype kind, values); returns it as a CPU
    tensor or raises :class:`Mismatch` with a hint. ``integer=None`` follows ``expected``."""
    tensor = as_tensor(got, what)
    expected = expected.detach().cpu()
    if tuple(tensor.shape) != tuple(expected.shape):
        raise Mismatch(f"{what} has shape {tuple(tensor.shape)}, expected "
                       f"{tuple(expected.shape)}.")
    integer = (not expected.is_floating_point()) if integer is None else integer
    if integer:
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise Mismatch(f"{what} has dtype {tensor.dtype}, expected integer indices "
                           f"({expected.dtype}); `.argmin()`/`.argmax()` return int64, "
                           "`.long()` converts.")
        bad = tensor.long() != expected.long()
    else:
        if tensor.is_complex():
            raise Mismatch(f"{what} is complex ({tensor.dtype}); expected real numbers.")
        tensor = tensor.double()
        reference = expected.double()
        nan_got, nan_ref = torch.isnan(tensor), torch.isnan(reference)
        if bool((nan_got & ~nan_ref).any()):
            first = int(torch.nonzero((nan_got & ~nan_ref).flatten())[0])
            raise Mismatch(f"{what} is NaN at index {index_str(first, tensor.shape)} where the "
                           f"reference is {reference.flatten()[first].item():.6g}.")
        bad = ~torch.isclose(tensor, reference, rtol=rtol, atol=atol, equal_nan=True)
    if bool(bad.any()):
        flat = bad.flatten()
        first = int(torch.nonzero(flat)[0])
        g, e = tensor.flatten()[first].item(), expected.flatten()[first].item()
        fmt = (lambda v: str(int(v))) if integer else (lambda v: f"{v:.6g}")
        raise Mismatch(f"{what}: {int(flat.sum())} of {flat.numel()} values differ; the first "
                       f"at index {index_str(first, tensor.shape)}: got {fmt(g)}, expected "
                       f"{fmt(e)}.")
    return tensor


def close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-6) -> bool:
    """``math.isclose`` with the checks' tolerances."""
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def compare_number(got: Any, expected: float, what: str, rel: float = 1e-4) -> float:
    """Check one number against ``expected``; returns it or raises :class:`Mismatch`."""
    value = as_float(got, what)
    if not close(value, expected, rel):
        raise Mismatch(f"{what} is {value:.6g}, expected {expected:.6g}.")
    return value


def equal_if_tensor(value: Any, other: Tensor) -> bool:
    """Whether ``value`` is a tensor of ``other``'s shape and (closely) its values."""
    return (isinstance(value, Tensor) and value.shape == other.shape
            and not value.is_complex()
            and torch.allclose(value.detach().cpu().double(), other.double(), atol=1e-5, rtol=1e-4))
