"""Instant feedback for the course's exercises: a student's function against the library's.

Every exercise in the notebooks asks for one small function on a core idea. Its ``check_*``
function here runs the student's implementation and the library's reference on the same seeded
random inputs and returns a :class:`CheckResult`: a clear pass, or a hint that says what differs
(the type, the shape, the dtype, the first differing value, the exception the function raised and
on which line, or a known mistake from student reports), never a traceback.

The exercises themselves (inputs, the call of the student's function, the comparison with its
hints) live in :mod:`vqlesson.exercises_vq` (notebook 02: van den Oord et al. 2017 §3.1-3.2
and appendix A.1), :mod:`vqlesson.exercises_hierarchy` (notebook 03: Razavi et al. 2019 §3.1) and :mod:`vqlesson.exercises_prior` (notebooks 04-05:
van den Oord et al. 2016, PixelRNN §3.4 and Gated PixelCNN §2; :mod:`vqlesson.analysis`) and
:mod:`vqlesson.exercises_pixelcnn` (notebook 04: the Gated PixelCNN's forward pass) and
:mod:`vqlesson.exercises_hierarchical_prior` (notebook 06: Razavi et al. 2019 §3.2). The
grader (:mod:`vqlesson.grading`) runs the same exercises split in two: the student's function is
called inside a sandbox and only its outputs, as data, reach a separate process that compares
them (:mod:`vqlesson.grading.judge`), so instant feedback and grades agree and a notebook cannot change
how it is scored.

:func:`record_metrics` lets a notebook hand its key figures (PSNR, perplexity, prior NLL) to the
grader, which collects them into its CSV.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor

from . import (
    exercises_heldout,
    exercises_hierarchical_prior,
    exercises_hierarchy,
    exercises_pixelcnn,
    exercises_prior,
    exercises_vq,
)
from .check_core import NOT_DONE, CheckResult, Exercise, run_check
from .codes import CodeDataset

METRICS_ENV = "VQLESSON_METRICS_FILE"
EXERCISES: dict[str, Exercise] = {
    exercise.name: exercise
    for exercise in (exercises_vq.EXERCISES + exercises_hierarchy.EXERCISES
                     + exercises_prior.EXERCISES + exercises_pixelcnn.EXERCISES
                     + exercises_heldout.EXERCISES + exercises_hierarchical_prior.EXERCISES)}
__all__ = ["CheckResult", "EXERCISES", "METRICS_ENV", "NOT_DONE", "record_metrics"] + [
    f"check_{name}" for name in EXERCISES]


# --------------------------------------------------------------------------------------------
# Notebook 02: vector quantisation
# --------------------------------------------------------------------------------------------
def check_nearest_code(nearest_code: Callable[[Tensor, Tensor], Tensor], seed: int = 0
                       ) -> CheckResult:
    """Check ``nearest_code(z_e, codebook) -> indices``, the VQ-VAE's nearest-neighbour lookup.

    Args:
        nearest_code: the student's function, ``z_e`` (B, D, H, W) float and ``codebook`` (K, D)
            float -> (B, H, W) int64 in [0, K), the index of the nearest code (squared Euclidean
            distance) at every position.
        seed: seeds the random inputs (the hidden test uses another seed).

    Returns:
        :class:`CheckResult`; compared with :meth:`VectorQuantizer.nearest_indices` on three
        cases, the last one with K = 1 and a 1x1 grid.
    """
    return run_check(EXERCISES["nearest_code"], nearest_code, seed)


def check_straight_through(straight_through: Callable[[Tensor, Tensor], Tensor], seed: int = 0
                           ) -> CheckResult:
    """Check ``straight_through(z_e, e) -> z_q``, the straight-through estimator (paper §3.2).

    The result must have the value of the chosen codes ``e``, pass the decoder's gradient to
    ``z_e`` unchanged, and send no gradient to the codebook through ``z_q``, exactly as
    :class:`VectorQuantizer` does.

    Args:
        straight_through: the student's function, ``z_e`` (B, D, H, W) float with gradient and
            ``e`` (B, D, H, W) float, the nearest codes (their gradient flows to the codebook)
            -> ``z_q`` (B, D, H, W) float.
        seed: seeds the random inputs.
    """
    return run_check(EXERCISES["straight_through"], straight_through, seed)


def check_vqvae_loss(vqvae_loss: Callable[..., Tensor], seed: int = 0) -> CheckResult:
    """Check ``vqvae_loss(x, z_e, codebook, decoder, beta) -> loss``, one VQ-VAE training step's
    loss (paper, eq. 3): reconstruction + codebook term + beta x commitment term, with the
    straight-through estimator between the encoder and the decoder.

    The check backpropagates the returned loss and compares the gradients reaching ``z_e``, the
    codebook and the decoder's weights with the library's (:class:`VectorQuantizer` without EMA,
    then the decoder) on fixed inputs; the classic mistakes (the two quantiser terms swapped,
    beta on both, a missing stop-gradient, no straight-through, a missing term, sums instead of
    means) get their own hint. The loss *value* cannot tell them apart: the codebook and
    commitment terms have the same value, so only the gradients show where each term pushes.

    Args:
        vqvae_loss: the student's function; ``x`` (B, 3, S, S) float in [-1, 1], ``z_e``
            (B, D, S/2, S/2) float with gradient (the encoder's output), ``codebook`` (K, D)
            float with gradient, ``decoder`` a module (B, D, h, w) -> (B, 3, 2h, 2w) in [-1, 1],
            ``beta`` a float -> a scalar float tensor.
        seed: seeds the inputs and ``beta`` (the hidden test uses another seed).
    """
    return run_check(EXERCISES["vqvae_loss"], vqvae_loss, seed)


def check_ema_update(ema_update: Callable[..., Sequence[Tensor]], seed: int = 0) -> CheckResult:
    """Check one EMA codebook step (paper, appendix A.1, with Laplace smoothing).

    ``ema_update(cluster_size, embed_sum, counts, sums, decay, eps)`` returns the new
    ``(cluster_size, embed_sum, codebook)``:

    ``N <- decay N + (1 - decay) n``, ``m <- decay m + (1 - decay) s``,
    ``codebook = m / N~`` with ``N~ = (N + eps) / (sum N + K eps) * sum N``.

    Args:
        ema_update: the student's function; ``cluster_size`` (K,) float, ``embed_sum`` (K, D)
            float, ``counts`` (K,) float (vectors assigned to each code in this batch),
            ``sums`` (K, D) float (their sum), ``decay`` in [0, 1), ``eps`` > 0 -> three tensors
            of shapes (K,), (K, D), (K, D).
        seed: seeds the random inputs.

    Compared with :func:`vqlesson.quantize.ema_step` (with a large ``eps``, so that the smoothing
    shows); one code is unused in this batch and almost never was.
    """
    return run_check(EXERCISES["ema_update"], ema_update, seed)


def check_revive_codebook(revive_settings: Callable[[], Sequence], seed: int = 0
                          ) -> CheckResult:
    """Check an open exercise by a measured run: ``revive_settings() -> (restart_dead_after,
    decay)`` must keep at least half of a codebook in use when it starts from ``init="random"``.

    The check trains an EMA :class:`VectorQuantizer` (K = 32, D = 8, ``init="random"``) with the
    returned settings on a seeded stream of vectors that drift away from the origin (where the
    random codes sit), then counts the codes used on fresh vectors; it passes at >= 50 %.

    Args:
        revive_settings: the student's function, no arguments -> ``(restart_dead_after, decay)``:
            an int >= 1 or ``None`` (no restarts), and the EMA decay in [0, 1).
        seed: seeds the stream (the hidden test uses another seed).
    """
    return run_check(EXERCISES["revive_codebook"], revive_settings, seed)


# --------------------------------------------------------------------------------------------
# Notebook 03: rate, distortion and code usage of a hierarchy
# --------------------------------------------------------------------------------------------
def check_hierarchy_bits(hierarchy_bits: Callable[[int, int, int], float], seed: int = 0
                         ) -> CheckResult:
    """Check ``hierarchy_bits(image_size, codebook_size_top, codebook_size_bottom) -> float``,
    the rate of a VQ-VAE-2 code in bits per image:
    ``(S/8)² log2 K_top + (S/4)² log2 K_bottom``.

    Compared with :func:`vqlesson.metrics.bits_per_image` on fixed and ``seed``-drawn sizes.
    """
    return run_check(EXERCISES["hierarchy_bits"], hierarchy_bits, seed)


def check_top_only_codes(top_only_codes: Callable[[Tensor, Tensor], Sequence[Tensor]],
                         seed: int = 0) -> CheckResult:
    """Check ``top_only_codes(top, bottom) -> (top, bottom)``: the code maps whose decode shows
    what a VQ-VAE-2's top level alone says: the top codes unchanged, every bottom code set to
    the bottom level's most used code over the whole batch (as
    :func:`vqlesson.experiments.level_use` does).

    Args:
        top_only_codes: the student's function; ``top`` (B, h, w) and ``bottom`` (B, 2h, 2w)
            int64 code maps -> the pair ``(top, bottom)`` of the same shapes.
        seed: seeds the code maps.

    Swapped levels, one code per image instead of per batch, and a constant 0 get their hints.
    """
    return run_check(EXERCISES["top_only_codes"], top_only_codes, seed)


def check_top_level(top_level_settings: Callable[[], Sequence], seed: int = 0) -> CheckResult:
    """Check an open exercise by a measured run: ``top_level_settings() -> (bottom_dropout,
    codebook_size_bottom)`` must make a VQ-VAE-2 use its top level.

    The check trains the ``ci``-sized VQ-VAE-2 with these settings on 192 synthetic lesions of
    32 px (15 epochs, about 2 s on a CPU) and decodes 32 held-out lesions from their top codes
    alone (every bottom code set to the most used one); it passes when that beats the mean
    image, the best constant guess, by 2 dB of PSNR (the top level is used) *and* the full
    reconstruction beats that top-only one by 0.5 dB (the bottom level still adds detail: a
    setting that kills it, such as dropping the bottom level almost always or giving it two
    codes, fails with its own hint).

    Args:
        top_level_settings: the student's function, no arguments -> ``(bottom_dropout,
            codebook_size_bottom)``: a probability in [0, 1) and an int in [2, 1024].
        seed: seeds the lesions and the weights (the hidden test uses another seed).
    """
    return run_check(EXERCISES["top_level"], top_level_settings, seed)


def check_psnr(psnr_db: Callable[[Tensor, Tensor], Tensor], seed: int = 0) -> CheckResult:
    """Check ``psnr_db(x, x_hat) -> (B,)``: PSNR in dB per image, on images mapped from
    [-1, 1] to [0, 1] (peak 1): ``10 log10(1 / MSE)``.

    Args:
        psnr_db: the student's function; ``x``, ``x_hat`` (B, 3, H, W) float in [-1, 1] ->
            (B,) float dB.
        seed: seeds the random images.

    Compared with :func:`vqlesson.metrics.psnr` (``reduction="none"``).
    """
    return run_check(EXERCISES["psnr"], psnr_db, seed)


def check_code_perplexity(code_perplexity: Callable[[Tensor, int], float], seed: int = 0
                          ) -> CheckResult:
    """Check ``code_perplexity(codes, codebook_size) -> float``:
    ``exp(-sum_k p_k log p_k)`` with ``p_k`` the fraction of positions using code k.

    Args:
        code_perplexity: the student's function; ``codes`` (N, H, W) int64 in [0, K) and K ->
            float in [1, K].
        seed: seeds the random code maps.

    Compared with :func:`vqlesson.metrics.perplexity_from_counts` of the code counts; the cases
    include unused codes, a collapsed codebook (one code: 1) and uniform use (K).
    """
    return run_check(EXERCISES["code_perplexity"], code_perplexity, seed)


# --------------------------------------------------------------------------------------------
# Notebook 04: masks, likelihood, sampling
# --------------------------------------------------------------------------------------------
def check_causal_mask(build_mask: Callable[[int, str], Tensor], seed: int = 0) -> CheckResult:
    """Check ``build_mask(kernel_size, mask_type) -> (k, k)`` float mask of a masked
    convolution: 1 above the centre row and left of the centre in its row; the centre is 1 for
    type ``"B"`` and 0 for type ``"A"``.

    Compared with :func:`vqlesson.pixelcnn.causal_mask` for k in 1, 3, 5, 7 and both types
    (``seed`` is unused: the cases are exhaustive).
    """
    return run_check(EXERCISES["causal_mask"], build_mask, seed)


def check_masked_conv(masked_conv2d: Callable[[Tensor, Tensor, Tensor, str], Tensor],
                      seed: int = 0) -> CheckResult:
    """Check ``masked_conv2d(x, weight, bias, mask_type)``: ``x`` (B, C_in, H, W) float,
    ``weight`` (C_out, C_in, k, k), ``bias`` (C_out,), ``mask_type`` ``"A"``/``"B"`` ->
    (B, C_out, H, W) float, the convolution with the masked kernel (PixelRNN §3.4).

    Compared with :class:`vqlesson.pixelcnn.MaskedConv2d`'s computation for k = 3, 5 and both
    mask types; known mistakes (no mask, the other mask, no padding) get their hint.
    """
    return run_check(EXERCISES["masked_conv"], masked_conv2d, seed)


def check_gated_block(gated_block: Callable[..., Sequence[Tensor]], seed: int = 0
                      ) -> CheckResult:
    """Check ``gated_block(block, v, h) -> (v_out, h_out)``, one layer of the Gated PixelCNN
    (van den Oord et al. 2016, §2.2) written with the convolutions of a library
    :class:`vqlesson.pixelcnn.GatedBlock` ``block`` (``v_conv``, ``h_conv``, ``v_to_h``,
    ``h_out``, ``pad``, ``residual``); ``v``, ``h`` (B, C_in, H, W) float.

    Compared with ``block(v, h, None)`` for a first block and a residual one; a missing link,
    a swapped gate and a missing residual connection get their hint.
    """
    return run_check(EXERCISES["gated_block"], gated_block, seed)


def check_gated_forward(gated_forward: Callable[..., Tensor], seed: int = 0) -> CheckResult:
    """Check ``gated_forward(net, codes) -> logits``, the Gated PixelCNN's forward pass (van den
    Oord et al. 2016, §2.2) assembled from a library
    :class:`~vqlesson.pixelcnn.GatedPixelCNN` ``net`` (unconditional, no skip outputs):
    ``net.embed``, the vertical stack's input shifted down one row and the horizontal stack's
    right one column (once, before the first block), ``net.blocks`` in turn, ``net.head`` on the
    last horizontal stack.

    Args:
        gated_forward: the student's function; ``net`` as above, ``codes`` (B, H, W) int64 in
            [0, K) -> (B, K, H, W) float logits.
        seed: seeds the weights and the codes (the hidden test uses another seed).

    Two checks, for a plain and a dilated network: causality (the function is also run with one
    code changed; no logit at that position or earlier in raster order may move) and equality
    with ``net(codes)``. A vertical stack not shifted down, a horizontal one not shifted right,
    shifts in every block (mask A/B confused) and stacks fed from the future get their hint.
    """
    return run_check(EXERCISES["gated_forward"], gated_forward, seed)


def check_bits_per_code(bits_per_code: Callable[[Tensor, Tensor], float], seed: int = 0
                        ) -> CheckResult:
    """Check ``bits_per_code(logits, codes) -> float``: the categorical cross-entropy (softmax
    over the K codes at each position), averaged over positions, in bits.

    Args:
        bits_per_code: the student's function; ``logits`` (B, K, H, W) float and ``codes``
            (B, H, W) int64 in [0, K) -> float bits per code (>= 0).
        seed: seeds the random logits and codes.

    Compared with :func:`vqlesson.pixelcnn.nll`.
    """
    return run_check(EXERCISES["bits_per_code"], bits_per_code, seed)


def check_sampling_loop(sample_codes: Callable[..., Tensor], seed: int = 0) -> CheckResult:
    """Check ``sample_codes(prior, n, shape, temperature=1.0, generator=None) -> (n, H, W)``,
    ancestral sampling in raster order: for each position, the logits of the codes so far,
    divided by the temperature, a softmax, one draw.

    Three properties, each against :meth:`PixelCNNPrior.sample`: (1) at a tiny temperature the
    samples equal the library's greedy samples (``temperature=0``), so each position is drawn
    from the right conditional; (2) the same ``generator`` seed gives the same samples; (3) at
    a huge temperature the samples differ from the greedy ones (the temperature is used).

    Args:
        sample_codes: the student's function; ``prior`` a :class:`PixelCNNPrior` (call
            ``prior.logits(codes)`` -> (n, K, H, W)), ``n`` samples, ``shape`` (H, W),
            ``temperature`` > 0, ``generator`` a ``torch.Generator`` -> (n, H, W) int64 in
            [0, K).
        seed: seeds the prior and the generators.
    """
    return run_check(EXERCISES["sampling_loop"], sample_codes, seed)


# --------------------------------------------------------------------------------------------
# Notebook 05: diversity, memorisation, surprise (references in vqlesson.analysis)
# --------------------------------------------------------------------------------------------
def check_pairwise_hamming(pairwise_hamming: Callable[[Tensor], float], seed: int = 0
                           ) -> CheckResult:
    """Check ``pairwise_hamming(codes) -> float``: the mean, over all unordered pairs of code
    maps, of the fraction of positions where the two differ (a diversity metric in [0, 1]).

    Args:
        pairwise_hamming: the student's function; ``codes`` (N, H, W) int64, N >= 2 -> float.
        seed: seeds the random code maps.

    Compared with :func:`vqlesson.analysis.pairwise_hamming`; one case holds identical maps (0).
    """
    return run_check(EXERCISES["pairwise_hamming"], pairwise_hamming, seed)


def check_nearest_neighbours(nearest_neighbours: Callable[[Tensor, Tensor], Sequence[Tensor]],
                             seed: int = 0) -> CheckResult:
    """Check ``nearest_neighbours(queries, references) -> (index, distance)`` in code space:
    for each query map, the reference map with the smallest Hamming fraction (ties: the lowest
    index) and that fraction, the near-copy detector of notebook 05.

    Args:
        nearest_neighbours: the student's function; ``queries`` (N, H, W) and ``references``
            (M, H, W) int64 -> ``index`` (N,) int64 and ``distance`` (N,) float in [0, 1].
        seed: seeds the random maps.

    Compared with :func:`vqlesson.analysis.nearest_neighbours` (``metric="hamming"``); two
    queries are exact copies of references (distance 0).
    """
    return run_check(EXERCISES["nearest_neighbours"], nearest_neighbours, seed)


def check_surprise_maps(surprise_maps: Callable[..., Tensor], seed: int = 0) -> CheckResult:
    """Check ``surprise_maps(prior, codes) -> (N, H, W)``: the per-position surprise
    ``-log2 p(c_i | c_<i)`` in bits under an (unconditional) prior.

    Args:
        surprise_maps: the student's function; ``prior`` a :class:`PixelCNNPrior`, ``codes``
            (N, H, W) int64 -> (N, H, W) float bits >= 0.
        seed: seeds the prior and the codes.

    Compared with :func:`vqlesson.analysis.surprise_maps`.
    """
    return run_check(EXERCISES["surprise_maps"], surprise_maps, seed)


def check_heldout_prior(fit_prior: Callable[[CodeDataset, CodeDataset], object], seed: int = 0
                        ) -> CheckResult:
    """Check an open exercise by what the grader measures of the prior the function trains:
    ``fit_prior(train, val)`` gets the training and validation code maps of a seeded family of
    lesion-like maps (two :class:`~vqlesson.codes.CodeDataset` of 24 maps each, (N, 8, 8)
    int64 codes in [0, 16)) and returns the trained, unconditional
    :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior` (or the path of its weights file, written
    by :func:`vqlesson.prior_weights.save_prior_weights`).

    The prior travels as a data-only weights file (never a pickle; at most 8 MiB), is rebuilt
    from the library's classes, and is measured by the check itself: its NLL on 64 held-out
    maps the function never saw must be below ``exercises_heldout.HELDOUT_FRACTION`` x log2 K
    (3 bits per code), at most ``exercises_heldout.MAX_NEAR_COPIES`` of 32 samples it draws
    with its own generator may be near-copies of the given maps, and the samples must be
    diverse. Returned figures are refused: the check believes none. When grading, the
    held-out maps are drawn with the autograder's secret, so no submission can know them
    (:mod:`vqlesson.exercises_heldout`).

    Args:
        fit_prior: the student's function, as above.
        seed: seeds the code maps and the check's samples (the hidden test uses another seed).
    """
    return run_check(EXERCISES["heldout_prior"], fit_prior, seed)


# --------------------------------------------------------------------------------------------
# Notebook 06: the hierarchy's prior (references in vqlesson.sampling and vqlesson.experiments)
# --------------------------------------------------------------------------------------------
def check_sample_hierarchy(sample_hierarchy: Callable[..., Sequence[Tensor]], seed: int = 0
                           ) -> CheckResult:
    """Check ``sample_hierarchy(model, top_prior, bottom_prior, n, generator) -> (top, bottom,
    images)``, VQ-VAE-2's level-by-level sampling (Razavi et al. 2019, Algorithm 2): the top
    codes from the top prior, then the bottom codes from the bottom prior *given* them
    (``cond_map=top``), both with ``generator``, then the decode of both levels.

    Compared with :func:`vqlesson.sampling.sample_codes` and
    :func:`~vqlesson.sampling.decode_codes` on a small seeded VQ-VAE-2 (32 px: a 4 x 4 top grid,
    an 8 x 8 bottom grid) and two small Gated PixelCNN priors with fixed, sharply peaked weights;
    the bottom sampled without (or with other) top codes, the levels swapped, a generator left
    out and a missing decode get their hints.

    Args:
        sample_hierarchy: the student's function; ``model`` a :class:`~vqlesson.vqvae2.VQVAE2`,
            ``top_prior`` and ``bottom_prior`` :class:`~vqlesson.pixelcnn_prior.PixelCNNPrior`
            (the bottom one conditioned on the top codes), ``n`` samples, ``generator`` a
            ``torch.Generator`` -> ``top`` (n, S/8, S/8) int64, ``bottom`` (n, S/4, S/4) int64,
            ``images`` (n, 3, S, S) float in [-1, 1].
        seed: seeds the networks' weights and the generator (the hidden test uses another seed).
    """
    return run_check(EXERCISES["sample_hierarchy"], sample_hierarchy, seed)


def check_swap_levels(layout_follows_top: Callable[..., float], seed: int = 0) -> CheckResult:
    """Check ``layout_follows_top(model, a, b) -> float``: decode the top codes of ``a`` with
    the bottom codes of ``b`` and the reverse, and return the share of the decodes' coarse
    layout (average-pooled to the top grid) that follows the top donor,
    ``d_bottom / (d_top + d_bottom)`` (1: the top level decides the layout, 0: the bottom).

    Graded by repeating the measurement: :func:`vqlesson.experiments.swap_layout` on a small
    seeded VQ-VAE-2 and 4 pairs of synthetic lesions (32 px); no pooling, the originals instead
    of the reconstructions, the inverted share and one swap only get their hints.

    Args:
        layout_follows_top: the student's function; ``model`` a
            :class:`~vqlesson.vqvae2.VQVAE2`, ``a`` and ``b`` (B, 3, S, S) float in [-1, 1] ->
            a float in [0, 1].
        seed: seeds the model's weights and the lesions.
    """
    return run_check(EXERCISES["swap_levels"], layout_follows_top, seed)


# --------------------------------------------------------------------------------------------
# Metrics for the grader
# --------------------------------------------------------------------------------------------
def record_metrics(**metrics: float) -> dict[str, float]:
    """Record a run's key figures (e.g. ``psnr=31.2, perplexity=180.5``) for the grader.

    When ``$VQLESSON_METRICS_FILE`` names a file (the grader sets it for each submission), the
    values are merged into that JSON object, one key per name; otherwise nothing is written.

    Args:
        **metrics: name -> a number (float, int or a 1-element tensor); ``inf`` is allowed
            (PSNR of identical images).

    Returns:
        The recorded values as floats.

    Raises:
        ValueError: no metrics, or a value that is not a single number.
    """
    if not metrics:
        raise ValueError("record_metrics needs at least one name=value, e.g. psnr=31.2")
    values = {}
    for name, value in metrics.items():
        try:
            values[name] = float(value.item() if isinstance(value, Tensor) else value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"metric {name!r} must be a single number, got {value!r}") from None
    path = os.environ.get(METRICS_ENV)
    if path:
        target = Path(path)
        recorded = json.loads(target.read_text()) if target.is_file() else {}
        recorded.update(values)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(recorded, indent=2))
    return values
