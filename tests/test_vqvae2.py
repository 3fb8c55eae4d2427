"""Tests of the two-level VQ-VAE-2 (Razavi et al. 2019, §3.1, Fig. 2a)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import smooth_batch
from torch.utils.data import DataLoader, TensorDataset

from vqlesson.checkpoint import load_checkpoint, save_checkpoint
from vqlesson.configs import vqvae2_config
from vqlesson.quantize import QuantizerConfig, VectorQuantizer
from vqlesson.train import TrainConfig, evaluate_vqvae, find_quantizers, train_vqvae
from vqlesson.vqvae2 import VQVAE2, VQVAE2Codes, VQVAE2Config, VQVAE2Output

K = 16


QUANTIZER_FIELDS = set(QuantizerConfig.__dataclass_fields__)


def tiny_config(**changes) -> VQVAE2Config:
    """A tiny VQVAE2Config; ``changes`` may hold model fields and quantiser settings
    (``ema=False``...), which go into its ``QuantizerConfig``."""
    settings = {k: changes.pop(k) for k in list(changes) if k in QUANTIZER_FIELDS}
    fields = dict(
        image_size=32, hidden_channels=16, residual_channels=8, num_residual_blocks=1,
        codebook_size_top=K, codebook_size_bottom=K, code_dim=8,
        quantizer=QuantizerConfig(**settings),
    )
    fields.update(changes)
    return VQVAE2Config(**fields)


def tiny_vqvae2(**changes) -> VQVAE2:
    return VQVAE2(tiny_config(**changes))


def images(batch: int, size: int, width: int | None = None) -> torch.Tensor:
    return torch.rand(batch, 3, size, width or size) * 2 - 1  # (B, 3, H, W) in [-1, 1]


def overfit(model: VQVAE2, x: torch.Tensor, steps: int = 150) -> list[float]:
    """Train ``model`` on the single batch ``x`` with Adam; the per-step losses."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        out = model(x)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    return losses


@pytest.fixture(autouse=True)
def _seed(one_thread):
    """Seeded, and single-threaded (``one_thread``: tiny convolutions run fastest so)."""
    torch.manual_seed(0)


# ---- config ----------------------------------------------------------------------------------
def test_config_latent_sizes_and_validation():
    config = VQVAE2Config()
    assert (config.top_latent_size(), config.bottom_latent_size()) == (8, 16)
    assert tiny_config(image_size=128).top_latent_size() == 16
    with pytest.raises(ValueError, match=r"image_size 36 is not a multiple of 8.*32 or 40"):
        VQVAE2Config(image_size=36)
    with pytest.raises(ValueError, match="codebook_size_top"):
        tiny_config(codebook_size_top=0)
    with pytest.raises(ValueError, match="num_residual_blocks"):
        tiny_config(num_residual_blocks=-1)
    with pytest.raises(ValueError, match="init"):
        tiny_config(init="zeros")
    with pytest.raises(ValueError, match="decay"):
        tiny_vqvae2(decay=1.5)  # quantiser settings are checked by their QuantizerConfig
    with pytest.raises(TypeError, match="VQVAE2Config"):
        VQVAE2(object())


def test_from_profile_ci():
    config = vqvae2_config("ci")
    assert config.image_size == 32 and config.hidden_channels == 32
    assert config.residual_channels == 8  # a quarter of the width
    assert config.codebook_size_top == config.codebook_size_bottom == 64
    assert config.code_dim == 16
    changed = vqvae2_config("ci", codebook_size_top=8, image_size=None)
    assert changed.codebook_size_top == 8 and changed.image_size == 32  # None is ignored
    out = VQVAE2(config)(images(2, 32))
    assert out.x_hat.shape == (2, 3, 32, 32)
    assert int(out.top_indices.max()) < 64 and int(out.bottom_indices.max()) < 64
    with pytest.raises(ValueError):
        vqvae2_config("no-such-profile")


