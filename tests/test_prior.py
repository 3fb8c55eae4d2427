"""Tests of vqlesson.prior: code extraction and its cache, prior training, evaluation, sampling."""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from vqlesson.checkpoint import load_checkpoint
from vqlesson.pixelcnn import PriorConfig
from vqlesson.pixelcnn_prior import PixelCNNPrior
from vqlesson.codes import (
    CodeDataset,
    CodeItem,
    TwoLevelCodeItem,
    extract_codes,
    model_fingerprint,
)
from vqlesson.prior import PriorTrainConfig, best_checkpoint_path, evaluate_prior, train_prior
from vqlesson.quantize import QuantizerConfig
from vqlesson.configs import prior_config_for
from vqlesson.pixelcnn_prior import SampleOptions
from vqlesson.sampling import decode_codes, sample_codes, sample_images
from vqlesson.vqvae import VQVAE, Level, VQVAEConfig
from vqlesson.vqvae2 import VQVAE2, VQVAE2Config

IMAGE = 16


# One torch thread for every test here (see the ``one_thread`` fixture in conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------
def tiny_vqvae(seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig(image_size=IMAGE, hidden_channels=16, residual_channels=4,
                             num_residual_blocks=1, codebook_size=16, code_dim=8,
                             quantizer=QuantizerConfig(init="random")))


def tiny_vqvae2(seed: int = 0) -> VQVAE2:
    torch.manual_seed(seed)
    return VQVAE2(VQVAE2Config(image_size=IMAGE, hidden_channels=16, residual_channels=4,
                               num_residual_blocks=1, codebook_size_top=8,
                               codebook_size_bottom=16, code_dim=8,
                               quantizer=QuantizerConfig(init="random")))


def image_loader(n: int = 12, batch_size: int = 5, seed: int = 0) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, IMAGE, IMAGE, generator=gen) * 2 - 1
    y = torch.arange(n) % 2
    dataset = TensorDataset(x, y)
    dataset.labels = y  # like the course's data sets: labels are part of the data fingerprint
    return DataLoader(dataset, batch_size=batch_size)


def pattern_codes(n: int, k: int = 8, size: int = 6, seed: int = 0, sign: int = 1,
                  labels: torch.Tensor | None = None) -> CodeDataset:
    """Code maps (r + sign * c + phase) mod k, a random phase per map: after the first code of a
    map every code is determined by its neighbours, so a prior can learn them well."""
    gen = torch.Generator().manual_seed(seed)
    phase = torch.randint(k, (n, 1, 1), generator=gen)
    rows = torch.arange(size).view(1, size, 1)
    cols = torch.arange(size).view(1, 1, size)
    codes = (rows + sign * cols + phase) % k  # (n, size, size)
    labels = labels if labels is not None else torch.arange(n) % 2
    return CodeDataset({"codes": codes}, labels, {"codes": k}, (3, 4 * size, 4 * size),
                       classes=("benign", "malignant"))


def tiny_prior(k: int = 8, seed: int = 0, **overrides) -> PixelCNNPrior:
    torch.manual_seed(seed)
    fields = dict(codebook_size=k, embed_dim=16, channels=16, num_layers=2, cond_layers=1)
    fields.update(overrides)
    return PixelCNNPrior(PriorConfig(**fields))


def quick(**overrides) -> PriorTrainConfig:
    fields = dict(epochs=2, batch_size=16, lr=3e-3, progress=False, device="cpu",
                  early_stopping_patience=None)
    fields.update(overrides)
    return PriorTrainConfig(**fields)


# --------------------------------------------------------------------------------------------
# Code extraction
# --------------------------------------------------------------------------------------------
def test_extract_codes_of_a_vqvae_match_encode_and_keep_labels(tmp_path):
    model, loader = tiny_vqvae(), image_loader()
    path = tmp_path / "codes_train.pt"
    codes = extract_codes(model, loader, path)
    x, y = loader.dataset.tensors
    assert codes.levels == ("codes",) and len(codes) == 12
    assert codes.codes.shape == (12, 4, 4) and codes.codes.dtype == torch.int64
    assert torch.equal(codes.codes, model.encode(x).codes)
    assert torch.equal(codes.labels, y)
    assert codes.image_shape == (3, IMAGE, IMAGE) and codes.image_dims == 3 * IMAGE * IMAGE
    item = codes[3]
    assert isinstance(item, CodeItem) and item.codes.shape == (4, 4) and int(item.label) == 1
    batch = next(iter(DataLoader(codes, batch_size=4)))
    assert isinstance(batch, CodeItem) and batch.codes.shape == (4, 4, 4)
    with pytest.raises(AttributeError, match="top"):
        codes.top
    # one file, loadable without running code, small integer codes
    payload = torch.load(path, weights_only=True)
    assert payload["levels"]["codes"].dtype == torch.int16
    assert payload["fingerprint"] == codes.fingerprint
    assert torch.equal(CodeDataset.load(path).codes, codes.codes)


