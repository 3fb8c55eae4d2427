"""The classifier two-sample test: can a small CNN tell two image sets apart?

Lopez-Paz & Oquab (2017), *Revisiting Classifier Two-Sample Tests*, ICLR, §2-3: train a binary
classifier on half of the union of two samples (labelled by the sample they came from) and
score it on the other half. Under the null hypothesis that both come from one distribution, no
classifier beats chance, so the number of held-out images it gets right is Binomial(n_test, 1/2);
its accuracy is the statistic (0.5: indistinguishable, 1.0: always told apart), which says both
*whether* the sets differ (the p-value) and *how much* (the accuracy itself), and the classifier
can later show *where* (its most confident images).

The course's realism measure (:mod:`vqlesson.realism`) uses it to compare a prior's samples with
VQ-VAE reconstructions of real images, and the reconstructions with the real images. Pure
PyTorch, no downloaded weights: a few convolutions trained from scratch in seconds on a CPU.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from scipy import stats
from torch import Tensor, nn

from .validate import check_images, check_int, check_number


# --------------------------------------------------------------------------------------------
# The classifier two-sample test (Lopez-Paz & Oquab 2017)
# --------------------------------------------------------------------------------------------
@dataclass
class TwoSampleConfig:
    """Settings of :func:`two_sample_test`: the classifier, its training, the input guards.

    Attributes:
        channels: output channels of the 3x3 stride-2 convolutions, in order (each halves the
            side: 64 px -> 4 x 4 after four), each >= 1.
        pooled: side of the average pool before the linear layer, >= 1; it keeps *where* the
            features are (the vignette is a matter of position), unlike a global pool.
        epochs: passes over the training half, >= 1.
        batch_size: images per step, >= 1.
        learning_rate: AdamW's, > 0. weight_decay: AdamW's decoupled decay, >= 0.
        flips: flip the training images left-right and up-down at random (a lesion has no
            orientation, and flips keep the inscribed circle in place).
        quantize_bits: round both sets to ``2**bits`` levels per channel first (8: what a PNG
            holds), so that the classifier cannot win on precision nobody sees (a decoder's
            ``tanh`` never reaches -1 exactly, a real image's black does); ``None`` keeps them.
        range_tolerance: how far outside [-1, 1] a value may lie, >= 0.
        confidence: of the accuracy's Clopper-Pearson interval, in (0, 1).

    Raises:
        ValueError: a value out of range.
    """

    channels: tuple[int, ...] = (16, 32, 64, 64)
    pooled: int = 4
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    flips: bool = True
    quantize_bits: int | None = 8
    range_tolerance: float = 1e-3
    confidence: float = 0.95

    def __post_init__(self) -> None:
        self.channels = tuple(check_int(c, f"channels[{i}]", 1) for i, c in enumerate(self.channels))
        if not self.channels:
            raise ValueError("channels must name at least one convolution, e.g. (16, 32, 64, 64)")
        for name in ("pooled", "epochs", "batch_size"):
            check_int(getattr(self, name), name, 1)
        check_number(self.learning_rate, "learning_rate", 0, low_open=True)
        check_number(self.weight_decay, "weight_decay", 0)
        check_int(self.quantize_bits, "quantize_bits", 1, 16, none_ok=True,
                  note="None keeps the values as they are")
        check_number(self.range_tolerance, "range_tolerance", 0)
        check_number(self.confidence, "confidence", 0, 1, low_open=True, high_open=True)


class TwoSampleResult(NamedTuple):
    """The outcome of :func:`two_sample_test`.

    Attributes:
        accuracy: fraction of the held-out images the classifier put in the right set, in
            [0, 1]: 0.5 it cannot tell the sets apart, 1.0 it always can (below 0.5 is chance).
        standard_error: the accuracy's binomial standard error, sqrt(acc (1 - acc) / n_test).
        ci_low, ci_high: its Clopper-Pearson interval at the config's ``confidence``.
        p_value: one-sided P(Binomial(n_test, 1/2) >= correct): how likely an accuracy this high
            would be if both sets came from one distribution.
        train_accuracy: on the training half (far above ``accuracy`` when it overfits).
        n: images per set; n_train, n_test: images of both sets trained on and tested on.
        seed: of the split, the initial weights and the batches.
        seconds: wall time.
    """

    accuracy: float
    standard_error: float
    ci_low: float
    ci_high: float
    p_value: float
    train_accuracy: float
    n: int
    n_train: int
    n_test: int
    seed: int
    seconds: float


def _check_sets(a: object, b: object, names: Sequence[str], tolerance: float) -> None:
    """The guards of :func:`two_sample_test`: cues the classifier must not win on."""
    check_images(a, names[0])
    check_images(b, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape (N, C, H, W), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}: a classifier wins on a size difference, and "
            "scores above 0.5 on unequal sets by guessing the larger one; resize, or take as "
            "many images from each")
    if a.dtype != b.dtype:
        raise TypeError(f"{names[0]} is {a.dtype} and {names[1]} is {b.dtype}; give both the "
                        "same dtype (e.g. .float())")
    if len(a) < 4:
        raise ValueError(f"give at least 4 images per set (2 to train on, 2 to test), got {len(a)}")
    lows = []
    for x, name in ((a, names[0]), (b, names[1])):
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        low, high = float(x.min()), float(x.max())
        if low < -1 - tolerance or high > 1 + tolerance:
            raise ValueError(f"{name} must lie in [-1, 1] (the course's image range), got "
                             f"[{low:.3g}, {high:.3g}]; map [0, 1] images with x * 2 - 1, 0..255 "
                             "images with x / 127.5 - 1")
        lows.append(low)
    if min(lows) < -0.5 and max(lows) >= 0:
        which = names[int(lows[1] >= 0)]
        raise ValueError(f"{which} has no value below 0 while the other set reaches "
                         f"{min(lows):.2f}: it looks like [0, 1] images; map them with x * 2 - 1")


def _quantized(x: Tensor, bits: int | None) -> Tensor:
    """(N, C, H, W) in [-1, 1] -> the same on ``2**bits`` levels per channel (``None``: as is)."""
    if bits is None:
        return x.clamp(-1.0, 1.0)
    steps = 2 ** bits - 1
    return torch.round((x.clamp(-1.0, 1.0) + 1.0) * (steps / 2)) * (2 / steps) - 1.0


def _classifier(config: TwoSampleConfig, in_channels: int, generator: torch.Generator
                ) -> nn.Sequential:
    """The small CNN, its weights drawn from ``generator`` (the global RNG is left as found)."""
    with torch.random.fork_rng(devices=[]):  # nn layers draw default weights from the global RNG
        layers: list[nn.Module] = []
        width = in_channels
        for out in config.channels:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            width = out
        layers += [nn.AdaptiveAvgPool2d(config.pooled), nn.Flatten(),  # (B, width * pooled**2)
                   nn.Linear(width * config.pooled ** 2, 1)]
        net = nn.Sequential(*layers)
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, a=0.2, nonlinearity="leaky_relu",
                                     generator=generator)
            nn.init.zeros_(module.bias)
    return net


def _random_flips(x: Tensor, generator: torch.Generator) -> Tensor:
    """(B, C, H, W) -> each image flipped left-right and up-down with probability 1/2 each."""
    left_right, up_down = (torch.rand(2, len(x), generator=generator) < 0.5).to(x.device)
    x = torch.where(left_right[:, None, None, None], x.flip(-1), x)
    return torch.where(up_down[:, None, None, None], x.flip(-2), x)


def _fit(net: nn.Module, x: Tensor, y: Tensor, config: TwoSampleConfig,
         generator: torch.Generator) -> None:
    """Train ``net`` to output a logit > 0 for set b: x (N, C, H, W), y (N,) float in {0, 1}."""
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate,
                                  weight_decay=config.weight_decay)
    for _ in range(config.epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for batch in order.split(config.batch_size):
            xb = _random_flips(x[batch], generator) if config.flips else x[batch]
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb)[:, 0], y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()


@torch.no_grad()
def _correct(net: nn.Module, x: Tensor, y: Tensor, batch_size: int) -> int:
    """How many of x (N, C, H, W) the net puts in their set y (N,) in {0, 1}."""
    return int(sum(((net(xb)[:, 0] > 0).float() == yb).sum()
                   for xb, yb in zip(x.split(batch_size), y.split(batch_size))))


def two_sample_test(a: Tensor, b: Tensor, config: TwoSampleConfig | None = None, seed: int = 0,
                    device: str | torch.device | None = None,
                    names: Sequence[str] = ("a", "b")) -> TwoSampleResult:
    """Can a small CNN tell two image sets apart? The classifier two-sample test (Lopez-Paz &
    Oquab 2017, *Revisiting Classifier Two-Sample Tests*, ICLR): it learns on half of each set
    and is scored on the other half.

    What to feed it: **samples against VQ-VAE reconstructions of real images**, so that both
    passed through the same decoder and only the prior's errors are measured (against real
    images, the decoder's blur alone would give the sets away); and **reconstructions against
    the real images** themselves, the decoder's own yardstick (the best a prior could reach).
    Both sets must have the same size, shape, dtype and range: the classifier would otherwise
    win on a cue that has nothing to do with realism; the same holds for the precision of the
    pixels, hence both are rounded to 8 bits first (``config.quantize_bits``). A pair ``a[i]``,
    ``b[i]`` (an image and its reconstruction) always lands on the same side of the split.

    Deterministic for a ``seed`` (its own ``torch.Generator``s; the global RNG and the thread
    count are left as they were) on a given machine and thread count. On one thread of a busy
    2-core machine, 5 s for 128 + 128 images of 64 px and 10 s for 256 + 256 (linear in N).
    At 256 + 256 the accuracy moves by about 0.02 from seed to seed (the binomial error).

    Args:
        a, b: (N, C, H, W) float images in [-1, 1], the same shape and dtype, N >= 4.
        config: the classifier and its training (:class:`TwoSampleConfig` defaults).
        seed: int >= 0.
        device: where to train (``None``: ``a``'s device).
        names: the two sets' names in error messages.

    Returns:
        :class:`TwoSampleResult`: the accuracy on the held-out half, in [0, 1], its standard
        error, interval and p-value under the null (accuracy ~ Binomial(n_test, 1/2) / n_test).

    Raises:
        TypeError: not float image tensors, or two dtypes.
        ValueError: two shapes, fewer than 4 images, values outside [-1, 1] (or one set in
            [0, 1] and the other in [-1, 1]), NaN, a negative seed.
    """
    config = config if config is not None else TwoSampleConfig()
    seed = check_int(seed, "seed", 0)
    _check_sets(a, b, names, config.range_tolerance)
    start, n = time.perf_counter(), len(a)
    device = torch.device(device) if device is not None else a.device
    generator = torch.Generator().manual_seed(seed)
    split = torch.randperm(n, generator=generator)  # one split of both sets: pairs stay together
    train = torch.cat([split[: n // 2], split[: n // 2] + n]).to(device)  # (n_train,)
    test = torch.cat([split[n // 2:], split[n // 2:] + n]).to(device)  # (n_test,)
    with torch.inference_mode(False), torch.enable_grad():
        x = _quantized(torch.cat([a, b]).detach().float().to(device), config.quantize_bits)
        y = torch.cat([torch.zeros(n), torch.ones(n)]).to(device)  # (2n,) float: 1 = set b
        net = _classifier(config, x.shape[1], generator).to(device)
        _fit(net, x[train], y[train], config, generator)
        correct = _correct(net, x[test], y[test], config.batch_size)
        train_correct = _correct(net, x[train], y[train], config.batch_size)
    n_test = len(test)
    accuracy = correct / n_test
    interval = stats.binomtest(correct, n_test).proportion_ci(config.confidence)
    p_value = float(stats.binomtest(correct, n_test, 0.5, alternative="greater").pvalue)
    return TwoSampleResult(accuracy, math.sqrt(accuracy * (1 - accuracy) / n_test),
                           float(interval.low), float(interval.high), p_value,
                           train_correct / len(train), n, len(train), n_test, seed,
                           time.perf_counter() - start)
