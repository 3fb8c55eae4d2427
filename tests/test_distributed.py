"""Data-parallel training (vqlesson.distributed): 2 CPU processes over gloo, as under torchrun.

One module-scoped run spawns 2 processes that train a VQ-VAE (1 epoch, then 1 resumed epoch),
evaluate it, train a PixelCNN prior and feed a NaN batch; each process saves what it saw. The
tests compare the processes with each other (the same codebook after every step, EMA and
restarts included) and with one process given the same global batches (2 x 4 = 8 images per
step), and load rank 0's checkpoints in this single process. The models have no BatchNorm and no
dropout and the data no augmentation, so the two runs differ only by floating-point rounding.
A last test launches the command line itself with torchrun.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from vqlesson import distributed
from vqlesson.checkpoint import load_checkpoint
from vqlesson.pixelcnn_prior import PixelCNNPrior
from vqlesson.codes import CodeDataset
from vqlesson.prior import PriorTrainConfig, evaluate_prior, train_prior
from vqlesson.quantize import QuantizerConfig
from vqlesson.configs import prior_config_for
from vqlesson.train import TrainConfig, evaluate_vqvae, train_vqvae
from vqlesson.vqvae import VQVAE, VQVAEConfig

WORLD = 2
BATCH = 4  # per process; one process gets WORLD * BATCH
N_TRAIN, N_VAL = 16, 7  # 7: the evaluation shards are uneven (4 + 3)
SIZE, K = 16, 16
STEPS_PER_EPOCH = N_TRAIN // (WORLD * BATCH)


# --------------------------------------------------------------------------------------------
# Shared set-up (imported by the spawned processes too)
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def images(n: int, seed: int) -> TensorDataset:
    """n smooth random (3, 16, 16) images in [-1, 1] with 0/1 labels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False) * 2 - 1
    return TensorDataset(x, torch.arange(n) % 2)


def codes(n: int, seed: int) -> CodeDataset:
    g = torch.Generator().manual_seed(seed)
    maps = torch.randint(K, (n, 4, 4), generator=g)
    maps[:, ::2] = maps[:, ::2] % 4  # some structure to learn
    return CodeDataset({"codes": maps}, torch.arange(n) % 2, {"codes": K}, (3, SIZE, SIZE))


def vqvae(seed: int) -> VQVAE:
    torch.manual_seed(seed)
    # restart_dead_after=1: some of the 16 codes go unused in a step, so restarts happen.
    return VQVAE(VQVAEConfig(image_size=SIZE, hidden_channels=8, residual_channels=4,
                             num_residual_blocks=1, codebook_size=K, code_dim=4,
                             quantizer=QuantizerConfig(restart_dead_after=1)))


def prior(seed: int) -> PixelCNNPrior:
    torch.manual_seed(seed)
    return PixelCNNPrior(prior_config_for("ci", K, embed_dim=8, channels=8))


def train_config(**changes) -> TrainConfig:
    return TrainConfig(**{"lr": 1e-2, "amp": False, "progress": False, "device": "cpu",
                          "seed": 0, **changes})


def prior_config(**changes) -> PriorTrainConfig:
    return PriorTrainConfig(**{"epochs": 2, "lr": 1e-2, "amp": False, "progress": False,
                               "device": "cpu", "seed": 0, "early_stopping_patience": None,
                               **changes})


def one_process_order(n: int, world: int, batch: int) -> list[int]:
    """The item order in which one process with a batch of world x batch sees what ``world``
    processes see with ``batch`` each (DistributedSampler without shuffling: rank r reads items
    r, r + world, ...; the quantiser gathers the vectors in rank order)."""
    shards = [list(range(r, n, world)) for r in range(world)]
    order: list[int] = []
    for start in range(0, len(shards[0]), batch):
        for shard in shards:
            order += shard[start:start + batch]
    return order


def _scenarios(out: Path, rank: int) -> None:
    """What each spawned process runs (every process the same calls)."""
    # VQ-VAE: each rank builds other initial weights; DDP must start all from rank 0's.
    model = vqvae(seed=100 + rank)
    records: list[dict] = []

    def record(module, inputs, output) -> None:  # after the step's init / EMA / restarts
        if module.training:
            state = {name: b.clone() for name, b in module.named_buffers()}
            records.append({**state, "restarts": module.last_restarts})

    model.quantizer.register_forward_hook(record)
    train = DataLoader(images(N_TRAIN, 0), batch_size=BATCH)
    val = DataLoader(images(N_VAL, 1), batch_size=BATCH)
    path = out / "vqvae.pt"
    train_vqvae(model, train, val, train_config(epochs=1, checkpoint_path=path))
    history = train_vqvae(model, train, val, train_config(epochs=2, checkpoint_path=path,
                                                          resume=True))
    test = evaluate_vqvae(model, val, distributed=True)
    torch.save({"records": records, "state": model.state_dict(), "history": history,
                "test": test}, out / f"vqvae_rank{rank}.pt")

    # Prior over codes: other initial weights per rank again.
    p = prior(seed=200 + rank)
    history = train_prior(p, codes(N_TRAIN, 2), codes(N_VAL, 3),
                          prior_config(batch_size=BATCH, checkpoint_path=out / "prior.pt"))
    bits = evaluate_prior(p, codes(N_VAL, 3), batch_size=2, distributed=True)
    torch.save({"state": p.state_dict(), "history": history, "bits": bits},
               out / f"prior_rank{rank}.pt")

    # A NaN image in rank 1's first batch only: both processes must stop, none may hang.
    data = images(N_TRAIN, 0)
    data.tensors[0][1] = float("nan")
    try:
        train_vqvae(vqvae(seed=0), DataLoader(data, batch_size=BATCH), None, train_config(epochs=1))
        message = "no error"
    except FloatingPointError as error:
        message = str(error)
    (out / f"nan_rank{rank}.txt").write_text(message)