def test_extract_codes_of_a_vqvae2_and_several_passes():
    model, loader = tiny_vqvae2(), image_loader()
    codes = extract_codes(model, loader, passes=2)
    x, y = loader.dataset.tensors
    top, bottom = model.encode(x)
    assert codes.levels == ("top", "bottom") and len(codes) == 24 and codes.passes == 2
    assert codes.top.shape == (24, 2, 2) and codes.bottom.shape == (24, 4, 4)
    assert torch.equal(codes.top[:12], top) and torch.equal(codes.bottom[12:], bottom)
    assert torch.equal(codes.labels, torch.cat([y, y]))
    assert codes.codebook_sizes == {"top": 8, "bottom": 16}
    item = codes[0]
    assert isinstance(item, TwoLevelCodeItem) and item.top.shape == (2, 2)
    with pytest.raises(AttributeError, match="top and .bottom"):
        codes.codes
    assert model.training  # the mode is restored


def test_code_file_is_reused_when_current(tmp_path, monkeypatch):
    model, loader = tiny_vqvae(), image_loader()
    path = tmp_path / "codes.pt"
    first = extract_codes(model, loader, path)

    def fail(*args, **kwargs):
        raise AssertionError("encode ran although the code file is current")

    monkeypatch.setattr(model, "encode", fail)
    model.eval()
    model(loader.dataset.tensors[0][:4])  # an evaluation pass changes only usage statistics
    assert int(model.quantizer.usage_counts.sum()) > 0
    again = extract_codes(model, loader, path)
    assert torch.equal(again.codes, first.codes) and torch.equal(again.labels, first.labels)


def test_code_file_is_rebuilt_when_the_weights_or_data_change(tmp_path, caplog):
    model, loader = tiny_vqvae(), image_loader()
    path = tmp_path / "codes.pt"
    first = extract_codes(model, loader, path)
    old_fingerprint = model_fingerprint(model)
    with torch.no_grad():
        model.pre_quant.weight.mul_(-1.0)  # another checkpoint: other codes
    assert model_fingerprint(model) != old_fingerprint
    with caplog.at_level(logging.WARNING, logger="vqlesson"):
        rebuilt = extract_codes(model, loader, path)
    assert "other VQ-VAE weights" in caplog.text
    assert torch.equal(rebuilt.codes, model.encode(loader.dataset.tensors[0]).codes)
    assert not torch.equal(rebuilt.codes, first.codes)
    assert CodeDataset.load(path).fingerprint == rebuilt.fingerprint
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vqlesson"):
        other = extract_codes(model, image_loader(n=10), path, data_key="other split")
    assert "other data" in caplog.text and len(other) == 10


