"""Instant feedback for the course's exercises: a student's function against the library's.

Every exercise in the notebooks asks for one small function on a core idea. Its ``check_*``
function here runs the student's implementation and the library's reference on the same seeded
random inputs and returns a :class:`CheckResult`: a clear pass, or a hint that says what differs
(the type, the shape, the dtype, the first differing value, the exception the function raised and
on which line, or a known mistake from student reports), never a traceback. The graders' tests
(otter-grader, see :mod:`vqlesson.course`) call the same checks, so instant feedback and grades
agree.

The references, and the papers they implement:

- nearest-code lookup, straight-through estimator, EMA codebook update:
  :class:`vqlesson.quantize.VectorQuantizer` (van den Oord, Vinyals & Kavukcuoglu 2017, §3.1-3.2
  and appendix A.1);
- rate of a two-level code, PSNR, code perplexity: :mod:`vqlesson.metrics` (VQ-VAE-2: Razavi,
  van den Oord & Vinyals 2019, §3.1);
- mask A/B: :mod:`vqlesson.pixelcnn`; bits per code, the sampling loop:
  :mod:`vqlesson.pixelcnn_prior` (van den Oord et al. 2016, *Pixel Recurrent Neural Networks*
  §3.4 and *Conditional Image Generation with PixelCNN Decoders* §2);
- pairwise Hamming diversity, nearest neighbours: :mod:`vqlesson.memorisation`; surprise maps:
  :mod:`vqlesson.analysis`.

:func:`record_metrics` lets a notebook hand its key figures (PSNR, perplexity, prior NLL) to the
grader, which collects them into its CSV.
"""

from __future__ import annotations

import json
import math
import os
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS_ENV = "VQLESSON_METRICS_FILE"
NOT_DONE = ("not done yet: your function returned None. Replace the `...` with your code "
            "(and `return` the result).")
_LIBRARY_DIRS = (str(Path(__file__).resolve().parent), str(Path(torch.__file__).resolve().parent))


# --------------------------------------------------------------------------------------------
# Helpers: results, calling the student's function, comparing values
# --------------------------------------------------------------------------------------------
class CheckResult(NamedTuple):
    """The outcome of one check.

    Attributes:
        name: the exercise, e.g. ``"nearest_code"``.
        passed: True when the student's function agreed with the reference on every case.
        message: what was checked (passed) or a hint saying what differs (failed).

    ``bool(result)`` is ``result.passed``; in a notebook the result displays as one line,
    ``✅ name: ...`` or ``❌ name: ...``.
    """

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return bool(self.passed)

    def __repr__(self) -> str:
        return f"{'✅' if self.passed else '❌'} {self.name}: {self.message}"

    __str__ = __repr__


class _Mismatch(Exception):
    """Raised inside a check when the student's result differs; carries the hint."""


def _where_it_raised(error: BaseException) -> str:
    """`` (line N: `code`)`` of the last frame outside the library and torch, or ``""``."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if not f.filename.startswith(_LIBRARY_DIRS)]
    if not frames:
        return ""
    frame = frames[-1]
    code = f": `{frame.line.strip()}`" if frame.line else ""
    return f" (line {frame.lineno}{code})"


def _call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call the student's function; turn every exception into a :class:`_Mismatch` hint."""
    if not callable(fn):
        raise _Mismatch(f"expected your function, got {type(fn).__name__}: run the exercise's "
                        "cell (the one with `def ...`) first.")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _Mismatch("not done yet: the function still raises NotImplementedError.") from None
    except Exception as error:  # any error in student code becomes a hint, never a traceback
        raise _Mismatch(f"your function raised {type(error).__name__}: {error}"
                        f"{_where_it_raised(error)}") from None


def _as_tensor(value: Any, what: str) -> Tensor:
    if value is None:
        raise _Mismatch(NOT_DONE)
    if isinstance(value, Tensor):
        return value.detach().cpu()
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(value)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise _Mismatch(f"{what} should be a torch.Tensor, got {type(value).__name__}.")


