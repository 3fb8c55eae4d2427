"""Tests of the VQ-VAE (van den Oord et al. 2017, §4.1) and the Gaussian VAE baseline."""

from __future__ import annotations

import pytest
import torch
from conftest import smooth_batch

from vqlesson.quantize import QuantizerConfig
from vqlesson.vqvae import (
    VAE,
    VQVAE,
    Decoder,
    Encoder,
    ResidualStack,
    VAEConfig,
    VAEOutput,
    VQVAEConfig,
    VQVAEOutput,
)

TINY = dict(hidden_channels=16, residual_channels=8, num_residual_blocks=1)


def tiny_vqvae(**kwargs) -> VQVAE:
    fields = dict(image_size=32, codebook_size=32, code_dim=8, **TINY)
    fields.update(kwargs)
    return VQVAE(VQVAEConfig(**fields))


def tiny_vae(**kwargs) -> VAE:
    fields = dict(image_size=32, latent_channels=4, **TINY)
    fields.update(kwargs)
    return VAE(VAEConfig(**fields))


def images(batch: int, size: int, channels: int = 3) -> torch.Tensor:
    return torch.rand(batch, channels, size, size) * 2 - 1  # (B, C, H, W) in [-1, 1]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- shapes ----------------------------------------------------------------------------------
SIZES_AND_FACTORS = [
    (size, f) for size in (32, 36, 40, 48, 72, 96, 128) for f in (4, 8) if size % f == 0
]