def test_extract_codes_rejects_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="VQVAE or a VQVAE2"):
        extract_codes(torch.nn.Linear(2, 2), image_loader())
    with pytest.raises(ValueError, match="passes"):
        extract_codes(tiny_vqvae(), image_loader(), passes=0)
    with pytest.raises(TypeError, match="image"):
        extract_codes(tiny_vqvae(), [torch.zeros(2, 4, dtype=torch.long)])
    with pytest.raises(FileNotFoundError, match="extract_codes"):
        CodeDataset.load(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable"):
        CodeDataset.load(tmp_path / "bad.pt")


# --------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------
def test_evaluate_a_uniform_prior_gives_log2_k_bits():
    codes = pattern_codes(10)
    prior = tiny_prior()
    with torch.no_grad():
        prior.net.head.out.weight.zero_()
        prior.net.head.out.bias.zero_()  # all logits 0: every code has probability 1/8
    result = evaluate_prior(prior, codes, batch_size=3)
    assert result["bits_per_code"] == pytest.approx(3.0, abs=1e-6)
    assert result["bits_per_image"] == pytest.approx(3.0 * 36, abs=1e-4)
    assert result["bits_per_dim"] == pytest.approx(3.0 * 36 / (3 * 24 * 24), abs=1e-7)
    assert result["num_images"] == 10
    bigger = evaluate_prior(prior, codes, image_shape=(3, 48, 48))
    assert bigger["bits_per_dim"] == pytest.approx(result["bits_per_dim"] / 4)


def test_train_prior_lowers_the_nll_a_lot(tmp_path):
    train, val = pattern_codes(64, seed=0), pattern_codes(16, seed=1)
    prior = tiny_prior()
    before = evaluate_prior(prior, val)["bits_per_code"]
    history = train_prior(prior, train, val, quick(epochs=8, lr=1e-2))
    after = evaluate_prior(prior, val)["bits_per_code"]
    assert before > 2.5  # about log2 8 = 3 bits for an untrained prior
    assert after < 0.5 * before and history["val_bits_per_code"][-1] < 1.5
    assert history["train_bits_per_code"][-1] < history["train_bits_per_code"][0]
    for key in ("epoch", "train_bits_per_code", "val_bits_per_code", "val_bits_per_dim",
                "epoch_time_s", "codes_per_s", "best_epoch"):
        assert len(history[key]) == 8, key
    assert history["epoch"] == list(range(1, 9)) and all(v > 0 for v in history["codes_per_s"])
    assert len(history["step_loss"]) == 8 * 4  # 64 maps in batches of 16


def test_early_stopping_stops_and_restores_the_best_epoch(tmp_path):
    # Validation maps follow another rule than the training maps: the better the prior learns
    # the training rule, the worse the validation NLL, so it stops early.
    train, val = pattern_codes(64, sign=1), pattern_codes(16, sign=-1, seed=3)
    path = tmp_path / "prior.pt"
    prior = tiny_prior()
    history = train_prior(prior, train, val, quick(epochs=12, lr=1e-2, early_stopping_patience=2,
                                                   checkpoint_path=path))
    val_bits = history["val_bits_per_code"]
    best = history["best_epoch"][-1]
    assert len(history["epoch"]) < 12  # stopped early
    assert history["epoch"][-1] - best == 2 and val_bits[best - 1] == min(val_bits)
    restored = evaluate_prior(prior, val)["bits_per_code"]
    assert restored == pytest.approx(min(val_bits), rel=1e-6)
    assert restored < val_bits[-1]
    best_file = best_checkpoint_path(path)
    assert best_file.name == "prior_best.pt"
    from_file = load_checkpoint(best_file).model
    assert load_checkpoint(best_file).epoch == best
    assert evaluate_prior(from_file, val)["bits_per_code"] == pytest.approx(restored, rel=1e-6)
    # the last checkpoint keeps the last weights (for resuming), not the best ones
    last = load_checkpoint(path)
    assert last.epoch == history["epoch"][-1]
    assert evaluate_prior(last.model, val)["bits_per_code"] == pytest.approx(val_bits[-1], rel=1e-6)
    # resuming a run that stopped early trains no further and ends with the best weights too
    resumed = tiny_prior(seed=4)
    again = train_prior(resumed, train, val, quick(epochs=12, lr=1e-2, early_stopping_patience=2,
                                                   checkpoint_path=path, resume=True))
    assert again["epoch"] == history["epoch"]
    assert evaluate_prior(resumed, val)["bits_per_code"] == pytest.approx(restored, rel=1e-6)
    # restore_best=False keeps the last epoch's weights
    prior = tiny_prior()
    history = train_prior(prior, train, val, quick(epochs=12, lr=1e-2, early_stopping_patience=2,
                                                   restore_best=False))
    assert evaluate_prior(prior, val)["bits_per_code"] == pytest.approx(
        history["val_bits_per_code"][-1], rel=1e-6)


def test_resume_is_exact_on_cpu(tmp_path):
    train, val = pattern_codes(40, seed=0), pattern_codes(8, seed=1)
    settings = dict(dropout=0.2)  # dropout draws random numbers: their state must be restored
    full_prior = tiny_prior(**settings)
    full = train_prior(full_prior, train, val,
                       quick(epochs=3, checkpoint_path=tmp_path / "full.pt"))
    path = tmp_path / "part.pt"
    train_prior(tiny_prior(**settings), train, val, quick(epochs=2, checkpoint_path=path))
    resumed_prior = tiny_prior(seed=5, **settings)  # other initial weights: all come from the file
    resumed = train_prior(resumed_prior, train, val,
                          quick(epochs=3, checkpoint_path=path, resume=True))
    assert len(resumed["step_loss"]) == 3 * 3
    assert resumed["step_loss"] == full["step_loss"]
    assert resumed["val_bits_per_code"] == full["val_bits_per_code"]
    assert resumed["best_epoch"] == full["best_epoch"]
    for (name, a), b in zip(full_prior.state_dict().items(), resumed_prior.state_dict().values()):
        assert torch.equal(a, b), name
    # resuming with another prior config, or on codes of another VQ-VAE, is a clear error
    with pytest.raises(ValueError, match="dropout"):
        train_prior(tiny_prior(dropout=0.3), train, val,
                    quick(epochs=4, checkpoint_path=path, resume=True))
    loader = image_loader(n=4)
    codes_a = extract_codes(tiny_vqvae(seed=0), loader)
    codes_b = extract_codes(tiny_vqvae(seed=1), loader)
    other = tmp_path / "other.pt"
    train_prior(tiny_prior(k=16), codes_a, None, quick(epochs=1, checkpoint_path=other))
    with pytest.raises(ValueError, match="other codes"):
        train_prior(tiny_prior(k=16), codes_b, None,
                    quick(epochs=2, checkpoint_path=other, resume=True))


def test_class_and_top_code_conditioning_paths_train(tmp_path):
    model = tiny_vqvae2()
    codes = extract_codes(model, image_loader(n=16, batch_size=8))
    top = tiny_prior(k=8, num_classes=2)
    history = train_prior(top, codes, codes, quick(level="top"))
    assert len(history["epoch"]) == 2 and history["val_bits_per_code"][-1] < 4
    bottom = tiny_prior(k=16, num_classes=2, cond_codebook_size=8)
    train_prior(bottom, codes, codes, quick(level="bottom", checkpoint_path=tmp_path / "b.pt"))
    checkpoint = load_checkpoint(tmp_path / "b.pt")
    assert checkpoint.extra["level"] == "bottom" and checkpoint.extra["classes"] == []
    # the conditioning changes the prediction: other top codes, other bottom logits
    with torch.no_grad():
        bottom.eval()
        label = torch.zeros(1, dtype=torch.long)
        a = bottom.logits(codes.bottom[:1], label, torch.zeros(1, 2, 2, dtype=torch.long))
        b = bottom.logits(codes.bottom[:1], label, torch.full((1, 2, 2), 7, dtype=torch.long))
        c = bottom.logits(codes.bottom[:1], label + 1, torch.zeros(1, 2, 2, dtype=torch.long))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)
    metrics = evaluate_prior(bottom, codes, level="bottom")
    assert 0 < metrics["bits_per_code"] < 8
    # the top level gives the other share of the bits per dim
    top_metrics = evaluate_prior(top, codes, level="top")
    assert top_metrics["bits_per_dim"] == pytest.approx(
        top_metrics["bits_per_code"] * 4 / (3 * IMAGE * IMAGE))