# ---- shapes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size,batch", [(32, 2), (64, 2), (128, 2), (256, 1)])
def test_shapes_at_several_sizes(size, batch):
    model = tiny_vqvae2()
    x = images(batch, size)
    out = model(x)
    assert isinstance(out, VQVAE2Output)
    assert out.x_hat.shape == x.shape
    assert out.top_indices.shape == (batch, size // 8, size // 8)
    assert out.bottom_indices.shape == (batch, size // 4, size // 4)
    assert out.top_indices.dtype == out.bottom_indices.dtype == torch.int64
    for scalar in (
        out.loss, out.recon_loss, out.top_vq_loss, out.bottom_vq_loss,
        out.top_batch_perplexity, out.bottom_batch_perplexity,
    ):
        assert scalar.dim() == 0 and torch.isfinite(scalar)
    torch.testing.assert_close(out.loss, out.recon_loss + out.top_vq_loss + out.bottom_vq_loss)
    torch.testing.assert_close(out.recon_loss, F.mse_loss(out.x_hat, x))
    assert 1.0 <= float(out.top_batch_perplexity) <= K and 1.0 <= float(out.bottom_batch_perplexity) <= K
    assert model.latent_shapes(size) == ((size // 8, size // 8), (size // 4, size // 4))


def test_non_square_images_and_default_latent_shapes():
    model = tiny_vqvae2()
    out = model(images(1, 32, 48))
    assert out.x_hat.shape == (1, 3, 32, 48)
    assert out.top_indices.shape == (1, 4, 6) and out.bottom_indices.shape == (1, 8, 12)
    assert model.latent_shapes() == ((4, 4), (8, 8))


def test_sizes_not_multiple_of_8_raise_with_suggestions():
    model = tiny_vqvae2()
    with pytest.raises(ValueError, match=r"36 is not divisible .* 8.*32 or 40"):
        model(images(1, 36))  # divisible by 4 (the bottom level) but not by 8 (the top level)
    with pytest.raises(ValueError, match=r"36 is not divisible .* 8"):
        model.encode(images(1, 36))
    with pytest.raises(ValueError, match=r"36 .* multiple of 8.*32 or 40"):
        model.latent_shapes(36)


def test_bad_images_raise():
    model = tiny_vqvae2()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 1, 32, 32\)"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_decode_indices_validates_its_inputs():
    model = tiny_vqvae2(codebook_size_top=8)
    top = torch.zeros(2, 4, 4, dtype=torch.int64)
    bottom = torch.zeros(2, 8, 8, dtype=torch.int64)
    assert model.decode_indices(top, bottom).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"bottom grid must be 2x the top grid.*\(B=2, 8, 8\)"):
        model.decode_indices(top, torch.zeros(2, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="same batch size"):
        model.decode_indices(top, torch.zeros(3, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"top_indices must lie in \[0, 8\).*\[8, 8\]"):
        model.decode_indices(torch.full_like(top, 8), bottom)  # 8 fits K_bottom, not K_top
    with pytest.raises(ValueError, match=r"bottom_indices must lie in \[0, 16\)"):
        model.decode_indices(top, torch.full_like(bottom, -1))
    with pytest.raises(TypeError, match="top_indices must be an integer"):
        model.decode_indices(top.float(), bottom)
    with pytest.raises(ValueError, match=r"bottom_indices must have shape \(B, h, w\)"):
        model.decode_indices(top, bottom[0])
    with pytest.raises(ValueError, match=r"z_q_top must have shape \(B, 8, h, w\)"):
        model.decode(torch.zeros(2, 5, 4, 4), torch.zeros(2, 8, 8, 8))


# ---- ranges and gradients -----------------------------------------------------------------
def test_x_hat_in_range():
    model = tiny_vqvae2()
    with torch.no_grad():  # push the decoder into saturation: tanh must still bound the output
        for p in model.decoder.parameters():
            p.mul_(50)
    out = model(images(2, 32))
    assert out.x_hat.min() >= -1.0 and out.x_hat.max() <= 1.0
    assert out.x_hat.abs().max() > 0.99  # it really is saturated
    decoded = model.decode_indices(out.top_indices, out.bottom_indices)
    assert decoded.min() >= -1.0 and decoded.max() <= 1.0


@pytest.mark.parametrize("ema", [True, False])
def test_reconstruction_gradient_reaches_both_encoders(ema):
    model = tiny_vqvae2(ema=ema, bottom_dropout=0.0)  # the paper's paths (dropout: see below)
    model(images(2, 32))  # k-means init of both codebooks
    out = model(images(2, 32))
    # The reconstruction loss reaches the encoders only through the straight-through z_q of
    # each level (the top encoder has no other path to the image).
    out.recon_loss.backward()
    for encoder in (model.encoder_bottom, model.encoder_top):
        first_conv = encoder.net[0]
        assert isinstance(first_conv, torch.nn.Conv2d)
        assert first_conv.weight.grad is not None
        assert first_conv.weight.grad.abs().sum() > 0
    assert model.pre_quant_top.weight.grad.abs().sum() > 0


# ---- the course's remedy: bottom-level dropout -------------------------------------------------
@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.5", None])
def test_bottom_dropout_validated(bad):
    with pytest.raises(ValueError,
                       match=r"bottom_dropout must be a number in \[0, 1\) \(a probability"):
        tiny_config(bottom_dropout=bad)


@pytest.mark.parametrize("profile", ["ci", "cpu", "gpu"])
def test_bottom_dropout_on_by_default(profile):
    """The course's VQ-VAE-2 uses the remedy under every profile (and the dataclass default)."""
    assert VQVAE2Config().bottom_dropout > 0
    assert vqvae2_config(profile).bottom_dropout == VQVAE2Config().bottom_dropout
    assert vqvae2_config(profile, bottom_dropout=0.0).bottom_dropout == 0.0  # the bypass, reachable


def test_drop_bottom_replaces_whole_images_by_one_code_in_training_only():
    model = tiny_vqvae2(bottom_dropout=0.5)
    model(images(4, 32))  # k-means init
    z = torch.randn(64, 8, 8, 8)  # (B, D, h, w)
    model.train()
    out = model.drop_bottom(z)
    kept = [i for i in range(64) if torch.equal(out[i], z[i])]
    dropped = [i for i in range(64) if i not in kept]
    assert 16 <= len(dropped) <= 48, len(dropped)  # about half of the images, p = 0.5
    codebook = model.quantizer_bottom.codebook
    for i in dropped:
        vector = out[i, :, 0, 0]  # (D,)
        assert torch.equal(out[i], vector[:, None, None].expand(8, 8, 8))  # one vector everywhere
        assert (codebook == vector).all(dim=1).any()  # ... and it is a code vector of the codebook
    model.eval()
    assert model.drop_bottom(z) is z  # eval mode: nothing changes
    model.train()
    model.config.bottom_dropout = 0.0
    assert model.drop_bottom(z) is z


def test_dropped_images_train_the_decoder_from_the_top_level_alone():
    """With p close to 1 every image is dropped: the reconstruction's gradient reaches the top
    encoder but not the bottom one (its codes were replaced), and the codebook gets none."""
    model = tiny_vqvae2(bottom_dropout=0.999, ema=False)
    model(images(2, 32))  # k-means init
    out = model(images(4, 32))
    out.recon_loss.backward()
    assert model.encoder_top.net[0].weight.grad.abs().sum() > 0
    assert model.pre_quant_bottom.weight.grad is None or model.pre_quant_bottom.weight.grad.abs().sum() == 0
    assert model.quantizer_bottom.codebook.grad is None or model.quantizer_bottom.codebook.grad.abs().sum() == 0


def paper_forward(model: VQVAE2, x: torch.Tensor) -> torch.Tensor:
    """The VQ-VAE-2 forward pass without the remedy, from the model's pieces: x -> x_hat."""
    h_bottom = model.encoder_bottom(x)
    vq_top = model.quantizer_top(model.pre_quant_top(model.encoder_top(h_bottom)))
    joint = torch.cat([h_bottom, model.decoder_top(vq_top.z_q)], dim=1)
    vq_bottom = model.quantizer_bottom(model.pre_quant_bottom(joint))
    return model.decode(vq_top.z_q, vq_bottom.z_q)


def test_bottom_dropout_zero_is_the_paper_model_bit_for_bit():
    """p = 0: the training forward pass equals the paper's, draws no random number, and a
    trained model's eval output does not depend on p."""
    model = tiny_vqvae2(bottom_dropout=0.0, restart_dead_after=None)
    model(images(4, 32))  # k-means init
    twin = VQVAE2(tiny_config(bottom_dropout=0.0, restart_dead_after=None))
    twin.load_state_dict(model.state_dict())
    x = images(3, 32)
    rng = torch.get_rng_state()
    got = model(x).x_hat
    assert torch.equal(torch.get_rng_state(), rng)  # no random number drawn
    assert torch.equal(got, paper_forward(twin, x))
    dropping = VQVAE2(tiny_config(bottom_dropout=0.5, restart_dead_after=None))
    dropping.load_state_dict(model.state_dict())
    model.eval(), dropping.eval()
    with torch.no_grad():
        assert torch.equal(dropping(x).x_hat, model(x).x_hat)  # eval: p changes nothing


# ---- separate codebooks ----------------------------------------------------------------------
def test_two_separate_codebooks():
    model = tiny_vqvae2(codebook_size_top=8, codebook_size_bottom=16)
    found = find_quantizers(model)
    assert [name for name, _ in found] == ["quantizer_top", "quantizer_bottom"]
    assert all(isinstance(q, VectorQuantizer) for _, q in found)
    top_q, bottom_q = model.quantizer_top, model.quantizer_bottom
    assert top_q is not bottom_q
    assert top_q.codebook.shape == (8, 8) and bottom_q.codebook.shape == (16, 8)
    assert top_q.codebook.data_ptr() != bottom_q.codebook.data_ptr()
    out = model(images(3, 32))
    # Each quantiser counts its own level: 3 x 4 x 4 top codes, 3 x 8 x 8 bottom codes.
    assert int(top_q.usage_counts.sum()) == 3 * 4 * 4
    assert int(bottom_q.usage_counts.sum()) == 3 * 8 * 8
    assert torch.equal(torch.bincount(out.top_indices.flatten(), minlength=8), top_q.usage_counts)
    assert torch.equal(
        torch.bincount(out.bottom_indices.flatten(), minlength=16), bottom_q.usage_counts
    )


# ---- encode / decode -------------------------------------------------------------------------
def test_encode_decode_consistent_with_forward_in_eval():
    model = tiny_vqvae2()
    model(images(4, 32))  # k-means init
    model.eval()
    x = images(3, 32)
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    codes = model.encode(x)
    for key, value in model.state_dict().items():  # encode changes no state (usage, EMA...)
        assert torch.equal(value, state_before[key]), key
    assert isinstance(codes, VQVAE2Codes)
    top, bottom = codes
    assert top.shape == (3, 4, 4) and bottom.shape == (3, 8, 8)
    with torch.no_grad():
        out = model(x)
        x_hat = model.decode_indices(top, bottom)
    assert torch.equal(top, out.top_indices)
    assert torch.equal(bottom, out.bottom_indices)
    torch.testing.assert_close(x_hat, out.x_hat, atol=1e-5, rtol=1e-5)


def test_encode_in_training_mode_changes_no_state():
    model = tiny_vqvae2()  # not yet initialised: encode must not run the k-means init either
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    model.encode(images(2, 32))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state_before[key]), key


# ---- learning --------------------------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_tiny_vqvae2_overfits_one_batch(ema):
    model = tiny_vqvae2(image_size=16, ema=ema, decay=0.9)
    losses = overfit(model, smooth_batch(16))
    assert min(losses[-10:]) < losses[0] / 5
    out = model(smooth_batch(16))
    assert float(out.top_batch_perplexity) > 3 and float(out.bottom_batch_perplexity) > 4  # no collapse


def test_top_codes_change_the_reconstruction():
    """After training, swapping the top codes (bottom codes kept) changes the output
    noticeably: the decoder really uses the top level."""
    model = tiny_vqvae2(image_size=16, decay=0.9)
    x = smooth_batch(16)
    overfit(model, x)
    model.eval()
    top, bottom = model.encode(x)
    with torch.no_grad():
        x_hat = model.decode_indices(top, bottom)
        error = (x_hat - x).abs().mean()
        rolled = model.decode_indices(top.roll(1, dims=0), bottom)  # another image's top codes
        shifted = model.decode_indices((top + 1) % K, bottom)  # every top code replaced
    assert not torch.equal(top.roll(1, dims=0), top)
    for changed in (rolled, shifted):
        change = (changed - x_hat).abs().mean()
        assert change > 0.01 and change > 0.2 * error, (float(change), float(error))
    # The bottom codes matter too (both levels carry information).
    with torch.no_grad():
        other_bottom = model.decode_indices(top, (bottom + 1) % K)
    assert (other_bottom - x_hat).abs().mean() > 0.01


# ---- the generic trainer, evaluation and checkpoints ------------------------------------------
def smooth_dataset(n: int, size: int = 16, seed: int = 0) -> TensorDataset:
    """n smooth random (3, size, size) images in [-1, 1] (upsampled 4x4 noise), labels 0/1."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1
    return TensorDataset(x, torch.arange(n, dtype=torch.int64) % 2)


def test_generic_trainer_trains_vqvae2(tmp_path):
    train = DataLoader(
        smooth_dataset(32), batch_size=4, shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    val = DataLoader(smooth_dataset(8, seed=1), batch_size=4)
    model = tiny_vqvae2(image_size=16, restart_dead_after=3)
    path = tmp_path / "vqvae2.pt"
    history = train_vqvae(
        model, train, val,
        TrainConfig(epochs=2, lr=3e-3, progress=False, device="cpu", checkpoint_path=str(path)),
    )
    keys = [
        "loss", "recon_loss", "top_vq_loss", "bottom_vq_loss", "top_perplexity",
        "bottom_perplexity", "quantizer_top_perplexity", "quantizer_bottom_perplexity",
        "quantizer_top_active_fraction", "quantizer_bottom_active_fraction",
        "quantizer_top_restarts", "quantizer_bottom_restarts", "val_loss",
        "val_quantizer_top_perplexity", "val_quantizer_bottom_perplexity", "val_psnr",
    ]
    for key in keys:
        assert len(history[key]) == 2, key
        assert all(math.isfinite(v) for v in history[key]), key
    assert "perplexity" not in history  # two quantisers: every code metric is prefixed
    assert all(1.0 <= p <= K for p in history["quantizer_top_perplexity"])
    assert all(1.0 <= p <= K for p in history["quantizer_bottom_perplexity"])
    assert history["loss"][-1] < history["loss"][0]

    results = evaluate_vqvae(model, val)
    assert results["bits_per_image"] == pytest.approx(2 * 2 * 4 + 4 * 4 * 4)  # both levels, K=16
    ckpt = load_checkpoint(path, expected_class=VQVAE2)
    assert ckpt.epoch == 2 and ckpt.step == 16 and isinstance(ckpt.model, VQVAE2)


def test_checkpoint_round_trip(tmp_path):
    model = tiny_vqvae2(codebook_size_top=8, ema=False, restart_dead_after=None)
    model(images(4, 32))  # k-means init: the codebooks differ from a fresh model's
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, step=1, epoch=1)
    loaded = load_checkpoint(path)  # rebuilt from the stored config alone
    assert isinstance(loaded.model, VQVAE2)
    assert loaded.config == model.config
    assert not loaded.model.training
    model.eval()
    x = images(2, 32)
    with torch.no_grad():
        expected, got = model(x), loaded.model(x)
    assert torch.equal(got.top_indices, expected.top_indices)
    assert torch.equal(got.bottom_indices, expected.bottom_indices)
    assert torch.equal(got.x_hat, expected.x_hat)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


# ---- measuring level use (vqlesson.experiments.level_use) -------------------------------------
def test_level_use_measures_the_top_level():
    from vqlesson.experiments import LevelUse, level_use
    from vqlesson.metrics import psnr
    from vqlesson.vqvae import VQVAE, VQVAEConfig

    model = tiny_vqvae2(image_size=16, decay=0.9)
    x = smooth_batch(16)
    overfit(model, x, steps=60)
    use = level_use(model, x)
    assert isinstance(use, LevelUse)
    mean_image = x.mean(dim=0, keepdim=True).expand_as(x)
    assert use.mean_image_psnr == pytest.approx(psnr(x, mean_image))
    assert 0.0 <= use.swap_layout_shift <= 1.0
    top, bottom = model.encode(x)
    assert use.bottom_code == int(torch.bincount(bottom.flatten()).argmax())
    with torch.no_grad():
        top_only = model.decode_indices(top, torch.full_like(bottom, use.bottom_code))
    assert use.top_only_psnr == pytest.approx(psnr(x, top_only))
    with pytest.raises(TypeError, match="VQVAE2"):
        level_use(VQVAE(VQVAEConfig(image_size=16)), x)
    with pytest.raises(ValueError, match="B >= 2"):
        level_use(model, x[:1])
