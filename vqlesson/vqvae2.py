"""VQ-VAE-2: a two-level hierarchy of discrete codes (top and bottom levels).

Implements the two-level model of Razavi, van den Oord & Vinyals (2019), *Generating Diverse
High-Fidelity Images with VQ-VAE-2*, §3.1 and Fig. 2a:

- The **bottom encoder** maps the image to features on a grid 4x smaller (``H/4``).
- The **top encoder** downsamples those features by 2 more (``H/8``); a 1x1 convolution projects
  them to the code dimension D and the **top quantiser** replaces each vector by its nearest code.
- The quantised top level is decoded (upsampled by 2) back to the bottom grid and concatenated
  with the bottom features; a 1x1 convolution to D and the **bottom quantiser** give the bottom
  codes. The bottom level therefore only has to encode what the top level does not already say
  (local detail); the top level holds the global structure.
- The **decoder** takes the bottom codes concatenated with the top codes upsampled to the bottom
  grid (a stride-2 transposed convolution) and decodes by 4 to the image, ``tanh`` in ``[-1, 1]``.

Each level has its own codebook (:class:`~vqlesson.quantize.VectorQuantizer`, submodules
``quantizer_top`` and ``quantizer_bottom``) with its own usage statistics and perplexity. The loss
is the reconstruction MSE plus each level's quantiser loss (codebook + beta x commitment, or beta x
commitment with EMA codebooks; van den Oord et al. 2017, §3.2 eq. 3 and appendix A.1).

**The course's remedy for a bypassed top level (not in the paper).** With enough bottom codes the
decoder can rebuild the image from the bottom level alone and ignore the top level: the top codes
then carry nothing (a top-only decode is a flat colour) and a prior over them is useless. The
paper's large images (256 px, the global structure spanning many bottom positions) make this less
likely; at the course's small sizes it happens. ``VQVAE2Config.bottom_dropout`` = p drops the
bottom level during training: for each training image, with probability p, every bottom code
vector is replaced by the code vector of one code drawn uniformly from the bottom codebook
(:meth:`VQVAE2.drop_bottom`), so the decoder must rebuild those images from the top codes alone.
It is dropout (Srivastava et al. 2014) applied to a whole latent level, like the word dropout of
text VAEs whose decoder bypasses the latent (Bowman et al. 2016, *Generating Sentences from a
Continuous Space*). Eval mode, ``encode`` and ``decode_indices`` are unchanged; p = 0 trains with
the paper's loss alone (this model without the remedy; the paper's networks are larger).

The encoder and decoder blocks are those of the VQ-VAE (:mod:`vqlesson.vqvae`, van den Oord et al.
2017 §4.1): strided 4x4 convolutions, a 3x3 convolution, residual blocks. As in the paper's
256 px ImageNet model, the top grid is 1/8 and the bottom grid 1/4 of the image side (32x32 and
64x64 there); the paper's 1024 px FFHQ model adds a third level, not implemented here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .quantize import QuantizerConfig, VectorQuantizer
from .validate import (
    check_codes,
    check_images,
    check_int,
    check_latents,
    check_level_shapes,
    check_number,
    nearby_valid_sizes,
)
from .vqvae import Decoder, Encoder, Level, check_autoencoder_sizes

BOTTOM_FACTOR = 4  # image -> bottom grid
TOP_FACTOR = 2  # bottom grid -> top grid
TOTAL_FACTOR = BOTTOM_FACTOR * TOP_FACTOR  # image -> top grid (8): image sides must divide by it


# --------------------------------------------------------------------------------------------
# Configuration and outputs
# --------------------------------------------------------------------------------------------
@dataclass
class VQVAE2Config:
    """Hyperparameters of :class:`VQVAE2` (defaults: a course-sized version of the paper's model).

    Attributes:
        image_size: side of the square training images in pixels, a multiple of 8 (the top grid
            is ``image_size // 8``, the bottom grid ``image_size // 4``).
        in_channels: image channels (3 for RGB).
        hidden_channels: channels of the encoder/decoder feature maps.
        residual_channels: channels inside the residual blocks.
        num_residual_blocks: residual blocks in each encoder and decoder (>= 0).
        codebook_size_top: K of the top codebook (paper: 512).
        codebook_size_bottom: K of the bottom codebook (paper: 512).
        code_dim: D, size of a code vector at both levels (paper: 64).
        quantizer: how both codebooks learn (:class:`QuantizerConfig`; the paper's VQ-VAE-2 uses
            EMA, van den Oord et al. 2017 appendix A.1).
        bottom_dropout: probability in [0, 1) that a training image's bottom code vectors are
            all replaced by one random code's vector (the course's remedy for a bypassed top
            level, not the paper's; see the module docstring). 0: the remedy off.

    Raises:
        ValueError: a field out of range, or ``image_size`` not a multiple of 8 (the message
            lists the nearest valid sizes).
    """

    image_size: int = 64
    in_channels: int = 3
    hidden_channels: int = 128
    residual_channels: int = 32
    num_residual_blocks: int = 2
    codebook_size_top: int = 512
    codebook_size_bottom: int = 512
    code_dim: int = 64
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    bottom_dropout: float = 0.5

    def __post_init__(self) -> None:
        check_autoencoder_sizes(self, factor=TOTAL_FACTOR, reason=(
            f"the VQ-VAE-2 downsamples by {BOTTOM_FACTOR} to the bottom level and by "
            f"{TOTAL_FACTOR} to the top level"))
        for name in ("codebook_size_top", "codebook_size_bottom", "code_dim"):
            check_int(getattr(self, name), name, 1)
        if not isinstance(self.quantizer, QuantizerConfig):
            raise TypeError(f"quantizer must be a QuantizerConfig, got "
                            f"{type(self.quantizer).__name__}")
        check_number(self.bottom_dropout, "bottom_dropout", 0, 1, high_open=True,
                     note="a probability; 0 turns the course's remedy off, 1 would never train "
                          "the bottom level")

    def top_latent_size(self) -> int:
        """Side of the top code grid: ``image_size // 8``."""
        return self.image_size // TOTAL_FACTOR

    def bottom_latent_size(self) -> int:
        """Side of the bottom code grid: ``image_size // 4``."""
        return self.image_size // BOTTOM_FACTOR


class VQVAE2Codes(NamedTuple):
    """Code indices of both levels; unpacks as ``top, bottom = model.encode(x)``.

    Attributes:
        top: (B, H/8, W/8) int64 in ``[0, codebook_size_top)``.
        bottom: (B, H/4, W/4) int64 in ``[0, codebook_size_bottom)``.
    """

    top: Tensor
    bottom: Tensor


class VQVAE2Output(NamedTuple):
    """What :meth:`VQVAE2.forward` returns.

    Attributes:
        x_hat: (B, C, H, W) reconstruction, float in [-1, 1].
        top_indices: (B, H/8, W/8) int64 in ``[0, codebook_size_top)``.
        bottom_indices: (B, H/4, W/4) int64 in ``[0, codebook_size_bottom)``.
        loss: scalar, ``recon_loss + top_vq_loss + bottom_vq_loss`` (minimise this).
        recon_loss: scalar, mean squared error between x and x_hat (both in [-1, 1]).
        top_vq_loss: scalar, the top quantiser's loss (codebook + beta * commitment, or beta *
            commitment with EMA).
        bottom_vq_loss: scalar, the bottom quantiser's loss.
        top_batch_perplexity: scalar, this batch's top code-usage perplexity in ``[1, K_top]``
            (logged by :func:`~vqlesson.train.train_vqvae` as ``top_perplexity``).
        bottom_batch_perplexity: scalar, this batch's bottom code-usage perplexity in
            ``[1, K_bottom]`` (logged as ``bottom_perplexity``).
    """

    x_hat: Tensor
    top_indices: Tensor
    bottom_indices: Tensor
    loss: Tensor
    recon_loss: Tensor
    top_vq_loss: Tensor
    bottom_vq_loss: Tensor
    top_batch_perplexity: Tensor
    bottom_batch_perplexity: Tensor


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class VQVAE2(nn.Module):
    """Two-level VQ-VAE-2 (Razavi et al. 2019, §3.1, Fig. 2a); see the module docstring.

    ``x`` (B, C, H, W) float in [-1, 1] with H and W multiples of 8 (any such size works, not
    only ``config.image_size``, and images need not be square). Top latents and codes live on the
    (H/8, W/8) grid, bottom ones on the (H/4, W/4) grid; both have D = ``config.code_dim``.

    Two levels of codes, top then bottom (:class:`~vqlesson.vqvae.DiscreteAutoencoder`):
    ``levels``, ``encode``, ``decode_indices``, ``latent_shapes``.

    Raises:
        TypeError: ``config`` is not a :class:`VQVAE2Config`.
    """

    Codes = VQVAE2Codes

    def __init__(self, config: VQVAE2Config) -> None:
        super().__init__()
        if not isinstance(config, VQVAE2Config):
            raise TypeError(f"config must be a VQVAE2Config, got {type(config).__name__}")
        self.config = c = config
        blocks = (c.hidden_channels, c.residual_channels, c.num_residual_blocks)
        # Encoders: image -> bottom features (B, hidden, H/4, W/4) -> top features (H/8).
        self.encoder_bottom = Encoder(c.in_channels, *blocks, downsample=BOTTOM_FACTOR)
        self.encoder_top = Encoder(c.hidden_channels, *blocks, downsample=TOP_FACTOR)
        # Top level: 1x1 conv to D, codes on the (H/8, W/8) grid.
        self.pre_quant_top = nn.Conv2d(c.hidden_channels, c.code_dim, kernel_size=1)
        self.quantizer_top = VectorQuantizer(c.codebook_size_top, c.code_dim, c.quantizer)
        # Bottom level, conditioned on the top level decoded to (B, hidden, H/4, W/4): 1x1 conv
        # from 2 x hidden to D, codes on the (H/4, W/4) grid.
        self.decoder_top = Decoder(c.code_dim, c.hidden_channels, *blocks, downsample=TOP_FACTOR)
        self.pre_quant_bottom = nn.Conv2d(2 * c.hidden_channels, c.code_dim, kernel_size=1)
        self.quantizer_bottom = VectorQuantizer(c.codebook_size_bottom, c.code_dim, c.quantizer)
        # Decoder: bottom codes + top codes upsampled to (B, D, H/4, W/4) -> (B, C, H, W).
        self.upsample_top = nn.ConvTranspose2d(c.code_dim, c.code_dim, kernel_size=4,
                                               stride=TOP_FACTOR, padding=1)
        self.decoder = Decoder(2 * c.code_dim, c.in_channels, *blocks, downsample=BOTTOM_FACTOR)

    # ---- pieces -------------------------------------------------------------------------------
    def _bottom_latents(self, h_bottom: Tensor, z_q_top: Tensor) -> Tensor:
        """Bottom features (B, hidden, H/4, W/4) + quantised top (B, D, H/8, W/8)
        -> bottom encoder output ``z_e`` (B, D, H/4, W/4)."""
        top_decoded = self.decoder_top(z_q_top)  # (B, hidden, H/4, W/4)
        joint = torch.cat([h_bottom, top_decoded.to(h_bottom.dtype)], dim=1)  # (B, 2hid, H/4, W/4)
        return self.pre_quant_bottom(joint)

    def decode(self, z_q_top: Tensor, z_q_bottom: Tensor) -> Tensor:
        """Quantised latents (code vectors) of both levels to images.

        Args:
            z_q_top: (B, D, h, w) float, top code vectors (or their straight-through version).
            z_q_bottom: (B, D, 2h, 2w) float, bottom code vectors.

        Returns:
            (B, C, 8h, 8w) float in [-1, 1].

        Raises:
            TypeError: an argument is not a float tensor.
            ValueError: not (B, D, ...) with D = ``config.code_dim``, or grids that do not match
                (the bottom grid must be 2x the top grid, same batch size).
        """
        check_latents(z_q_top, self.config.code_dim, "z_q_top")
        check_latents(z_q_bottom, self.config.code_dim, "z_q_bottom")
        check_level_shapes(z_q_top, z_q_bottom, "z_q_top", "z_q_bottom", TOP_FACTOR)
        top_up = self.upsample_top(z_q_top)  # (B, D, 2h, 2w)
        joint = torch.cat([z_q_bottom, top_up.to(z_q_bottom.dtype)], dim=1)  # (B, 2D, 2h, 2w)
        return torch.tanh(self.decoder(joint))  # (B, C, 8h, 8w) in [-1, 1]

    def drop_bottom(self, z_q_bottom: Tensor) -> Tensor:
        """The course's remedy (not the paper's): in training mode, each image's bottom code
        vectors are, with probability ``config.bottom_dropout``, all replaced by the code vector
        of one bottom code drawn uniformly (detached: the codebook learns only from real codes).

        Args:
            z_q_bottom: (B, D, h, w) float, the quantised bottom level.

        Returns:
            (B, D, h, w), the same tensor in eval mode or when ``bottom_dropout`` is 0 (no random
            number is drawn then); otherwise the dropped images' rows replaced.
        """
        p = self.config.bottom_dropout
        if not self.training or p == 0:
            return z_q_bottom
        batch, device = z_q_bottom.shape[0], z_q_bottom.device
        dropped = torch.rand(batch, device=device) < p  # (B,) bool
        codes = torch.randint(self.config.codebook_size_bottom, (batch, 1, 1), device=device)
        # Codes drawn in [0, K): no range check (lookup's would read them back every step).
        vectors = self.quantizer_bottom.codebook.detach()[codes.view(batch)]  # (B, D)
        constant = vectors.view(batch, -1, 1, 1).to(z_q_bottom.dtype)  # (B, D) -> (B, D, 1, 1)
        constant = constant.expand_as(z_q_bottom)  # (B, D, h, w)
        return torch.where(dropped.view(batch, 1, 1, 1), constant, z_q_bottom)  # (B,)->(B,1,1,1)

    # ---- public API ---------------------------------------------------------------------------
    @property
    def levels(self) -> tuple[Level, Level]:
        """The top level (K = ``codebook_size_top``, grid H/8) and the bottom level
        (K = ``codebook_size_bottom``, grid H/4), whose prior is conditioned on the top codes."""
        c = self.config
        return (Level("top", c.codebook_size_top, TOTAL_FACTOR),
                Level("bottom", c.codebook_size_bottom, BOTTOM_FACTOR, condition="top"))

    @torch.no_grad()
    def encode(self, x: Tensor) -> VQVAE2Codes:
        """Images to the code indices of both levels, changing no state (no codebook init, EMA
        update, restart or usage count), like :meth:`VQVAE.encode`.

        Args:
            x: (B, C, H, W) float in [-1, 1], H and W multiples of 8.

        Returns:
            :class:`VQVAE2Codes` ``(top, bottom)``: (B, H/8, W/8) int64 in ``[0, K_top)`` and
            (B, H/4, W/4) int64 in ``[0, K_bottom)``. In eval mode they equal ``forward``'s
            ``top_indices`` and ``bottom_indices``.

        Raises:
            TypeError, ValueError: bad ``x`` (see :func:`~vqlesson.validate.check_images`).
        """
        check_images(x, channels=self.config.in_channels, multiple_of=TOTAL_FACTOR)
        h_bottom = self.encoder_bottom(x)  # (B, hidden, H/4, W/4)
        z_e_top = self.pre_quant_top(self.encoder_top(h_bottom))  # (B, D, H/8, W/8)
        top = self.quantizer_top.nearest_indices(z_e_top)  # (B, H/8, W/8)
        z_q_top = self.quantizer_top.lookup(top).to(z_e_top.dtype)  # (B, D, H/8, W/8)
        z_e_bottom = self._bottom_latents(h_bottom, z_q_top)  # (B, D, H/4, W/4)
        bottom = self.quantizer_bottom.nearest_indices(z_e_bottom)  # (B, H/4, W/4)
        return VQVAE2Codes(top, bottom)

    def decode_indices(self, top: Tensor, bottom: Tensor) -> Tensor:
        """Code indices of both levels to images (e.g. codes sampled from the priors).

        Args:
            top: (B, h, w) int64 in ``[0, codebook_size_top)``.
            bottom: (B, 2h, 2w) int64 in ``[0, codebook_size_bottom)``.

        Returns:
            (B, C, 8h, 8w) float in [-1, 1].

        Raises:
            TypeError: an argument is not an integer tensor.
            ValueError: not 3-D, indices out of range, or grids that do not match (the bottom
                grid must be 2x the top grid, same batch size).
        """
        check_codes(top, self.config.codebook_size_top, "top_indices", layout="(B, h, w)")
        check_codes(bottom, self.config.codebook_size_bottom, "bottom_indices", layout="(B, h, w)")
        check_level_shapes(top, bottom, "top_indices", "bottom_indices", TOP_FACTOR)
        z_q_top = self.quantizer_top.lookup(top)  # (B, D, h, w)
        z_q_bottom = self.quantizer_bottom.lookup(bottom)  # (B, D, 2h, 2w)
        return self.decode(z_q_top, z_q_bottom)

    def forward(self, x: Tensor) -> VQVAE2Output:
        """Reconstruct ``x`` through both discrete levels.

        In training mode the quantisers initialise their codebooks on the first call, update
        them by EMA and restart dead codes; every call adds to their usage counts; and, with
        ``config.bottom_dropout`` > 0, the decoder sees some images' bottom level replaced by one
        code (:meth:`drop_bottom`, the course's remedy); the returned indices are the encoder's.

        Args:
            x: (B, C, H, W) float in [-1, 1], H and W multiples of 8.

        Returns:
            :class:`VQVAE2Output`.

        Raises:
            TypeError, ValueError: bad ``x`` (see :func:`~vqlesson.validate.check_images`).
        """
        check_images(x, channels=self.config.in_channels, multiple_of=TOTAL_FACTOR)
        h_bottom = self.encoder_bottom(x)  # (B, hidden, H/4, W/4)
        z_e_top = self.pre_quant_top(self.encoder_top(h_bottom))  # (B, D, H/8, W/8)
        vq_top = self.quantizer_top(z_e_top)  # z_q (B, D, H/8, W/8), indices (B, H/8, W/8)
        z_e_bottom = self._bottom_latents(h_bottom, vq_top.z_q)  # (B, D, H/4, W/4)
        vq_bottom = self.quantizer_bottom(z_e_bottom)  # z_q (B, D, H/4, W/4), indices (B, H/4, W/4)
        z_q_bottom = self.drop_bottom(vq_bottom.z_q)  # training: some images' bottom dropped
        x_hat = self.decode(vq_top.z_q, z_q_bottom)  # (B, C, H, W) in [-1, 1]
        recon_loss = F.mse_loss(x_hat.float(), x.float())
        return VQVAE2Output(
            x_hat=x_hat,
            top_indices=vq_top.indices,
            bottom_indices=vq_bottom.indices,
            loss=recon_loss + vq_top.loss + vq_bottom.loss,
            recon_loss=recon_loss,
            top_vq_loss=vq_top.loss,
            bottom_vq_loss=vq_bottom.loss,
            top_batch_perplexity=vq_top.batch_perplexity,
            bottom_batch_perplexity=vq_bottom.batch_perplexity,
        )

    def latent_shapes(
        self, image_size: int | None = None
    ) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((Ht, Wt), (Hb, Wb))``: the top and bottom code grids for square images of side
        ``image_size`` (default: the config's), i.e. ``((s/8, s/8), (s/4, s/4))``.

        Raises:
            ValueError: ``image_size`` not a positive multiple of 8 (nearest valid sizes listed).
        """
        size = self.config.image_size if image_size is None else image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % TOTAL_FACTOR:
            nearby = nearby_valid_sizes(max(int(size), 1), TOTAL_FACTOR)
            raise ValueError(
                f"image_size {size!r} is not a positive multiple of {TOTAL_FACTOR} (the VQ-VAE-2's "
                f"top-level downsampling factor); use e.g. {' or '.join(str(s) for s in nearby)}"
            )
        top, bottom = size // TOTAL_FACTOR, size // BOTTOM_FACTOR
        return (top, top), (bottom, bottom)