def test_codes_that_do_not_fit_the_prior_are_clear_errors(tmp_path):
    two_level = extract_codes(tiny_vqvae2(), image_loader(n=4))
    one_level = pattern_codes(4)
    with pytest.raises(ValueError, match="level='top' or level='bottom'"):
        train_prior(tiny_prior(k=8), two_level, None, quick())
    with pytest.raises(ValueError, match="level='top' or level='bottom'"):  # names: the codes'
        train_prior(tiny_prior(k=8), two_level, None, quick(level="middle"))
    with pytest.raises(ValueError, match="leave level=None"):
        train_prior(tiny_prior(k=8), one_level, None, quick(level="top"))
    with pytest.raises(ValueError, match="codebook_size=16"):
        train_prior(tiny_prior(k=8), two_level, None, quick(level="bottom"))
    with pytest.raises(ValueError, match="level='bottom'"):
        train_prior(tiny_prior(k=8, cond_codebook_size=8), two_level, None, quick(level="top"))
    unlabelled = pattern_codes(4, labels=torch.full((4,), -1))
    with pytest.raises(ValueError, match="unlabelled"):
        train_prior(tiny_prior(num_classes=2), unlabelled, None, quick())
    with pytest.raises(TypeError, match="CodeDataset"):
        train_prior(tiny_prior(), torch.zeros(4, 6, 6, dtype=torch.long), None, quick())
    with pytest.raises(TypeError, match="PixelCNNPrior"):
        train_prior(torch.nn.Linear(2, 2), one_level, None, quick())


def test_non_finite_loss_names_epoch_and_step():
    prior = tiny_prior()
    with torch.no_grad():
        prior.net.head.out.bias.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"epoch 1 of 2, step 1"):
        train_prior(prior, pattern_codes(8), None, quick())


