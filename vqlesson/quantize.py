"""Vector quantisation: the discrete bottleneck of the VQ-VAE.

Implements van den Oord, Vinyals & Kavukcuoglu (2017), *Neural Discrete Representation Learning*:

- §3.1 (eq. 1-2): each encoder output vector ``z_e`` is replaced by its nearest code ``e_k`` in a
  codebook of ``codebook_size`` (K) vectors of size ``code_dim`` (D).
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
the same codebook, equal to what one process would learn from the whole global batch.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import distributed
from .metrics import perplexity_from_counts
from .validate import check_codes, check_latents

INIT_METHODS = ("kmeans", "random")
# Noise added to data vectors copied into the codebook (k-means resampling, dead-code restarts),
# relative to the per-dimension standard deviation of the batch. Small: it only breaks ties.
JITTER = 1e-3


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def squared_distances(x: Tensor, codes: Tensor) -> Tensor:
    """Squared Euclidean distances between rows, by the expansion ``||x||² - 2 x·e + ||e||²``.

    One matrix product (``torch.addmm``), no loop over codes.

    Args:
        x: (N, D) float.
        codes: (K, D) float, same dtype and device as ``x``.

    Returns:
        (N, K) float, ``out[n, k] = ||x_n - codes_k||²`` (may be slightly negative by rounding).
    """
    x_sq = x.pow(2).sum(dim=1, keepdim=True)  # (N, 1)
    codes_sq = codes.pow(2).sum(dim=1)  # (K,)
    return torch.addmm(codes_sq, x, codes.t(), beta=1.0, alpha=-2.0).add_(x_sq)  # (N, K)


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
    proportional to their squared distance to the nearest seed so far.

    Returns (k, D). Loops over the k seeds (each step is vectorised over N and the candidates);
    it runs once, at initialisation.
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


# --------------------------------------------------------------------------------------------
# The quantiser
# --------------------------------------------------------------------------------------------
class VQOutput(NamedTuple):
    """What :class:`VectorQuantizer` returns.

    Attributes:
        z_q: (B, D, H, W) quantised latents in ``z_e``'s dtype; the forward value is the nearest
            code, the gradient is straight-through: ``z_e + (e - z_e).detach()``.
        indices: (B, H, W) int64 in ``[0, K)``, the index of the nearest code.
        loss: scalar float32, ``codebook + beta * commitment`` (both mean squared errors); with
            ``ema=True`` only ``beta * commitment`` (the codebook is learnt by EMA).
        batch_perplexity: scalar float32 in ``[1, K]``, ``exp(entropy)`` of this batch's code
            usage (:func:`~vqlesson.metrics.perplexity_from_counts`).
    """

    z_q: Tensor
    indices: Tensor
    loss: Tensor
    batch_perplexity: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser with a codebook of K vectors of size D.

    Args:
        codebook_size: K, the number of codes (>= 1).
        code_dim: D, the size of each code = the channels of ``z_e`` (>= 1).
        beta: weight of the commitment loss ``||z_e - sg[e]||²`` (paper: 0.25), >= 0.
        ema: learn the codebook by exponential moving averages (appendix A.1; the codebook is then
            a buffer without gradient) instead of the codebook loss (an ``nn.Parameter``).
        decay: EMA decay gamma in ``[0, 1)`` (paper: 0.99). Used only when ``ema``.
        eps: Laplace smoothing of the EMA cluster sizes, > 0. Used only when ``ema``.
        init: ``"kmeans"``: on the first training forward, run k-means on the batch's encoder
            outputs and use the centroids as codes. ``"random"``: uniform in ``±1/K`` (the
            reference code's init), no data init; this risks codebook collapse.
        restart_dead_after: a code unused for this many consecutive training steps is replaced by
            a random encoder output of the current batch; ``None`` disables restarts.
        kmeans_iters: Lloyd iterations of the k-means init (>= 0).

    Buffers (all in ``state_dict``):
        ``embedding`` (K, D) (a parameter when ``ema=False``), ``ema_cluster_size`` (K,) and
        ``ema_embed_sum`` (K, D) when ``ema``, ``initialized`` bool, ``steps_since_used`` (K,)
        int64, ``usage_counts`` (K,) int64 (code usage summed over all forwards since
        :meth:`reset_usage`, in training and eval).

    Attributes:
        last_restarts: number of codes restarted by the last training forward.

    Raises:
        ValueError: an argument out of range, or ``init`` not one of ``"kmeans"``, ``"random"``.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        beta: float = 0.25,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        init: str = "kmeans",
        restart_dead_after: int | None = 20,
        kmeans_iters: int = 10,
    ) -> None:
        super().__init__()
        if not isinstance(codebook_size, int) or codebook_size < 1:
            raise ValueError(f"codebook_size must be an int >= 1, got {codebook_size!r}")
        if not isinstance(code_dim, int) or code_dim < 1:
            raise ValueError(f"code_dim must be an int >= 1, got {code_dim!r}")
        if beta < 0:
            raise ValueError(f"beta (commitment weight) must be >= 0, got {beta!r}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r} (the paper uses 0.99)")
        if eps <= 0:
            raise ValueError(f"eps (Laplace smoothing) must be > 0, got {eps!r}")
        if init not in INIT_METHODS:
            raise ValueError(f"init must be one of {INIT_METHODS}, got {init!r}")
        if restart_dead_after is not None and (
            not isinstance(restart_dead_after, int) or restart_dead_after < 1
        ):
            raise ValueError(
                f"restart_dead_after must be an int >= 1 or None (no restarts), "
                f"got {restart_dead_after!r}"
            )
        if not isinstance(kmeans_iters, int) or kmeans_iters < 0:
            raise ValueError(f"kmeans_iters must be an int >= 0, got {kmeans_iters!r}")

        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.beta = float(beta)
        self.ema = bool(ema)
        self.decay = float(decay)
        self.eps = float(eps)
        self.init = init
        self.restart_dead_after = restart_dead_after
        self.kmeans_iters = kmeans_iters
        self.last_restarts = 0

        bound = 1.0 / codebook_size
        initial = torch.empty(codebook_size, code_dim).uniform_(-bound, bound)  # (K, D)
        if self.ema:
            self.register_buffer("embedding", initial)
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", initial.clone())
        else:
            self.embedding = nn.Parameter(initial)
        self.register_buffer("initialized", torch.tensor(init == "random"))
        self.register_buffer("steps_since_used", torch.zeros(codebook_size, dtype=torch.int64))
        self.register_buffer("usage_counts", torch.zeros(codebook_size, dtype=torch.int64))

    # ---- public API -------------------------------------------------------------------------
    @property
    def codebook(self) -> Tensor:
        """(K, D) the current code vectors (the ``nn.Parameter`` itself when ``ema=False``)."""
        return self.embedding

    def forward(self, z_e: Tensor) -> VQOutput:
        """Quantise encoder outputs: nearest code vector, loss and straight-through gradient.

        In training mode the codebook also learns: the first call initialises it
        (``init="kmeans"``, before its lookup), and every call then updates it from this batch's
        assignments (:meth:`update_codebook`: EMA, dead-code restarts, and under a
        ``torch.distributed`` process group the sums over all processes, so the call is
        collective and the usage and perplexity are those of all processes' batches; module
        docstring). Every call adds this batch's code usage to ``usage_counts``.

        Args:
            z_e: (B, D, H, W) float encoder outputs, D = ``code_dim``; any float dtype.

        Returns:
            :class:`VQOutput` (z_q in ``z_e``'s dtype; loss and batch_perplexity float32
                scalars).

        Raises:
            TypeError: ``z_e`` is not a floating-point tensor.
            ValueError: ``z_e`` is not (B, D, H, W) with D = ``code_dim``.
        """
        check_latents(z_e, self.code_dim, "z_e")
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = z_e.float()  # (B, D, H, W)
            b, d, h, w = z.shape
            flat_z = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B·H·W, D)
            if self.training and not bool(self.initialized):
                self._initialize_codebook(flat_z.detach())

            codebook = self.codebook.float()  # (K, D)
            with torch.no_grad():
                flat_indices = squared_distances(flat_z, codebook).argmin(dim=1)  # (B·H·W,)
            flat_e = F.embedding(flat_indices, codebook)  # (B·H·W, D)
            e = flat_e.view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, H, W)

            commitment = F.mse_loss(z, e.detach())
            if self.ema:
                loss = self.beta * commitment
            else:
                loss = F.mse_loss(e, z.detach()) + self.beta * commitment
            z_q = z + (e - z).detach()  # (B, D, H, W): value e, gradient straight through to z_e

            with torch.no_grad():
                if self.training:
                    counts = self.update_codebook(flat_z.detach(), flat_indices)
                else:
                    counts = self._count_codes(flat_indices)
                self.usage_counts += counts.round().to(self.usage_counts.dtype)
                batch_perplexity = perplexity_from_counts(counts, check=False)

        indices = flat_indices.view(b, h, w)  # (B, H, W)
        return VQOutput(z_q.to(z_e.dtype), indices, loss, batch_perplexity)

    @torch.no_grad()
    def update_codebook(self, flat_z: Tensor, indices: Tensor) -> Tensor:
        """Learn from one training batch's assignments (training only; :meth:`forward` calls it
        after the lookup).

        Counts the vectors assigned to each code (and, with EMA, sums them); under a process
        group sums both over all processes; then one EMA step (``ema=True``, :meth:`ema_update`)
        and the dead-code restarts (``restart_dead_after``; their number in
        ``last_restarts``).

        Args:
            flat_z: (N, D) float32 encoder outputs of this batch (detached).
            indices: (N,) int64 in [0, K), the code each was assigned.

        Returns:
            (K,) float32 assignment counts of this step (of all processes under a group).
        """
        counts = self._count_codes(indices)  # (K,)
        sums = None
        if self.ema:
            sums = flat_z.new_zeros(self.codebook_size, self.code_dim).index_add_(
                0, indices, flat_z
            )  # (K, D)
        if self._synced():
            counts, sums = self._all_reduce_statistics(counts, sums)
        if self.ema:
            self.ema_update(counts, sums)
        self.last_restarts = self._restart_dead_codes(flat_z, counts)
        return counts

    @torch.no_grad()
    def nearest_indices(self, z_e: Tensor) -> Tensor:
        """Indices of the nearest codes, without changing any state (no init, EMA or usage).

        Args:
            z_e: (B, D, H, W) float, D = ``code_dim``.

        Returns:
            (B, H, W) int64 in ``[0, K)``.

        Raises:
            TypeError, ValueError: as :meth:`forward`.
        """
        check_latents(z_e, self.code_dim, "z_e")
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            b, d, h, w = z_e.shape
            flat_z = z_e.float().permute(0, 2, 3, 1).reshape(-1, d)  # (B·H·W, D)
            flat_indices = squared_distances(flat_z, self.codebook.float()).argmin(dim=1)
        return flat_indices.view(b, h, w)  # (B, H, W)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for given indices (the decoder's input when sampling from a prior).

        Args:
            indices: (B, H, W) integer tensor with values in ``[0, K)``.

        Returns:
            (B, D, H, W) float, in the codebook's dtype.

        Raises:
            TypeError: ``indices`` is not an integer tensor.
            ValueError: ``indices`` is not 3-D or has values outside ``[0, K)``.
        """
        check_codes(indices, self.codebook_size, "indices")
        e = F.embedding(indices.long(), self.codebook)  # (B, H, W, D)
        return e.permute(0, 3, 1, 2).contiguous()  # (B, D, H, W)

    @torch.no_grad()
    def set_codebook(self, vectors: Tensor, cluster_sizes: Tensor | None = None) -> None:
        """Overwrite the codebook (and the EMA statistics) and mark it initialised.

        Args:
            vectors: (K, D) float, the new codes.
            cluster_sizes: (K,) positive float, the EMA cluster sizes to start from (``ema=True``
                only; default ones); the EMA sums become ``vectors * cluster_sizes``.

        Raises:
            ValueError: wrong shapes, or non-positive cluster sizes.
        """
        expected = (self.codebook_size, self.code_dim)
        if tuple(vectors.shape) != expected:
            raise ValueError(
                f"vectors must have shape (K, D) = {expected}, got {tuple(vectors.shape)}"
            )
        self.embedding.copy_(vectors)
        if self.ema:
            if cluster_sizes is None:
                cluster_sizes = torch.ones(self.codebook_size, device=vectors.device)
            if tuple(cluster_sizes.shape) != (self.codebook_size,):
                raise ValueError(
                    f"cluster_sizes must have shape (K,) = ({self.codebook_size},), "
                    f"got {tuple(cluster_sizes.shape)}"
                )
            if bool((cluster_sizes <= 0).any()):
                raise ValueError("cluster_sizes must all be > 0")
            sizes = cluster_sizes.to(self.ema_cluster_size)  # (K,)
            self.ema_cluster_size.copy_(sizes)
            self.ema_embed_sum.copy_(vectors.to(self.ema_embed_sum) * sizes.unsqueeze(1))
        self.steps_since_used.zero_()
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, counts: Tensor, sums: Tensor) -> None:
        """Apply one EMA step (:func:`ema_step`) to the codebook and its statistics
        (``ema=True`` only), from this step's assignment statistics.

        Args:
            counts: (K,) float32, vectors assigned to each code in this step (n_i).
            sums: (K, D) float32, the sum of the vectors assigned to each code.
        """
        step = ema_step(self.ema_cluster_size, self.ema_embed_sum, counts, sums, self.decay,
                        self.eps)
        self.ema_cluster_size.copy_(step.cluster_size)
        self.ema_embed_sum.copy_(step.embed_sum)
        self.embedding.copy_(step.codebook)  # (K, D)

    def reset_usage(self) -> None:
        """Zero ``usage_counts`` (call at the start of an epoch)."""
        self.usage_counts.zero_()

    def epoch_perplexity(self) -> float:
        """Perplexity of the code usage accumulated since :meth:`reset_usage`, in ``[1, K]``.

        1.0 when nothing has been counted yet.
        """
        return float(perplexity_from_counts(self.usage_counts, check=False))

    def active_fraction(self) -> float:
        """Fraction in ``[0, 1]`` of codes used at least once since :meth:`reset_usage`."""
        return float((self.usage_counts > 0).float().mean())

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, beta={self.beta}, "
            f"ema={self.ema}, decay={self.decay}, init={self.init!r}, "
            f"restart_dead_after={self.restart_dead_after}"
        )

    # ---- internals --------------------------------------------------------------------------
    def _synced(self) -> bool:
        """Whether this forward keeps the codebook in step across processes (training mode
        under a ``torch.distributed`` process group)."""
        return self.training and distributed.is_distributed()

    @torch.no_grad()
    def _all_reduce_statistics(self, counts: Tensor, sums: Tensor | None
                               ) -> tuple[Tensor, Tensor | None]:
        """Sum this step's counts (K,) and EMA sums (K, D) (or ``None``) over all processes, in
        one all-reduce. Returns the summed ``(counts, sums)``."""
        if sums is None:
            return distributed.all_reduce_sum_(counts.clone()), None
        packed = torch.cat([counts.unsqueeze(1), sums], dim=1)  # (K, 1 + D)
        distributed.all_reduce_sum_(packed)
        return packed[:, 0].contiguous(), packed[:, 1:].contiguous()  # (K,), (K, D)

    @torch.no_grad()
    def _initialize_codebook(self, flat_z: Tensor) -> None:
        """Data-dependent init on the first training batch. flat_z: (N, D) float32.

        Under a process group: k-means on rank 0 over all processes' vectors, broadcast."""
        if self.init == "kmeans" and self._synced():
            pool = distributed.all_gather_rows(flat_z)  # (N over all processes, D)
            packed = flat_z.new_empty(self.codebook_size, self.code_dim + 1)  # (K, D + 1)
            if distributed.is_main_process():
                centroids, counts = kmeans(pool, self.codebook_size, self.kmeans_iters)
                packed = torch.cat([centroids, counts.unsqueeze(1)], dim=1)  # (K, D + 1)
            distributed.broadcast_(packed)
            self.set_codebook(packed[:, :-1], packed[:, -1].clamp(min=1.0))
        elif self.init == "kmeans":
            centroids, counts = kmeans(flat_z, self.codebook_size, self.kmeans_iters)
            # Start the EMA as if it had seen this batch: sizes on the scale of per-batch counts.
            self.set_codebook(centroids, counts.clamp(min=1.0))
        self.initialized.fill_(True)

    def _count_codes(self, indices: Tensor) -> Tensor:
        """(N,) int64 codes -> (K,) float32, how often each code occurs."""
        return torch.bincount(indices, minlength=self.codebook_size).float()  # (K,)

    @torch.no_grad()
    def _restart_dead_codes(self, flat_z: Tensor, counts: Tensor) -> int:
        """Track unused codes and replace those unused for ``restart_dead_after`` steps.

        Used codes (``counts > 0``) reset their ``steps_since_used`` to 0, the others add 1.
        Codes that reach ``restart_dead_after`` become random vectors of ``flat_z`` (plus a little
        noise); their counter and (with EMA) their statistics are reset (size 1, sum = the vector).
        Under a process group ``counts`` are already all-reduced (the same dead codes everywhere);
        rank 0 draws the vectors from all processes' ``flat_z`` and broadcasts them.

        Args:
            flat_z: (N, D) float32 encoder outputs of this step.
            counts: (K,) float32, how many of them each code was assigned.

        Returns:
            The number of codes restarted.
        """
        if self.restart_dead_after is None:
            return 0
        self.steps_since_used.add_(1).masked_fill_(counts > 0, 0)
        dead = self.steps_since_used >= self.restart_dead_after  # (K,) bool
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0
        synced = self._synced()
        pool = distributed.all_gather_rows(flat_z) if synced else flat_z  # (N, D)
        if pool.shape[0] == 0:
            return 0
        dead_idx = dead.nonzero().squeeze(1)  # (num_dead,)
        n = pool.shape[0]
        new = pool.new_empty(num_dead, pool.shape[1])  # (num_dead, D)
        if distributed.is_main_process() or not synced:
            if num_dead <= n:
                pick = torch.randperm(n, device=pool.device)[:num_dead]  # (num_dead,) distinct
            else:
                pick = torch.randint(n, (num_dead,), device=pool.device)  # (num_dead,)
            new = _jitter(pool[pick], reference=pool)  # (num_dead, D)
        if synced:
            distributed.broadcast_(new)
        self.embedding.index_copy_(0, dead_idx, new.to(self.embedding.dtype))
        if self.ema:
            self.ema_cluster_size.index_fill_(0, dead_idx, 1.0)
            self.ema_embed_sum.index_copy_(0, dead_idx, new.to(self.ema_embed_sum.dtype))
        self.steps_since_used.index_fill_(0, dead_idx, 0)
        return num_dead
