"""Training and evaluation of the PixelCNN prior over VQ-VAE codes.

The second stage of the VQ-VAE recipe. van den Oord, Vinyals & Kavukcuoglu (2017), *Neural
Discrete Representation Learning*, §3.2 ("Prior") and §4.2: the VQ-VAE is frozen, every image is
encoded once into its code map (:mod:`vqlesson.codes`), and an autoregressive prior ``p(z)`` (a
PixelCNN, :mod:`vqlesson.pixelcnn`) is fitted to those maps by maximum likelihood; new images
come from sampling it (:mod:`vqlesson.sampling`).

For the two-level VQ-VAE-2, Razavi, van den Oord & Vinyals (2019), *Generating Diverse
High-Fidelity Images with VQ-VAE-2*, §3.2 and Algorithm 2: a **top prior** models the top code
map, and a **bottom prior** models the bottom code map *conditioned on the top one*. (The paper's
top prior adds self-attention layers; the course uses the Gated PixelCNN for both.) Class
conditioning (benign/malignant) and the spatial conditioning on the top codes are those of the
Gated PixelCNN, van den Oord et al. (2016), *Conditional Image Generation with PixelCNN
Decoders*, §2.3.

This module reads top to bottom: the training configuration and what a prior trains on
(:class:`PriorTrainConfig`, :func:`level_data`), evaluation (:func:`evaluate_prior`) and the
loop (:func:`train_prior`), whose resume and checkpoint steps are shared with the autoencoder
loop (:mod:`vqlesson.loop`).

Units: the prior's loss is the categorical cross-entropy in **bits per code** (log2 K for a
uniform guess); **bits per dim** spreads the bits of one image's code map over the 3·H·W
sub-pixels of the image (the likelihood literature's unit; it counts the prior only, not the
decoder).

Data-parallel training (``torchrun``, :mod:`vqlesson.distributed`): under a process group
:func:`train_prior` gives each process its share of every epoch's permutation (the batch size is
per process), wraps the prior in ``DistributedDataParallel``, logs the global batch's loss,
evaluates a disjoint share of the validation codes per process and sums the bits (so early
stopping decides the same everywhere), and writes checkpoints from rank 0 only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import Checkpoint
from .codes import CodeDataset
from .distributed import (
    all_reduce_sum_,
    is_distributed,
    is_main_process,
    process_device,
    rank,
    shard_order,
    world_size,
    wrap_ddp,
)
from .loop import (
    LoopConfig,
    amp_settings,
    append_record,
    call_back,
    optimizer_step,
    restore_rng,
    restore_training,
    resume_from,
    save_epoch,
)
from .pixelcnn import PriorConfig
from .pixelcnn_prior import LN2, AutoregressivePrior, PixelCNNPrior, nll
from .runtime import eval_mode, get_device, model_device, seed_everything
from .transformer_prior import TransformerPrior, TransformerPriorConfig
from .validate import check_choice, check_int


def check_prior(prior: object) -> AutoregressivePrior:
    """``prior`` if it is a prior over code maps (a PixelCNNPrior or a TransformerPrior).

    Raises:
        TypeError: anything else.
    """
    if not isinstance(prior, AutoregressivePrior):
        raise TypeError(
            "prior must be a vqlesson PixelCNNPrior or TransformerPrior (an "
            f"AutoregressivePrior), got {type(prior).__name__}"
        )
    return prior


def build_prior(config: PriorConfig | TransformerPriorConfig) -> AutoregressivePrior:
    """The prior a config describes: a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` for a
    :class:`~vqlesson.pixelcnn.PriorConfig`, a
    :class:`~vqlesson.transformer_prior.TransformerPrior` for a
    :class:`~vqlesson.transformer_prior.TransformerPriorConfig` (e.g. from
    :func:`~vqlesson.configs.prior_config_for`).

    Raises:
        TypeError: another kind of config.
    """
    if isinstance(config, PriorConfig):
        return PixelCNNPrior(config)
    if isinstance(config, TransformerPriorConfig):
        return TransformerPrior(config)
    raise TypeError(f"config must be a PriorConfig or a TransformerPriorConfig, got "
                    f"{type(config).__name__}")


def best_checkpoint_path(checkpoint_path: str | os.PathLike) -> Path:
    """Where :func:`train_prior` keeps the best-validation weights beside ``checkpoint_path``:
    ``runs/x/prior.pt`` -> ``runs/x/prior_best.pt`` (``prior_top.pt`` -> ``prior_top_best.pt``)."""
    path = Path(checkpoint_path)
    return path.with_name(f"{path.stem}_best{path.suffix or '.pt'}")


#: The learning-rate schedules of :class:`PriorTrainConfig`.
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class PriorTrainConfig(LoopConfig):
    """Settings of one prior training run (:func:`train_prior`): the common fields of
    :class:`~vqlesson.loop.LoopConfig` (epochs, lr, weight_decay, amp, grad_clip, seed,
    checkpoint_path, resume, progress, device; the optimiser is AdamW) plus these.

    ``checkpoint_path`` is saved after every epoch; the best-validation weights go to
    :func:`best_checkpoint_path` beside it. ``resume`` needs the same prior config and level.

    Attributes:
        batch_size: code maps per step, >= 1.
        early_stopping_patience: stop after this many epochs without a validation NLL
            improvement; ``None`` disables early stopping.
        early_stopping_min_delta: an improvement must lower the validation bits per code by more
            than this, >= 0.
        restore_best: with a validation set, end with the weights of the best validation epoch
            (not the last one).
        level: which level of the codes the prior models: ``"top"`` or ``"bottom"`` for
            VQ-VAE-2 codes; ``None`` (or ``"codes"``) for the one level of VQ-VAE codes.
        lr_schedule: ``"constant"`` (``lr`` throughout) or ``"cosine"``: ``lr`` after the
            warm-up, falling along half a cosine to 0 at the end of ``epochs`` (Loshchilov &
            Hutter 2017, *SGDR*), so that the last epochs fine-tune with small steps instead of
            jumping around the minimum. Its length is ``epochs``: resuming with another number
            of epochs changes the schedule.
        warmup_steps: optimiser steps over which the learning rate rises linearly from
            ``lr / warmup_steps`` to ``lr`` (0: none); for ``"cosine"`` only.

    Raises:
        ValueError: a value out of range, an unknown level, or ``resume`` without a
            ``checkpoint_path``.
    """

    batch_size: int = 32
    early_stopping_patience: int | None = 5
    early_stopping_min_delta: float = 0.0
    restore_best: bool = True
    level: str | None = None
    lr_schedule: str = "constant"
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        check_int(self.warmup_steps, "warmup_steps", 0, note="0: no warm-up")
        value = self.batch_size
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {value!r}")
        patience = self.early_stopping_patience
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 1):
            raise ValueError(
                f"early_stopping_patience must be an int >= 1 or None (no early stopping), got "
                f"{patience!r}"
            )
        if self.early_stopping_min_delta < 0:
            raise ValueError(
                f"early_stopping_min_delta must be >= 0, got {self.early_stopping_min_delta!r}"
            )
        if self.level is not None and not isinstance(self.level, str):
            raise ValueError(f"level must be None (VQ-VAE codes) or a level name ('top' or "
                             f"'bottom' for VQ-VAE-2 codes), got {self.level!r}")


class LevelData(NamedTuple):
    """What a prior trains on: targets (N, H, W) int64, labels (N,) int64 or None, the
    conditioning map (N, h, w) int64 or None, and the image size for bits per dim."""

    target: Tensor
    labels: Tensor | None
    cond: Tensor | None
    image_dims: int


def level_data(prior: AutoregressivePrior, codes: object, level: str | None,
               argument: str) -> LevelData:
    """Select and check the codes, labels and conditioning a prior needs from a code set: the
    level ``level`` (``None``: the only one), its labels if the prior is class-conditional, and
    the level before it (coarsest first: VQ-VAE-2's top codes for the bottom level) if the
    prior is conditioned on a code map. Code values were checked when the code set was made;
    the labels are checked here, once.

    Raises:
        TypeError: ``codes`` is not a :class:`CodeDataset`.
        ValueError: the level does not fit the codes, the prior's K or conditioning does not
            fit the codes, labels missing for a class-conditional prior, or no codes.
    """
    if not isinstance(codes, CodeDataset):
        raise TypeError(
            f"{argument} must be a CodeDataset (from vqlesson.codes.extract_codes), got "
            f"{type(codes).__name__}"
        )
    if len(codes) == 0:
        raise ValueError(f"{argument} holds no code maps")
    c, levels = prior.config, codes.levels
    name = _level_name(levels, level, argument)
    k = codes.codebook_sizes[name]
    if c.codebook_size != k:
        raise ValueError(
            f"the prior models K = {c.codebook_size} codes but level {name!r} of {argument} has "
            f"K = {k}; build the prior with codebook_size={k} (e.g. prior_config_for(profile, {k}))"
        )
    cond = None
    if c.cond_codebook_size:
        index = levels.index(name)
        if index == 0:
            below = " or ".join(f"level={n!r}" for n in levels[1:]) or "a finer level"
            raise ValueError(
                "this prior is conditioned on a code map (cond_codebook_size > 0), which only a "
                "level below another has (VQ-VAE-2's bottom, conditioned on the top codes); use "
                f"{below} or build the prior with cond_codebook_size=0")
        above = levels[index - 1]
        if c.cond_codebook_size != codes.codebook_sizes[above]:
            raise ValueError(
                f"the prior's cond_codebook_size {c.cond_codebook_size} must equal the {above} "
                f"level's K = {codes.codebook_sizes[above]}")
        cond = codes.level(above)
    labels = codes.labels if c.num_classes else None
    if labels is not None and (int(labels.min()) < 0 or int(labels.max()) >= c.num_classes):
        raise ValueError(
            f"the prior is class-conditional (num_classes = {c.num_classes}) but {argument} "
            f"has labels in [{int(labels.min())}, {int(labels.max())}] (-1: unlabelled); "
            "use labelled data or build the prior with num_classes=0")
    return LevelData(codes.level(name), labels, cond, codes.image_dims)


def _level_name(levels: tuple[str, ...], level: str | None, argument: str) -> str:
    """The level a prior models: ``level``, or the only one when ``level`` is ``None``.

    Raises:
        ValueError: ``level`` is not one of ``levels`` (or ``None`` with several levels).
    """
    if len(levels) == 1 and level in (None, levels[0]):
        return levels[0]
    if len(levels) == 1:
        raise ValueError(f"{argument} are one-level codes ({levels[0]!r}); leave level=None "
                         f"(got level={level!r})")
    if level not in levels:
        choices = " or ".join(f"level={n!r}" for n in levels)
        raise ValueError(f"{argument} have the levels {levels}: set {choices} in "
                         f"PriorTrainConfig (got level={level!r})")
    return level


def _batch(data: LevelData, index: Tensor, device: torch.device
           ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Targets (B, H, W), labels (B,) or None and conditioning (B, h, w) or None on ``device``."""
    target = data.target[index].to(device, non_blocking=True)
    label = data.labels[index].to(device) if data.labels is not None else None
    cond = data.cond[index].to(device, non_blocking=True) if data.cond is not None else None
    return target, label, cond


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def _evaluate(prior: AutoregressivePrior, data: LevelData, device: torch.device, batch_size: int,
              amp: bool, distributed: bool = False) -> dict[str, float]:
    """NLL of ``data`` (see :func:`evaluate_prior`). With ``distributed`` under a process
    group, each process takes every W-th code map from its rank on and the bits are summed
    over the processes."""
    autocast, amp_dtype, _ = amp_settings(device, amp)
    shard = distributed and is_distributed()
    total_bits = torch.zeros((), dtype=torch.float64, device=device)
    indices = torch.arange(len(data.target))  # (N,)
    if shard:
        indices = indices[rank()::world_size()]  # this process's disjoint share, no padding
    with eval_mode(prior):
        for index in indices.split(batch_size):
            target, label, cond = _batch(data, index, device)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
                logits = prior.logits(target, label, cond)  # (B, K, H, W)
            total_bits += nll(logits, target, reduction="none").double().sum()
    if shard:
        all_reduce_sum_(total_bits)
    n_images = int(data.target.shape[0])
    codes_per_image = int(data.target.shape[1] * data.target.shape[2])
    bits_per_image = float(total_bits) / n_images
    return {
        "bits_per_code": bits_per_image / codes_per_image,
        "bits_per_dim": bits_per_image / data.image_dims,
        "bits_per_image": bits_per_image,
        "num_images": float(n_images),
    }


def evaluate_prior(prior: AutoregressivePrior, codes: CodeDataset,
                   device: str | torch.device | None = None, *, level: str | None = None,
                   batch_size: int = 64, image_shape: Sequence[int] | None = None,
                   amp: bool = False, distributed: bool = False) -> dict[str, float]:
    """Negative log-likelihood of a split's code maps under the prior (eval mode, no_grad).

    Args:
        prior: a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` (moved to ``device`` if given).
        codes: the split's :class:`CodeDataset`.
        device: where to evaluate; ``None``: the prior's device.
        level: ``"top"``/``"bottom"`` for VQ-VAE-2 codes, ``None`` for VQ-VAE codes.
        batch_size: code maps per forward pass.
        image_shape: (C, H, W) of the images; default: the one stored with the codes.
        amp: autocast (bf16/fp16) on CUDA; the NLL is still summed in float64.
        distributed: under a ``torch.distributed`` process group, each process evaluates a
            disjoint share of the code maps and the bits are all-reduced, so every process
            returns the whole split's values; every process must then call it. Without a
            process group it changes nothing.

    Returns:
        ``bits_per_code`` (mean NLL per code position, bits; log2 K for a uniform guess),
        ``bits_per_dim`` (bits of one image's code map of this level / C·H·W of the image;
        for VQ-VAE-2 the two levels' values add up to the model's), ``bits_per_image`` (bits
        of one code map) and ``num_images``, all floats.

    Raises:
        TypeError, ValueError: see :func:`train_prior` (codes that do not fit the prior).
    """
    check_prior(prior)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    data = level_data(prior, codes, level, "codes")
    if image_shape is not None:
        dims = math.prod(int(s) for s in image_shape)
        if dims < 1:
            raise ValueError(
                f"image_shape must be (C, H, W) of positive sizes, got {image_shape!r}"
            )
        data = data._replace(image_dims=dims)
    if device is not None:
        prior.to(device)
    return _evaluate(prior, data, model_device(prior), batch_size, amp, distributed)


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def scheduled_lr(config: PriorTrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of a run of ``total_steps``
    (``epochs`` x steps per epoch) under ``config.lr_schedule``, > 0 while ``step`` <
    ``total_steps``."""
    if config.lr_schedule == "constant":
        return config.lr
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    progress = min(step / max(total_steps, 1), 1.0)
    return config.lr * warm * 0.5 * (1.0 + math.cos(math.pi * progress))