def test_train_config_rejects_bad_values():
    for bad in (dict(epochs=-1), dict(batch_size=0), dict(lr=0), dict(weight_decay=-1),
                dict(early_stopping_patience=0), dict(level=3), dict(resume=True),
                dict(early_stopping_min_delta=-0.1)):
        with pytest.raises(ValueError):
            PriorTrainConfig(**bad)


def test_prior_config_for_profiles():
    ci, cpu, gpu = (prior_config_for(name, 64) for name in ("ci", "cpu", "gpu"))
    assert (ci.channels, ci.num_layers) == (16, 2)
    assert (cpu.channels, cpu.num_layers) == (64, 8)
    assert (gpu.channels, gpu.num_layers) == (128, 12)
    assert ci.codebook_size == 64 and ci.arch == "gated"
    conditioned = prior_config_for("ci", 32, num_classes=2, cond_codebook_size=16, dropout=None)
    assert (conditioned.num_classes, conditioned.cond_codebook_size) == (2, 16)
    assert conditioned.dropout == 0.0  # None overrides are ignored
    with pytest.raises(ValueError, match="unknown profile"):
        prior_config_for("tpu", 8)


# --------------------------------------------------------------------------------------------
# Sampling images
# --------------------------------------------------------------------------------------------
def test_sample_images_from_a_vqvae_prior():
    vqvae = tiny_vqvae()
    prior = tiny_prior(k=16, num_classes=2)
    images = sample_images(vqvae, (prior,), 3, label=1, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 3, IMAGE, IMAGE) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    again = sample_images(vqvae, (prior,), 3, label=1, generator=torch.Generator().manual_seed(0),
                          options=SampleOptions(fast=False))
    assert torch.equal(images, again)  # same generator, naive sampler: the same images
    greedy = sample_images(vqvae, [prior], 2, label=torch.tensor([0, 1]),
                           options=SampleOptions(temperature=0))
    assert greedy.shape == (2, 3, IMAGE, IMAGE)
    with pytest.raises(ValueError, match="not class-conditional"):
        sample_images(vqvae, (tiny_prior(k=16),), 2, label=0)
    with pytest.raises(ValueError, match="K = 8"):
        sample_images(vqvae, (tiny_prior(k=8),), 2)
    with pytest.raises(TypeError, match="VQVAE or a VQVAE2"):
        sample_images(torch.nn.Linear(2, 2), (prior,), 2)
    with pytest.raises(TypeError, match=r"tuple of 1 prior.*priors=\(codes_prior,\)"):
        sample_images(vqvae, prior, 2)  # priors travel as a tuple, one per level, always


def test_sample_images_from_vqvae2_priors_top_then_bottom(monkeypatch):
    vqvae = tiny_vqvae2()
    top, bottom = tiny_prior(k=8), tiny_prior(k=16, cond_codebook_size=8)
    seen = {}
    original = bottom.sample

    def spy(n, shape, **kwargs):
        seen["cond_map"], seen["shape"] = kwargs.get("cond_map"), shape
        return original(n, shape, **kwargs)

    monkeypatch.setattr(bottom, "sample", spy)
    images = sample_images(vqvae, (top, bottom), 2, generator=torch.Generator().manual_seed(1),
                           options=SampleOptions(top_k=4))
    assert images.shape == (2, 3, IMAGE, IMAGE)
    assert images.min() >= -1 and images.max() <= 1
    assert seen["shape"] == (4, 4) and seen["cond_map"].shape == (2, 2, 2)  # top codes
    assert int(seen["cond_map"].max()) < 8
    with pytest.raises(TypeError, match=r"tuple of 2 prior.*\(top_prior, bottom_prior\)"):
        sample_images(vqvae, top, 2)
    with pytest.raises(ValueError, match="bottom prior models K = 8"):
        sample_images(vqvae, (top, tiny_prior(k=8)), 2)
    with pytest.raises(ValueError, match="not class-conditional"):
        sample_images(vqvae, (top, bottom), 2, label=1)


# --------------------------------------------------------------------------------------------
# The level paths are generic: a model with three levels needs no change outside its own file
# --------------------------------------------------------------------------------------------
class ThreeCodes(NamedTuple):
    top: torch.Tensor
    middle: torch.Tensor
    bottom: torch.Tensor


