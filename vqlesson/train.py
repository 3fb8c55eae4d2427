"""Training and evaluation loop for the course's autoencoders (VQ-VAE, VAE, later VQ-VAE-2).

The VQ-VAE objective of van den Oord et al. 2017 (*Neural Discrete Representation Learning*,
section 3.2, eq. 3: reconstruction + codebook + beta x commitment) is computed by the model
itself; this loop only minimises the ``loss`` field of whatever the model returns, with AdamW
(the paper uses Adam, lr 2e-4) or SGD with momentum (for the course's optimiser comparison).

The loop is generic. A model's ``forward(x)`` must return a NamedTuple with at least ``x_hat``
(``(B, C, H, W)`` in ``[-1, 1]``) and ``loss`` (scalar); every other 0-dim tensor field is a
loss term or metric that is averaged and logged under its field name. Vector quantisers are found
as the :class:`~vqlesson.quantize.VectorQuantizer` submodules; their code usage gives the epoch
perplexity and active-code fraction. A model without quantisers (the VAE) trains the same way.

Reproducibility: the run is seeded with ``TrainConfig.seed``, and every checkpoint stores the
optimiser, ``GradScaler``, counters, history and all random-number-generator states taken at the
epoch boundary, so that on the CPU a resumed run gives exactly the per-step losses of an
uninterrupted one (on a GPU up to non-deterministic kernels).

Data-parallel training (``torchrun``, :mod:`vqlesson.distributed`): when a process group is
initialised, :func:`train_vqvae` shards the training loader per process (``DistributedSampler``,
the batch size is per process), wraps the model in PyTorch's ``DistributedDataParallel``
(gradients averaged), seeds each process with ``seed + rank`` (different augmentation; rank 0's
streams are those of a single process), logs the losses of the whole global batch, evaluates
each process's disjoint share of the validation split and sums the results, and writes the
checkpoint from rank 0 only. Without a process group nothing of this happens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import metrics
from .checkpoint import Checkpoint
from .distributed import (
    all_agree,
    all_reduce_sum_,
    is_distributed,
    is_main_process,
    process_device,
    rank,
    set_epoch,
    shard_eval_loader,
    shard_loader,
    wrap_ddp,
)
from .loop import (
    LoopConfig,
    amp_settings,
    append_record,
    call_back,
    optimizer_step,
    resume_from,
    restore_rng,
    restore_training,
    save_epoch,
)
from .quantize import VectorQuantizer
from .runtime import get_device, seed_everything
from .validate import check_choice, check_number, split_batch

OPTIMIZERS = ("adamw", "sgd")
#: Evaluation keys that are constants of the model, not recorded per epoch in the history.
_STATIC_KEYS = ("bits_per_image", "compression_ratio")
#: Output fields logged under another name: VQ-VAE-2's per-batch perplexities keep the history
#: keys they had before the fields were named ``*_batch_perplexity``.
_LOG_NAMES = {"top_batch_perplexity": "top_perplexity",
              "bottom_batch_perplexity": "bottom_perplexity"}


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass
class TrainConfig(LoopConfig):
    """Settings of one autoencoder training run: the common fields of
    :class:`~vqlesson.loop.LoopConfig` (epochs, lr, weight_decay, amp, grad_clip, seed,
    checkpoint_path, resume, progress, device) plus the optimiser.

    Attributes:
        optimizer: ``"adamw"`` or ``"sgd"`` (with ``momentum``). The VQ-VAE paper used Adam at
            2e-4 over 250k steps; the course's default lr 1e-3 suits its short runs.
        momentum: SGD momentum in ``[0, 1)``; unused by AdamW.

    Raises:
        ValueError: a value out of range, an unknown optimiser, or ``resume`` without a
            ``checkpoint_path``.
    """

    optimizer: str = "adamw"
    momentum: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.optimizer, "optimizer", OPTIMIZERS)
        check_number(self.momentum, "momentum", 0, 1, high_open=True)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def find_quantizers(model: nn.Module) -> list[tuple[str, VectorQuantizer]]:
    """``(module name, quantiser)`` for every :class:`VectorQuantizer` inside ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, VectorQuantizer)]


