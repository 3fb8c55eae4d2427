"""The VQ-VAE and a continuous (Gaussian) VAE baseline with the same encoder and decoder.

Implements the image model of van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete
Representation Learning*, §4.1: an encoder of strided 4x4 convolutions (stride 2) followed by a
3x3 convolution and two residual blocks (ReLU, 3x3 conv, ReLU, 1x1 conv), a 1x1 convolution to the
code dimension, the vector quantiser (§3, :mod:`vqlesson.quantize`), and a decoder that mirrors the
encoder with transposed 4x4 convolutions. The paper downsamples 128 px images by 4 (two strided
convolutions, 32x32 latents); here the factor is 4 or 8.

Images are float in ``[-1, 1]`` on the way in and, through a final ``tanh``, on the way out, so
the reconstruction error compares like with like.

Every VQ autoencoder of the course (this one-level VQ-VAE and the two-level
:class:`~vqlesson.vqvae2.VQVAE2`) offers one interface, :class:`DiscreteAutoencoder`: its
``levels`` (name, K, downsampling factor, conditioning level), ``encode(x)`` -> one code map per
level (coarsest first), ``decode_indices(*codes)`` and ``latent_shapes()``. The code sets, priors,
sampling and workflows only use that, so a model with another number of levels needs no change
outside its own file.

The Gaussian VAE (Kingma & Welling 2014, *Auto-Encoding Variational Bayes*) is the course's
continuous baseline: same :class:`Encoder` / :class:`Decoder`, a spatial Gaussian latent and the
reparameterisation trick instead of the quantiser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .quantize import QuantizerConfig, VectorQuantizer
from .validate import (
    check_choice,
    check_images,
    check_int,
    check_latents,
    check_multiple,
    check_number,
    nearby_valid_sizes,
)

ENCODER_FACTORS = (2, 4, 8)  # downsampling factors the Encoder/Decoder blocks support
VQVAE_FACTORS = (4, 8)  # downsampling factors of the VQ-VAE / VAE models
LOGVAR_RANGE = (-30.0, 20.0)  # clamp of the VAE's log-variance, keeps exp() finite


def check_autoencoder_sizes(config: object, *, factor: int | None = None,
                            reason: str = "") -> None:
    """The checks every autoencoder config runs once, on construction: ``image_size``,
    ``in_channels``, ``hidden_channels``, ``residual_channels`` ints >= 1,
    ``num_residual_blocks`` an int >= 0, and ``image_size`` a multiple of ``factor`` (default:
    ``config.downsample``, one of 4, 8).

    Raises:
        ValueError: the first field out of range, named (sizes: the nearest valid ones listed).
    """
    for name in ("image_size", "in_channels", "hidden_channels", "residual_channels"):
        check_int(getattr(config, name), name, 1)
    check_int(config.num_residual_blocks, "num_residual_blocks", 0)
    if factor is None:
        factor = check_choice(config.downsample, "downsample", VQVAE_FACTORS)
        reason = f"downsample = {factor}"
    check_multiple(config.image_size, factor, "image_size", reason)


def _halvings(downsample: int) -> int:
    """The stride-2 convolutions of an encoder/decoder block of factor ``downsample`` (2, 4, 8).

    Raises:
        ValueError: ``downsample`` not one of 2, 4, 8.
    """
    return check_choice(downsample, "downsample", ENCODER_FACTORS).bit_length() - 1  # 4 -> 2


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
class ResidualBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``; (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, residual_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, residual_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(residual_channels, channels, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResidualStack(nn.Module):
    """``num_blocks`` :class:`ResidualBlock` s, then a ReLU; (B, C, H, W) -> (B, C, H, W) >= 0.

    Args:
        channels: C, the channels in and out.
        residual_channels: channels inside each block (the 3x3 conv's output).
        num_blocks: number of blocks (>= 0; 0 is a plain ReLU).
    """

    def __init__(self, channels: int, residual_channels: int, num_blocks: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *[ResidualBlock(channels, residual_channels) for _ in range(num_blocks)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.blocks(x))


class Encoder(nn.Module):
    """Strided 4x4 convolutions, a 3x3 convolution, a residual stack (§4.1): (B, in_channels,
    H, W) float -> (B, hidden_channels, H/f, W/f) >= 0, f = ``downsample`` (2, 4 or 8).

    log2(f) stride-2 convolutions, each followed by a ReLU; of several, the first goes to
    ``hidden_channels // 2`` channels. A model adds its own 1x1 projection.

    Raises:
        ValueError: ``downsample`` not 2, 4 or 8; in forward, ``x`` not (B, in_channels, H, W)
            with H, W multiples of f.
    """

    def __init__(self, in_channels: int, hidden_channels: int, residual_channels: int,
                 num_residual_blocks: int, downsample: int = 4) -> None:
        super().__init__()
        halvings = _halvings(downsample)
        self.in_channels = in_channels
        self.downsample = downsample
        layers: list[nn.Module] = []
        channels = in_channels
        for i in range(halvings):
            out = hidden_channels // 2 if (i == 0 and halvings > 1) else hidden_channels
            layers += [nn.Conv2d(channels, out, kernel_size=4, stride=2, padding=1), nn.ReLU()]
            channels = out
        layers.append(nn.Conv2d(channels, hidden_channels, kernel_size=3, padding=1))
        layers.append(ResidualStack(hidden_channels, residual_channels, num_residual_blocks))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, channels=self.in_channels, multiple_of=self.downsample)
        return self.net(x)


class Decoder(nn.Module):
    """The mirror of :class:`Encoder`: a 3x3 convolution, a residual stack, log2(f) transposed
    4x4 stride-2 convolutions: (B, in_channels, h, w) -> (B, out_channels, h*f, w*f), unbounded
    (the models apply ``tanh`` for images in [-1, 1]); f = ``downsample`` (2, 4 or 8).

    Raises:
        ValueError: ``downsample`` not 2, 4 or 8.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int,
                 residual_channels: int, num_residual_blocks: int, downsample: int = 4) -> None:
        super().__init__()
        halvings = _halvings(downsample)
        self.downsample = downsample
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            ResidualStack(hidden_channels, residual_channels, num_residual_blocks),
        ]
        channels = hidden_channels
        for i in range(halvings):
            last = i == halvings - 1
            if last:
                out = out_channels
            elif i == halvings - 2:
                out = hidden_channels // 2
            else:
                out = hidden_channels
            layers.append(nn.ConvTranspose2d(channels, out, kernel_size=4, stride=2, padding=1))
            if not last:
                layers.append(nn.ReLU())
            channels = out
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


