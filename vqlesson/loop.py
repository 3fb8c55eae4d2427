"""What the two training loops share: the common settings, mixed precision, one optimiser step,
resuming from a checkpoint and the end-of-epoch checkpoint.

The loops themselves stay explicit and separate, one per model family:
:func:`vqlesson.train.train_vqvae` (autoencoders) and :func:`vqlesson.prior.train_prior`
(PixelCNN priors). Both follow the same recipe, which this module holds once:

1. ``resume_from`` finds and validates the checkpoint to continue from (every process agrees
   under torchrun), ``restore_training`` puts the weights, optimiser, ``GradScaler`` and
   random-number-generator states back;
2. each epoch ends with ``save_epoch``: the random-number-generator states at the epoch
   boundary (of every process) go into an atomic checkpoint written by rank 0, and every process
   waits until it is complete;
3. ``call_back`` runs the user's callback and restores the random-number generators, so a
   callback (a live plot) never changes training.

On the CPU this makes a resumed run reproduce an uninterrupted one step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .distributed import (
    barrier,
    check_resume_everywhere,
    gather_rng_states,
    is_main_process,
    reseed_for_rank,
    rng_state_for_this_rank,
)
from .validate import check_int, check_number


@dataclass
class LoopConfig:
    """The settings every training loop has (:class:`~vqlesson.train.TrainConfig` and
    :class:`~vqlesson.prior.PriorTrainConfig` add their own).

    Attributes:
        epochs: total epochs (a resumed run continues up to this number), >= 0.
        lr: learning rate (> 0). The default 1e-3 suits the course's short runs of small models.
        weight_decay: decoupled weight decay (AdamW) / L2 (SGD), >= 0.
        amp: mixed precision on CUDA (bf16 where the GPU has it natively, else fp16 with a
            ``GradScaler``); ignored on CPU and MPS.
        grad_clip: clip the global gradient norm to this value; ``None`` or 0 disables it.
        seed: seeds ``random``, NumPy and torch at the start of a fresh run.
        checkpoint_path: file saved after every epoch (atomic); ``None``: no checkpoint.
        resume: continue from ``checkpoint_path`` when it exists (same model class and config);
            start fresh when it does not. With ``resume=False`` an existing checkpoint is
            overwritten after the first epoch.
        progress: show a ``tqdm`` bar per epoch.
        device: ``"cpu"``, ``"cuda"``, ``"mps"``...; ``None`` picks one (``get_device``).

    Raises:
        ValueError: a value out of range, or ``resume`` without a ``checkpoint_path``.
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.0
    amp: bool = True
    grad_clip: float | None = 1.0
    seed: int = 0
    checkpoint_path: str | None = None
    resume: bool = False
    progress: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", 0)
        check_number(self.lr, "lr", 0, low_open=True)
        check_number(self.weight_decay, "weight_decay", 0)
        if self.grad_clip is not None:
            check_number(self.grad_clip, "grad_clip", 0, note="0 or None: no clipping")
        if self.resume and self.checkpoint_path is None:
            raise ValueError("resume=True needs a checkpoint_path to resume from")
        if self.checkpoint_path is not None:
            self.checkpoint_path = str(self.checkpoint_path)


# --------------------------------------------------------------------------------------------
# Mixed precision and one optimiser step
# --------------------------------------------------------------------------------------------
def amp_settings(device: torch.device, amp: bool) -> tuple[bool, torch.dtype, bool]:
    """``(autocast enabled, autocast dtype, needs a GradScaler)``: mixed precision on CUDA only.

    bf16 only where the GPU computes it natively (Ampere and newer); elsewhere (a T4, say)
    fp16 with a ``GradScaler``, because emulated bf16 is slower than fp32."""
    if not amp or device.type != "cuda":
        return False, torch.float32, False
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return True, torch.bfloat16, False
    return True, torch.float16, True


def optimizer_step(
    loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None, grad_clip: float | None,
) -> None:
    """One update: zero the gradients, backpropagate ``loss`` (scaled when a ``GradScaler`` is
    given, for fp16), clip the global gradient norm to ``grad_clip`` (``None`` or 0: no
    clipping; unscaled first), then step the optimiser (through the scaler, which skips steps
    with inf/NaN gradients). Shared by the autoencoder and prior trainers."""
    clip = grad_clip is not None and grad_clip > 0
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        if clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()