def _code_keys(quantizers: list[tuple[str, VectorQuantizer]]) -> dict[str, str]:
    """Module name -> history-key prefix: ``""`` for a single quantiser, else ``"<name>_"``."""
    if len(quantizers) == 1:
        return {quantizers[0][0]: ""}
    return {name: name.replace(".", "_") + "_" for name, _ in quantizers}


def _code_metrics(quantizers: list[tuple[str, VectorQuantizer]]) -> dict[str, float]:
    """Perplexity and active fraction of the usage counted since the last ``reset_usage``."""
    prefixes = _code_keys(quantizers)
    out: dict[str, float] = {}
    for name, q in quantizers:
        out[prefixes[name] + "perplexity"] = q.epoch_perplexity()
        out[prefixes[name] + "active_fraction"] = q.active_fraction()
    return out


def _scalar_terms(output: Any, reserved: Iterable[str]) -> dict[str, Tensor]:
    """The 0-dim tensor fields of a model output, by log name (``batch_<field>`` when the field
    name collides with a code-usage key such as ``perplexity``; VQ-VAE-2's per-level
    ``*_batch_perplexity`` fields keep their history keys, see ``_LOG_NAMES``).

    Raises:
        TypeError: the output is not a NamedTuple with ``x_hat`` and ``loss``.
    """
    fields = getattr(output, "_fields", None)
    if fields is None or "x_hat" not in fields or "loss" not in fields:
        raise TypeError(
            f"the model's forward must return a NamedTuple with at least 'x_hat' and 'loss' "
            f"fields, got {type(output).__name__}"
            + (f" with fields {fields}" if fields is not None else "")
        )
    reserved = set(reserved)
    terms: dict[str, Tensor] = {}
    for field in fields:
        value = getattr(output, field)
        if field != "x_hat" and isinstance(value, Tensor) and value.dim() == 0:
            name = _LOG_NAMES.get(field, field)
            terms[f"batch_{name}" if name in reserved else name] = value
    return terms


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects a ``DataLoader`` draws from (its own, its
    sampler's, its batch sampler's sampler's), in a fixed order."""
    if loader is None:
        return []
    candidates = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None),
    ]
    found: list[torch.Generator] = []
    for g in candidates:
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _non_finite_error(
    epoch: int, epochs: int, step: int, batch_index: int, bad: list[str], values: dict[str, float],
    lr: float, x: Tensor,
) -> FloatingPointError:
    """The error for a non-finite input batch (``bad == []``) or non-finite loss terms."""
    where = f"epoch {epoch} of {epochs}, step {step} (batch {batch_index + 1} of this epoch)"
    if not bad:
        return FloatingPointError(
            f"non-finite input images (NaN or inf) at {where}. Training stopped before using them. "
            "Check the data pipeline: images must be finite float tensors in [-1, 1]."
        )
    shown = ", ".join(f"{name}={values[name]}" for name in bad)
    low, high = float(x.min()), float(x.max())
    return FloatingPointError(
        f"non-finite {', '.join(bad)} at {where}: {shown}. Training stopped instead of continuing "
        f"with corrupt weights. Try a lower learning rate (lr={lr:g}), amp=False (full "
        f"precision), and check the inputs are float images in [-1, 1] (this batch spans "
        f"[{low:.3g}, {high:.3g}])."
    )


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_vqvae(
    model: nn.Module, loader: Iterable, device: str | torch.device | None = None, *,
    amp: bool = False, distributed: bool = False,
) -> dict[str, float]:
    """Reconstruction and code statistics of ``model`` over every batch of ``loader``.

    Runs in eval mode under ``no_grad`` (the mode is restored afterwards) and resets the
    quantisers' usage counts first.

    Args:
        model: returns a NamedTuple with ``x_hat`` and ``loss`` (see the module docstring).
        loader: yields ``(image, label)`` with image ``(B, C, H, W)`` float in ``[-1, 1]``.
        device: where to evaluate (the model is moved there); ``None``: the model's device.
        amp: autocast (bf16/fp16) on CUDA; metrics are still computed in float32.
        distributed: under a ``torch.distributed`` process group, each process evaluates a
            disjoint share of the loader's data set (a DataLoader is rebuilt with
            :class:`~vqlesson.distributed.ShardSampler`, without the padding of a
            ``DistributedSampler``; any other iterable, or a split smaller than the number of
            processes, is evaluated whole by every process), then the sums, image counts and
            code usage counts are all-reduced: every process returns the metrics of the whole
            split (``batch_perplexity``, a mean over batches, aside: it depends on how the
            split is cut into batches). Every process must then call it. Without a process
            group it changes nothing.

    Returns:
        Floats, averaged over images: every scalar loss term of the output under its field name
        (``batch_perplexity`` for a batch-level ``perplexity`` field), ``mse`` (on ``[-1, 1]``),
        ``psnr`` (dB, on ``[0, 1]``), ``ssim`` (NaN for images under 11 px); for models with
        quantisers also ``perplexity`` and ``active_fraction`` of the codes used over the whole
        loader (prefixed ``<module>_`` when there are several quantisers), ``bits_per_image``
        (all levels together) and ``compression_ratio`` (8-bit image size / code size).

    Raises:
        ValueError: the loader is empty.
        TypeError: batches or model outputs of the wrong kind.
    """
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    model.to(device)
    quantizers = find_quantizers(model)
    prefixes = _code_keys(quantizers)
    reserved = {p + k for p in prefixes.values() for k in ("perplexity", "active_fraction")}
    shard = distributed and is_distributed()
    if shard:
        loader = shard_eval_loader(loader)
    with _recorded_code_grids(quantizers) as latent_shapes:
        sums, n_images, image_shape = _evaluation_sums(model, loader, device, amp, quantizers,
                                                       reserved)
    if shard:  # sums over every process's share: the whole split on every process
        keys = sorted(sums)
        packed = torch.stack([sums[k] for k in keys]
                             + [torch.tensor(float(n_images), dtype=torch.float64, device=device)])
        all_reduce_sum_(packed)  # (len(keys) + 1,) float64
        sums = dict(zip(keys, packed[:-1]))
        n_images = int(packed[-1].item())
        for _, q in quantizers:
            all_reduce_sum_(q.usage_counts)
    if n_images == 0:
        raise ValueError("the evaluation loader yielded no batches; give it at least one image")
    results = {name: float(total.item()) / n_images for name, total in sums.items()}
    results.setdefault("ssim", math.nan)
    if quantizers:
        results.update(_code_metrics(quantizers))
        levels = [(latent_shapes[name], q.codebook_size) for name, q in quantizers
                  if name in latent_shapes]
        if levels:
            bits = metrics.bits_per_image(levels)
            results["bits_per_image"] = bits
            results["compression_ratio"] = metrics.compression_ratio(image_shape, bits)
    return results