# --------------------------------------------------------------------------------------------
# VQ-VAE
# --------------------------------------------------------------------------------------------
@dataclass
class VQVAEConfig:
    """Hyperparameters of :class:`VQVAE` (defaults: the paper's §4.1 model at a course size).

    Attributes:
        image_size: side of the square training images in pixels (a multiple of ``downsample``).
        in_channels: image channels (3 for RGB).
        hidden_channels: channels of the encoder/decoder feature maps (paper: 256).
        residual_channels: channels inside the residual blocks (paper: 32).
        num_residual_blocks: residual blocks in the encoder and in the decoder (paper: 2).
        downsample: spatial factor f from image to latent grid, 4 or 8.
        codebook_size: K, number of codes (paper: 512).
        code_dim: D, size of a code vector (the reference implementation uses 64).
        quantizer: how the codebook learns (beta, EMA, init, restarts: :class:`QuantizerConfig`).

    Raises:
        ValueError: a field out of range (checked on construction).
    """

    image_size: int = 64
    in_channels: int = 3
    hidden_channels: int = 128
    residual_channels: int = 32
    num_residual_blocks: int = 2
    downsample: int = 4
    codebook_size: int = 512
    code_dim: int = 64
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)

    def __post_init__(self) -> None:
        check_autoencoder_sizes(self)
        check_int(self.codebook_size, "codebook_size", 1)
        check_int(self.code_dim, "code_dim", 1)
        if not isinstance(self.quantizer, QuantizerConfig):
            raise TypeError(f"quantizer must be a QuantizerConfig, got "
                            f"{type(self.quantizer).__name__}")

    def latent_size(self) -> int:
        """Side of the latent grid: ``image_size // downsample``."""
        return self.image_size // self.downsample


