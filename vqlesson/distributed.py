"""Data-parallel training over several processes: torchrun and PyTorch's DistributedDataParallel.

PyTorch's DDP (Li et al. 2020, *PyTorch Distributed: Experiences on Accelerating Data Parallel
Training*, VLDB, §3) keeps one replica of the model per process, broadcasts rank 0's parameters
and buffers when the model is wrapped, and averages the gradients across processes during the
backward pass (bucketed all-reduce), so every replica takes the same optimiser step. Each process
reads its own shard of the data (``DistributedSampler``): with a batch of B per process and W
processes, one step sees W x B images, as a single process would with a batch of W x B.

What DDP does not do, and this course adds, is keeping *state updated outside the gradient* in
step: the VQ-VAE's EMA codebook (van den Oord et al. 2017, appendix A.1), its usage counts, the
k-means initialisation and dead-code restarts (see :mod:`vqlesson.quantize`). The quantiser uses
the collectives below so that every process holds the same codebook after every step.

Launch: ``torchrun --nproc_per_node=N -m vqlesson train-vqvae ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed`
reads them. Without torchrun nothing is initialised and every helper here is a no-op (one
process is rank 0 of a world of 1), so single-process code runs exactly as before.

This module reads top to bottom: process-group state (:func:`init_distributed`, :func:`rank`,
:func:`world_size`, :func:`is_main_process`, :func:`barrier`), collectives on tensors, data
sharding (:func:`shard_loader`, :func:`shard_order`), the model wrapper (:func:`wrap_ddp`), and
every process's random-number state in checkpoints (:func:`gather_rng_states`).
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, RandomSampler, Sampler

from .runtime import get_device, seed_everything
from .validate import check_choice

#: Environment variables torchrun sets for every process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
BACKENDS = ("nccl", "gloo")


# --------------------------------------------------------------------------------------------
# Process group
# --------------------------------------------------------------------------------------------
class DistInfo(NamedTuple):
    """Where this process stands. Without torchrun: ``(0, 1, 0, None, device)``.

    Attributes:
        rank: global index of this process in ``[0, world_size)``; rank 0 writes all files.
        world_size: number of processes (>= 1).
        local_rank: index of this process on its machine (its GPU index with CUDA).
        backend: ``"nccl"`` (GPUs), ``"gloo"`` (CPUs) or ``None`` (not distributed).
        device: the device this process computes on (``cuda:LOCAL_RANK`` with NCCL).
    """

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device


def launched_by_torchrun() -> bool:
    """``True`` when torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are all set."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def is_distributed() -> bool:
    """``True`` once a process group is initialised (by :func:`init_distributed` or the caller)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """Global rank of this process; 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes; 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """Rank of this process on its machine (``LOCAL_RANK``); 0 without a process group."""
    return int(os.environ.get("LOCAL_RANK", 0)) if is_distributed() else 0