@contextlib.contextmanager
def _recorded_code_grids(quantizers: list[tuple[str, VectorQuantizer]]
                         ) -> Iterator[dict[str, tuple[int, ...]]]:
    """While the block runs, forward hooks record ``{module name: (H', W')}``, the code grid
    each quantiser last produced; the hooks are removed afterwards."""
    latent_shapes: dict[str, tuple[int, ...]] = {}

    def remember_shape(name: str):
        def hook(module, inputs, output) -> None:
            latent_shapes[name] = tuple(output.indices.shape[1:])  # (B, H', W') -> (H', W')
        return hook

    handles = [q.register_forward_hook(remember_shape(name)) for name, q in quantizers]
    try:
        yield latent_shapes
    finally:
        for handle in handles:
            handle.remove()


def _evaluation_sums(model: nn.Module, loader: Iterable, device: torch.device, amp: bool,
                     quantizers: list[tuple[str, VectorQuantizer]], reserved: set[str]
                     ) -> tuple[dict[str, Tensor], int, tuple[int, ...]]:
    """One pass over ``loader`` in eval mode (restored afterwards), the quantisers' usage reset
    first. Returns (image-weighted float64 sums of every logged value, images, image shape)."""
    autocast, amp_dtype, _ = amp_settings(device, amp)
    was_training = model.training
    model.eval()
    for _, q in quantizers:
        q.reset_usage()
    sums: dict[str, Tensor] = {}
    n_images = 0
    image_shape: tuple[int, ...] = ()
    try:
        for batch in loader:
            x = split_batch(batch, "loader")[0].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
                output = model(x)
            terms = _scalar_terms(output, reserved)
            x_hat = output.x_hat.float()
            b = x.shape[0]
            image_shape = tuple(x.shape[1:])
            per_batch = {name: t.detach().double() * b for name, t in terms.items()}
            per_batch["mse"] = metrics.mse(x, x_hat, "none").double().sum()
            per_batch["psnr"] = metrics.psnr(x, x_hat, "none").double().sum()
            if min(x.shape[-2:]) >= metrics.SSIM_MIN_SIZE:
                per_batch["ssim"] = metrics.ssim(x, x_hat, "none").double().sum()
            for name, value in per_batch.items():
                sums[name] = sums[name] + value if name in sums else value
            n_images += b
    finally:
        model.train(was_training)
    return sums, n_images, image_shape


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def _batch_values(terms: dict[str, Tensor], b: int, device: torch.device, synced: bool
                  ) -> tuple[dict[str, float], int]:
    """The logged values of one step and the batch size they stand for: this batch's, or under
    a process group the global batch's (batch-size-weighted sums over all processes)."""
    if not synced:
        stacked = torch.stack([t.detach().float() for t in terms.values()])  # (len(terms),)
        return dict(zip(terms, stacked.tolist())), b
    packed = torch.cat([torch.stack([t.detach().double() for t in terms.values()]) * b,
                        torch.tensor([float(b)], dtype=torch.float64, device=device)])
    all_reduce_sum_(packed)  # (len(terms) + 1,) float64
    b = int(packed[-1].item())
    return dict(zip(terms, (packed[:-1] / b).tolist())), b