class ThreeLevels(torch.nn.Module):
    """A stand-in discrete autoencoder with three levels (grids S/8, S/4, S/2), each level's
    prior conditioned on the level above."""

    Codes = ThreeCodes
    levels = (Level("top", 4, 8), Level("middle", 5, 4, condition="top"),
              Level("bottom", 6, 2, condition="middle"))

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def latent_shapes(self, image_size: int | None = None) -> tuple[tuple[int, int], ...]:
        size = image_size or IMAGE
        return tuple((size // lv.downsample, size // lv.downsample) for lv in self.levels)

    def encode(self, x: torch.Tensor) -> ThreeCodes:
        return ThreeCodes(*((x[:, 0, ::lv.downsample, ::lv.downsample] > 0).long()
                            * (lv.codebook_size - 1) for lv in self.levels))

    def decode_indices(self, top, middle, bottom) -> torch.Tensor:
        bottom = bottom.float().repeat_interleave(2, 1).repeat_interleave(2, 2)  # (B, S, S)
        return torch.tanh(self.scale * bottom)[:, None].expand(-1, 3, -1, -1)  # (B, 3, S, S)


def test_codes_priors_and_sampling_are_generic_in_the_levels():
    model = ThreeLevels()
    codes = extract_codes(model, image_loader())
    assert codes.levels == ("top", "middle", "bottom") and codes.middle.shape == (12, 4, 4)
    assert codes.codebook_sizes == {"top": 4, "middle": 5, "bottom": 6}
    assert len(codes[0]) == 4 and torch.equal(codes[0][1], codes.middle[0])  # (*maps, label)
    bottom = tiny_prior(k=6, cond_codebook_size=5)
    train_prior(bottom, codes, codes, quick(epochs=1, level="bottom"))  # conditioned on middle
    priors = (tiny_prior(k=4), tiny_prior(k=5, cond_codebook_size=4), bottom)
    sampled = sample_codes(model, priors, 2, generator=torch.Generator().manual_seed(0))
    assert isinstance(sampled, ThreeCodes)
    assert [tuple(m.shape) for m in sampled] == [(2, 2, 2), (2, 4, 4), (2, 8, 8)]
    assert decode_codes(model, sampled).shape == (2, 3, IMAGE, IMAGE)
    with pytest.raises(ValueError, match="middle prior models K = 4"):
        sample_codes(model, (priors[0], priors[0], bottom), 2)


def test_learning_rate_schedules():
    from vqlesson.prior import scheduled_lr

    constant = quick(lr=1e-3)
    assert [scheduled_lr(constant, s, 100) for s in (0, 50, 99)] == [1e-3] * 3
    cosine = quick(lr=1e-3, lr_schedule="cosine")
    assert scheduled_lr(cosine, 0, 100) == pytest.approx(1e-3)
    assert scheduled_lr(cosine, 50, 100) == pytest.approx(5e-4)  # half way: half the rate
    assert 0 < scheduled_lr(cosine, 99, 100) < 1e-6
    warm = quick(lr=1e-3, lr_schedule="cosine", warmup_steps=10)
    assert scheduled_lr(warm, 0, 100) == pytest.approx(1e-4 * (1 + math.cos(0)) / 2)
    assert scheduled_lr(warm, 9, 100) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.09)))
    with pytest.raises(ValueError, match="lr_schedule"):
        quick(lr_schedule="linear")
    with pytest.raises(ValueError, match="warmup_steps"):
        quick(warmup_steps=-1)
    # train_prior follows it, step by step (the history keeps each epoch's last rate)
    train, val = pattern_codes(32, seed=0), pattern_codes(8, seed=1)
    config = quick(epochs=3, lr_schedule="cosine")
    history = train_prior(tiny_prior(), train, val, config)
    steps = 3 * 2  # 32 maps in batches of 16
    assert history["lr"] == pytest.approx([scheduled_lr(config, s, steps) for s in (1, 3, 5)])
    assert history["lr"][0] > history["lr"][1] > history["lr"][2] > 0


def test_prior_config_for_the_priors_of_issue_24():
    gated = prior_config_for("cpu", 256)
    assert gated.position and gated.dilations == (1, 2, 4, 8) and gated.receptive_reach >= 15
    assert prior_config_for("cpu", 256, arch="plain").dilations == (1,)  # no dilation there
    old = prior_config_for("cpu", 256, position=False, dilations=(1,))
    assert not old.position and old.receptive_reach == 10  # the prior before issue 24
    transformer = prior_config_for("gpu", 512, arch="transformer", cond_codebook_size=512)
    assert type(transformer).__name__ == "TransformerPriorConfig"
    assert transformer.cond_codebook_size == 512 and transformer.embed_dim >= 64