class VQVAEOutput(NamedTuple):
    """What :meth:`VQVAE.forward` returns.

    Attributes:
        x_hat: (B, C, H, W) reconstruction, float in [-1, 1].
        indices: (B, H/f, W/f) int64 code indices in [0, K).
        loss: scalar, ``recon_loss + vq_loss`` (minimise this).
        recon_loss: scalar, mean squared error between x and x_hat (both in [-1, 1]).
        vq_loss: scalar, the quantiser's loss (codebook + beta * commitment, or beta *
            commitment with EMA).
        batch_perplexity: scalar, this batch's code-usage perplexity in [1, K] (the history
            of :func:`~vqlesson.train.train_vqvae` logs it as ``batch_perplexity``, next to the
            epoch's ``perplexity``).
    """

    x_hat: Tensor
    indices: Tensor
    loss: Tensor
    recon_loss: Tensor
    vq_loss: Tensor
    batch_perplexity: Tensor


# --------------------------------------------------------------------------------------------
# The autoencoder interface: what the generic code (codes, priors, sampling, runs) may ask
# --------------------------------------------------------------------------------------------
class Level(NamedTuple):
    """One level of codes of a discrete autoencoder.

    Attributes:
        name: the level's name in code sets, prior files and metrics: ``"codes"`` (VQ-VAE),
            ``"top"`` and ``"bottom"`` (VQ-VAE-2).
        codebook_size: K of the level's codebook; its codes lie in [0, K).
        downsample: image side / code grid side (VQ-VAE: f; VQ-VAE-2: 8 top, 4 bottom).
        condition: the name of the coarser level whose codes condition this level's prior
            (VQ-VAE-2's bottom: ``"top"``, Razavi et al. 2019, §3.2), or ``None``.
    """

    name: str
    codebook_size: int
    downsample: int
    condition: str | None = None


@runtime_checkable
class DiscreteAutoencoder(Protocol):
    """What every VQ autoencoder offers, whatever its number of levels (:class:`VQVAE`: one,
    :class:`~vqlesson.vqvae2.VQVAE2`: top and bottom). Code sets, priors, sampling, the
    workflows and the widgets use only this, never the class; the continuous
    :class:`VAE` is not one (it has no codes).

    - ``levels``: a :class:`Level` per level, coarsest first;
    - ``Codes``: the NamedTuple ``encode`` returns, one field per level, in that order;
    - ``encode(x)``: (B, C, H, W) float in [-1, 1] -> ``Codes`` of (B, H/f_l, W/f_l) int64 in
      [0, K_l), changing no state;
    - ``decode_indices(*codes)``: one code map per level -> (B, C, H, W) float in [-1, 1];
    - ``latent_shapes(image_size=None)``: one (h, w) per level for square images.
    """

    levels: tuple[Level, ...]
    Codes: type

    def encode(self, x: Tensor) -> tuple[Tensor, ...]: ...

    def decode_indices(self, *codes: Tensor) -> Tensor: ...

    def latent_shapes(self, image_size: int | None = None) -> tuple[tuple[int, int], ...]: ...