def _log_step(step_log: dict[str, list], values: dict[str, float]) -> None:
    """Append one step's loss to ``step_log["step_loss"]`` and each batch perplexity term
    (``batch_perplexity``, ``top_perplexity``...) to ``step_log["step_perplexity"]``,
    ``step_log["step_top_perplexity"]``... (the epoch's perplexities come from the quantisers)."""
    step_log["step_loss"].append(values["loss"])
    for name, value in values.items():
        if "perplexity" in name:
            step_log.setdefault("step_" + name.removeprefix("batch_"), []).append(value)


def _train_one_epoch(
    model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None, device: torch.device, autocast: bool,
    amp_dtype: torch.dtype, config: TrainConfig, epoch: int, step: int,
    quantizers: list[tuple[str, VectorQuantizer]], step_log: dict[str, list],
) -> tuple[dict[str, float], int, int]:
    """One pass over ``loader``. Returns (train averages, new global step, images seen).

    Every step's values go to the per-step lists of ``step_log`` (:func:`_log_step`).

    Under a process group the logged values and image counts are those of the global batch
    (batch-size-weighted sums over all processes), and every process sees the same values."""
    synced = is_distributed()
    prefixes = _code_keys(quantizers)
    reserved = {p + k for p in prefixes.values() for k in ("perplexity", "active_fraction", "restarts")}
    model.train()
    for _, q in quantizers:
        q.reset_usage()
    sums: dict[str, float] = {}
    restarts = {name: 0 for name, _ in quantizers}
    n_images = 0
    bar = tqdm(
        loader, desc=f"epoch {epoch}/{config.epochs}",
        disable=not config.progress or not is_main_process(), leave=True, unit="batch",
    )
    for batch_index, batch in enumerate(bar):
        x = split_batch(batch, "train_loader")[0].to(device, non_blocking=True)
        finite = bool(torch.isfinite(x).all())
        if synced:  # every process stops together, before a NaN reaches the shared codebook
            finite, _ = all_agree(finite, device)
        if not finite:
            raise _non_finite_error(
                epoch, config.epochs, step + 1, batch_index, [], {},
                optimizer.param_groups[0]["lr"], x,
            )
        with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
            output = model(x)
        values, b = _batch_values(_scalar_terms(output, reserved), x.shape[0], device, synced)
        bad = [name for name, v in values.items() if not math.isfinite(v)]
        if bad:
            bad.sort(key=lambda name: name == "loss")  # the specific terms first, the total last
            raise _non_finite_error(
                epoch, config.epochs, step + 1, batch_index, bad, values,
                optimizer.param_groups[0]["lr"], x,
            )
        optimizer_step(output.loss, model, optimizer, scaler, config.grad_clip)
        step += 1
        n_images += b
        _log_step(step_log, values)
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value * b
        for name, q in quantizers:
            restarts[name] += int(q.last_restarts)
        postfix = {"loss": f"{values['loss']:.4f}"}
        postfix.update(
            {k.removeprefix("batch_"): f"{v:.1f}" for k, v in values.items() if "perplexity" in k}
        )
        bar.set_postfix(postfix, refresh=False)
    bar.close()
    if n_images == 0:
        raise ValueError("train_loader yielded no batches; give it at least one image")
    averages = {name: total / n_images for name, total in sums.items()}
    averages.update(_code_metrics(quantizers))
    for name, _ in quantizers:
        averages[prefixes[name] + "restarts"] = float(restarts[name])
    return averages, step, n_images


