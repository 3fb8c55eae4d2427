"""Device choice, seeding and profiles."""

import random

import numpy as np
import pytest
import torch

from vqlesson.runtime import get_device, seed_everything

from vqlesson.profiles import PROFILES, Profile, get_profile


def test_device_follows_the_hardware_and_rejects_missing_devices(monkeypatch):
    monkeypatch.delenv("VQLESSON_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected
    assert get_device("cpu").type == "cpu"
    monkeypatch.setenv("VQLESSON_DEVICE", "cpu")
    assert get_device().type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_seed_everything_makes_all_generators_repeat():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    g1 = seed_everything(123)
    a = draw() + (float(torch.rand(1, generator=g1)),)
    g2 = seed_everything(123)
    b = draw() + (float(torch.rand(1, generator=g2)),)
    assert a == b
    seed_everything(124)
    assert draw() != a[:3]
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_profiles_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("VQLESSON_PROFILE", "cpu")
    assert get_profile().name == "cpu"
    assert get_profile("GPU").name == "gpu"  # an explicit name wins, case-insensitive
    monkeypatch.delenv("VQLESSON_PROFILE")
    assert get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("VQLESSON_PROFILE", "laptop")
    with pytest.raises(ValueError, match=r"'laptop'.*VQLESSON_PROFILE.*ci, cpu, gpu"):
        get_profile()


def test_profiles_grow_from_ci_to_gpu():
    ci, cpu, gpu = PROFILES["ci"], PROFILES["cpu"], PROFILES["gpu"]
    assert ci.image_size < cpu.image_size < gpu.image_size
    assert ci.epochs < cpu.epochs < gpu.epochs
    assert ci.dataset_size < cpu.dataset_size
    for profile in (ci, cpu, gpu):  # a notebook's prior budget is at most the pipeline's
        assert 1 <= profile.notebook_prior_epochs <= profile.prior_epochs
    changed = cpu.with_overrides(epochs=1, batch_size=None)
    assert isinstance(changed, Profile) and changed.epochs == 1 and changed.batch_size == cpu.batch_size


def test_loader_workers_are_capped_at_the_usable_cpus(monkeypatch):
    """The gpu profile asks for 4 workers; free Colab has 2 CPUs."""
    import os

    from vqlesson.runtime import loader_workers

    from vqlesson.profiles import get_profile

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert get_profile("gpu").num_workers == 4
    assert loader_workers(get_profile("gpu").num_workers) == 2
    assert loader_workers(1) == 1 and loader_workers(0) == 0
    with pytest.raises(ValueError, match="num_workers"):
        loader_workers(-1)


def test_config_helpers_keep_the_profile_for_none_but_honour_none_where_it_is_a_setting():
    from vqlesson.configs import prior_config_for, vqvae2_config, vqvae_config
    from vqlesson.quantize import VectorQuantizer
    from vqlesson.vqvae import VQVAE

    profile = get_profile("ci")
    assert vqvae_config(profile, code_dim=None).code_dim == profile.code_dim  # an unset CLI option
    assert vqvae_config(profile).quantizer.restart_dead_after == 20
    no_restarts = vqvae_config(profile, restart_dead_after=None)  # None is itself a setting here
    assert no_restarts.quantizer.restart_dead_after is None
    assert vqvae2_config(profile, restart_dead_after=None).quantizer.restart_dead_after is None
    quantizer = next(m for m in VQVAE(no_restarts).modules() if isinstance(m, VectorQuantizer))
    assert quantizer.config.restart_dead_after is None
    assert prior_config_for(profile, 8, dropout=None).dropout == 0.0
