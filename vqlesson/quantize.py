"""Vector quantisation: the discrete bottleneck of the VQ-VAE.

Implements van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation Learning*:

- §3.1 (eq. 1-2): each encoder output vector ``z_e`` is replaced by its nearest code vector
  ``e_k`` in a codebook of ``codebook_size`` (K) vectors of size ``code_dim`` (D).
- §3.2 (eq. 3): the straight-through gradient (the decoder's gradient with respect to ``z_q`` is
  copied onto ``z_e``) and the loss ``||sg[z_e] - e||² + beta ||z_e - sg[e]||²`` (codebook term
  plus ``beta`` times the commitment term; ``sg`` is stop-gradient).
- Appendix A.1: the codebook learnt by exponential moving averages (EMA) of the encoder outputs
  assigned to each code, with Laplace smoothing of the cluster sizes, instead of the codebook term.

Two practical additions that are not in the paper, both against *codebook collapse* (few codes in
use): k-means initialisation of the codebook on the first training batch (Łańcucki et al. 2020,
*Robust Training of Vector Quantized Bottleneck Models*) and restarting codes that have been unused
for a number of steps with encoder outputs from the current batch (Dhariwal et al. 2020, *Jukebox*).

All quantiser maths runs in float32, also under ``torch.autocast``.

Data-parallel training (torchrun, :mod:`vqlesson.distributed`): in training mode under a process
group, every process's assignment counts and EMA sums are all-reduced before they are used, the
k-means initialisation runs on rank 0 over the encoder outputs of all processes and is broadcast,
and dead-code restarts (decided from the all-reduced counts, so the same codes on every process)
take vectors drawn by rank 0 from all processes' outputs, broadcast. Every process therefore keeps
the same codebook, equal to what one process would learn from the whole global batch. The
functions at the end of this module hold that choreography; the class only calls them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .metrics import perplexity_from_counts
from .validate import check_choice, check_codes, check_int, check_latents, check_number

INIT_METHODS = ("kmeans", "random")
# Noise added to data vectors copied into the codebook (k-means resampling, dead-code restarts),
# relative to the per-dimension standard deviation of the batch. Small: it only breaks ties.
JITTER = 1e-3


@dataclass(frozen=True)
class QuantizerConfig:
    """How a :class:`VectorQuantizer` learns its codebook (K and D belong to the model).

    Attributes:
        beta: weight of the commitment loss ``||z_e - sg[e]||²``, >= 0 (paper: 0.25).
        ema: learn the codebook by EMA (appendix A.1; the codebook is then a buffer) instead of
            by the codebook loss (an ``nn.Parameter``).
        decay: EMA decay gamma in ``[0, 1)`` (paper: 0.99); used only with ``ema``.
        eps: Laplace smoothing of the EMA cluster sizes, > 0; used only with ``ema``.
        init: ``"kmeans"``: k-means on the first training batch's encoder outputs;
            ``"random"``: uniform in ``±1/K`` (the reference code's init; risks collapse).
        restart_dead_after: a code unused for this many training steps in a row is replaced by
            a random encoder output of the batch; ``None``: never.
        kmeans_iters: Lloyd iterations of the k-means initialisation, >= 0.

    Raises:
        ValueError: a field out of range (on construction).
    """

    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    eps: float = 1e-5
    init: str = "kmeans"
    restart_dead_after: int | None = 20
    kmeans_iters: int = 10

    def __post_init__(self) -> None:
        check_number(self.beta, "beta", 0, note="the commitment weight")
        check_choice(self.ema, "ema", (True, False))
        check_number(self.decay, "decay", 0, 1, high_open=True, note="the paper uses 0.99")
        check_number(self.eps, "eps", 0, low_open=True, note="the Laplace smoothing")
        check_choice(self.init, "init", INIT_METHODS)
        check_int(self.restart_dead_after, "restart_dead_after", 1, none_ok=True,
                  note="None: no restarts")
        check_int(self.kmeans_iters, "kmeans_iters", 0)


class VQOutput(NamedTuple):
    """What :class:`VectorQuantizer` returns.

    Attributes:
        z_q: (B, D, H, W) quantised latents in ``z_e``'s dtype; the forward value is the nearest
            code vector, the gradient is straight-through: ``z_e + (e - z_e).detach()``.
        indices: (B, H, W) int64 in ``[0, K)``, the code of the nearest code vector.
        loss: scalar float32, ``codebook + beta * commitment`` (both mean squared errors); with
            ``ema`` only ``beta * commitment`` (the codebook is learnt by EMA).
        batch_perplexity: scalar float32 in ``[1, K]``, ``exp(entropy)`` of this batch's code
            usage (:func:`~vqlesson.metrics.perplexity_from_counts`).
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    batch_perplexity: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser: K code vectors of size D (§3.1-3.2, appendix A.1).

    ``codebook_size`` K >= 1, ``code_dim`` D >= 1 (the channels of ``z_e``); ``config``: how the
    codebook learns. State (in ``state_dict``): ``embedding`` (K, D) (a parameter without EMA),
    ``ema_cluster_size`` (K,) and ``ema_embed_sum`` (K, D) (EMA only), ``initialized``, and (K,)
    int64 ``steps_since_used`` and ``usage_counts`` (since :meth:`reset_usage`). Raises
    ValueError (K or D not an int >= 1) or TypeError (``config`` not a QuantizerConfig).
    """

    def __init__(self, codebook_size: int, code_dim: int,
                 config: QuantizerConfig = QuantizerConfig()) -> None:
        super().__init__()
        if not isinstance(config, QuantizerConfig):
            raise TypeError(f"config must be a QuantizerConfig, got {type(config).__name__}")
        self.codebook_size = check_int(codebook_size, "codebook_size", 1)
        self.code_dim = check_int(code_dim, "code_dim", 1)
        self.config = config
        self.last_restarts = 0
        bound = 1.0 / codebook_size
        initial = torch.empty(codebook_size, code_dim).uniform_(-bound, bound)  # (K, D)
        if config.ema:
            self.register_buffer("embedding", initial)
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", initial.clone())
        else:
            self.embedding = nn.Parameter(initial)
        self.register_buffer("initialized", torch.tensor(config.init == "random"))
        self.register_buffer("steps_since_used", torch.zeros(codebook_size, dtype=torch.int64))
        self.register_buffer("usage_counts", torch.zeros(codebook_size, dtype=torch.int64))

    @property
    def codebook(self) -> Tensor:
        """(K, D) the code vectors (the ``nn.Parameter`` itself without EMA)."""
        return self.embedding

    def forward(self, z_e: Tensor) -> VQOutput:
        """``z_e`` (B, D, H, W) float -> :class:`VQOutput`. In training mode the first call
        initialises the codebook (k-means), every call updates it (:meth:`update_codebook`;
        collective under a process group). Every call counts its codes in ``usage_counts``.
        Raises TypeError (not a float tensor) or ValueError (not (B, D, H, W), D = code_dim)."""
        check_latents(z_e, self.code_dim, "z_e")
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = z_e.float()  # (B, D, H, W)
            b, d, h, w = z.shape
            flat_z = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B·H·W, D)
            if self.training and not bool(self.initialized):
                if self.config.init == "kmeans":
                    self.set_codebook(*kmeans_init(flat_z.detach(), self.codebook_size,
                                                   self.config.kmeans_iters))
                self.initialized.fill_(True)
            codebook = self.codebook.float()  # (K, D)
            with torch.no_grad():
                flat_indices = squared_distances(flat_z, codebook).argmin(dim=1)  # (B·H·W,)
            e = F.embedding(flat_indices, codebook)  # (B·H·W, D)
            e = e.view(b, h, w, d).permute(0, 3, 1, 2)  # (B·H·W, D) -> (B, D, H, W)
            loss = self.config.beta * F.mse_loss(z, e.detach())  # beta x commitment
            if not self.config.ema:
                loss = F.mse_loss(e, z.detach()) + loss  # + the codebook term
            z_q = z + (e - z).detach()  # (B, D, H, W): value e, gradient straight through to z_e
            with torch.no_grad():
                counts = (self.update_codebook(flat_z.detach(), flat_indices) if self.training
                          else code_counts(flat_indices, self.codebook_size))  # (K,)
                self.usage_counts += counts.round().to(self.usage_counts.dtype)
                batch_perplexity = perplexity_from_counts(counts, check=False)
        indices = flat_indices.view(b, h, w)  # (B·H·W,) -> (B, H, W)
        return VQOutput(z_q.to(z_e.dtype), indices, loss, batch_perplexity)

    @torch.no_grad()
    def update_codebook(self, flat_z: Tensor, indices: Tensor) -> Tensor:
        """Learn from a training batch, ``flat_z`` (N, D) float32 assigned to ``indices`` (N,): an
        EMA step, dead-code restarts (``last_restarts``). Returns the (K,) float32 code counts."""
        synced = self.training and distributed.is_distributed()  # codebooks kept in step
        counts = code_counts(indices, self.codebook_size)  # (K,)
        sums = (flat_z.new_zeros(self.codebook_size, self.code_dim).index_add_(0, indices, flat_z)
                if self.config.ema else None)  # (K, D)
        if synced:
            counts, sums = all_reduce_statistics(counts, sums)
        if self.config.ema:
            self.ema_update(counts, sums)
        dead = dead_codes(self.steps_since_used, counts, self.config.restart_dead_after)  # (M,)
        new = restart_vectors(flat_z, dead.numel(), synced)  # (M, D); None when M = 0
        if new is not None:
            self._write_codes(dead, new, torch.ones(dead.numel()))
        self.last_restarts = 0 if new is None else dead.numel()
        return counts

    @torch.no_grad()
    def ema_update(self, counts: Tensor, sums: Tensor) -> None:
        """One :func:`ema_step` of the codebook from one step's counts (K,) and sums (K, D)."""
        step = ema_step(self.ema_cluster_size, self.ema_embed_sum, counts, sums,
                        self.config.decay, self.config.eps)
        self.ema_cluster_size.copy_(step.cluster_size)
        self.ema_embed_sum.copy_(step.embed_sum)
        self.embedding.copy_(step.codebook)  # (K, D)

    @torch.no_grad()
    def set_codebook(self, vectors: Tensor, cluster_sizes: Tensor | None = None) -> None:
        """Set the codebook to ``vectors`` (K, D), EMA cluster sizes to ``cluster_sizes`` (K,) > 0
        (default ones; sums ``vectors * sizes``). Raises ValueError: wrong shapes, sizes <= 0."""
        k, d = self.codebook_size, self.code_dim
        sizes = torch.ones(k) if cluster_sizes is None else cluster_sizes  # (K,)
        if tuple(vectors.shape) != (k, d) or tuple(sizes.shape) != (k,) or bool((sizes <= 0).any()):
            raise ValueError(f"vectors must be (K, D) = {(k, d)} and cluster_sizes ({k},) > 0, got "
                             f"shapes {tuple(vectors.shape)} and {tuple(sizes.shape)}")
        self._write_codes(torch.arange(k, device=self.embedding.device), vectors, sizes)
        self.initialized.fill_(True)

    def _write_codes(self, codes: Tensor, vectors: Tensor, sizes: Tensor) -> None:
        """``vectors`` (M, D) for ``codes`` (M,), EMA sizes ``sizes`` (M,), counters at 0."""
        self.embedding.index_copy_(0, codes, vectors.to(self.embedding))
        if self.config.ema:
            sizes = sizes.to(self.ema_cluster_size)  # (M,)
            self.ema_cluster_size.index_copy_(0, codes, sizes)
            self.ema_embed_sum.index_copy_(0, codes, vectors.to(sizes) * sizes.unsqueeze(1))
        self.steps_since_used.index_fill_(0, codes, 0)

    @torch.no_grad()
    def nearest_indices(self, z_e: Tensor) -> Tensor:
        """Codes of the nearest code vectors, changing no state: ``z_e`` (B, D, H, W) float ->
        (B, H, W) int64 in ``[0, K)``. Raises as :meth:`forward`."""
        check_latents(z_e, self.code_dim, "z_e")
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            b, d, h, w = z_e.shape
            flat_z = z_e.float().permute(0, 2, 3, 1).reshape(-1, d)  # (B·H·W, D)
            flat_indices = squared_distances(flat_z, self.codebook.float()).argmin(dim=1)
        return flat_indices.view(b, h, w)  # (B·H·W,) -> (B, H, W)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors of codes: ``indices`` (B, H, W) integer in ``[0, K)`` -> (B, D, H, W)
        float. Raises TypeError (not integer) or ValueError (not 3-D, codes outside [0, K))."""
        check_codes(indices, self.codebook_size, "indices")
        e = F.embedding(indices.long(), self.codebook)  # (B, H, W, D)
        return e.permute(0, 3, 1, 2).contiguous()  # (B, D, H, W)

    def reset_usage(self) -> None:
        """Zero ``usage_counts`` (call at the start of an epoch)."""
        self.usage_counts.zero_()

    def epoch_perplexity(self) -> float:
        """Perplexity in ``[1, K]`` of the codes counted since :meth:`reset_usage` (1.0: none)."""
        return float(perplexity_from_counts(self.usage_counts, check=False))

    def active_fraction(self) -> float:
        """Fraction in ``[0, 1]`` of the codes used since :meth:`reset_usage`."""
        return float((self.usage_counts > 0).float().mean())

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, {self.config}"


# --------------------------------------------------------------------------------------------
# The codebook's maths: distances, counts, the EMA step, k-means
# --------------------------------------------------------------------------------------------
def squared_distances(x: Tensor, codes: Tensor) -> Tensor:
    """Squared Euclidean distances between rows, by the expansion ``||x||² - 2 x·e + ||e||²``
    (one ``torch.addmm``, no loop over codes).

    ``x`` (N, D) float, ``codes`` (K, D) same dtype and device -> (N, K) float,
    ``out[n, k] = ||x_n - codes_k||²`` (may be slightly negative by rounding).
    """
    x_sq = x.pow(2).sum(dim=1, keepdim=True)  # (N, 1)
    codes_sq = codes.pow(2).sum(dim=1)  # (K,)
    return torch.addmm(codes_sq, x, codes.t(), beta=1.0, alpha=-2.0).add_(x_sq)  # (N, K)


def code_counts(indices: Tensor, codebook_size: int) -> Tensor:
    """(N,) int64 codes in ``[0, K)`` -> (K,) float32, how often each code occurs."""
    return torch.bincount(indices, minlength=codebook_size).float()  # (K,)


class EMAStep(NamedTuple):
    """The EMA statistics and codebook after one step (see :func:`ema_step`).

    Attributes:
        cluster_size: (K,) float, ``N``: the running count of vectors assigned to each code.
        embed_sum: (K, D) float, ``m``: the running sum of those vectors.
        codebook: (K, D) float, the code vectors ``m / N~`` (Laplace-smoothed ``N~``).
    """

    cluster_size: Tensor
    embed_sum: Tensor
    codebook: Tensor


def ema_step(cluster_size: Tensor, embed_sum: Tensor, counts: Tensor, sums: Tensor,
             decay: float, eps: float) -> EMAStep:
    """One EMA step of the codebook (appendix A.1), with Laplace smoothing of the counts.

    ``N <- decay N + (1 - decay) n``, ``m <- decay m + (1 - decay) s``, then
    ``e = m / N~`` with ``N~ = (N + eps) / (sum N + K eps) * sum N`` (an unused code never
    divides by zero). Pure: the inputs are not changed.

    Args:
        cluster_size: (K,) float, ``N`` before the step.
        embed_sum: (K, D) float, ``m`` before the step.
        counts: (K,) float, ``n``: the vectors assigned to each code in this step.
        sums: (K, D) float, ``s``: the sum of the vectors assigned to each code.
        decay: gamma in [0, 1) (paper: 0.99).
        eps: the Laplace smoothing, > 0.

    Returns:
        :class:`EMAStep` ``(cluster_size (K,), embed_sum (K, D), codebook (K, D))``.
    """
    cluster_size = cluster_size.mul(decay).add(counts, alpha=1.0 - decay)  # (K,)
    embed_sum = embed_sum.mul(decay).add(sums, alpha=1.0 - decay)  # (K, D)
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + cluster_size.shape[0] * eps) * n  # (K,)
    return EMAStep(cluster_size, embed_sum, embed_sum / smoothed.unsqueeze(1))  # (K, D)


def _jitter(vectors: Tensor, reference: Tensor, scale: float = JITTER) -> Tensor:
    """``vectors`` (M, D) plus Gaussian noise of std ``scale`` x the per-dimension std of
    ``reference`` (N, D). Returns (M, D), same dtype."""
    if reference.shape[0] < 2:
        return vectors.clone()
    std = reference.std(dim=0, keepdim=True)  # (1, D)
    return vectors + torch.randn_like(vectors) * std * scale


def _kmeans_plus_plus(x: Tensor, k: int) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; the greedy variant of scikit-learn).

    Picks k rows of ``x`` (N, D): each next seed is the best (lowest total squared distance of
    all points to their nearest seed) of ``2 + log k`` candidates drawn with probability
    proportional to their squared distance to the nearest seed so far. Returns (k, D).
    """
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    centroids = x.new_empty(k, x.shape[1])  # (k, D)
    first = torch.randint(n, (1,), device=x.device)
    centroids[0] = x[first[0]]
    min_d2 = squared_distances(x, centroids[:1]).squeeze(1).clamp_(min=0.0)  # (N,)
    for i in range(1, k):
        # All points already coincide with a seed: fall back to a uniform draw.
        weights = torch.where(min_d2.sum() > 0, min_d2, torch.ones_like(min_d2))  # (N,)
        candidates = torch.multinomial(weights, trials, replacement=True)  # (T,)
        d2 = squared_distances(x, x[candidates]).clamp_(min=0.0)  # (N, T)
        new_min = torch.minimum(min_d2.unsqueeze(1), d2)  # (N, T)
        best = new_min.sum(dim=0).argmin()  # index into the T candidates
        centroids[i] = x[candidates[best]]
        min_d2 = new_min[:, best]  # (N,)
    return centroids


def kmeans(x: Tensor, k: int, iters: int) -> tuple[Tensor, Tensor]:
    """k-means: k-means++ seeding, then ``iters`` vectorised Lloyd iterations.

    Args:
        x: (N, D) float32 data vectors, N >= 1. When N < k they are first resampled with
            replacement to k vectors, plus a little noise, so that every centroid has a point.
        k: number of centroids (>= 1).
        iters: Lloyd iterations (>= 0; 0 leaves the k-means++ seeds, which are data points).

    Returns:
        ``(centroids, counts)``: (k, D) float32 centroids and (k,) float32 number of (resampled)
        vectors assigned to each. A centroid that loses all its points keeps its position.

    Raises:
        ValueError: ``x`` has no rows.
    """
    if x.shape[0] == 0:
        raise ValueError("kmeans needs at least one data vector; got an empty (0, D) tensor.")
    if x.shape[0] < k:
        resample = torch.randint(x.shape[0], (k,), device=x.device)  # (k,)
        x = _jitter(x[resample], reference=x)  # (k, D)
    centroids = _kmeans_plus_plus(x, k)  # (k, D)
    for _ in range(iters):
        assign = squared_distances(x, centroids).argmin(dim=1)  # (N,)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)  # (k,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)  # (k, D)
        means = sums / counts.clamp(min=1.0).unsqueeze(1)  # (k, D)
        centroids = torch.where(counts.unsqueeze(1) > 0, means, centroids)  # (k, D)
    assign = squared_distances(x, centroids).argmin(dim=1)  # (N,)
    counts = torch.bincount(assign, minlength=k).to(x.dtype)  # (k,)
    return centroids, counts


# --------------------------------------------------------------------------------------------
# Data-parallel choreography: the same codebook on every process
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def all_reduce_statistics(counts: Tensor, sums: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Sum one step's code counts (K,) and EMA sums (K, D) (or ``None``) over all processes, in
    one all-reduce. Returns the summed ``(counts, sums)``."""
    if sums is None:
        return distributed.all_reduce_sum_(counts.clone()), None
    packed = torch.cat([counts.unsqueeze(1), sums], dim=1)  # (K, 1 + D)
    distributed.all_reduce_sum_(packed)
    return packed[:, 0].contiguous(), packed[:, 1:].contiguous()  # (K,), (K, D)


@torch.no_grad()
def kmeans_init(flat_z: Tensor, k: int, iters: int) -> tuple[Tensor, Tensor]:
    """The k-means initial codebook from the first training batch's encoder outputs ``flat_z``
    (N, D) float32: ``(centroids (k, D), cluster sizes (k,) >= 1)``, the sizes on the scale of
    one batch's counts (the EMA starts as if it had seen this batch). Under a process group
    k-means runs on rank 0 over every process's vectors, broadcast (a collective call)."""
    if not distributed.is_distributed():
        centroids, counts = kmeans(flat_z, k, iters)
        return centroids, counts.clamp(min=1.0)
    pool = distributed.all_gather_rows(flat_z)  # (N over all processes, D)
    packed = flat_z.new_empty(k, flat_z.shape[1] + 1)  # (k, D + 1)
    if distributed.is_main_process():
        centroids, counts = kmeans(pool, k, iters)
        packed = torch.cat([centroids, counts.unsqueeze(1)], dim=1)  # (k, D + 1)
    distributed.broadcast_(packed)
    return packed[:, :-1], packed[:, -1].clamp(min=1.0)


def dead_codes(steps_since_used: Tensor, counts: Tensor, after: int | None) -> Tensor:
    """Count one more unused step for each code with ``counts`` (K,) == 0 (in place in
    ``steps_since_used`` (K,) int64; used codes go back to 0). Returns the (M,) int64 codes
    unused for ``after`` steps (``None``: no restarts, nothing counted, M = 0). Reading M is a
    host sync per training step; it is the logged number of ``restarts``."""
    if after is None:
        return steps_since_used.new_zeros(0)  # (0,)
    steps_since_used.add_(1).masked_fill_(counts > 0, 0)
    return (steps_since_used >= after).nonzero().squeeze(1)  # (M,)


@torch.no_grad()
def restart_vectors(flat_z: Tensor, count: int, synced: bool) -> Tensor | None:
    """``count`` new code vectors for dead codes: distinct random rows of ``flat_z`` (N, D)
    (with replacement when there are fewer) plus a little noise -> (count, D); ``None`` when
    ``count`` is 0 or there are no rows. ``synced``: drawn by rank 0 from every process's rows,
    broadcast (a collective call; every process passes the same ``count``)."""
    if count == 0:
        return None
    pool = distributed.all_gather_rows(flat_z) if synced else flat_z  # (N, D)
    n = pool.shape[0]
    if n == 0:
        return None
    new = pool.new_empty(count, pool.shape[1])  # (count, D)
    if distributed.is_main_process() or not synced:
        if count <= n:
            pick = torch.randperm(n, device=pool.device)[:count]  # (count,) distinct
        else:
            pick = torch.randint(n, (count,), device=pool.device)  # (count,)
        new = _jitter(pool[pick], reference=pool)  # (count, D)
    if synced:
        distributed.broadcast_(new)
    return new