def train_vqvae(
    model: nn.Module,
    train_loader: Iterable,
    val_loader: Iterable | None,
    config: TrainConfig | None = None,
    callback: Callable[[dict[str, list]], None] | None = None,
) -> dict[str, list]:
    """Train an autoencoder (VQ-VAE, VAE, VQ-VAE-2) and return its history.

    Args:
        model: ``forward(x)`` returns a NamedTuple with ``x_hat`` and ``loss`` (module docstring);
            needs a dataclass ``model.config`` when checkpointing. Moved to the chosen device.
        train_loader: yields ``(image, label)``, image ``(B, C, H, W)`` float in ``[-1, 1]``.
            For exact resumption give it a seeded ``generator`` (its state is checkpointed).
        val_loader: the same kind of loader, evaluated after every epoch; ``None`` skips it.
        config: :class:`TrainConfig` (defaults when ``None``).
        callback: called as ``callback(history)`` after every epoch (e.g. a live plot). The
            random-number generators are restored after it, so a callback never changes training.

    Returns:
        History: a dict of per-epoch lists: ``epoch`` (1-based), ``lr``, ``epoch_time_s``,
        ``images_per_s`` (training images per second), every scalar output term (``loss``,
        ``recon_loss``, ...; ``batch_perplexity`` for the batch-level ``perplexity`` field), for
        each quantiser ``perplexity``, ``active_fraction`` and ``restarts`` over the epoch's
        codes (``<module>_perplexity``... with several quantisers), and with a ``val_loader``
        the same loss terms and code metrics prefixed ``val_`` plus ``val_mse``, ``val_psnr``
        (dB) and ``val_ssim``; plus per-step lists: ``step_loss``, the training loss of every
        step, and ``step_perplexity`` (``step_top_perplexity``... with several quantisers), the
        perplexity of every training batch's codes, in codes.

    Under torchrun (a ``torch.distributed`` process group; see the module docstring) every
    process calls it with the same arguments: ``train_loader`` (a DataLoader) is sharded per
    process and its batch size is per process; ``model`` stays unwrapped (the DDP wrapper is
    internal) and ends equal on every process; the history (the same on every process but for
    each one's timings) holds the global batch's losses and ``images_per_s`` over all
    processes; only rank 0 writes the checkpoint (readable by one process with
    ``load_checkpoint``) and calls ``callback``. The checkpoint folder must be visible to every
    process (one machine, or a shared file system).

    Raises:
        FloatingPointError: a non-finite input or loss term (epoch, step and term named).
        ValueError: a checkpoint of another model class/config or optimiser when resuming;
            an empty loader; under torchrun, a checkpoint that not every process can see.
        TypeError: batches or model outputs of the wrong kind; under torchrun, a
            ``train_loader`` that is not a DataLoader over a map-style data set.
    """
    config = config if config is not None else TrainConfig()
    device = process_device(get_device(config.device))
    seed_everything(config.seed + rank())
    model.to(device)
    autocast, amp_dtype, needs_scaler = amp_settings(device, config.amp)
    optimizer = _build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None
    train_loader = shard_loader(train_loader, config.seed)
    train_generators = _loader_generators(train_loader)
    generators = train_generators + _loader_generators(val_loader)
    quantizers = find_quantizers(model)

    history: dict[str, list] = {}
    step = start_epoch = 0
    checkpoint = resume_from(config, model, device)
    if checkpoint is not None:
        _check_same_optimizer(checkpoint, config)
        restore_training(checkpoint, model, optimizer, scaler, device)
        history, step, start_epoch = checkpoint.history, checkpoint.step, checkpoint.epoch
        if start_epoch >= config.epochs:
            return history
        restore_rng(checkpoint, generators, config.seed, reseed=train_generators)
        del checkpoint

    trained = wrap_ddp(model, device)  # the model itself without a process group
    history.setdefault("step_loss", [])
    for epoch in range(start_epoch + 1, config.epochs + 1):
        start = time.perf_counter()
        set_epoch(train_loader, epoch)
        train_stats, step, n_images = _train_one_epoch(
            trained, train_loader, optimizer, scaler, device, autocast, amp_dtype, config, epoch,
            step, quantizers, history,
        )
        train_seconds = time.perf_counter() - start
        record: dict[str, float] = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"])}
        record.update(train_stats)
        if val_loader is not None:
            val_stats = evaluate_vqvae(model, val_loader, device, amp=config.amp, distributed=True)
            record.update({f"val_{k}": v for k, v in val_stats.items() if k not in _STATIC_KEYS})
        record["epoch_time_s"] = time.perf_counter() - start
        record["images_per_s"] = n_images / max(train_seconds, 1e-9)
        append_record(history, record)
        rng_state = save_epoch(
            config.checkpoint_path, model, generators, optimizer=optimizer, scaler=scaler,
            step=step, epoch=epoch, history=history,
            extra={"train_config": dataclasses.asdict(config)})
        call_back(callback, history, rng_state, generators)
    return history


def _check_same_optimizer(checkpoint: Checkpoint, config: TrainConfig) -> None:
    """A run continues with the optimiser it started with.

    Raises:
        ValueError: the checkpoint was trained with another optimiser.
    """
    stored = checkpoint.extra.get("train_config", {})
    if stored.get("optimizer", config.optimizer) != config.optimizer:
        raise ValueError(
            f"checkpoint {config.checkpoint_path!r} was trained with "
            f"optimizer={stored['optimizer']!r}, this run asks for {config.optimizer!r}; use the "
            "same optimizer or another --out folder (checkpoint path)."
        )
