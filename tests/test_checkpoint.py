"""Tests of vqlesson.checkpoint: round trip, atomic writes, clear errors, RNG state."""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch

from vqlesson.checkpoint import (
    Checkpoint,
    config_from_record,
    config_record,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from vqlesson.quantize import QuantizerConfig
from vqlesson.vqvae import VAE, VQVAE, VAEConfig, VQVAEConfig
from vqlesson.vqvae2 import VQVAE2, VQVAE2Config


def tiny_vqvae_config(quantizer: QuantizerConfig = QuantizerConfig(), **changes) -> VQVAEConfig:
    base = dict(
        image_size=16, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
        codebook_size=16, code_dim=8, quantizer=quantizer,
    )
    base.update(changes)
    return VQVAEConfig(**base)


def images(n: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@pytest.fixture
def trained_vqvae() -> VQVAE:
    """A tiny VQ-VAE after one optimiser step (codebook initialised, EMA buffers moved)."""
    torch.manual_seed(0)
    model = VQVAE(tiny_vqvae_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    out = model(images())
    out.loss.backward()
    optimizer.step()
    model.eval()
    return model


def test_round_trip_restores_model_config_and_state(tmp_path, trained_vqvae):
    model = trained_vqvae
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    model(images(seed=1)).loss.backward()
    optimizer.step()
    model.eval()
    history = {"loss": [1.5, 1.0], "epoch": [1, 2]}
    path = save_checkpoint(
        tmp_path / "runs" / "a" / "model.pt", model, optimizer=optimizer, step=7, epoch=2,
        history=history, extra={"note": "hello"},
    )
    assert path.is_file()  # parent folders were created

    # The file is loadable by torch's safe loader on its own.
    raw = torch.load(path, weights_only=True)
    assert raw["model_class"] == "VQVAE"

    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert type(ckpt.model) is VQVAE
    assert ckpt.config == model.config
    assert not ckpt.model.training
    assert (ckpt.step, ckpt.epoch) == (7, 2)
    assert ckpt.history == history
    assert ckpt.extra == {"note": "hello"}
    assert ckpt.optimizer_state["state"]  # Adam moments are there
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt.model.state_dict()[name]), name
    x = images(seed=2)
    with torch.no_grad():
        assert torch.equal(model(x).x_hat, ckpt.model(x).x_hat)
        assert torch.equal(model.encode(x).codes, ckpt.model.encode(x).codes)
    fresh = torch.optim.AdamW(ckpt.model.parameters(), lr=1e-3)
    fresh.load_state_dict(ckpt.optimizer_state)


def test_vae_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VAE(VAEConfig(image_size=16, hidden_channels=16, residual_channels=8,
                          num_residual_blocks=1, latent_channels=4)).eval()
    path = save_checkpoint(tmp_path / "vae.pt", model)
    ckpt = load_checkpoint(path, expected_class=VAE, expected_config=model.config)
    assert ckpt.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ckpt.model.state_dict()[name]), name


def test_atomic_write_leaves_only_the_checkpoint(tmp_path, trained_vqvae):
    target = tmp_path / "model.pt"
    save_checkpoint(target, trained_vqvae)
    save_checkpoint(target, trained_vqvae, epoch=1)  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert load_checkpoint(target).epoch == 1


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, trained_vqvae, monkeypatch):
    target = tmp_path / "model.pt"
    save_checkpoint(target, trained_vqvae, epoch=1)
    before = target.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, trained_vqvae, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]
    assert target.read_bytes() == before


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_checkpoint(path)


def test_corrupt_and_truncated_files_name_the_file(tmp_path, trained_vqvae):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_checkpoint(garbage)

    good = save_checkpoint(tmp_path / "good.pt", trained_vqvae)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.pt"):
        load_checkpoint(truncated)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*not a vqlesson checkpoint"):
        load_checkpoint(foreign)


def test_wrong_class_is_a_clear_error(tmp_path, trained_vqvae):
    path = save_checkpoint(tmp_path / "model.pt", trained_vqvae)
    with pytest.raises(ValueError, match="holds a VQVAE.*VAE was expected"):
        load_checkpoint(path, expected_class=VAE)
    with pytest.raises(ValueError, match="VAE was expected"):
        load_checkpoint(path, expected_class="VAE")
    assert type(load_checkpoint(path, expected_class=VQVAE).model) is VQVAE


def test_different_config_lists_the_fields(tmp_path, trained_vqvae):
    path = save_checkpoint(tmp_path / "model.pt", trained_vqvae)
    other = tiny_vqvae_config(codebook_size=32, quantizer=QuantizerConfig(beta=0.5))
    with pytest.raises(ValueError) as info:
        load_checkpoint(path, expected_config=other)
    message = str(info.value)
    assert "codebook_size: 16 (checkpoint) vs 32 (now)" in message
    assert "beta: 0.25 (checkpoint) vs 0.5 (now)" in message
    assert "code_dim" not in message
    assert "--out" in message
    # The same config as a dict is accepted.
    load_checkpoint(path, expected_config=dataclasses.asdict(trained_vqvae.config))


# The config dict of a VQ-VAE checkpoint as vqlesson wrote it before QuantizerConfig: the
# dataclasses.asdict of the flat VQVAEConfig, the quantiser's settings beside the model's fields.
FLAT_VQVAE_CONFIG = dict(
    image_size=16, in_channels=3, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
    downsample=4, codebook_size=16, code_dim=8, beta=0.5, ema=False, decay=0.9, eps=1e-5,
    init="random", restart_dead_after=None,
)