def _as_float(value: Any, what: str) -> float:
    if value is None:
        raise _Mismatch(NOT_DONE)
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise _Mismatch(f"{what} should be one number (a float or a 0-dim tensor), got a "
                            f"tensor of shape {tuple(value.shape)}.")
        return float(value.detach().cpu().reshape(()))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise _Mismatch(f"{what} should be a number, got {type(value).__name__}.") from None


def _index_str(flat_index: int, shape: Sequence[int]) -> str:
    if not shape:
        return "()"
    index = []
    for size in reversed(shape):
        index.append(flat_index % size)
        flat_index //= size
    return str(tuple(reversed(index)))


def _compare(got: Any, expected: Tensor, what: str, *, atol: float = 1e-5, rtol: float = 1e-4,
             integer: bool | None = None) -> Tensor:
    """Check ``got`` against ``expected`` (type, shape, dtype kind, values); returns it as a CPU
    tensor or raises :class:`_Mismatch` with a hint. ``integer=None`` follows ``expected``."""
    tensor = _as_tensor(got, what)
    expected = expected.detach().cpu()
    if tuple(tensor.shape) != tuple(expected.shape):
        raise _Mismatch(f"{what} has shape {tuple(tensor.shape)}, expected "
                        f"{tuple(expected.shape)}.")
    integer = (not expected.is_floating_point()) if integer is None else integer
    if integer:
        if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
            raise _Mismatch(f"{what} has dtype {tensor.dtype}, expected integer indices "
                            f"({expected.dtype}); `.argmin()`/`.argmax()` return int64, "
                            "`.long()` converts.")
        bad = tensor.long() != expected.long()
    else:
        tensor = tensor.double()
        reference = expected.double()
        nan_got, nan_ref = torch.isnan(tensor), torch.isnan(reference)
        if bool((nan_got & ~nan_ref).any()):
            first = int(torch.nonzero((nan_got & ~nan_ref).flatten())[0])
            raise _Mismatch(f"{what} is NaN at index {_index_str(first, tensor.shape)} where the "
                            f"reference is {reference.flatten()[first].item():.6g}.")
        bad = ~torch.isclose(tensor, reference, rtol=rtol, atol=atol, equal_nan=True)
    if bool(bad.any()):
        flat = bad.flatten()
        first = int(torch.nonzero(flat)[0])
        g, e = tensor.flatten()[first].item(), expected.flatten()[first].item()
        fmt = (lambda v: str(int(v))) if integer else (lambda v: f"{v:.6g}")
        raise _Mismatch(f"{what}: {int(flat.sum())} of {flat.numel()} values differ; the first "
                        f"at index {_index_str(first, tensor.shape)}: got {fmt(g)}, expected "
                        f"{fmt(e)}.")
    return tensor