def _worker(index: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(index))
    torch.set_num_threads(1)
    info = distributed.init_distributed("cpu")
    assert info.backend == "gloo" and info.rank == index and info.world_size == world
    try:
        _scenarios(Path(out), info.rank)
    finally:
        distributed.destroy_distributed()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(WORLD, free_port(), str(out)), nprocs=WORLD,
                       start_method="spawn")
    return out


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


def _assert_close_states(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if a[name].is_floating_point():
            torch.testing.assert_close(a[name], b[name], **tolerance, msg=lambda m: f"{name}: {m}")
        elif name.endswith("usage_counts"):  # counts since the last reset (the test split)
            continue
        else:
            assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------------------------------------
# Without torchrun: one process, every helper a no-op
# --------------------------------------------------------------------------------------------
def test_helpers_without_a_process_group():
    assert not distributed.is_distributed()
    assert distributed.is_main_process() and distributed.rank() == 0
    assert distributed.world_size() == 1
    distributed.barrier()
    info = distributed.init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert not distributed.is_distributed()
    x = torch.arange(6.0).view(3, 2)
    assert distributed.all_gather_rows(x) is x
    assert torch.equal(distributed.all_reduce_sum_(x.clone()), x)
    loader = DataLoader(images(4, 0), batch_size=2, shuffle=True)
    assert distributed.shard_loader(loader, seed=0) is loader
    order = torch.randperm(5)
    assert distributed.shard_order(order) is order
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap_ddp(model, torch.device("cpu")) is model


def test_shard_sampler_splits_every_item_once():
    shards = [list(distributed.ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))
    assert [len(s) for s in shards] == [len(distributed.ShardSampler(7, r, 3)) for r in range(3)]
    with pytest.raises(ValueError, match="rank"):
        distributed.ShardSampler(7, 3, 3)


def test_one_process_order_interleaves_the_ranks():
    assert one_process_order(16, 2, 4) == [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]


# --------------------------------------------------------------------------------------------
# 2 processes
# --------------------------------------------------------------------------------------------
def test_every_rank_keeps_the_same_codebook_after_every_step(ddp_run):
    ranks = [_load(ddp_run / f"vqvae_rank{r}.pt") for r in range(WORLD)]
    records = [r["records"] for r in ranks]
    assert len(records[0]) == len(records[1]) == 2 * STEPS_PER_EPOCH
    for step, (a, b) in enumerate(zip(*records)):
        for name in a:
            same = a[name] == b[name] if name == "restarts" else torch.equal(a[name], b[name])
            assert same, f"rank 0 and rank 1 differ in {name} after step {step + 1}"
    assert all(bool(r["initialized"]) for r in records[0])
    assert sum(r["restarts"] for r in records[0]) > 0, "no dead-code restart was exercised"
    assert not torch.equal(records[0][0]["embedding"], records[0][-1]["embedding"])  # EMA moved
    # usage counts are of the global batch: every vector of both processes is counted once
    latents_per_step = WORLD * BATCH * (SIZE // 4) ** 2
    assert int(records[0][0]["usage_counts"].sum()) == latents_per_step
    _assert_close_states(ranks[0]["state"], ranks[1]["state"], rtol=0, atol=0)
    timings = ("epoch_time_s", "images_per_s")  # each process measures its own
    for key, values in ranks[0]["history"].items():
        assert key in timings or values == ranks[1]["history"][key], key
    assert ranks[0]["test"] == ranks[1]["test"]


def test_two_processes_match_one_process_with_the_global_batch(ddp_run, one_thread):
    rank0 = _load(ddp_run / "vqvae_rank0.pt")
    model = vqvae(seed=100)  # rank 0's initial weights
    data = images(N_TRAIN, 0)
    order = one_process_order(N_TRAIN, WORLD, BATCH)
    train = DataLoader(TensorDataset(*(t[order] for t in data.tensors)), batch_size=WORLD * BATCH)
    val = DataLoader(images(N_VAL, 1), batch_size=BATCH)
    history = train_vqvae(model, train, val, train_config(epochs=2))
    _assert_close_states(rank0["state"], model.state_dict(), rtol=1e-4, atol=1e-5)
    ddp = rank0["history"]
    assert len(ddp["step_loss"]) == len(history["step_loss"]) == 2 * STEPS_PER_EPOCH
    torch.testing.assert_close(torch.tensor(ddp["step_loss"]), torch.tensor(history["step_loss"]),
                               rtol=1e-4, atol=1e-6)
    for key in ("restarts", "perplexity", "active_fraction", "val_mse", "val_perplexity"):
        torch.testing.assert_close(torch.tensor(ddp[key]), torch.tensor(history[key]),
                                   rtol=1e-4, atol=1e-6, msg=key)
    # the sharded evaluation (uneven shards 4 + 3) equals one process's evaluation, except
    # the batch-level perplexity, which depends on how the split is cut into batches
    test = evaluate_vqvae(model, val)
    assert rank0["test"].keys() == test.keys()
    for key, value in test.items():
        if key == "batch_perplexity":
            continue
        assert rank0["test"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key


def test_rank0_checkpoint_loads_in_one_process(ddp_run):
    rank0 = _load(ddp_run / "vqvae_rank0.pt")
    checkpoint = load_checkpoint(ddp_run / "vqvae.pt", expected_class=VQVAE)
    raw = torch.load(ddp_run / "vqvae.pt", weights_only=True)["model_state"]
    assert not any(key.startswith("module.") for key in raw)
    assert checkpoint.epoch == 2 and checkpoint.step == 2 * STEPS_PER_EPOCH
    state = checkpoint.model.state_dict()
    _assert_close_states(rank0["state"], state, rtol=0, atol=0)
    assert len(checkpoint.rng_state["ranks"]) == WORLD  # every process's random streams
    assert sorted(p.name for p in ddp_run.iterdir() if p.name.startswith(".")) == []  # no temp


def test_prior_under_two_processes_matches_one_process(ddp_run, one_thread):
    ranks = [_load(ddp_run / f"prior_rank{r}.pt") for r in range(WORLD)]
    _assert_close_states(ranks[0]["state"], ranks[1]["state"], rtol=0, atol=0)
    assert ranks[0]["bits"] == ranks[1]["bits"]
    one = prior(seed=200)  # rank 0's initial weights
    history = train_prior(one, codes(N_TRAIN, 2), codes(N_VAL, 3),
                          prior_config(batch_size=WORLD * BATCH))
    _assert_close_states(ranks[0]["state"], one.state_dict(), rtol=1e-4, atol=1e-5)
    ddp = ranks[0]["history"]
    for key in ("step_loss", "train_bits_per_code", "val_bits_per_code"):
        torch.testing.assert_close(torch.tensor(ddp[key]), torch.tensor(history[key]),
                                   rtol=1e-4, atol=1e-6, msg=key)
    assert ddp["best_epoch"] == history["best_epoch"]
    bits = evaluate_prior(one, codes(N_VAL, 3))
    assert ranks[0]["bits"]["bits_per_code"] == pytest.approx(bits["bits_per_code"], rel=1e-5)
    checkpoint = load_checkpoint(ddp_run / "prior.pt", expected_class="PixelCNNPrior")
    assert checkpoint.epoch == 2 and (ddp_run / "prior_best.pt").is_file()


def test_a_nan_batch_on_one_rank_stops_every_rank(ddp_run):
    for r in range(WORLD):
        message = (ddp_run / f"nan_rank{r}.txt").read_text()
        assert "non-finite input images" in message and "step 1" in message, message


def _torchrun(*arguments: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VQLESSON_PROFILE": "ci"}
    for name in distributed.TORCHRUN_ENV:
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={WORLD}",
               "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "vqlesson",
               *arguments, "--data", "synthetic", "--dataset-size", "32", "--batch-size", "8",
               "--epochs", "1", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_command_line_under_torchrun(tmp_path):
    out = tmp_path / "run"
    result = _torchrun("train-vqvae", "--profile", "ci", "--image-size", "16",
                       "--hidden-channels", "8", "--codebook-size", "16", "--out", str(out))
    assert result.stdout.count("data: synthetic") == 1  # rank 0 alone prints
    assert "2 processes x batch 8 = 16 images per step" in result.stdout
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["processes"] == WORLD and summary["epochs"] == 1
    assert summary["final_epoch"]["images_per_s"] > 0
    for name in ("checkpoint.pt", "reconstructions.png", "codebook_usage.png"):
        assert (out / name).is_file(), name
    checkpoint = load_checkpoint(out / "checkpoint.pt", expected_class=VQVAE)
    assert checkpoint.epoch == 1 and checkpoint.step == 2  # 32 images / (2 x 8) per step

    result = _torchrun("train-prior", "--vqvae", str(out), "--prior-arch", "gated")
    assert result.stdout.count("codes prior: 1 epochs") == 1
    summary = json.loads((out / "prior_metrics.json").read_text())
    assert summary["processes"] == WORLD and summary["test"]["bits_per_code"] > 0
    prior_checkpoint = load_checkpoint(out / "prior.pt", expected_class="PixelCNNPrior")
    assert prior_checkpoint.step == 2  # 32 code maps / (2 x 8) per step
    assert (out / "codes_train.pt").is_file()