def test_checkpoint_of_the_flat_config_format_loads_into_a_working_model(tmp_path):
    torch.manual_seed(0)
    quantizer = QuantizerConfig(beta=0.5, ema=False, decay=0.9, init="random",
                                restart_dead_after=None)
    source = VQVAE(tiny_vqvae_config(quantizer=quantizer))
    source(images())  # a training step's buffers: usage counts, steps since used
    source.eval()
    payload = {  # what save_checkpoint wrote before the nesting, built by hand
        "format": "vqlesson-checkpoint", "format_version": 1, "model_class": "VQVAE",
        "config": dict(FLAT_VQVAE_CONFIG), "model_state": source.state_dict(),
        "optimizer_state": None, "scaler_state": None, "step": 3, "epoch": 1,
        "history": {"loss": [0.5]}, "rng_state": get_rng_state(), "extra": {},
    }
    path = tmp_path / "old.pt"
    torch.save(payload, path)

    loaded = load_checkpoint(path, expected_class=VQVAE, expected_config=source.config)
    assert loaded.config == source.config and loaded.config.quantizer == quantizer
    assert loaded.model.quantizer.config == quantizer
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    x = images(seed=3)
    with torch.no_grad():
        expected, got = source(x), loaded.model(x)
    assert torch.equal(got.x_hat, expected.x_hat) and torch.equal(got.indices, expected.indices)
    # Resuming compares the stored flat config with today's nested one, field by field.
    other = tiny_vqvae_config(quantizer=QuantizerConfig(beta=0.25, ema=False, decay=0.9,
                                                        init="random", restart_dead_after=None))
    with pytest.raises(ValueError, match=r"beta: 0.5 \(checkpoint\) vs 0.25 \(now\)"):
        load_checkpoint(path, expected_config=other)


def test_checkpoints_still_store_the_flat_config(tmp_path):
    quantizer = QuantizerConfig(beta=0.5, ema=False, decay=0.9, init="random",
                                restart_dead_after=None)
    config = tiny_vqvae_config(quantizer=quantizer)
    assert config_record(config) == FLAT_VQVAE_CONFIG  # so also the code files' fingerprints
    path = save_checkpoint(tmp_path / "new.pt", VQVAE(config))
    assert torch.load(path, weights_only=True)["config"] == FLAT_VQVAE_CONFIG
    # A setting that did not exist before the nesting is stored when it is not the default.
    changed = tiny_vqvae_config(quantizer=QuantizerConfig(kmeans_iters=3))
    assert config_record(changed)["kmeans_iters"] == 3
    path = save_checkpoint(tmp_path / "iters.pt", VQVAE(changed))
    assert load_checkpoint(path).config.quantizer.kmeans_iters == 3


def test_vqvae2_config_round_trips_flat_and_nested(tmp_path):
    config = VQVAE2Config(image_size=16, hidden_channels=8, residual_channels=4,
                          num_residual_blocks=1, codebook_size_top=8, codebook_size_bottom=16,
                          code_dim=4, quantizer=QuantizerConfig(ema=False), bottom_dropout=0.25)
    record = config_record(config)
    assert "quantizer" not in record and record["ema"] is False and record["bottom_dropout"] == 0.25
    assert config_from_record(VQVAE2Config, record) == config
    assert config_from_record(VQVAE2Config, dataclasses.asdict(config)) == config
    loaded = load_checkpoint(save_checkpoint(tmp_path / "two.pt", VQVAE2(config)))
    assert loaded.config == config and loaded.model.quantizer_bottom.config.ema is False
    with pytest.raises(ValueError, match=r"\['colour'\]"):
        config_from_record(VQVAE2Config, {**record, "colour": 1})


def test_model_without_config_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="config"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))


def test_rng_round_trip_through_a_file(tmp_path, trained_vqvae):
    generator = torch.Generator().manual_seed(123)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.randn(5, generator=generator)
    state = get_rng_state([generator])
    expected = (
        random.random(), np.random.rand(3), torch.rand(4), torch.randn(3, generator=generator)
    )
    path = save_checkpoint(tmp_path / "model.pt", trained_vqvae, rng_state=state)

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    generator.manual_seed(99)
    set_rng_state(load_checkpoint(path).rng_state, [generator])
    again = (
        random.random(), np.random.rand(3), torch.rand(4), torch.randn(3, generator=generator)
    )
    assert expected[0] == again[0]
    assert np.array_equal(expected[1], again[1])
    assert torch.equal(expected[2], again[2])
    assert torch.equal(expected[3], again[3])


def test_set_rng_state_checks_generator_count():
    state = get_rng_state([torch.Generator()])
    with pytest.raises(ValueError, match="generator"):
        set_rng_state(state, [torch.Generator(), torch.Generator()])
    with pytest.raises(ValueError, match="get_rng_state"):
        set_rng_state({"torch": torch.get_rng_state()})


def test_stale_temporaries_of_a_killed_save_are_cleaned(tmp_path, trained_vqvae):
    import os
    import time

    from vqlesson.checkpoint import STALE_TEMPORARY_S, read_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, trained_vqvae)
    # What a save killed before its os.replace leaves: a half-written hidden .tmp file.
    old = tmp_path / ".checkpoint.pt.abc123.tmp"
    old.write_bytes(b"half a checkpoint")
    past = time.time() - 2 * STALE_TEMPORARY_S
    os.utime(old, (past, past))
    fresh = tmp_path / ".checkpoint.pt.def456.tmp"  # maybe a save in progress elsewhere
    fresh.write_bytes(b"being written")
    other = tmp_path / ".prior.pt.zzz.tmp"  # another file's temporary
    other.write_bytes(b"x")

    read_checkpoint(path)  # a reader removes only the old one
    assert not old.exists() and fresh.exists() and other.exists()
    save_checkpoint(path, trained_vqvae)  # the writer removes every one of its file's
    assert not fresh.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prior.pt.zzz.tmp", "checkpoint.pt"]