def is_main_process() -> bool:
    """``True`` on rank 0, and always without torchrun: the process that prints and writes."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here; a no-op without a process group."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":  # name this process's GPU, or NCCL guesses it
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def process_device(device: str | torch.device) -> torch.device:
    """The device of this process: a bare ``"cuda"`` becomes ``cuda:LOCAL_RANK`` under a
    process group (one GPU per process); anything else is returned as it is."""
    device = torch.device(device)
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def init_distributed(device: str | torch.device | None = None,
                     backend: str | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's environment variables.

    Does nothing (and returns rank 0 of 1) when torchrun did not start this process, and
    nothing more when a process group already exists.

    Args:
        device: the device asked for (``"cpu"``, ``"cuda"``); ``None``: as
            :func:`~vqlesson.runtime.get_device` (``$VQLESSON_DEVICE``, else CUDA when
            available, else the CPU). It picks the backend: NCCL for CUDA (with
            ``torch.cuda.set_device(LOCAL_RANK)``: one GPU per process), gloo for the CPU.
        backend: force ``"nccl"`` or ``"gloo"``.

    Returns:
        :class:`DistInfo` of this process.

    Raises:
        ValueError: an unknown backend, a device other than CPU or CUDA, NCCL without CUDA, or
            more processes on this machine than GPUs (``LOCAL_RANK`` >= the visible GPUs).
        RuntimeError: torch was built without ``torch.distributed``.
    """
    device = get_device(device)
    if not launched_by_torchrun() and not is_distributed():
        return DistInfo(0, 1, 0, None, device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"data-parallel training runs on CUDA (nccl) or the CPU (gloo), not on "
                         f"{device.type!r}; pass --device cpu or --device cuda")
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run a single process "
                           "(python -m vqlesson ...) instead of torchrun")
    if backend is None:
        backend = "nccl" if device.type == "cuda" else "gloo"
    check_choice(backend, "backend", BACKENDS)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda" or backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError(f"backend {backend!r} / device {str(device)!r} need CUDA, which is "
                             "not available here; use --device cpu (gloo)")
        if local >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) are visible on "
                f"this machine; start at most {torch.cuda.device_count()} processes per node "
                "(torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(local)
        if device.index is None:
            device = torch.device("cuda", local)
    if not is_distributed():
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, dist.get_backend(), device)


def destroy_distributed() -> None:
    """Tear the process group down (a no-op without one)."""
    if is_distributed():
        dist.destroy_process_group()


@contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a cache), then the other ranks run it (and
    read what rank 0 wrote). Without a process group it just runs the block."""
    if not is_main_process():
        barrier()
    yield  # an exception skips the barrier below: torchrun then stops the waiting processes
    if is_main_process():
        barrier()


# --------------------------------------------------------------------------------------------
# Collectives (no-ops without a process group)
# --------------------------------------------------------------------------------------------
def all_reduce_sum_(tensor: Tensor) -> Tensor:
    """Sum ``tensor`` over all processes, in place; returns it. On the tensor's device (CUDA
    with NCCL, CPU with gloo); any shape and dtype the backend supports."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``tensor`` with rank ``src``'s, in place; returns it. Every process must pass a
    tensor of the same shape and dtype."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_gather_rows(x: Tensor) -> Tensor:
    """Concatenate every process's rows, in rank order.

    Args:
        x: (N_r, ...) on this process; N_r may differ between processes, the other dimensions
            and the dtype may not.

    Returns:
        (sum of N_r, ...): rank 0's rows first. ``x`` itself without a process group.
    """
    if not is_distributed():
        return x
    count = torch.tensor([x.shape[0]], device=x.device, dtype=torch.int64)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))  # (max N_r, ...)
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])  # (sum N_r, ...)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's (picklable) ``obj``, in rank order; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_agree(flag: bool, device: torch.device | str = "cpu") -> tuple[bool, bool]:
    """``(all true, any true)`` of a per-process flag; ``(flag, flag)`` without a process group.
    ``device`` must suit the backend (CUDA for NCCL)."""
    if not is_distributed():
        return flag, flag
    count = torch.tensor([float(flag)], device=device)
    all_reduce_sum_(count)
    n = int(count.item())
    return n == world_size(), n > 0


def check_resume_everywhere(resuming: bool, path: object, device: torch.device | str = "cpu"
                            ) -> None:
    """Under a process group, make sure every process resumes or none does (a collective: every
    process must call it); a no-op without one.

    Raises:
        ValueError: the checkpoint ``path`` exists for some processes but not for others.
    """
    everywhere, anywhere = all_agree(resuming, device)
    if everywhere != anywhere:
        raise ValueError(
            f"checkpoint {str(path)!r} exists for some processes but not for others; put the "
            "run folder on a file system every process sees (or resume on one machine)"
        )


