"""Safe, self-describing checkpoints and random-number-generator state.

A checkpoint is one ``torch.save`` file holding a plain dictionary: a format tag and version,
the model's class name and its dataclass config (as a dict), its ``state_dict``, optimizer and
``GradScaler`` state, the step and epoch counters, the training history, the random-number
generator states and a free ``extra`` dict. Everything in it is a tensor or a Python primitive,
so it loads with ``torch.load(..., weights_only=True)``: loading never runs code from the file.

The model is rebuilt from its stored config alone (``load_checkpoint(path).model``); the
class-name -> (config class, model class) table lives in :func:`_model_types`, which imports the
model modules lazily and skips optional ones that do not exist yet (VQ-VAE-2, PixelCNN priors).
The config is stored flat (:func:`config_record`): a nested config's fields (the autoencoders'
``quantizer``) sit beside the model's own, as before the nesting, so checkpoints written before
and after it load alike (:func:`config_from_record`).

Files are written atomically (temporary file in the same folder, flush, fsync,
``os.replace``), so an interrupted save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import os
import pickle
import random
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

FORMAT_TAG = "vqlesson-checkpoint"
FORMAT_VERSION = 1
#: A reader deletes the temporary files of interrupted saves that are at least this old (s).
STALE_TEMPORARY_S = 600.0

#: Fields of nested configs that checkpoints did not store before the nesting (the quantiser's
#: ``kmeans_iters``): a record holds them only when they differ from their default, so the record
#: of an unchanged model, and the code files' fingerprint of it (:mod:`vqlesson.codes`), stay the
#: same as before.
FIELDS_SINCE_NESTING = ("kmeans_iters",)

#: (module, config class, model class) tried by :func:`_model_types`; modules that do not exist
#: (yet) are skipped, so adding a model is one line here.
_MODEL_MODULES: tuple[tuple[str, str, str], ...] = (
    ("vqlesson.vqvae", "VQVAEConfig", "VQVAE"),
    ("vqlesson.vqvae", "VAEConfig", "VAE"),
    ("vqlesson.vqvae2", "VQVAE2Config", "VQVAE2"),
    ("vqlesson.pixelcnn_prior", "PriorConfig", "PixelCNNPrior"),
    ("vqlesson.transformer_prior", "TransformerPriorConfig", "TransformerPrior"),
)


# --------------------------------------------------------------------------------------------
# Helpers: random-number-generator state
# --------------------------------------------------------------------------------------------
def get_rng_state(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    """Snapshot every random-number generator a training run draws from.

    Args:
        generators: extra ``torch.Generator`` objects to include (e.g. a ``DataLoader``'s
            shuffling generator), in a fixed order.

    Returns:
        A dict of tensors and primitives only (loads under ``weights_only=True``):
        ``python`` (``random``), ``numpy`` (legacy global ``np.random``), ``torch`` (CPU),
        ``cuda`` (list, one per GPU; empty without CUDA), ``generators`` (list).
    """
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    cuda = (
        [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    )
    return {
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),  # (625,) uint32 values
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),  # (624,) uint32 values
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state().clone(),
        "cuda": cuda,
        "generators": [g.get_state().clone() for g in generators],
    }


def set_rng_state(state: dict[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Restore a snapshot from :func:`get_rng_state`.

    CUDA states are restored only where CUDA is present (a checkpoint written on a GPU resumes on
    a CPU, without bit-exactness for GPU-side randomness).

    Args:
        state: the dict returned by :func:`get_rng_state` (possibly after a save/load).
        generators: the generators to restore, in the order they were captured.

    Raises:
        ValueError: a malformed state, or a different number of ``generators`` than captured.
    """
    try:
        py = state["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
        nps = state["numpy"]
        np.random.set_state(
            (
                nps["bit_generator"],
                nps["key"].numpy().astype(np.uint32),
                nps["pos"],
                nps["has_gauss"],
                nps["cached_gaussian"],
            )
        )
        torch.set_rng_state(state["torch"])
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"not a random-number-generator state from get_rng_state ({error!r})"
        ) from error
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for index, cuda_state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)
    stored = state.get("generators") or []
    if generators and len(stored) != len(generators):
        raise ValueError(
            f"the RNG state holds {len(stored)} generator state(s) but {len(generators)} "
            "generator(s) were given to restore; pass the same generators as when it was taken."
        )
    for generator, generator_state in zip(generators, stored):
        generator.set_state(generator_state)