def _train_one_epoch(prior: AutoregressivePrior, data: LevelData, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, device: torch.device, autocast: bool,
                     amp_dtype: torch.dtype, config: PriorTrainConfig, shuffle: torch.Generator,
                     epoch: int, step: int, step_losses: list[float]) -> tuple[float, int, int]:
    """One pass in a random order. Returns (train bits per code, new global step, codes seen).

    Under a process group the permutation (the same on every process) is sharded with
    :func:`~vqlesson.distributed.shard_order`, and the logged loss and code counts are those of
    the global batch."""
    synced = is_distributed()
    prior.train()
    order = shard_order(torch.randperm(len(data.target), generator=shuffle))  # (N,) or a share
    total_bits, n_codes = 0.0, 0
    bar = tqdm(order.split(config.batch_size), desc=f"prior epoch {epoch}/{config.epochs}",
               disable=not config.progress or not is_main_process(), unit="batch")
    total_steps = config.epochs * math.ceil(len(order) / config.batch_size)
    for batch_index, index in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(config, step, total_steps)
        target, label, cond = _batch(data, index, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
            out = prior(target, label, cond)
        positions = target.numel()
        if synced:  # the global batch's mean loss: position-weighted over all processes
            packed = torch.stack([out.loss.detach().double() * positions,
                                  torch.tensor(float(positions), dtype=torch.float64,
                                               device=device)])
            all_reduce_sum_(packed)  # (2,) float64
            positions = int(packed[1].item())
            loss = float(packed[0] / packed[1])
        else:
            loss = float(out.loss.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"non-finite prior loss ({loss}) at epoch {epoch} of {config.epochs}, step "
                f"{step + 1} (batch {batch_index + 1} of this epoch). Training stopped instead of "
                f"continuing with corrupt weights. Try a lower learning rate (lr={config.lr:g}), "
                "amp=False (full precision) or grad_clip=1.0."
            )
        optimizer_step(out.loss, prior, optimizer, scaler, config.grad_clip)
        step += 1
        total_bits += loss / LN2 * positions
        n_codes += positions
        step_losses.append(loss)
        bar.set_postfix({"bits/code": f"{loss / LN2:.3f}"}, refresh=False)
    bar.close()
    return total_bits / max(n_codes, 1), step, n_codes


def _early_stopped(history: dict[str, list], patience: int | None) -> bool:
    if patience is None or not history.get("best_epoch") or not history.get("val_bits_per_code"):
        return False
    return history["epoch"][-1] - history["best_epoch"][-1] >= patience


def train_prior(prior: AutoregressivePrior, train_codes: CodeDataset, val_codes: CodeDataset | None,
                config: PriorTrainConfig | None = None,
                callback: Callable[[dict[str, list]], None] | None = None) -> dict[str, list]:
    """Fit a PixelCNN prior to code maps by maximum likelihood (AdamW on the cross-entropy).

    Per epoch: a shuffled pass over ``train_codes`` (tqdm shows the running bits per code), then
    the validation NLL on ``val_codes``. The epoch with the lowest validation bits per code is
    the best one; its weights are kept (in memory, in the checkpoint, and in
    :func:`best_checkpoint_path`) and put back into ``prior`` at the end (``restore_best``).
    Early stopping ends the run after ``early_stopping_patience`` epochs without improvement.
    Conditioning follows the prior's config: the codes' labels when ``num_classes > 0``, the
    top codes for a VQ-VAE-2 bottom prior with ``cond_codebook_size > 0``.

    Checkpoints (``config.checkpoint_path``, after every epoch) hold the weights, optimiser,
    ``GradScaler``, counters, history, best weights and random-number-generator states (shuffle
    order and dropout included), so on the CPU a resumed run reproduces an uninterrupted one
    step for step (2 epochs + 1 resumed epoch == 3 epochs).

    Args:
        prior: a :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` (moved to the chosen device).
        train_codes: :class:`CodeDataset` of the training split.
        val_codes: :class:`CodeDataset` of the validation split, or ``None`` (no validation,
            no early stopping, the last weights are kept).
        config: :class:`PriorTrainConfig` (defaults when ``None``); ``level`` picks the VQ-VAE-2
            level.
        callback: ``callback(history)`` after every epoch (e.g. a live plot); the
            random-number generators are restored after it, so it never changes training.

    Under torchrun (a ``torch.distributed`` process group) every process calls it with the same
    arguments: ``config.batch_size`` is per process, the history (the same on every process but
    for each one's timings) holds the global batch's losses, ``prior`` ends equal on every
    process, and only rank 0 writes checkpoints and calls ``callback``.

    Returns:
        History, per-epoch lists: ``epoch`` (1-based), ``lr``, ``train_bits_per_code``,
        ``val_bits_per_code`` and ``val_bits_per_dim`` (with ``val_codes``), ``best_epoch``
        (best so far), ``epoch_time_s`` (s), ``codes_per_s`` (training code positions per
        second); plus ``step_loss``, the loss of every step in nats per code.

    Raises:
        FloatingPointError: a non-finite loss (epoch and step named).
        TypeError: ``prior`` not a PixelCNNPrior, codes not a CodeDataset.
        ValueError: codes that do not fit the prior (K, level, labels, conditioning), or a
            checkpoint of another prior config or level, or trained on other codes, when
            resuming.
    """
    config = config if config is not None else PriorTrainConfig()
    if not isinstance(config, PriorTrainConfig):
        raise TypeError(f"config must be a PriorTrainConfig, got {type(config).__name__}")
    check_prior(prior)
    train_data = level_data(prior, train_codes, config.level, "train_codes")
    val_data = (level_data(prior, val_codes, config.level, "val_codes")
                if val_codes is not None else None)
    device = process_device(get_device(config.device))
    seed_everything(config.seed + rank())  # dropout differs between processes; rank 0 = 1 process
    shuffle = torch.Generator().manual_seed(config.seed)  # the same permutations everywhere
    prior.to(device)
    autocast, amp_dtype, needs_scaler = amp_settings(device, config.amp)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if needs_scaler else None

    history, step, start_epoch, best_state = _resume(config, prior, optimizer, scaler, device,
                                                     shuffle, train_codes)
    # The last Gated PixelCNN block's horizontal output feeds nothing when skip connections are
    # on, so DDP must look for parameters without a gradient.
    trained = wrap_ddp(prior, device, find_unused_parameters=True)
    history.setdefault("step_loss", [])
    best = _Best(history, best_state, config.early_stopping_min_delta)
    patience = config.early_stopping_patience if val_data is not None else None
    extra = {"level": config.level, "classes": list(train_codes.classes),
             "image_shape": list(train_codes.image_shape), "train_config": dataclasses.asdict(config),
             "codes_fingerprint": train_codes.fingerprint}
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if _early_stopped(history, patience):
            break
        start = time.perf_counter()
        train_bits, step, n_codes = _train_one_epoch(
            trained, train_data, optimizer, scaler, device, autocast, amp_dtype, config, shuffle,
            epoch, step, history["step_loss"],
        )
        train_seconds = time.perf_counter() - start
        val = (_evaluate(prior, val_data, device, config.batch_size, config.amp, distributed=True)
               if val_data is not None else None)
        record = {"epoch": epoch, "lr": float(optimizer.param_groups[0]["lr"]),
                  "train_bits_per_code": train_bits,
                  **({"val_bits_per_code": val["bits_per_code"],
                      "val_bits_per_dim": val["bits_per_dim"]} if val is not None else {})}
        improved = best.update(epoch, val["bits_per_code"] if val else None, prior)
        record.update(best_epoch=best.epoch, epoch_time_s=time.perf_counter() - start,
                      codes_per_s=n_codes / max(train_seconds, 1e-9))
        append_record(history, record)
        path = config.checkpoint_path
        also = ([(best_checkpoint_path(path), dict(step=step, epoch=epoch, history=history,
                                                   extra=extra))]  # the new best weights
                if path is not None and improved and val is not None else [])
        rng_state = save_epoch(path, prior, [shuffle], also=also, optimizer=optimizer,
                               scaler=scaler, step=step, epoch=epoch, history=history,
                               extra={**extra, "best_state": dict(best.state or {})})
        call_back(callback, history, rng_state, [shuffle])
    if config.restore_best and val_data is not None and best.state is not None:
        prior.load_state_dict(best.state)
    return history


def _resume(config: PriorTrainConfig, prior: AutoregressivePrior, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler | None, device: torch.device, shuffle: torch.Generator,
            train_codes: CodeDataset) -> tuple[dict[str, list], int, int, dict | None]:
    """``(history, step, epochs done, best weights or None)`` of the checkpoint a run continues
    from, with the weights, optimiser, scaler and generator states put back; a fresh run's
    ``({}, 0, 0, None)`` when there is none.

    Raises:
        ValueError: see :func:`_check_same_codes` and :func:`~vqlesson.loop.resume_from`.
    """
    checkpoint = resume_from(config, prior, device)
    if checkpoint is None:
        return {}, 0, 0, None
    _check_same_codes(checkpoint, config, train_codes)
    restore_training(checkpoint, prior, optimizer, scaler, device)
    restore_rng(checkpoint, [shuffle], config.seed)
    return (checkpoint.history, checkpoint.step, checkpoint.epoch,
            checkpoint.extra.get("best_state") or None)


class _Best:
    """The best validation epoch so far, its bits per code and its weights (for early stopping
    and ``restore_best``). Without validation every epoch counts as the best."""

    def __init__(self, history: dict[str, list], state: dict[str, Tensor] | None,
                 min_delta: float) -> None:
        self.epoch = history["best_epoch"][-1] if history.get("best_epoch") else None
        self.bits = math.inf  # the validation bits of the best epoch (min_delta: not the min)
        if self.epoch is not None and history.get("val_bits_per_code"):
            self.bits = history["val_bits_per_code"][history["epoch"].index(self.epoch)]
        self.state = state
        self.min_delta = min_delta

    def update(self, epoch: int, val_bits: float | None, prior: AutoregressivePrior) -> bool:
        """Record ``epoch``'s validation bits per code (``None``: no validation); True when
        it is the new best (its weights are then kept, on the CPU)."""
        improved = val_bits is None or self.epoch is None or val_bits < self.bits - self.min_delta
        if improved and val_bits is not None:
            self.bits = val_bits
            self.state = {k: v.detach().cpu().clone() for k, v in prior.state_dict().items()}
        if improved:
            self.epoch = epoch
        return improved


def _check_same_codes(checkpoint: Checkpoint, config: PriorTrainConfig,
                      train_codes: CodeDataset) -> None:
    """A resumed prior continues on the same level and the same codes.

    Raises:
        ValueError: the checkpoint holds another level, or was trained on other codes.
    """
    path = config.checkpoint_path
    stored_level = checkpoint.extra.get("level")
    only = train_codes.levels[0] if len(train_codes.levels) == 1 else None
    if (stored_level or only) != (config.level or only):  # one level: None names it too
        raise ValueError(
            f"checkpoint {path!r} holds a prior of level {stored_level!r}, this run "
            f"trains level {config.level!r}; use another checkpoint path"
        )
    stored_codes = checkpoint.extra.get("codes_fingerprint") or ""
    if stored_codes and train_codes.fingerprint and stored_codes != train_codes.fingerprint:
        raise ValueError(
            f"checkpoint {path!r} was trained on other codes (another VQ-VAE checkpoint "
            "or other data) than train_codes; start without resume to train a new prior"
        )