@pytest.mark.parametrize("size,factor", SIZES_AND_FACTORS)
def test_vqvae_shapes(size, factor):
    model = tiny_vqvae(downsample=factor)
    x = images(2, size)
    out = model(x)
    assert isinstance(out, VQVAEOutput)
    assert out.x_hat.shape == x.shape
    assert out.indices.shape == (2, size // factor, size // factor)
    assert out.indices.dtype == torch.int64
    for scalar in (out.loss, out.recon_loss, out.vq_loss, out.batch_perplexity):
        assert scalar.dim() == 0 and torch.isfinite(scalar)
    torch.testing.assert_close(out.loss, out.recon_loss + out.vq_loss)
    assert model.latent_shapes(size) == ((size // factor, size // factor),)


def test_non_square_images():
    out = tiny_vqvae()(images(1, 32)[:, :, :, :24].contiguous())
    assert out.x_hat.shape == (1, 3, 32, 24) and out.indices.shape == (1, 8, 6)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_encoder_decoder_blocks_any_factor(factor):
    enc = Encoder(3, 16, 8, 2, downsample=factor)
    dec = Decoder(16, 3, 16, 8, 2, downsample=factor)
    h = enc(images(2, 32))
    assert h.shape == (2, 16, 32 // factor, 32 // factor) and (h >= 0).all()
    assert dec(h).shape == (2, 3, 32, 32)
    assert ResidualStack(16, 8, 3)(h).shape == h.shape


def test_non_divisible_size_raises_with_suggestions():
    model = tiny_vqvae(downsample=8)
    with pytest.raises(ValueError, match=r"36 is not divisible .* 8.*32 or 40"):
        model(images(1, 36))
    with pytest.raises(ValueError, match=r"36 .* 8.*32 or 40"):
        model.latent_shapes(36)
    with pytest.raises(ValueError, match=r"image_size 36 .* 8"):
        VQVAEConfig(image_size=36, downsample=8)


def test_bad_inputs_and_configs_raise():
    model = tiny_vqvae()
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\).*\(1, 1, 32, 32\)"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="downsample"):
        VQVAEConfig(downsample=2)
    with pytest.raises(ValueError, match="init"):
        VQVAEConfig(quantizer=QuantizerConfig(init="zeros"))
    with pytest.raises(ValueError, match="downsample"):
        Encoder(3, 16, 8, 1, downsample=16)


def test_latent_size():
    assert VQVAEConfig(image_size=128, downsample=8).latent_size() == 16
    assert tiny_vqvae(image_size=64).latent_shapes() == ((16, 16),)


# ---- ranges and gradients -----------------------------------------------------------------
def test_x_hat_in_range():
    model = tiny_vqvae()
    with torch.no_grad():  # push the decoder into saturation: tanh must still bound the output
        for p in model.decoder.parameters():
            p.mul_(50)
    out = model(images(2, 32))
    assert out.x_hat.min() >= -1.0 and out.x_hat.max() <= 1.0
    assert model.decode_indices(out.indices).abs().max() <= 1.0


@pytest.mark.parametrize("ema", [True, False])
def test_gradient_reaches_first_encoder_conv(ema):
    model = tiny_vqvae(quantizer=QuantizerConfig(ema=ema))
    model(images(2, 32))  # k-means init
    out = model(images(2, 32))
    out.recon_loss.backward()  # the decoder's loss reaches the encoder only through z_q
    first_conv = model.encoder.net[0]
    assert isinstance(first_conv, torch.nn.Conv2d)
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0


def test_encode_decode_consistent_with_forward_in_eval():
    model = tiny_vqvae()
    model(images(4, 32))  # k-means init
    model.eval()
    x = images(3, 32)
    usage_before = model.quantizer.usage_counts.clone()
    indices, = model.encode(x)  # one level: (codes,)
    assert torch.equal(model.quantizer.usage_counts, usage_before)  # encode changes no state
    with torch.no_grad():
        out = model(x)
        x_hat = model.decode_indices(indices)
    assert torch.equal(indices, out.indices)
    torch.testing.assert_close(x_hat, out.x_hat, atol=1e-5, rtol=1e-5)


def test_one_autoencoder_interface_for_both_models():
    """VQVAE and VQVAE2 offer the same interface (levels, Codes, encode, decode_indices,
    latent_shapes); the VAE is outside it."""
    from vqlesson.vqvae import DiscreteAutoencoder, Level, VQVAECodes, check_autoencoder
    from vqlesson.vqvae2 import VQVAE2, VQVAE2Codes, VQVAE2Config

    one = tiny_vqvae().eval()
    two = VQVAE2(VQVAE2Config(image_size=32, codebook_size_top=8, codebook_size_bottom=16,
                              code_dim=8, **TINY)).eval()
    assert one.levels == (Level("codes", 32, 4),)
    assert two.levels == (Level("top", 8, 8), Level("bottom", 16, 4, condition="top"))
    x = images(2, 32)
    for model, codes_type in ((one, VQVAECodes), (two, VQVAE2Codes)):
        assert isinstance(model, DiscreteAutoencoder) and check_autoencoder(model) is model
        codes = model.encode(x)
        assert type(codes) is codes_type and model.Codes is codes_type
        assert [tuple(c.shape[1:]) for c in codes] == list(model.latent_shapes())
        for c, level, shape in zip(codes, model.levels, model.latent_shapes()):
            assert c.dtype == torch.int64 and 0 <= int(c.min()) and int(c.max()) < level.codebook_size
            assert shape == (32 // level.downsample, 32 // level.downsample)
        with torch.no_grad():
            assert model.decode_indices(*codes).shape == x.shape
    assert not isinstance(tiny_vae(), DiscreteAutoencoder)
    with pytest.raises(TypeError, match="VQVAE or a VQVAE2"):
        check_autoencoder(tiny_vae())


def test_decode_takes_code_vectors_and_decode_indices_takes_codes():
    model = tiny_vqvae().eval()
    model(images(4, 32))  # eval: no init, just some state
    indices = model.encode(images(2, 32)).codes  # (2, 8, 8) codes
    with torch.no_grad():
        from_vectors = model.decode(model.quantizer.lookup(indices))  # (2, D, 8, 8) code vectors
        assert torch.equal(from_vectors, model.decode_indices(indices))
    assert from_vectors.shape == (2, 3, 32, 32)
    d = model.config.code_dim
    with pytest.raises(ValueError, match=rf"z_q must have shape \(B, {d}, h, w\)"):
        model.decode(torch.zeros(2, d + 1, 8, 8))
    with pytest.raises(TypeError, match="floating-point"):
        model.decode(indices[:, None].expand(2, d, 8, 8))  # codes are not code vectors


# ---- learning --------------------------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_tiny_vqvae_overfits_one_batch(ema, one_thread):
    x = smooth_batch(16)
    model = tiny_vqvae(image_size=16, codebook_size=32,
                       quantizer=QuantizerConfig(ema=ema, decay=0.9))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        out = model(x)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert min(losses[-10:]) < losses[0] / 5
    assert float(out.batch_perplexity) > 4  # several codes in use, not a collapsed codebook


# ---- Gaussian VAE baseline -----------------------------------------------------------------
@pytest.mark.parametrize("size,factor", [(32, 4), (48, 8), (40, 4)])
def test_vae_shapes_and_losses(size, factor):
    model = tiny_vae(image_size=size, downsample=factor)
    x = images(2, size)
    out = model(x)
    assert isinstance(out, VAEOutput)
    assert out.x_hat.shape == x.shape
    assert out.x_hat.abs().max() <= 1.0
    assert out.mu.shape == out.logvar.shape == (2, 4, size // factor, size // factor)
    for scalar in (out.loss, out.recon_loss, out.kl_loss):
        assert scalar.dim() == 0 and torch.isfinite(scalar)
    assert out.kl_loss >= 0
    torch.testing.assert_close(out.loss, out.recon_loss + model.config.kl_weight * out.kl_loss)
    torch.testing.assert_close(model.encode(x), out.mu)
    out.loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0


def test_vae_kl_scaling_matches_closed_form():
    model = tiny_vae()
    x = images(2, 32)
    out = model(x)
    mu, logvar = out.mu, out.logvar
    kl_sum = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum()
    torch.testing.assert_close(out.kl_loss, kl_sum / x.numel())  # nats per image element


def test_vae_kl_is_zero_at_the_prior():
    model = tiny_vae()
    with torch.no_grad():
        model.to_moments.weight.zero_()
        model.to_moments.bias.zero_()
    out = model(images(2, 32))
    assert out.kl_loss.item() == pytest.approx(0.0, abs=1e-7)


def test_vae_sample_shape_range_and_generator():
    model = tiny_vae(image_size=32, downsample=8).eval()
    samples = model.sample(3, generator=torch.Generator().manual_seed(7))
    assert samples.shape == (3, 3, 32, 32)
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    again = model.sample(3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(samples, again)
    assert model.decode(torch.randn(1, 4, 2, 2)).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="n "):
        model.sample(0)
    with pytest.raises(ValueError, match=r"\(B, 4, h, w\)"):
        model.decode(torch.randn(1, 5, 2, 2))