# --------------------------------------------------------------------------------------------
# Data sharding
# --------------------------------------------------------------------------------------------
class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + W, rank + 2W, ...`` of a data set of ``n`` items, in order, without
    padding: the shards of all processes together hold every item exactly once (for evaluation;
    shard sizes may differ by one).

    Raises:
        ValueError: ``n < 0`` or a rank outside ``[0, world)``.
    """

    def __init__(self, n: int, rank_: int, world: int) -> None:
        if n < 0 or not 0 <= rank_ < world:
            raise ValueError(f"need n >= 0 and 0 <= rank < world, got n={n}, rank={rank_}, "
                             f"world={world}")
        self.n, self.rank, self.world = n, rank_, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))


def _rebuild(loader: DataLoader, sampler: Sampler, drop_last: bool,
             generator: torch.Generator | None) -> DataLoader:
    """A DataLoader like ``loader`` (batch size, collate, workers, pinning...) with another
    sampler."""
    options: dict[str, Any] = dict(
        batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=drop_last,
        timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context, generator=generator,
        persistent_workers=loader.persistent_workers,
    )
    if loader.num_workers > 0:
        options["prefetch_factor"] = loader.prefetch_factor
    if getattr(loader, "pin_memory_device", ""):
        options["pin_memory_device"] = loader.pin_memory_device
    return DataLoader(loader.dataset, **options)


def _check_map_style(loader: Any, argument: str) -> None:
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"under torchrun {argument} must be a torch.utils.data.DataLoader (it is rebuilt with "
            f"a DistributedSampler so that each process reads its own shard), got "
            f"{type(loader).__name__}"
        )
    if isinstance(loader.dataset, IterableDataset) or loader.batch_size is None:
        raise TypeError(
            f"under torchrun {argument} must be a DataLoader over a map-style data set with a "
            "batch_size (not an IterableDataset or a custom batch_sampler); shard it yourself "
            "with a DistributedSampler and pass that loader"
        )


def shard_loader(loader: DataLoader, seed: int, argument: str = "train_loader") -> DataLoader:
    """This process's shard of a training loader (a ``DistributedSampler``); ``loader`` itself
    without a process group or when it already uses a ``DistributedSampler``.

    The shard sampler shuffles when ``loader`` did (a ``RandomSampler``), with the same
    permutation on every process for a given ``seed`` and epoch (call ``set_epoch``, see
    :func:`set_epoch`); it pads the data set with repeated items to a multiple of the number of
    processes, so every process takes the same number of steps. Batch size (per process),
    collate function, workers and pinning are kept; ``drop_last`` is kept unless the shard is
    not larger than one batch. A seeded loader ``generator`` (the workers' base seed) becomes one
    seeded with its seed + rank, so augmentation differs between processes.

    Raises:
        TypeError: ``loader`` is not a DataLoader over a map-style data set with a batch size.
    """
    if not is_distributed() or isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader
    _check_map_style(loader, argument)
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(),
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=seed,
                                 drop_last=False)
    drop_last = loader.drop_last and sampler.num_samples > loader.batch_size
    generator = None
    if loader.generator is not None:
        generator = torch.Generator().manual_seed(loader.generator.initial_seed() + rank())
    return _rebuild(loader, sampler, drop_last, generator)


def shard_eval_loader(loader: Any) -> Any:
    """This process's disjoint, unpadded share of an evaluation loader (:class:`ShardSampler`,
    no shuffling, no dropped batch), so that sums over all processes count every item once.

    Returned unchanged without a process group, when it is not a map-style DataLoader with a
    batch size, or when the data set has fewer items than there are processes: then every
    process evaluates all of it, and averages over the processes are still those of the split.
    """
    if not is_distributed() or not isinstance(loader, DataLoader):
        return loader
    if isinstance(loader.dataset, IterableDataset) or loader.batch_size is None:
        return loader
    n = len(loader.dataset)
    if n < world_size():
        return loader
    return _rebuild(loader, ShardSampler(n, rank(), world_size()), False, loader.generator)


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell a ``DistributedSampler`` the epoch (it seeds the shuffle with seed + epoch); nothing
    for other loaders or without a process group."""
    sampler = getattr(loader, "sampler", None)
    if is_distributed() and isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)