# --------------------------------------------------------------------------------------------
# Helpers: model registry and config comparison
# --------------------------------------------------------------------------------------------
def _model_types() -> dict[str, tuple[type, type]]:
    """Class name -> (config dataclass, model class) for every model a checkpoint may hold.

    Imports lazily (no import cycle with the model modules) and skips modules or names that do not
    exist in this version of the package.
    """
    types: dict[str, tuple[type, type]] = {}
    for module_name, config_name, model_name in _MODEL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # the module exists but one of its imports is missing
                raise
            continue
        config_cls = getattr(module, config_name, None)
        model_cls = getattr(module, model_name, None)
        if config_cls is not None and model_cls is not None:
            types.setdefault(model_name, (config_cls, model_cls))
    return types


def _is_config(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def config_record(config: Any) -> dict[str, Any]:
    """A dataclass config as the flat dict a checkpoint stores: ``dataclasses.asdict`` with the
    fields of a nested config (a model's ``quantizer``) beside the model's own, in place of it;
    a nested field in ``FIELDS_SINCE_NESTING`` only when it is not at its default.

    Raises:
        TypeError: ``config`` is not a dataclass instance.
    """
    if not _is_config(config):
        raise TypeError(f"config must be a dataclass config, got {type(config).__name__}")
    record: dict[str, Any] = {}
    for key, value in dataclasses.asdict(config).items():
        nested = getattr(config, key)
        if not _is_config(nested):
            record[key] = value
            continue
        defaults = {f.name: f.default for f in dataclasses.fields(nested)}
        record.update({name: v for name, v in value.items()
                       if name not in FIELDS_SINCE_NESTING or v != defaults[name]})
    return record


def config_from_record(config_cls: type, record: dict[str, Any]) -> Any:
    """Rebuild a ``config_cls`` from a stored dict: flat (:func:`config_record`, the format of
    every checkpoint) or nested (``dataclasses.asdict``). Missing fields take their defaults.

    Raises:
        ValueError: fields that ``config_cls`` does not know (listed), or a field out of range.
    """
    kwargs, unknown = _record_fields(config_cls, record)
    if unknown:
        raise ValueError(f"{config_cls.__name__} does not know the fields {unknown}")
    return config_cls(**kwargs)


def _record_fields(config_cls: type, record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``(constructor arguments, unknown keys)`` of a flat or nested record; a nested config is
    a field whose ``default_factory`` is a dataclass (e.g. ``quantizer: QuantizerConfig``)."""
    kwargs: dict[str, Any] = {}
    used: set[str] = set()
    unknown: list[str] = []
    for field in dataclasses.fields(config_cls):
        nested = field.default_factory
        if not (isinstance(nested, type) and dataclasses.is_dataclass(nested)):
            if field.name in record:
                kwargs[field.name] = record[field.name]
                used.add(field.name)
            continue
        names = {f.name for f in dataclasses.fields(nested)}
        given = record.get(field.name)
        if isinstance(given, dict):  # nested, as dataclasses.asdict writes it
            unknown += [f"{field.name}.{name}" for name in sorted(set(given) - names)]
            values = {name: v for name, v in given.items() if name in names}
            used.add(field.name)
        else:  # flat, as checkpoints store it
            values = {name: record[name] for name in names if name in record}
            used |= set(values)
        kwargs[field.name] = nested(**values)
    return kwargs, sorted(unknown + [key for key in record if key not in used])


def _normalise(value: Any) -> Any:
    """Tuples and lists compare equal after a save/load round trip."""
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


def config_differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Human-readable lines ``field: stored -> wanted`` for every field that differs."""
    lines = []
    for key in sorted(set(stored) | set(wanted)):
        old = _normalise(stored.get(key, "<missing>"))
        new = _normalise(wanted.get(key, "<missing>"))
        if old != new:
            lines.append(f"{key}: {old!r} (checkpoint) vs {new!r} (now)")
    return lines


def _expected_name(expected_class: type | str) -> str:
    if isinstance(expected_class, str):
        return expected_class
    if isinstance(expected_class, type):
        return expected_class.__name__
    raise TypeError(
        f"expected_class must be a model class or its name, got {type(expected_class).__name__}"
    )


def _stored_config(path: str | os.PathLike, name: str, config_cls: type,
                   stored: dict[str, Any]) -> Any:
    """The config stored in checkpoint ``path`` (flat or nested fields, see
    :func:`config_from_record`), rebuilt as ``config_cls``.

    Raises:
        ValueError: fields that ``config_cls`` does not know (another vqlesson version).
    """
    kwargs, unknown = _record_fields(config_cls, stored)
    if unknown:
        raise ValueError(
            f"checkpoint {str(path)!r} has {name} config fields {unknown} that this version of "
            f"{config_cls.__name__} does not know; it was written by another vqlesson version."
        )
    return config_cls(**kwargs)


def _check_same_config(path: str | os.PathLike, name: str, config: Any, expected: Any) -> None:
    """Compare the stored ``config`` with ``expected`` (a dataclass config, or a flat or nested
    dict of one), field by field in their :func:`config_record` form.

    Raises:
        TypeError: ``expected`` is neither a dataclass config nor a dict.
        ValueError: the configs differ (every differing field listed).
    """
    if isinstance(expected, dict):
        expected = config_from_record(type(config), expected)
    if not _is_config(expected):
        raise TypeError(f"expected_config must be a dataclass config or a dict, got "
                        f"{type(expected).__name__}")
    differences = config_differences(config_record(config), config_record(expected))
    if differences:
        raise ValueError(
            f"checkpoint {str(path)!r} was trained with a different {name} config:\n  "
            + "\n  ".join(differences)
            + "\nUse another --out folder (or checkpoint path), or the checkpoint's settings."
        )


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes:
        model: the rebuilt model (weights loaded, in eval mode, on ``map_location``).
        config: its dataclass config.
        optimizer_state: ``optimizer.state_dict()`` or ``None``.
        scaler_state: ``GradScaler.state_dict()`` or ``None``.
        step: optimizer steps done.
        epoch: epochs completed.
        history: dict of per-epoch (and per-step) lists of floats.
        rng_state: the :func:`get_rng_state` dict saved with it, or ``None``.
        extra: the free-form dict passed to :func:`save_checkpoint`.
    """

    model: nn.Module
    config: Any
    optimizer_state: dict | None
    scaler_state: dict | None
    step: int
    epoch: int
    history: dict[str, list]
    rng_state: dict | None
    extra: dict


def remove_stale_temporaries(path: str | os.PathLike, older_than_s: float = 0.0) -> list[Path]:
    """Delete the temporary files an interrupted :func:`atomic_write` of ``path`` left behind
    (``.NAME.*.tmp`` beside it; a process killed during a save cannot remove its own) that were
    last modified more than ``older_than_s`` seconds ago. The writer of ``path`` removes them all
    before it writes (one process writes a given file); a reader only removes old ones, so it
    never disturbs a save in progress. Returns what was deleted."""
    path = Path(path)
    removed = []
    now = time.time()
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            if now - stale.stat().st_mtime >= older_than_s:
                stale.unlink()
                removed.append(stale)
        except OSError:  # already gone, or not ours to delete
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    """Write a file atomically: ``write(handle)`` fills a temporary binary file in the same
    folder, which is fsynced and then moved onto ``path`` with ``os.replace``, so an interrupted
    write never leaves a truncated file. Creates parent folders; the file gets the usual
    permissions (0666 less the umask). Temporary files of earlier interrupted writes of ``path``
    are deleted first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    try:  # make the rename itself durable; not possible on every OS/file system
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scaler: torch.amp.GradScaler | None = None,
    step: int = 0,
    epoch: int = 0,
    history: dict[str, list] | None = None,
    rng_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, fsync, ``os.replace``).

    Args:
        path: the file to write; parent folders are created.
        model: a module with a dataclass ``model.config`` (every vqlesson model has one).
        optimizer, scaler: their ``state_dict`` is stored when given.
        step, epoch: optimizer steps and completed epochs.
        history: dict of lists of numbers (per-epoch metrics); stored as floats/ints.
        rng_state: a :func:`get_rng_state` dict; ``None`` stores the current global state.
        extra: a plain dict of primitives/tensors (e.g. the training config).

    Returns:
        The path written.

    Raises:
        TypeError: ``model.config`` is missing or not a dataclass; ``history``/``extra`` not dicts.
    """
    config = getattr(model, "config", None)
    if not (dataclasses.is_dataclass(config) and not isinstance(config, type)):
        raise TypeError(
            f"{type(model).__name__} has no dataclass `config` attribute, so it cannot be rebuilt "
            "from a checkpoint; give the model a config dataclass."
        )
    if history is not None and not isinstance(history, dict):
        raise TypeError(f"history must be a dict of lists, got {type(history).__name__}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be a dict, got {type(extra).__name__}")
    payload = {
        "format": FORMAT_TAG,
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__,
        "config": config_record(config),
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "scaler_state": scaler.state_dict() if scaler is not None else None,
        "step": int(step),
        "epoch": int(epoch),
        "history": {
            str(k): [v if isinstance(v, int) else float(v) for v in values]
            for k, values in (history or {}).items()
        },
        "rng_state": rng_state if rng_state is not None else get_rng_state(),
        "extra": dict(extra or {}),
    }
    return atomic_torch_save(payload, path)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load and validate the raw checkpoint dictionary (``weights_only=True``), no model built.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a vqlesson checkpoint, is corrupt or truncated, or was written
            by a newer format version.
    """
    path = Path(path)
    remove_stale_temporaries(path, older_than_s=STALE_TEMPORARY_S)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {str(path)!r}; check the path, or train first to create it."
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            AttributeError, KeyError, IndexError, TypeError, OSError) as error:
        raise ValueError(
            f"{str(path)!r} is not a readable vqlesson checkpoint (corrupt, truncated, or not "
            f"written by vqlesson.checkpoint.save_checkpoint): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        raise ValueError(
            f"{str(path)!r} is a torch file but not a vqlesson checkpoint (no "
            f"'format': {FORMAT_TAG!r} entry); save it with vqlesson.checkpoint.save_checkpoint."
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} has checkpoint format version {version!r}, this vqlesson reads up "
            f"to {FORMAT_VERSION}; upgrade vqlesson."
        )
    missing = [k for k in ("model_class", "config", "model_state") if k not in payload]
    if missing:
        raise ValueError(f"{str(path)!r} is an incomplete vqlesson checkpoint (missing {missing})")
    return payload