def _close(a: float, b: float, rel: float = 1e-4, abs_: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def _compare_number(got: Any, expected: float, what: str, rel: float = 1e-4) -> float:
    value = _as_float(got, what)
    if not _close(value, expected, rel):
        raise _Mismatch(f"{what} is {value:.6g}, expected {expected:.6g}.")
    return value


def _run(name: str, cases: Callable[[], str]) -> CheckResult:
    """Run a check body; a :class:`_Mismatch` becomes a failed result with its hint. The global
    random state is restored afterwards, so a check never changes a notebook's random stream.
    The inputs are tiny, so the body runs on one CPU thread: several threads only wait for each
    other on such sizes (up to 100x slower on a busy machine); the setting is restored."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.random.fork_rng(devices=[]):
            summary = cases()
    except _Mismatch as mismatch:
        return CheckResult(name, False, str(mismatch))
    finally:
        torch.set_num_threads(threads)
    return CheckResult(name, True, f"passed ({summary}).")


def _generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def _equal_if_tensor(value: Any, other: Tensor) -> bool:
    return (isinstance(value, Tensor) and value.shape == other.shape
            and torch.allclose(value.detach().cpu().double(), other.double(), atol=1e-5, rtol=1e-4))


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
    from .quantize import VectorQuantizer, squared_distances

    def cases() -> str:
        g = _generator(seed)
        for b, d, h, w, k in ((2, 4, 3, 3, 8), (1, 16, 4, 5, 32), (3, 2, 1, 1, 1)):
            z_e = torch.randn(b, d, h, w, generator=g)
            codebook = torch.randn(k, d, generator=g)
            vq = VectorQuantizer(k, d, ema=False, init="random")
            vq.set_codebook(codebook)
            expected = vq.nearest_indices(z_e)  # (B, H, W)
            got = _call(nearest_code, z_e.clone(), codebook.clone())
            tensor = _as_tensor(got, "the result")
            if tensor.numel() == expected.numel() and tensor.shape != expected.shape:
                raise _Mismatch(f"the result has shape {tuple(tensor.shape)}; one index per "
                                f"position is right, but reshape it to (B, H, W) = "
                                f"{tuple(expected.shape)}.")
            if tensor.shape == expected.shape and not tensor.is_floating_point():
                no_permute = squared_distances(z_e.reshape(-1, d), codebook).argmin(1)
                farthest = squared_distances(
                    z_e.permute(0, 2, 3, 1).reshape(-1, d), codebook).argmax(1)  # (B·H·W,)
                if k > 1 and torch.equal(tensor.long(), farthest.view(b, h, w)):
                    raise _Mismatch("these are the *farthest* codes: the nearest code has the "
                                    "smallest distance (argmin).")
                if h * w > 1 and torch.equal(tensor.long(), no_permute.view(b, h, w)) and not \
                        torch.equal(expected, no_permute.view(b, h, w)):
                    raise _Mismatch("the indices match z_e reshaped without moving D last: "
                                    "flatten with z_e.permute(0, 2, 3, 1).reshape(-1, D) so that "
                                    "each row is one position's D-vector.")
            _compare(tensor, expected, f"the result for z_e {tuple(z_e.shape)} and K = {k}")
        return "3 cases, including K = 1 on a 1x1 grid"

    return _run("nearest_code", cases)


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
    from .quantize import VectorQuantizer

    def cases() -> str:
        g = _generator(seed)
        b, d, h, w, k = 2, 4, 3, 3, 8
        z_data = torch.randn(b, d, h, w, generator=g)
        codes = torch.randn(k, d, generator=g)
        upstream = torch.randn(b, d, h, w, generator=g)  # the decoder's gradient dL/dz_q

        vq = VectorQuantizer(k, d, ema=False, init="random")
        vq.set_codebook(codes)
        z_ref = z_data.clone().requires_grad_(True)
        reference = vq(z_ref)
        (reference.z_q * upstream).sum().backward()

        codebook = codes.clone().requires_grad_(True)
        z_e = z_data.clone().requires_grad_(True)
        e = F.embedding(reference.indices, codebook)  # (B, H, W, D)
        e = e.permute(0, 3, 1, 2)  # (B, H, W, D) -> (B, D, H, W)
        z_q = _call(straight_through, z_e, e)
        _compare(z_q, reference.z_q, "the value of z_q (it must equal the chosen codes e)")
        if not z_q.requires_grad:
            raise _Mismatch("z_q carries no gradient: detach only the difference, "
                            "z_q = z_e + (e - z_e).detach(), so that gradients reach z_e.")
        try:
            (z_q * upstream).sum().backward()
        except RuntimeError as error:
            raise _Mismatch(f"backpropagating through z_q failed: {error}") from None
        if z_e.grad is None:
            raise _Mismatch("no gradient reached z_e: the straight-through estimator copies "
                            "dL/dz_q onto z_e.")
        _compare(z_e.grad, z_ref.grad, "the gradient reaching z_e (it must equal dL/dz_q)")
        if codebook.grad is not None and bool(codebook.grad.abs().gt(0).any()):
            raise _Mismatch("the codebook receives a gradient through z_q; in the VQ-VAE it "
                            "learns only from its own loss term (or EMA). Detach e's part: "
                            "z_e + (e - z_e).detach().")
        return "value = e, dL/dz_e = dL/dz_q, no gradient to the codebook through z_q"

    return _run("straight_through", cases)


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

    Compared with ``VectorQuantizer.ema_update`` (with a large ``eps``, so that the smoothing
    shows); one code is unused in this batch and almost never was.
    """
    from .quantize import VectorQuantizer

    def cases() -> str:
        g = _generator(seed)
        k, d, decay, eps = 6, 3, 0.9, 0.1  # a large eps, so that the smoothing shows
        cluster_size = torch.rand(k, generator=g) * 4 + 0.5
        cluster_size[0] = 1e-3  # a code that has almost never been used ...
        embed_sum = torch.randn(k, d, generator=g) * cluster_size[:, None]
        counts = torch.randint(1, 5, (k,), generator=g).float()
        counts[0] = 0.0  # ... and is unused in this batch too
        sums = torch.randn(k, d, generator=g) * counts[:, None]

        vq = VectorQuantizer(k, d, ema=True, decay=decay, eps=eps, init="random")
        vq.set_codebook(embed_sum / cluster_size[:, None], cluster_size)
        vq.ema_update(counts, sums)
        expected = (vq.ema_cluster_size, vq.ema_embed_sum, vq.codebook)

        got = _call(ema_update, cluster_size.clone(), embed_sum.clone(), counts.clone(),
                    sums.clone(), decay, eps)
        if got is None:
            raise _Mismatch(NOT_DONE)
        if isinstance(got, Tensor) or not isinstance(got, Sequence) or len(got) != 3:
            raise _Mismatch("return three tensors: (cluster_size (K,), embed_sum (K, D), "
                            f"codebook (K, D)); got {type(got).__name__}.")
        new_n, new_m, new_codes = got
        swapped = decay * counts + (1 - decay) * cluster_size
        if _equal_if_tensor(new_n, swapped):
            raise _Mismatch("the decay weights are swapped: the running average keeps `decay` "
                            "of its old value and takes `1 - decay` of the batch statistics.")
        _compare(new_n, expected[0], "cluster_size (K,)")
        _compare(new_m, expected[1], "embed_sum (K, D)")
        unsmoothed = expected[1] / expected[0][:, None]
        if not torch.allclose(unsmoothed, expected[2]) and _equal_if_tensor(new_codes, unsmoothed):
            raise _Mismatch("the codebook is embed_sum / cluster_size without Laplace smoothing: "
                            "use N~ = (N + eps) / (sum(N) + K eps) * sum(N), so that an unused "
                            "code never divides by zero.")
        _compare(new_codes, expected[2], "codebook (K, D)")
        return "cluster sizes, sums and smoothed codebook, with an unused code"

    return _run("ema_update", cases)


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
    from .metrics import bits_per_image

    def cases() -> str:
        g = _generator(seed)
        sizes = [(32, 64, 64), (64, 256, 256), (128, 512, 16), (256, 16, 512)]
        for _ in range(2):
            s = 8 * int(torch.randint(2, 33, (1,), generator=g))
            kt, kb = (2 ** int(torch.randint(1, 11, (1,), generator=g)) for _ in range(2))
            sizes.append((s, kt, kb))
        for s, kt, kb in sizes:
            expected = bits_per_image([((s // 8, s // 8), kt), ((s // 4, s // 4), kb)])
            value = _as_float(_call(hierarchy_bits, s, kt, kb), "the result")
            top = (s // 8) ** 2 * math.log2(kt)
            bottom = (s // 4) ** 2 * math.log2(kb)
            if not _close(value, expected):
                if _close(value, top) or _close(value, bottom):
                    raise _Mismatch(f"for S={s}, K_top={kt}, K_bottom={kb} you return the bits "
                                    "of one level only; a VQ-VAE-2 stores both grids.")
                if _close(value, (s // 4) ** 2 * math.log2(kt) + (s // 8) ** 2 * math.log2(kb)):
                    raise _Mismatch("the grids are swapped: the top grid is S/8 x S/8, the "
                                    "bottom grid S/4 x S/4.")
                if _close(value, (s // 8) ** 2 * kt + (s // 4) ** 2 * kb):
                    raise _Mismatch("each code costs log2 K bits, not K.")
                _compare_number(value, expected, f"the rate for S={s}, K_top={kt}, K_bottom={kb}")
        return f"{len(sizes)} sizes"

    return _run("hierarchy_bits", cases)


def check_psnr(psnr_db: Callable[[Tensor, Tensor], Tensor], seed: int = 0) -> CheckResult:
    """Check ``psnr_db(x, x_hat) -> (B,)``: PSNR in dB per image, on images mapped from
    [-1, 1] to [0, 1] (peak 1): ``10 log10(1 / MSE)``.

    Args:
        psnr_db: the student's function; ``x``, ``x_hat`` (B, 3, H, W) float in [-1, 1] ->
            (B,) float dB.
        seed: seeds the random images.

    Compared with :func:`vqlesson.metrics.psnr` (``reduction="none"``).
    """
    from .metrics import psnr

    def cases() -> str:
        g = _generator(seed)
        x = torch.rand(4, 3, 16, 16, generator=g) * 2 - 1
        levels = torch.tensor([0.02, 0.05, 0.1, 0.3]).view(4, 1, 1, 1)  # noise std per image
        noise = torch.randn(4, 3, 16, 16, generator=g) * levels
        x_hat = (x + noise).clamp(-1, 1)
        expected = psnr(x, x_hat, reduction="none")  # (B,)
        got = _call(psnr_db, x.clone(), x_hat.clone())
        if got is None:
            raise _Mismatch(NOT_DONE)
        if isinstance(got, (int, float)) or (isinstance(got, Tensor) and got.numel() == 1):
            mean = _close(_as_float(got, "it"), float(expected.mean()))
            hint = " (that is the mean over images)" if mean else ""
            raise _Mismatch(f"you return one number{hint}; return one PSNR per image, shape "
                            f"(B,) = {tuple(expected.shape)}.")
        tensor = _as_tensor(got, "the result")
        if tensor.shape == expected.shape and tensor.is_floating_point():
            shift = 20 * math.log10(2)
            if torch.allclose(tensor.double(), expected.double() - shift, atol=1e-3):
                raise _Mismatch("every PSNR is 6.02 dB too low: the MSE was taken on [-1, 1] "
                                "images with peak 1. Map both images to [0, 1] first, "
                                "(x + 1) / 2, whose MSE is 4 times smaller.")
            if torch.allclose(tensor.double(), expected.double() * math.log(10), rtol=1e-3):
                raise _Mismatch("decibels use log10, not the natural log.")
        _compare(tensor, expected, "the PSNR per image (dB)", atol=1e-3, rtol=1e-4)
        return "4 images with different noise levels"

    return _run("psnr", cases)


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
    from .metrics import perplexity_from_counts

    def cases() -> str:
        g = _generator(seed)
        k = 16
        weights = torch.rand(k, generator=g) ** 3
        weights[:4] = 0.0  # four codes never used
        skewed = torch.multinomial(weights, 5 * 4 * 4, replacement=True, generator=g).view(5, 4, 4)
        collapsed = torch.full((2, 4, 4), 3, dtype=torch.int64)
        uniform = torch.arange(k).repeat(2).view(2, 4, 4)
        for name, codes in (("skewed use with unused codes", skewed),
                            ("a collapsed codebook", collapsed), ("uniform use", uniform)):
            counts = torch.bincount(codes.flatten(), minlength=k)
            expected = perplexity_from_counts(counts)
            value = _as_float(_call(code_perplexity, codes.clone(), k), "the result")
            if math.isnan(value):
                raise _Mismatch(f"NaN for {name}: 0 log 0 must count as 0 (drop unused codes, "
                                "or use torch.special.xlogy(p, p)).")
            if not _close(value, expected):
                entropy = math.log(expected)
                if _close(value, 1 / expected):
                    raise _Mismatch("the sign is wrong: the entropy is -sum p log p, and the "
                                    "perplexity exp(entropy) is at least 1.")
                report_d = (2 * math.exp(-entropy / k), 2 * math.exp(-entropy))
                if any(_close(value, v) for v in report_d):
                    raise _Mismatch("that looks like report D's `2 exp(mean p log p)`; the "
                                    "perplexity is exp(-sum_k p_k log p_k).")
                if _close(value, 2 ** entropy):
                    raise _Mismatch("2 ** (entropy in nats) mixes units: use exp(entropy in "
                                    "nats), or 2 ** (entropy in bits).")
                _compare_number(value, expected, f"the perplexity for {name}")
        return "skewed use with unused codes, a collapsed codebook (1), uniform use (K)"

    return _run("code_perplexity", cases)


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
    from .pixelcnn import causal_mask

    def cases() -> str:
        _generator(seed)
        for k in (1, 3, 5, 7):
            for kind in "AB":
                expected = causal_mask(k, kind)
                got = _call(build_mask, k, kind)
                tensor = _as_tensor(got, f"the mask for kernel_size={k}, type {kind}")
                if tensor.shape == expected.shape:
                    tensor = tensor.double()
                    other = causal_mask(k, "B" if kind == "A" else "A").double()
                    if k > 1 and torch.equal(tensor, expected.double().T):
                        raise _Mismatch("the mask is transposed: keep the rows *above* the "
                                        "centre, and in the centre row the columns left of it.")
                    if k > 1 and torch.equal(tensor, expected.double().flip(0, 1)):
                        raise _Mismatch("the mask looks at later positions: causal means the rows "
                                        "above and the columns to the left (raster order).")
                    if torch.equal(tensor, other):
                        raise _Mismatch(f"that is mask {'B' if kind == 'A' else 'A'}: mask A "
                                        "(first layer) hides the centre, mask B keeps it.")
                _compare(tensor, expected, f"the mask for kernel_size={k}, type {kind}",
                         integer=False)
        return "kernel sizes 1, 3, 5, 7, types A and B"

    return _run("causal_mask", cases)


def check_bits_per_code(bits_per_code: Callable[[Tensor, Tensor], float], seed: int = 0
                        ) -> CheckResult:
    """Check ``bits_per_code(logits, codes) -> float``: the categorical cross-entropy (softmax
    over the K codes at each position), averaged over positions, in bits.

    Args:
        bits_per_code: the student's function; ``logits`` (B, K, H, W) float and ``codes``
            (B, H, W) int64 in [0, K) -> float bits per code (>= 0).
        seed: seeds the random logits and codes.

    Compared with :func:`vqlesson.pixelcnn_prior.nll`.
    """
    from .pixelcnn_prior import nll

    def cases() -> str:
        g = _generator(seed)
        for b, k, h, w in ((2, 8, 3, 4), (1, 32, 5, 5)):
            logits = torch.randn(b, k, h, w, generator=g) * 2
            codes = torch.randint(0, k, (b, h, w), generator=g)
            expected = float(nll(logits, codes))
            value = _as_float(_call(bits_per_code, logits.clone(), codes.clone()), "the result")
            if not _close(value, expected):
                if _close(value, expected * math.log(2)):
                    raise _Mismatch("that is in nats: divide by ln 2 for bits.")
                if _close(value, expected * b * h * w):
                    raise _Mismatch("that is the sum over positions: report the mean per code.")
                one_hot = F.one_hot(codes, k).permute(0, 3, 1, 2).float()  # (B,H,W,K) -> (B,K,H,W)
                binary = F.binary_cross_entropy_with_logits(logits, one_hot)
                if _close(value, float(binary)) or _close(value, float(binary) / math.log(2)):
                    raise _Mismatch("that is a binary cross-entropy (report D's mistake): each "
                                    "position is *one* categorical variable with K classes; "
                                    "use a softmax over K (F.cross_entropy).")
                _compare_number(value, expected, f"the bits per code for logits {(b, k, h, w)}")
        return "2 cases"

    return _run("bits_per_code", cases)


def _peaked_prior(seed: int):
    """A small unconditional Gated PixelCNN prior whose softmaxes are sharp, built without
    touching the global random state."""
    from .pixelcnn import PriorConfig
    from .pixelcnn_prior import PixelCNNPrior

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1000 + seed)
        prior = PixelCNNPrior(PriorConfig(codebook_size=6, embed_dim=4, channels=8, num_layers=2,
                                          kernel_size=3, first_kernel_size=3))
    with torch.no_grad():
        prior.net.head.out.weight.mul_(50.0)
        prior.net.head.out.bias.mul_(50.0)
    return prior.eval()


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

    def cases() -> str:
        prior = _peaked_prior(seed)
        n, shape, k = 3, (3, 4), prior.config.codebook_size
        greedy = prior.sample(n, shape, temperature=0)  # (n, H, W)
        got = _call(sample_codes, prior, n, shape, temperature=1e-3,
                    generator=torch.Generator().manual_seed(seed))
        tensor = _as_tensor(got, "the samples")
        if tensor.shape == greedy.shape and not tensor.is_floating_point() and tensor.numel():
            low, high = int(tensor.min()), int(tensor.max())
            if low < 0 or high >= k:
                raise _Mismatch(f"codes must lie in [0, K) = [0, {k}), got values in "
                                f"[{low}, {high}].")
            if low == high == 0 and bool(greedy.any()):
                raise _Mismatch("every code is still 0: inside the loop, draw a code for "
                                "position (r, c) and store it in codes[:, r, c].")
        _compare(tensor, greedy, "the samples at temperature 1e-3 (they must equal the "
                                 "library's greedy samples: is each code drawn from the "
                                 "logits at its own position, after the codes before it?)")
        hot = [_as_tensor(_call(sample_codes, prior, n, shape, temperature=1e3,
                                generator=torch.Generator().manual_seed(seed + i)), "the samples")
               for i in (0, 0)]
        if not torch.equal(hot[0], hot[1]):
            raise _Mismatch("two runs with equally seeded generators gave different samples: "
                            "pass `generator=generator` to torch.multinomial (or torch.rand).")
        if torch.equal(hot[0].long(), greedy):
            raise _Mismatch("at temperature 1000 the samples still equal the greedy ones: "
                            "divide the logits by the temperature before the softmax.")
        return "greedy limit, reproducible with a generator, uses the temperature"

    return _run("sampling_loop", cases)


# --------------------------------------------------------------------------------------------
# Notebook 05: diversity, memorisation, surprise (references in vqlesson.memorisation/analysis)
# --------------------------------------------------------------------------------------------
def check_pairwise_hamming(pairwise_hamming: Callable[[Tensor], float], seed: int = 0
                           ) -> CheckResult:
    """Check ``pairwise_hamming(codes) -> float``: the mean, over all unordered pairs of code
    maps, of the fraction of positions where the two differ (a diversity metric in [0, 1]).

    Args:
        pairwise_hamming: the student's function; ``codes`` (N, H, W) int64, N >= 2 -> float.
        seed: seeds the random code maps.

    Compared with :func:`vqlesson.memorisation.pairwise_hamming`; one case holds identical maps
    (0).
    """
    from .memorisation import pairwise_hamming as reference

    def cases() -> str:
        g = _generator(seed)
        random_maps = torch.randint(0, 3, (6, 4, 4), generator=g)
        identical = random_maps[:1].repeat(4, 1, 1)
        for name, codes in (("6 random maps", random_maps), ("4 identical maps", identical)):
            expected = reference(codes)
            n, positions = codes.shape[0], codes[0].numel()
            value = _as_float(_call(pairwise_hamming, codes.clone()), "the result")
            if not _close(value, expected):
                if _close(value, expected * (n - 1) / n):
                    raise _Mismatch("you average over all N x N pairs, a map against itself "
                                    "included: average over the pairs i < j only.")
                if _close(value, expected * positions):
                    raise _Mismatch("that is a count of positions: divide by H x W for the "
                                    "fraction that differs.")
                _compare_number(value, expected, f"the diversity of {name}")
        return "random and identical code maps"

    return _run("pairwise_hamming", cases)


def check_nearest_neighbours(nearest_neighbours: Callable[[Tensor, Tensor], Sequence[Tensor]],
                             seed: int = 0) -> CheckResult:
    """Check ``nearest_neighbours(queries, references) -> (index, distance)`` in code space:
    for each query map, the reference map with the smallest Hamming fraction (ties: the lowest
    index) and that fraction, the near-copy detector of notebook 05.

    Args:
        nearest_neighbours: the student's function; ``queries`` (N, H, W) and ``references``
            (M, H, W) int64 -> ``index`` (N,) int64 and ``distance`` (N,) float in [0, 1].
        seed: seeds the random maps.

    Compared with :func:`vqlesson.memorisation.nearest_neighbours` (``metric="hamming"``); two
    queries are exact copies of references (distance 0).
    """
    from .memorisation import nearest_neighbours as reference

    def cases() -> str:
        g = _generator(seed)
        references = torch.randint(0, 4, (7, 4, 4), generator=g)
        queries = torch.randint(0, 4, (5, 4, 4), generator=g)
        queries[1] = references[5]
        queries[3] = references[2]
        expected = reference(queries, references, metric="hamming")
        got = _call(nearest_neighbours, queries.clone(), references.clone())
        if got is None:
            raise _Mismatch(NOT_DONE)
        if isinstance(got, Tensor) or not isinstance(got, Sequence) or len(got) != 2:
            raise _Mismatch("return two tensors, (index (N,), distance (N,)); got "
                            f"{type(got).__name__}.")
        index, distance = got
        counts = expected.distance * 16  # 16 = H x W positions
        if _equal_if_tensor(distance, counts) and not torch.all(expected.distance == 0):
            raise _Mismatch("the distances are counts of differing positions: divide by H x W.")
        _compare(distance, expected.distance, "distance (N,)")
        _compare(index, expected.index, "index (N,) (ties: the lowest reference index)")
        return "5 queries against 7 references, two exact copies"

    return _run("nearest_neighbours", cases)


def check_surprise_maps(surprise_maps: Callable[..., Tensor], seed: int = 0) -> CheckResult:
    """Check ``surprise_maps(prior, codes) -> (N, H, W)``: the per-position surprise
    ``-log2 p(c_i | c_<i)`` in bits under an (unconditional) prior.

    Args:
        surprise_maps: the student's function; ``prior`` a :class:`PixelCNNPrior`, ``codes``
            (N, H, W) int64 -> (N, H, W) float bits >= 0.
        seed: seeds the prior and the codes.

    Compared with :func:`vqlesson.analysis.surprise_maps`.
    """
    from .analysis import surprise_maps as reference

    def cases() -> str:
        from .pixelcnn import PriorConfig
        from .pixelcnn_prior import PixelCNNPrior

        g = _generator(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(2000 + seed)
            prior = PixelCNNPrior(PriorConfig(codebook_size=5, embed_dim=4, channels=8,
                                              num_layers=2, kernel_size=3, first_kernel_size=3))
        prior.eval()
        codes = torch.randint(0, 5, (3, 4, 4), generator=g)
        expected = reference(prior, codes)
        got = _call(surprise_maps, prior, codes.clone())
        tensor = _as_tensor(got, "the surprise maps")
        if tensor.shape == expected.shape and tensor.is_floating_point():
            nats = expected.double() * math.log(2)
            if torch.allclose(tensor.double(), nats, rtol=1e-4, atol=1e-5):
                raise _Mismatch("those are nats: divide by ln 2 for bits.")
            if torch.allclose(tensor.double(), -expected.double(), rtol=1e-4, atol=1e-5):
                raise _Mismatch("the sign is wrong: surprise is -log2 p, which is >= 0.")
        _compare(tensor, expected, "the surprise maps (bits)", atol=1e-4, rtol=1e-4)
        return "3 code maps under a small prior"

    return _run("surprise_maps", cases)


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