# --------------------------------------------------------------------------------------------
# Resuming
# --------------------------------------------------------------------------------------------
def resume_from(config: LoopConfig, model: nn.Module, device: torch.device) -> Checkpoint | None:
    """The checkpoint to continue from, or ``None`` for a fresh run.

    ``None`` unless ``config.resume`` is set and ``config.checkpoint_path`` exists. Under
    torchrun every process must see the file (or none may). The checkpoint must hold the same
    model class and config as ``model``.

    Raises:
        ValueError: a checkpoint of another model class or config; under torchrun, a checkpoint
            that not every process can see.
    """
    path = Path(config.checkpoint_path) if config.checkpoint_path is not None else None
    resuming = config.resume and path is not None and path.exists()
    if config.resume:
        check_resume_everywhere(resuming, path, device)
    if not resuming:
        return None
    return load_checkpoint(path, map_location="cpu", expected_class=type(model),
                           expected_config=model.config)


def restore_training(checkpoint: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler | None, device: torch.device) -> None:
    """Put a checkpoint's weights (on ``device``), optimiser and ``GradScaler`` state back."""
    model.load_state_dict(checkpoint.model.state_dict())
    model.to(device)
    if checkpoint.optimizer_state is not None:
        optimizer.load_state_dict(checkpoint.optimizer_state)
    if scaler is not None and checkpoint.scaler_state:
        scaler.load_state_dict(checkpoint.scaler_state)


def restore_rng(checkpoint: Checkpoint, generators: Sequence[torch.Generator], seed: int,
                reseed: Sequence[torch.Generator] = ()) -> None:
    """Put the random-number-generator states of this process back (the epoch boundary).

    A checkpoint written by another number of processes has no exact state for this rank:
    then every stream (and the ``reseed`` generators) is seeded afresh from ``seed``, the rank
    and the epoch, so that the processes still differ.

    Raises:
        ValueError: the checkpoint was written with another number of generators.
    """
    if checkpoint.rng_state is None:
        return
    rng_state, exact = rng_state_for_this_rank(checkpoint.rng_state)
    stored = len(rng_state.get("generators", []))
    if stored != len(generators):
        raise ValueError(
            f"the checkpoint was written with data loaders drawing from {stored} "
            f"torch.Generator(s), these loaders have {len(generators)}; build the loaders the "
            "same way to resume."
        )
    set_rng_state(rng_state, generators)
    if not exact:  # written by another number of processes: fresh streams per rank
        reseed_for_rank(seed, checkpoint.epoch, reseed)


# --------------------------------------------------------------------------------------------
# The end of an epoch
# --------------------------------------------------------------------------------------------
def append_record(history: dict[str, list], record: dict[str, float]) -> None:
    """Append one epoch's values to the history's per-epoch lists (new keys start a list)."""
    for key, value in record.items():
        history.setdefault(key, []).append(value)


def save_epoch(path: str | Path | None, model: nn.Module, generators: Sequence[torch.Generator],
               *, also: Sequence[tuple[Path, dict[str, Any]]] = (),
               **checkpoint: Any) -> dict[str, Any]:
    """The epoch boundary: snapshot the random-number generators and write the checkpoint.

    Every process calls it (the states of all processes are gathered); rank 0 writes
    ``path`` atomically with :func:`~vqlesson.checkpoint.save_checkpoint` (``checkpoint``:
    its keyword arguments, e.g. ``optimizer``, ``step``, ``history``, ``extra``), then each
    ``(other path, keyword arguments)`` of ``also`` (e.g. the best weights), and every process
    waits until the files are complete. ``path=None`` writes nothing.

    Returns:
        This process's random-number-generator state (what :func:`call_back` restores).
    """
    rng_state = get_rng_state(generators)
    if path is not None:
        every_rank = gather_rng_states(rng_state)  # collective: every rank's streams
        if is_main_process():
            save_checkpoint(path, model, rng_state=every_rank, **checkpoint)
            for other, kwargs in also:
                save_checkpoint(other, model, rng_state=every_rank, **kwargs)
        barrier()  # the files are complete before any process may read them
    return rng_state


def call_back(callback: Callable[[dict[str, list]], None] | None, history: dict[str, list],
              rng_state: dict[str, Any], generators: Sequence[torch.Generator]) -> None:
    """Run ``callback(history)`` on rank 0, then restore the random-number generators, so a
    callback never changes training."""
    if callback is not None and is_main_process():
        callback(history)
        set_rng_state(rng_state, generators)