def shard_order(order: Tensor) -> Tensor:
    """This process's share of a permutation that is the same on every process.

    Pads ``order`` (N,) by repeating its start to a multiple of the number of processes W, then
    takes every W-th item from this rank on (as ``DistributedSampler`` does): the shards have
    equal length, and the b-th batches of all processes together are the items a single
    process with a W times larger batch would take (the last batch aside, which is padded).

    Returns:
        (ceil(N / W),) int64; ``order`` itself without a process group.
    """
    if not is_distributed():
        return order
    w = world_size()
    total = -(-order.shape[0] // w) * w
    if total > order.shape[0]:
        repeats = -(-total // order.shape[0])
        order = order.repeat(repeats)[:total]  # (total,)
    return order[rank()::w]


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def wrap_ddp(module: nn.Module, device: torch.device,
             find_unused_parameters: bool = False) -> nn.Module:
    """Wrap ``module`` (already on ``device``) in ``DistributedDataParallel``; ``module`` itself
    without a process group.

    Rank 0's parameters and buffers are broadcast to every process here, so all replicas start
    equal. Buffers are not broadcast again before every forward (``forward_sync_buffers=False``,
    ``broadcast_buffers=False`` before torch 2.13): the quantisers keep theirs in step
    themselves (all-reduced statistics), and broadcasting would hide a drift. Checkpoint
    ``module`` (or ``wrapped.module``), not the wrapper, so no ``module.`` prefix enters the
    state dict.

    Args:
        module: the model.
        device: its device; a CUDA device becomes DDP's ``device_ids``.
        find_unused_parameters: set when some parameters get no gradient in a step (e.g. the
            last block's horizontal output of a Gated PixelCNN with skip connections).
    """
    if not is_distributed():
        return module
    # The weight gradients of 1x1 convolutions can come back with other strides on their size-1
    # dimensions than the weights have: the same memory layout, yet DDP's strict stride check
    # warns once per process that the copy into its buckets "may impair performance". It does
    # not; silence that one message.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides",
                            category=UserWarning)
    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    ddp = nn.parallel.DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return ddp(module, device_ids=device_ids, forward_sync_buffers=False,
                   find_unused_parameters=find_unused_parameters)
    for buffer in module.buffers():  # older torch: broadcast_buffers=False skips them at init too
        broadcast_(buffer)
    return ddp(module, device_ids=device_ids, broadcast_buffers=False,
               find_unused_parameters=find_unused_parameters)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (``module`` itself otherwise)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


# --------------------------------------------------------------------------------------------
# Random-number-generator states per process (checkpoints)
# --------------------------------------------------------------------------------------------
def gather_rng_states(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (this process's :func:`~vqlesson.checkpoint.get_rng_state`) plus, under a
    process group, ``"ranks"``: every process's state in rank order, so that rank 0's checkpoint
    resumes every process's random streams. Every process must call it."""
    if not is_distributed():
        return state
    return {**state, "ranks": all_gather_objects(state)}


def rng_state_for_this_rank(state: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``(state to restore, exact)``: this rank's entry of ``state["ranks"]`` when the
    checkpoint was written by as many processes as there are now (``exact``); else the saved
    state itself (rank 0's), which a single process restores exactly and which other ranks must
    then re-seed (``exact=False`` for ranks > 0)."""
    ranks = state.get("ranks") or []
    if is_distributed() and len(ranks) == world_size():
        return ranks[rank()], True
    return state, rank() == 0


def reseed_for_rank(seed: int, epoch: int, generators: Sequence[torch.Generator] = ()) -> None:
    """Fresh random streams for this rank, distinct from the other ranks', when a checkpoint
    holds no state for it (:func:`rng_state_for_this_rank` said ``exact=False``): seeds
    ``random``, NumPy, torch and ``generators`` from ``seed``, ``epoch`` and the rank."""
    derived = (seed + 1_000_003 * (epoch + 1) + 7919 * rank()) % 2**63
    seed_everything(derived)
    for index, generator in enumerate(generators):
        generator.manual_seed(derived + index + 1)