def check_autoencoder(model: object, name: str = "model") -> DiscreteAutoencoder:
    """``model`` if it is a discrete autoencoder (:class:`DiscreteAutoencoder`).

    Raises:
        TypeError: another kind of model (a VAE, a prior, ...), naming ``name``.
    """
    if not isinstance(model, DiscreteAutoencoder):
        raise TypeError(
            f"{name} must be a VQVAE or a VQVAE2 (vqlesson.vqvae / vqlesson.vqvae2), got "
            f"{type(model).__name__}"
        )
    return model


class VQVAECodes(NamedTuple):
    """The codes of a :class:`VQVAE`, one level; unpacks as ``codes, = model.encode(x)``.

    Attributes:
        codes: (B, H/f, W/f) int64 in [0, K).
    """

    codes: Tensor


class VQVAE(nn.Module):
    """VQ-VAE (van den Oord et al. 2017): encoder -> 1x1 conv to D -> quantiser -> decoder -> tanh.

    ``x`` (B, C, H, W) float in [-1, 1], H and W multiples of f = ``config.downsample`` (any such
    size works, not only ``config.image_size``); latents (B, D, H/f, W/f); codes (B, H/f, W/f).
    One level of codes (:class:`DiscreteAutoencoder`): ``levels``, ``encode``,
    ``decode_indices``, ``latent_shapes``.
    """

    Codes = VQVAECodes

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        if not isinstance(config, VQVAEConfig):
            raise TypeError(f"config must be a VQVAEConfig, got {type(config).__name__}")
        self.config = c = config
        blocks = (c.hidden_channels, c.residual_channels, c.num_residual_blocks, c.downsample)
        self.encoder = Encoder(c.in_channels, *blocks)  # (B, hidden, H/f, W/f)
        self.pre_quant = nn.Conv2d(c.hidden_channels, c.code_dim, kernel_size=1)
        self.quantizer = VectorQuantizer(c.codebook_size, c.code_dim, c.quantizer)
        self.decoder = Decoder(c.code_dim, c.in_channels, *blocks)  # (B, C, H, W), unbounded

    def encode_latents(self, x: Tensor) -> Tensor:
        """Continuous encoder output before quantisation.

        ``x`` (B, C, H, W) float in [-1, 1] -> ``z_e`` (B, D, H/f, W/f) float.
        """
        return self.pre_quant(self.encoder(x))

    @property
    def levels(self) -> tuple[Level]:
        """One :class:`Level`: ``codes``, K = ``config.codebook_size``, f = ``config.downsample``."""
        return (Level("codes", self.config.codebook_size, self.config.downsample),)

    @torch.no_grad()
    def encode(self, x: Tensor) -> VQVAECodes:
        """Images to code indices, changing no state (no EMA update, no usage count).

        Args:
            x: (B, C, H, W) float in [-1, 1], H and W multiples of ``config.downsample``.

        Returns:
            :class:`VQVAECodes` ``(codes,)``: (B, H/f, W/f) int64 in [0, K).

        Raises:
            TypeError, ValueError: bad ``x`` (see :func:`~vqlesson.validate.check_images`).
        """
        return VQVAECodes(self.quantizer.nearest_indices(self.encode_latents(x)))

    def decode(self, z_q: Tensor) -> Tensor:
        """Quantised latents (code vectors) to images.

        Args:
            z_q: (B, D, h, w) float, code vectors (or their straight-through version),
                D = ``config.code_dim``.

        Returns:
            (B, C, h*f, w*f) float in [-1, 1].

        Raises:
            TypeError, ValueError: ``z_q`` is not a (B, D, h, w) float tensor (see
                :func:`~vqlesson.validate.check_latents`).
        """
        check_latents(z_q, self.config.code_dim, "z_q")
        return torch.tanh(self.decoder(z_q))  # (B, C, h*f, w*f) in [-1, 1]

    def decode_indices(self, indices: Tensor) -> Tensor:
        """Code indices to images: their code vectors, then :meth:`decode`.

        Args:
            indices: (B, h, w) int64 in [0, K).

        Returns:
            (B, C, h*f, w*f) float in [-1, 1].

        Raises:
            TypeError, ValueError: see :meth:`VectorQuantizer.lookup`.
        """
        return self.decode(self.quantizer.lookup(indices))

    def forward(self, x: Tensor) -> VQVAEOutput:
        """Reconstruct ``x`` through the discrete bottleneck.

        Args:
            x: (B, C, H, W) float in [-1, 1], H and W multiples of ``config.downsample``.

        Returns:
            :class:`VQVAEOutput`.

        Raises:
            TypeError, ValueError: bad ``x`` (see :func:`~vqlesson.validate.check_images`).
        """
        vq = self.quantizer(self.encode_latents(x))
        x_hat = self.decode(vq.z_q)  # (B, C, H, W) in [-1, 1]
        recon_loss = F.mse_loss(x_hat.float(), x.float())
        return VQVAEOutput(
            x_hat=x_hat,
            indices=vq.indices,
            loss=recon_loss + vq.loss,
            recon_loss=recon_loss,
            vq_loss=vq.loss,
            batch_perplexity=vq.batch_perplexity,
        )

    def latent_shapes(self, image_size: int | None = None) -> tuple[tuple[int, int]]:
        """``((h, w),)``: the code grid for square images of side ``image_size`` (default: the
        config's), ``h = w = image_size / f``.

        Raises:
            ValueError: ``image_size`` not a positive multiple of ``config.downsample``.
        """
        size = self.config.image_size if image_size is None else image_size
        f = self.config.downsample
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % f != 0:
            raise ValueError(
                f"image_size {size!r} is not a positive multiple of the downsampling factor {f}; "
                f"use e.g. {' or '.join(str(s) for s in nearby_valid_sizes(max(int(size), 1), f))}"
            )
        return ((size // f, size // f),)


# --------------------------------------------------------------------------------------------
# Gaussian VAE baseline
# --------------------------------------------------------------------------------------------
@dataclass
class VAEConfig:
    """Hyperparameters of :class:`VAE`; encoder/decoder fields as in :class:`VQVAEConfig`.

    Attributes:
        latent_channels: channels of the spatial Gaussian latent (B, latent_channels, H/f, W/f).
        kl_weight: weight of the KL term (1.0: the ELBO for a Gaussian decoder of variance 1/2,
            see :class:`VAE`).

    Raises:
        ValueError: a field out of range (checked on construction).
    """

    image_size: int = 64
    in_channels: int = 3
    hidden_channels: int = 128
    residual_channels: int = 32
    num_residual_blocks: int = 2
    downsample: int = 4
    latent_channels: int = 64
    kl_weight: float = 1.0

    def __post_init__(self) -> None:
        check_autoencoder_sizes(self)
        check_int(self.latent_channels, "latent_channels", 1)
        check_number(self.kl_weight, "kl_weight", 0)

    def latent_size(self) -> int:
        """Side of the latent grid: ``image_size // downsample``."""
        return self.image_size // self.downsample


class VAEOutput(NamedTuple):
    """What :meth:`VAE.forward` returns.

    Attributes:
        x_hat: (B, C, H, W) reconstruction from a sampled latent, float in [-1, 1].
        mu: (B, L, H/f, W/f) posterior mean.
        logvar: (B, L, H/f, W/f) posterior log-variance (clamped to ``LOGVAR_RANGE``).
        loss: scalar, ``recon_loss + kl_weight * kl_loss``.
        recon_loss: scalar, mean squared error per image element (as the VQ-VAE's).
        kl_loss: scalar >= 0, KL(q(z|x) || N(0, I)) in nats per image element (see :class:`VAE`).
    """

    x_hat: Tensor
    mu: Tensor
    logvar: Tensor
    loss: Tensor
    recon_loss: Tensor
    kl_loss: Tensor


class VAE(nn.Module):
    """Gaussian VAE with the VQ-VAE's encoder and decoder, the course's continuous baseline.

    ``q(z|x) = N(mu, diag(exp(logvar)))`` over a spatial latent (B, L, H/f, W/f), prior N(0, I),
    a sample by reparameterisation ``z = mu + exp(logvar / 2) * eps``.

    Loss scaling: with a Gaussian decoder of variance sigma², the negative ELBO of one image is
    ``sum_pixels (x - x_hat)² / (2 sigma²) + KL`` (+ a constant). Dividing by the number of image
    elements P = C·H·W gives ``mse / (2 sigma²) + KL / P``. So ``recon_loss`` is the MSE averaged
    over all image elements (like the VQ-VAE's) and ``kl_loss`` is the KL *summed* over the
    latent elements of an image, averaged over the batch and divided by P (nats per image
    element). With ``kl_weight = 1`` the loss is the negative ELBO per element for sigma² = 1/2;
    ``kl_weight = 2 sigma²`` in general.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if not isinstance(config, VAEConfig):
            raise TypeError(f"config must be a VAEConfig, got {type(config).__name__}")
        self.config = c = config
        blocks = (c.hidden_channels, c.residual_channels, c.num_residual_blocks, c.downsample)
        self.encoder = Encoder(c.in_channels, *blocks)  # (B, hidden, H/f, W/f)
        self.to_moments = nn.Conv2d(c.hidden_channels, 2 * c.latent_channels, kernel_size=1)
        self.decoder = Decoder(c.latent_channels, c.in_channels, *blocks)  # (B, C, H, W)

    def moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, C, H, W) in [-1, 1] -> ``(mu, logvar)``, each (B, L, H/f, W/f)."""
        mu, logvar = self.to_moments(self.encoder(x)).chunk(2, dim=1)  # 2 x (B, L, h, w)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: Tensor) -> Tensor:
        """Posterior mean: ``x`` (B, C, H, W) in [-1, 1] -> ``mu`` (B, L, H/f, W/f)."""
        return self.moments(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Latents (B, L, h, w) -> images (B, C, h*f, w*f) in [-1, 1]."""
        check_latents(z, self.config.latent_channels, "z", channels_name="latent_channels")
        return torch.tanh(self.decoder(z))

    def forward(self, x: Tensor) -> VAEOutput:
        """Reconstruct ``x`` through a sampled latent and compute the loss (see class docstring).

        Args:
            x: (B, C, H, W) float in [-1, 1], H and W multiples of ``config.downsample``.

        Raises:
            TypeError, ValueError: bad ``x`` (see :func:`~vqlesson.validate.check_images`).
        """
        mu, logvar = self.moments(x)  # (B, L, h, w) each
        if self.training:  # reparameterisation: a sample of q(z|x), differentiable in mu, logvar
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # (B, L, h, w)
        else:  # evaluation reconstructs from the posterior mean, as is usual for VAEs
            z = mu
        x_hat = self.decode(z)  # (B, C, H, W)
        recon_loss = F.mse_loss(x_hat.float(), x.float())
        kl_map = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float())
        elements_per_image = x[0].numel()  # P = C·H·W
        kl_loss = kl_map.sum() / (x.shape[0] * elements_per_image)
        loss = recon_loss + self.config.kl_weight * kl_loss
        return VAEOutput(x_hat, mu, logvar, loss, recon_loss, kl_loss)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` images from the prior: z ~ N(0, I), decoded.

        Args:
            n: number of images (>= 1).
            generator: optional ``torch.Generator`` (CPU or the model's device) for reproducible
                samples.

        Returns:
            (n, C, image_size, image_size) float in [-1, 1], on the model's device.

        Raises:
            ValueError: ``n`` < 1.
        """
        check_int(n, "n", 1, note="the number of samples")
        device = next(self.parameters()).device
        size = self.config.latent_size()
        shape = (n, self.config.latent_channels, size, size)
        draw_device = generator.device if generator is not None else device
        z = torch.randn(shape, generator=generator, device=draw_device).to(device)
        return self.decode(z)