def load_checkpoint(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    expected_class: type | str | None = None,
    expected_config: Any = None,
) -> Checkpoint:
    """Load a checkpoint and rebuild its model from the stored config alone.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: where tensors (and the returned model) go, e.g. ``"cpu"`` or a device.
        expected_class: the model class (or its name) the caller needs; ``None`` accepts any.
        expected_config: a config dataclass (or dict) the stored one must equal; ``None`` skips.

    Returns:
        :class:`Checkpoint`, with the model in eval mode.

    Raises:
        FileNotFoundError: no file at ``path`` (the message names it).
        ValueError: not a vqlesson checkpoint / corrupt / truncated; a different model class than
            ``expected_class``; a config differing from ``expected_config`` (fields listed); an
            unknown model class or config fields that this version cannot rebuild.
    """
    payload = read_checkpoint(path, map_location)
    name = payload["model_class"]
    if expected_class is not None and name != _expected_name(expected_class):
        raise ValueError(
            f"checkpoint {str(path)!r} holds a {name} model, but a "
            f"{_expected_name(expected_class)} was expected; use another --out folder (or "
            "checkpoint path) for this model, or start without resume."
        )
    types = _model_types()
    if name not in types:
        raise ValueError(
            f"checkpoint {str(path)!r} holds a {name!r} model, which this version of vqlesson "
            f"cannot rebuild (known: {', '.join(sorted(types)) or 'none'})."
        )
    config_cls, model_cls = types[name]
    config = _stored_config(path, name, config_cls, dict(payload["config"]))
    if expected_config is not None:
        _check_same_config(path, name, config, expected_config)
    model = model_cls(config)
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as error:
        raise ValueError(
            f"checkpoint {str(path)!r}: its weights do not fit a {name} built from its config "
            f"({error})"
        ) from error
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model = model.to(map_location)
    model.eval()
    return Checkpoint(
        model=model,
        config=config,
        optimizer_state=payload.get("optimizer_state"),
        scaler_state=payload.get("scaler_state"),
        step=int(payload.get("step", 0)),
        epoch=int(payload.get("epoch", 0)),
        history={k: list(v) for k, v in (payload.get("history") or {}).items()},
        rng_state=payload.get("rng_state"),
        extra=dict(payload.get("extra") or {}),
    )
