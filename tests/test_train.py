"""Tests of vqlesson.train: the generic training loop, evaluation, checkpoints and exact resume."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vqlesson.checkpoint import load_checkpoint
from vqlesson.quantize import QuantizerConfig
from vqlesson.train import TrainConfig, evaluate_vqvae, train_vqvae
from vqlesson.vqvae import VAE, VQVAE, VAEConfig, VQVAEConfig

SIZE = 16


def smooth_dataset(n: int = 32, seed: int = 0) -> TensorDataset:
    """n smooth random (3, 16, 16) images in [-1, 1] (upsampled 4x4 noise) with 0/1 labels."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False) * 2 - 1
    labels = torch.arange(n, dtype=torch.int64) % 2
    return TensorDataset(x, labels)


def loaders(seed: int = 0, batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(
        smooth_dataset(32, seed=0), batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    val = DataLoader(smooth_dataset(16, seed=1), batch_size=batch_size)
    return train, val


def tiny_vqvae(seed: int = 0, **changes) -> VQVAE:
    torch.manual_seed(seed)
    config = dict(
        image_size=SIZE, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
        codebook_size=16, code_dim=8, quantizer=QuantizerConfig(restart_dead_after=3),
    )
    config.update(changes)
    return VQVAE(VQVAEConfig(**config))


def config(**changes) -> TrainConfig:
    base = dict(epochs=3, lr=3e-3, progress=False, device="cpu", seed=0)
    base.update(changes)
    return TrainConfig(**base)


def test_history_keys_lengths_learning_and_checkpoint(tmp_path):
    train, val = loaders()
    calls = []
    path = tmp_path / "run" / "vqvae.pt"
    history = train_vqvae(
        tiny_vqvae(), train, val, config(epochs=4, checkpoint_path=str(path)),
        callback=lambda h: calls.append(len(h["loss"])),
    )
    per_epoch = [
        "epoch", "lr", "epoch_time_s", "images_per_s", "loss", "recon_loss", "vq_loss",
        "batch_perplexity", "perplexity", "active_fraction", "restarts", "val_loss",
        "val_recon_loss", "val_vq_loss", "val_mse", "val_psnr", "val_ssim", "val_perplexity",
        "val_active_fraction",
    ]
    for key in per_epoch:
        assert len(history[key]) == 4, key
        assert all(math.isfinite(v) for v in history[key]), key
    assert history["epoch"] == [1, 2, 3, 4]
    assert len(history["step_loss"]) == 4 * 4  # 32 images / batch 8
    assert calls == [1, 2, 3, 4]
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_recon_loss"][-1] < history["val_recon_loss"][0]
    assert all(1.0 <= p <= 16.0 for p in history["perplexity"])
    assert all(0.0 < a <= 1.0 for a in history["active_fraction"])
    assert all(v > 0 for v in history["images_per_s"])

    ckpt = load_checkpoint(path, expected_class=VQVAE)
    assert ckpt.epoch == 4 and ckpt.step == 16
    assert ckpt.history["step_loss"] == history["step_loss"]
    assert ckpt.optimizer_state is not None
    assert ckpt.extra["train_config"]["epochs"] == 4


def test_resume_is_exact_on_cpu(tmp_path):
    train, val = loaders()
    model_a = tiny_vqvae()
    full = train_vqvae(model_a, train, val, config(epochs=3, checkpoint_path=str(tmp_path / "a.pt")))

    train, val = loaders()
    path = str(tmp_path / "b.pt")
    first = train_vqvae(tiny_vqvae(), train, val, config(epochs=2, checkpoint_path=path))
    assert len(first["step_loss"]) == 8

    # A new process would rebuild everything from scratch: new model (other init), new loaders.
    train, val = loaders()
    model_b = tiny_vqvae(seed=123)
    resumed = train_vqvae(model_b, train, val, config(epochs=3, checkpoint_path=path, resume=True))

    assert len(resumed["step_loss"]) == 12
    assert torch.equal(torch.tensor(resumed["step_loss"]), torch.tensor(full["step_loss"]))
    for key in ("loss", "recon_loss", "perplexity", "restarts", "val_loss", "val_psnr"):
        assert resumed[key] == full[key], key
    for name, tensor in model_a.state_dict().items():
        assert torch.equal(tensor, model_b.state_dict()[name]), name

    # Asking again for 3 epochs returns the stored history without training.
    train, val = loaders()
    again = train_vqvae(tiny_vqvae(seed=7), train, val, config(epochs=3, checkpoint_path=path, resume=True))
    assert again["step_loss"] == resumed["step_loss"]


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    train, val = loaders()
    path = tmp_path / "new.pt"
    history = train_vqvae(tiny_vqvae(), train, None, config(epochs=1, checkpoint_path=str(path), resume=True))
    assert history["epoch"] == [1]
    assert "val_loss" not in history
    assert path.is_file()


def test_resume_with_other_config_is_a_clear_error(tmp_path):
    train, val = loaders()
    path = str(tmp_path / "run.pt")
    train_vqvae(tiny_vqvae(), train, val, config(epochs=1, checkpoint_path=path))
    with pytest.raises(ValueError, match="codebook_size: 16 \\(checkpoint\\) vs 32 \\(now\\)"):
        train_vqvae(tiny_vqvae(codebook_size=32), train, val,
                    config(epochs=2, checkpoint_path=path, resume=True))
    vae = VAE(VAEConfig(image_size=SIZE, hidden_channels=16, residual_channels=8,
                        num_residual_blocks=1, latent_channels=4))
    with pytest.raises(ValueError, match="VAE was expected"):
        train_vqvae(vae, train, val, config(epochs=2, checkpoint_path=path, resume=True))
    with pytest.raises(ValueError, match="optimizer"):
        train_vqvae(tiny_vqvae(), train, val,
                    config(epochs=2, checkpoint_path=path, resume=True, optimizer="sgd"))


def test_nan_input_stops_training_with_a_clear_error():
    x = smooth_dataset(16).tensors[0].clone()
    x[9, 0, 3, 3] = float("nan")  # in the second batch
    loader = DataLoader(TensorDataset(x, torch.zeros(16, dtype=torch.int64)), batch_size=8)
    with pytest.raises(FloatingPointError, match="input images.*epoch 1 of 3, step 2.*\\[-1, 1\\]"):
        train_vqvae(tiny_vqvae(), loader, None, config())


@dataclass
class ExplodingConfig:
    image_size: int = SIZE


class ExplodingOutput(NamedTuple):
    x_hat: torch.Tensor
    loss: torch.Tensor
    recon_loss: torch.Tensor
    kl_loss: torch.Tensor


class ExplodingModel(nn.Module):
    """Returns a NaN ``kl_loss`` from its third step on."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ExplodingConfig()
        self.conv = nn.Conv2d(3, 3, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        x_hat = torch.tanh(self.conv(x))
        recon = F.mse_loss(x_hat, x)
        kl = (x_hat.mean() * 0) + (float("nan") if self.calls >= 3 else 0.0)
        return ExplodingOutput(x_hat, recon + kl, recon, kl)


def test_non_finite_loss_names_epoch_step_and_term():
    train, _ = loaders()
    with pytest.raises(FloatingPointError) as info:
        train_vqvae(ExplodingModel(), train, None, config(amp=False))
    message = str(info.value)
    assert "non-finite kl_loss, loss at epoch 1 of 3, step 3" in message
    assert "recon_loss" not in message.split(" at ")[0]  # the finite term is not blamed
    assert "lower learning rate" in message and "amp=False" in message


def test_sgd_option_trains():
    train, val = loaders()
    model = tiny_vqvae()
    history = train_vqvae(model, train, val, config(optimizer="sgd", lr=0.05, epochs=4))
    assert all(math.isfinite(v) for v in history["step_loss"])
    assert history["loss"][-1] < history["loss"][0]


def test_vae_trains_with_the_same_trainer():
    train, val = loaders()
    torch.manual_seed(0)
    vae = VAE(VAEConfig(image_size=SIZE, hidden_channels=16, residual_channels=8,
                        num_residual_blocks=1, latent_channels=4, kl_weight=0.01))
    history = train_vqvae(vae, train, val, config(epochs=3))
    for key in ("loss", "recon_loss", "kl_loss", "val_loss", "val_kl_loss", "val_psnr", "val_ssim"):
        assert len(history[key]) == 3, key
    assert "perplexity" not in history and "val_perplexity" not in history
    assert history["loss"][-1] < history["loss"][0]
    metrics = evaluate_vqvae(vae, val)
    assert "bits_per_image" not in metrics and "perplexity" not in metrics
    assert metrics["psnr"] > 0


def test_evaluate_reports_code_metrics_and_restores_mode():
    train, val = loaders()
    model = tiny_vqvae()
    train_vqvae(model, train, None, config(epochs=1))
    model.train()
    results = evaluate_vqvae(model, val, device="cpu")
    assert model.training  # mode restored
    assert results["bits_per_image"] == 4 * 4 * 4  # 4x4 codes of K=16
    assert results["compression_ratio"] == pytest.approx(3 * 16 * 16 * 8 / 64)
    assert 1.0 <= results["perplexity"] <= 16.0
    assert 0.0 < results["active_fraction"] <= 1.0
    assert results["mse"] == pytest.approx(results["recon_loss"], rel=1e-5)
    assert 0 < results["psnr"] < 100 and -1 <= results["ssim"] <= 1
    with pytest.raises(ValueError, match="no batches"):
        evaluate_vqvae(model, [])


def test_bad_config_values_rejected():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="adam9")
    with pytest.raises(ValueError, match="checkpoint_path"):
        TrainConfig(resume=True)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)


def test_amp_uses_bf16_only_where_the_gpu_has_it_natively(monkeypatch):
    """A T4 reports bf16 support through emulation; the course then uses fp16 and a scaler."""
    from vqlesson.loop import amp_settings

    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # like a T4: only emulated bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    cuda = torch.device("cuda")
    assert amp_settings(cuda, amp=True) == (True, torch.float16, True)
    assert asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_settings(cuda, amp=True) == (True, torch.bfloat16, False)  # e.g. an A100
    assert amp_settings(cuda, amp=False) == (False, torch.float32, False)
    assert amp_settings(torch.device("cpu"), amp=True) == (False, torch.float32, False)


def test_history_holds_every_steps_batch_perplexity(tmp_path):
    from vqlesson.configs import vqvae2_config
    from vqlesson.vqvae2 import VQVAE2

    x = torch.rand(24, 3, 32, 32) * 2 - 1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=8)
    one = train_vqvae(tiny_vqvae(), loader, None, TrainConfig(epochs=2, progress=False))
    assert len(one["step_perplexity"]) == len(one["step_loss"]) == 6
    assert all(1.0 <= p <= 16.0 for p in one["step_perplexity"])
    two = train_vqvae(VQVAE2(vqvae2_config("ci", image_size=32)), loader, None,
                      TrainConfig(epochs=1, progress=False))
    assert len(two["step_top_perplexity"]) == len(two["step_bottom_perplexity"]) == 3
