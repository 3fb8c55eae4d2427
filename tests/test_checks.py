"""vqlesson.checks: correct exercises pass, unfinished or wrong ones get a hint, never a traceback."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from vqlesson import checks


# --------------------------------------------------------------------------------------------
# Correct implementations, written independently of the library
# --------------------------------------------------------------------------------------------
def nearest_code(z_e, codebook):
    b, d, h, w = z_e.shape
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)  # (B*H*W, D)
    return torch.cdist(flat, codebook).argmin(1).view(b, h, w)


def straight_through(z_e, e):
    return z_e + (e - z_e).detach()


def vqvae_loss(x, z_e, codebook, decoder, beta, *, swap=False, sg=True, st=True, mean=True,
               beta_both=False):
    b, d, h, w = z_e.shape
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, D)
    e = codebook[torch.cdist(flat, codebook.detach()).argmin(1)]  # (B*h*w, D)
    e = e.view(b, h, w, d).permute(0, 3, 1, 2)  # (B, D, h, w)
    z_q = z_e + (e - z_e).detach() if st else e
    err = F.mse_loss if mean else (lambda a, t: (a - t).pow(2).sum())
    codebook_term = err(e, z_e.detach() if sg else z_e)
    commitment = err(z_e, e.detach() if sg else e)
    if swap:
        codebook_term, commitment = commitment, codebook_term
    quantiser = beta * (codebook_term + commitment) if beta_both else codebook_term + beta * commitment
    return err(decoder(z_q), x) + quantiser


def ema_update(cluster_size, embed_sum, counts, sums, decay, eps):
    cluster_size = decay * cluster_size + (1 - decay) * counts
    embed_sum = decay * embed_sum + (1 - decay) * sums
    n = cluster_size.sum()
    smoothed = (cluster_size + eps) / (n + len(cluster_size) * eps) * n
    return cluster_size, embed_sum, embed_sum / smoothed[:, None]


def hierarchy_bits(s, kt, kb):
    return (s // 8) ** 2 * math.log2(kt) + (s // 4) ** 2 * math.log2(kb)


def top_only_codes(top, bottom):
    values, counts = bottom.unique(return_counts=True)
    return top, torch.full_like(bottom, int(values[counts.argmax()]))


def _top_only_per_image(top, bottom):
    return top, torch.stack([top_only_codes(t, b)[1] for t, b in zip(top, bottom)])


def psnr_db(x, x_hat):
    mse = ((x - x_hat) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse)


def code_perplexity(codes, k):
    p = torch.bincount(codes.flatten(), minlength=k).double()
    p = p[p > 0] / p.sum()
    return math.exp(-(p * p.log()).sum().item())


def build_mask(k, kind):
    mask = torch.ones(k, k)
    mask[k // 2, k // 2 + (kind == "B"):] = 0
    mask[k // 2 + 1:] = 0
    return mask


def bits_per_code(logits, codes):
    log_p = logits.log_softmax(1).gather(1, codes[:, None])  # (B, 1, H, W)
    return -log_p.mean() / math.log(2)


def masked_conv2d(x, weight, bias, mask_type):
    k = weight.shape[-1]
    return F.conv2d(x, weight * build_mask(k, mask_type), bias, padding=k // 2)


def gated_block(block, v, h, swap=False, link=True, residual=True):
    p = block.pad
    v_pre = block.v_conv(F.pad(v, (p, p, p, 0)))
    a, b = v_pre.chunk(2, 1)
    v_out = torch.tanh(a) * torch.sigmoid(b)
    h_pre = block.h_conv(F.pad(h, (p, 0, 0, 0))) + (block.v_to_h(v_pre) if link else 0)
    a, b = h_pre.chunk(2, 1)
    gated = torch.sigmoid(a) * torch.tanh(b) if swap else torch.tanh(a) * torch.sigmoid(b)
    h_out = block.h_out(gated) + (h if block.residual and residual else 0)
    return v_out, h_out


def gated_forward(net, codes, down=True, right=True, every=False, left=False, swap=False):
    x = net.embed(codes)  # (B, E, H, W)
    v = F.pad(x, (0, 0, 1, 0))[:, :, :-1] if down else x  # shifted down one row
    h = F.pad(x, (1, 0, 0, 0))[:, :, :, :-1] if right else x  # shifted right one column
    if left:
        h = F.pad(x, (0, 1, 0, 0))[:, :, :, 1:]
    if swap:
        v, h = h, v
    for i, block in enumerate(net.blocks):
        if every and i:
            v, h = F.pad(v, (0, 0, 1, 0))[:, :, :-1], F.pad(h, (1, 0, 0, 0))[:, :, :, :-1]
        v, h, _ = block(v, h, None)
    return net.head(h)


def sample_loop(prior, n, shape, temperature=1.0, generator=None):
    codes = torch.zeros(n, *shape, dtype=torch.int64)
    for r in range(shape[0]):
        for c in range(shape[1]):
            probs = torch.softmax(prior.logits(codes)[:, :, r, c] / temperature, 1)
            codes[:, r, c] = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return codes


def pairwise_hamming(codes):
    flat = codes.flatten(1)
    n = flat.shape[0]
    total = sum((flat[i] != flat[j]).float().mean() for i in range(n) for j in range(i + 1, n))
    return float(total) / (n * (n - 1) / 2)


def nearest_neighbours(queries, references):
    d = (queries.flatten(1)[:, None] != references.flatten(1)[None]).float().mean(-1)
    distance, index = d.min(1)
    return index, distance


def surprise_maps(prior, codes):
    with torch.no_grad():
        return F.cross_entropy(prior.logits(codes), codes, reduction="none") / math.log(2)


CORRECT = {
    "nearest_code": (checks.check_nearest_code, nearest_code),
    "straight_through": (checks.check_straight_through, straight_through),
    "vqvae_loss": (checks.check_vqvae_loss, vqvae_loss),
    "ema_update": (checks.check_ema_update, ema_update),
    "hierarchy_bits": (checks.check_hierarchy_bits, hierarchy_bits),
    "top_only_codes": (checks.check_top_only_codes, top_only_codes),
    "psnr": (checks.check_psnr, psnr_db),
    "code_perplexity": (checks.check_code_perplexity, code_perplexity),
    "causal_mask": (checks.check_causal_mask, build_mask),
    "masked_conv": (checks.check_masked_conv, masked_conv2d),
    "gated_block": (checks.check_gated_block, gated_block),
    "gated_forward": (checks.check_gated_forward, gated_forward),
    "bits_per_code": (checks.check_bits_per_code, bits_per_code),
    "sampling_loop": (checks.check_sampling_loop, sample_loop),
    "pairwise_hamming": (checks.check_pairwise_hamming, pairwise_hamming),
    "nearest_neighbours": (checks.check_nearest_neighbours, nearest_neighbours),
    "surprise_maps": (checks.check_surprise_maps, surprise_maps),
}


# --------------------------------------------------------------------------------------------
# Every check: pass, not done, wrong shape, an exception
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CORRECT))
@pytest.mark.parametrize("seed", [0, 1])
def test_a_correct_implementation_passes(name, seed, one_thread):
    check, fn = CORRECT[name]
    result = check(fn, seed=seed)
    assert result.passed, result.message
    assert result.name == name and bool(result)
    assert repr(result).startswith(f"✅ {name}: passed")


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_an_unfinished_exercise_is_not_done_yet(name):
    check, _ = CORRECT[name]
    for stub in (lambda *a, **k: None, lambda *a, **k: (_ for _ in ()).throw(NotImplementedError())):
        result = check(stub)
        assert not result.passed and not bool(result)
        assert "not done yet" in result.message
        assert repr(result).startswith(f"❌ {name}: not done yet")


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_a_wrong_shape_gets_a_hint_not_a_traceback(name):
    check, fn = CORRECT[name]

    def wrong_shape(*args, **kwargs):
        out = fn(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(twice(o) for o in out)
        return twice(out)

    def twice(value):  # (...) -> (2, ...)
        value = torch.as_tensor(value)
        return value.unsqueeze(0).repeat(2, *([1] * value.dim()))

    result = check(wrong_shape)
    assert not result.passed
    assert "shape" in result.message or "one number" in result.message, result.message
    assert "Traceback" not in result.message


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_an_exception_is_reported_with_its_line(name):
    check, _ = CORRECT[name]

    def broken(*args, **kwargs):
        return args[0].reshape(-1, 7, 3)

    result = check(broken)
    assert not result.passed
    assert "your function raised" in result.message
    assert "(line " in result.message and "reshape(-1, 7, 3)" in result.message
    assert "Traceback" not in result.message


def test_a_name_that_is_not_a_function_gets_a_hint():
    result = checks.check_nearest_code(None)
    assert not result.passed and "run the exercise's cell" in result.message


def test_checks_leave_the_global_random_state_and_thread_count_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    checks.check_nearest_code(nearest_code)
    checks.check_sampling_loop(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_a_dtype_mismatch_is_named():
    result = checks.check_nearest_code(lambda z, c: nearest_code(z, c).float())
    assert not result.passed and "dtype" in result.message and "int" in result.message


# --------------------------------------------------------------------------------------------
# Known mistakes get their own hint
# --------------------------------------------------------------------------------------------
def _no_permute(z_e, codebook):
    b, d, h, w = z_e.shape
    return torch.cdist(z_e.reshape(-1, d), codebook).argmin(1).view(b, h, w)


def _farthest(z_e, codebook):
    b, d, h, w = z_e.shape
    return torch.cdist(z_e.permute(0, 2, 3, 1).reshape(-1, d), codebook).argmax(1).view(b, h, w)


def _ema_swapped(cluster_size, embed_sum, counts, sums, decay, eps):
    return ema_update(cluster_size, embed_sum, counts, sums, 1 - decay, eps)


def _ema_unsmoothed(cluster_size, embed_sum, counts, sums, decay, eps):
    n, m, _ = ema_update(cluster_size, embed_sum, counts, sums, decay, eps)
    return n, m, m / n[:, None]


def _sample_ignoring_temperature(prior, n, shape, temperature=1.0, generator=None):
    return sample_loop(prior, n, shape, 1e-3, generator)


def _sample_ignoring_generator(prior, n, shape, temperature=1.0, generator=None):
    return sample_loop(prior, n, shape, temperature, None)


MISTAKES = [
    (checks.check_nearest_code, _no_permute, "permute"),
    (checks.check_nearest_code, _farthest, "farthest"),
    (checks.check_nearest_code, lambda z, c: nearest_code(z, c).flatten(), "reshape it to (B, H, W)"),
    (checks.check_straight_through, lambda z_e, e: e.detach(), "no gradient"),
    (checks.check_straight_through, lambda z_e, e: e, "no gradient reached z_e"),
    (checks.check_straight_through, lambda z_e, e: z_e, "values differ"),
    (checks.check_straight_through, lambda z_e, e: e + (z_e - z_e.detach()), "codebook receives"),
    (checks.check_vqvae_loss, lambda *a: vqvae_loss(*a, swap=True), "beta weighs the wrong term"),
    (checks.check_vqvae_loss, lambda *a: vqvae_loss(*a, beta_both=True), "beta multiplies both"),
    (checks.check_vqvae_loss, lambda x, z, c, dec, beta: vqvae_loss(x, z, c, dec, 0.0),
     "commitment term beta x ||z_e - sg[e]||² is missing"),
    (checks.check_vqvae_loss, lambda *a: vqvae_loss(*a, sg=False), "stop-gradient is missing"),
    (checks.check_vqvae_loss, lambda *a: vqvae_loss(*a, st=False), "no gradient from the reconstruction"),
    (checks.check_vqvae_loss, lambda *a: vqvae_loss(*a, mean=False), "not sums"),
    (checks.check_vqvae_loss, lambda x, z, c, dec, beta: vqvae_loss(x, z, c.detach(), dec, beta),
     "codebook gets no gradient"),
    (checks.check_vqvae_loss, lambda x, z, c, dec, beta: vqvae_loss(x, z, c, dec, 0.25),
     "not the `beta` argument"),
    (checks.check_vqvae_loss, lambda x, z, c, dec, beta: vqvae_loss(x, z, c, dec, beta) * 1.5,
     "the loss value is"),
    (checks.check_vqvae_loss, lambda *a: vqvae_loss(*a).detach(), "carries no gradient"),
    (checks.check_vqvae_loss, lambda *a: vqvae_loss(*a).item(), "scalar tensor"),
    (checks.check_ema_update, _ema_swapped, "swapped"),
    (checks.check_ema_update, _ema_unsmoothed, "Laplace"),
    (checks.check_ema_update, lambda *a: ema_update(*a)[:2], "three tensors"),
    (checks.check_hierarchy_bits, lambda s, kt, kb: (s // 4) ** 2 * math.log2(kb), "one level"),
    (checks.check_hierarchy_bits, lambda s, kt, kb: hierarchy_bits(s, kb, kt) if kt != kb else
     (s // 4) ** 2 * math.log2(kt) + (s // 8) ** 2 * math.log2(kb), "swapped"),
    (checks.check_hierarchy_bits, lambda s, kt, kb: (s // 8) ** 2 * kt + (s // 4) ** 2 * kb, "log2 K"),
    (checks.check_top_only_codes, lambda t, b: (torch.zeros_like(t), b), "bottom level alone"),
    (checks.check_top_only_codes, _top_only_per_image, "its own most used"),
    (checks.check_top_only_codes, lambda t, b: (t, torch.zeros_like(b)), "code 0"),
    (checks.check_top_only_codes, lambda t, b: top_only_codes(t, b)[1], "two code maps"),
    (checks.check_top_only_codes, lambda t, b: (t, b), "values differ"),
    (checks.check_psnr, lambda x, y: -10 * torch.log10((x - y).pow(2).flatten(1).mean(1)), "[0, 1]"),
    (checks.check_psnr, lambda x, y: psnr_db(x, y).mean(), "one PSNR per image"),
    (checks.check_psnr, lambda x, y: psnr_db(x, y) * math.log(10), "log10"),
    (checks.check_code_perplexity, lambda c, k: 1 / code_perplexity(c, k), "sign"),
    (checks.check_code_perplexity, lambda c, k: float("nan"), "0 log 0"),
    (checks.check_code_perplexity,
     lambda c, k: 2 * math.exp(-math.log(code_perplexity(c, k)) / k), "report D"),
    (checks.check_causal_mask, lambda k, kind: build_mask(k, "B" if kind == "A" else "A"), "mask A"),
    (checks.check_causal_mask, lambda k, kind: build_mask(k, kind).T, "transposed"),
    (checks.check_causal_mask, lambda k, kind: build_mask(k, kind).flip(0, 1), "later positions"),
    (checks.check_masked_conv, lambda x, w, b, t: F.conv2d(x, w, b, padding=w.shape[-1] // 2),
     "mask is not applied"),
    (checks.check_masked_conv, lambda x, w, b, t: masked_conv2d(x, w, b, "B" if t == "A" else "A"),
     "mask A hides"),
    (checks.check_masked_conv, lambda x, w, b, t: F.conv2d(x, w * build_mask(w.shape[-1], t), b),
     "pad by kernel_size // 2"),
    (checks.check_gated_block, lambda blk, v, h: gated_block(blk, v, h, link=False), "link"),
    (checks.check_gated_block, lambda blk, v, h: gated_block(blk, v, h, swap=True), "swapped"),
    (checks.check_gated_block, lambda blk, v, h: gated_block(blk, v, h, residual=False),
     "residual"),
    (checks.check_gated_block, lambda blk, v, h: gated_block(blk, v, h)[1], "two tensors"),
    (checks.check_gated_forward, lambda n, c: gated_forward(n, c, down=False), "not shifted down"),
    (checks.check_gated_forward, lambda n, c: gated_forward(n, c, right=False), "mask B where mask A"),
    (checks.check_gated_forward, lambda n, c: gated_forward(n, c, every=True), "before every block"),
    (checks.check_gated_forward, lambda n, c: gated_forward(n, c, left=True), "from the future"),
    (checks.check_gated_forward, lambda n, c: gated_forward(n, c, swap=True), "swapped"),
    (checks.check_gated_forward,  # a leak no variant names: the trusted check finds it
     lambda n, c: gated_forward(n, c) + 0.01 * n.embed(c).sum(1, keepdim=True),
     "the changed position itself moved"),
    (checks.check_gated_forward, lambda n, c: gated_forward(n, c) + 0.01 * F.pad(
        n.embed(c), (0, 1, 0, 0))[:, :, :, 1:].sum(1, keepdim=True), "left of it in the same row"),
    (checks.check_gated_forward, lambda n, c: gated_forward(n, c) * 1.01, "values differ"),
    (checks.check_bits_per_code, lambda lg, c: F.cross_entropy(lg, c), "ln 2"),
    (checks.check_bits_per_code, lambda lg, c: bits_per_code(lg, c) * c.numel(), "sum over"),
    (checks.check_bits_per_code, lambda lg, c: F.binary_cross_entropy_with_logits(
        lg, F.one_hot(c, lg.shape[1]).permute(0, 3, 1, 2).float()), "binary"),
    (checks.check_sampling_loop, _sample_ignoring_temperature, "temperature"),
    (checks.check_sampling_loop, _sample_ignoring_generator, "generator"),
    (checks.check_sampling_loop, lambda p, n, shape, temperature=1.0, generator=None:
     torch.zeros(n, *shape, dtype=torch.int64), "still 0"),
    (checks.check_pairwise_hamming, lambda c: pairwise_hamming(c) * (c.shape[0] - 1) / c.shape[0], "i < j"),
    (checks.check_pairwise_hamming, lambda c: pairwise_hamming(c) * c[0].numel(), "fraction"),
    (checks.check_nearest_neighbours, lambda q, r: (nearest_neighbours(q, r)[0],
                                                    nearest_neighbours(q, r)[1] * 16), "counts"),
    (checks.check_surprise_maps, lambda p, c: surprise_maps(p, c) * math.log(2), "nats"),
    (checks.check_surprise_maps, lambda p, c: -surprise_maps(p, c), "sign"),
]


@pytest.mark.parametrize("check, wrong, hint", MISTAKES,
                         ids=[f"{c.__name__}-{h}" for c, _, h in MISTAKES])
def test_known_mistakes_get_a_specific_hint(check, wrong, hint, one_thread):
    result = check(wrong)
    assert not result.passed
    assert hint in result.message, result.message
    assert "Traceback" not in result.message


# --------------------------------------------------------------------------------------------
# Metrics for the grader
# --------------------------------------------------------------------------------------------
def test_record_metrics_writes_the_grader_file_and_merges(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    monkeypatch.setenv(checks.METRICS_ENV, str(target))
    assert checks.record_metrics(psnr=torch.tensor(31.5), perplexity=180) == {
        "psnr": 31.5, "perplexity": 180.0}
    checks.record_metrics(prior_nll_bits_per_code=2.25, psnr=float("inf"))
    assert json.loads(target.read_text()) == {
        "psnr": float("inf"), "perplexity": 180.0, "prior_nll_bits_per_code": 2.25}


def test_record_metrics_writes_nothing_outside_grading(tmp_path, monkeypatch):
    monkeypatch.delenv(checks.METRICS_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    assert checks.record_metrics(psnr=20.0) == {"psnr": 20.0}
    assert list(tmp_path.iterdir()) == []


def test_record_metrics_rejects_bad_values():
    with pytest.raises(ValueError, match="at least one"):
        checks.record_metrics()
    with pytest.raises(ValueError, match="'psnr' must be a single number"):
        checks.record_metrics(psnr=torch.ones(3))
    with pytest.raises(ValueError, match="single number"):
        checks.record_metrics(psnr="high")


def test_a_bad_seed_is_a_clear_error_not_a_failed_check():
    with pytest.raises(ValueError, match="seed"):
        checks.check_nearest_code(nearest_code, seed=-1)


# --------------------------------------------------------------------------------------------
# The open exercise: revive a collapsed codebook, graded by a measured run
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("settings", [(20, 0.99), (5, 0.9)])
def test_reviving_settings_pass_with_a_measured_fraction(seed, settings, one_thread):
    result = checks.check_revive_codebook(lambda: settings, seed=seed)
    assert result.passed, result.message
    percent = int(result.message.split("(")[1].split("%")[0])
    assert 50 <= percent <= 100


@pytest.mark.parametrize("seed", [0, 1])
def test_no_restarts_leave_the_codebook_collapsed(seed, one_thread):
    from vqlesson.exercises_vq import REVIVE_TARGET, _revive_inputs, revive_active_fraction

    inputs = _revive_inputs(seed)
    collapsed = revive_active_fraction(inputs, None, 0.99)
    revived = revive_active_fraction(inputs, 20, 0.99)
    assert collapsed < REVIVE_TARGET <= revived
    assert revive_active_fraction(inputs, None, 0.99) == collapsed  # seeded: the same run
    result = checks.check_revive_codebook(lambda: (None, 0.99), seed=seed)
    assert not result.passed and "set restart_dead_after" in result.message


@pytest.mark.parametrize("returned, hint", [
    (None, "not done yet"), (3, "return two values"), ((20, 0.99, 1), "return two values"),
    ((0, 0.99), "restart_dead_after must be"), ((2.5, 0.99), "restart_dead_after must be"),
    ((20, 1.0), "decay must be"), ((20, "high"), "decay must be"),
])
def test_bad_revive_settings_get_a_hint(returned, hint):
    result = checks.check_revive_codebook(lambda: returned)
    assert not result.passed and hint in result.message, result.message
    assert "Traceback" not in result.message


def test_revive_settings_that_raise_are_reported_with_their_line():
    def broken():
        return {}["restart"]

    result = checks.check_revive_codebook(broken)
    assert not result.passed and "your function raised KeyError" in result.message
    assert "(line " in result.message


# --------------------------------------------------------------------------------------------
# The open exercise of notebook 03: make a VQ-VAE-2 use its top level, graded by a measured run
# --------------------------------------------------------------------------------------------
def test_dropping_the_bottom_level_passes_and_the_papers_setting_fails(one_thread):
    import random

    import numpy as np

    from vqlesson.exercises_hierarchy import TOP_MARGIN
    from vqlesson.experiments import top_level_use

    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    remedied = checks.check_top_level(lambda: (0.5, 32))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected  # the caller's streams
    assert remedied.passed, remedied.message
    assert "top-only reconstruction" in remedied.message and "full" in remedied.message
    paper = top_level_use(0.0, 32, seed=0)
    assert paper.top_only_psnr < paper.mean_image_psnr + TOP_MARGIN  # the bypass, measured
    assert top_level_use(0.0, 32, seed=0) == paper  # seeded: the same run
    bypassed = checks.check_top_level(lambda: (0.0, 32))
    assert not bypassed.passed and "the top level is bypassed" in bypassed.message


def test_a_setting_that_kills_the_full_reconstruction_fails(one_thread):
    from vqlesson.exercises_hierarchy import TOP_FULL_MARGIN, TOP_MARGIN
    from vqlesson.experiments import top_level_use

    killed = top_level_use(0.9, 2, seed=0)  # the bottom level almost always dropped, 1 bit
    assert killed.top_only_psnr >= killed.mean_image_psnr + TOP_MARGIN  # the top level is used ...
    assert killed.psnr < killed.top_only_psnr + TOP_FULL_MARGIN  # ... the bottom adds nothing
    result = checks.check_top_level(lambda: (0.9, 2))
    assert not result.passed and "the bottom level adds almost nothing" in result.message
    assert "full" in result.message


@pytest.mark.parametrize("returned, hint", [
    (None, "not done yet"), (0.5, "return two values"), ((0.5, 32, 1), "return two values"),
    ((1.0, 32), "bottom_dropout must be"), ((-0.1, 32), "bottom_dropout must be"),
    (("half", 32), "bottom_dropout must be"), ((0.5, 1), "codebook_size_bottom must be"),
    ((0.5, 32.0), "codebook_size_bottom must be"), ((0.5, 4096), "codebook_size_bottom must be"),
])
def test_bad_top_level_settings_get_a_hint(returned, hint):
    result = checks.check_top_level(lambda: returned)
    assert not result.passed and hint in result.message, result.message
    assert "Traceback" not in result.message


# --------------------------------------------------------------------------------------------
# The open exercise of notebooks 04-05: a prior that generalises, judged by what is measured
# --------------------------------------------------------------------------------------------
TEMPLATE_MODEL = dict(embed_dim=32, channels=64, num_layers=5, first_kernel_size=5, dropout=0.0)
TEMPLATE_TRAINING = dict(epochs=40, batch_size=8, lr=3e-3, early_stopping_patience=None,
                         restore_best=False, progress=False)


def fit_prior(train, val, model=(), training=()):
    """The notebooks' template (a large prior, 40 epochs, its last weights), with changes."""
    from vqlesson.pixelcnn import PriorConfig
    from vqlesson.pixelcnn_prior import PixelCNNPrior
    from vqlesson.prior import PriorTrainConfig, train_prior

    config = PriorConfig(codebook_size=train.codebook_sizes["codes"], **{**TEMPLATE_MODEL, **dict(model)})
    prior = PixelCNNPrior(config)
    train_prior(prior, train, val, PriorTrainConfig(**{**TEMPLATE_TRAINING, **dict(training)}))
    return prior


def generalising_prior(train, val):
    """The reference solution: the template with early stopping and dropout."""
    return fit_prior(train, val, {"dropout": 0.2}, {"early_stopping_patience": 3, "restore_best": True})


def untrained(codebook_size=16, **config):
    from vqlesson.pixelcnn import PriorConfig
    from vqlesson.pixelcnn_prior import PixelCNNPrior

    torch.manual_seed(0)
    return PixelCNNPrior(PriorConfig(codebook_size=codebook_size, channels=16, num_layers=2, **config))


@pytest.fixture(scope="module")
def reference_prior():
    """The reference solution trained once on seed 0's maps."""
    from vqlesson.exercises_heldout import code_set, exercise_maps

    train, val, _ = exercise_maps(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a check: small convolutions on a busy machine
    try:
        with torch.random.fork_rng(devices=[]):
            return generalising_prior(code_set(train), code_set(val))
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_reference_solution_passes_on_figures_the_check_measured(seed, one_thread):
    from vqlesson.exercises_heldout import HELDOUT_FRACTION

    result = checks.check_heldout_prior(generalising_prior, seed=seed)
    assert result.passed, result.message
    assert "measured by the check" in result.message
    m = result.measured
    assert m["heldout_bits_per_code"] < m["bound_bits_per_code"] == HELDOUT_FRACTION * 4
    assert m["near_copy_fraction"] <= 0.05 and m["sample_diversity"] > 0.5 * m["heldout_diversity"]


def test_the_untouched_template_overfits_and_fails(one_thread):
    result = checks.check_heldout_prior(fit_prior)
    assert not result.passed
    assert "measured by the check" in result.message and "not below 3.00" in result.message
    assert "learnt its training maps" in result.message  # the hint for a memorising prior
    m = result.measured
    assert m["heldout_bits_per_code"] > m["bound_bits_per_code"] + 0.5  # visibly overfit
    assert m["train_bits_per_code"] < m["heldout_bits_per_code"] - 2


@pytest.mark.parametrize("returned, hint", [
    ((0.1, 0.0, 512), "you returned figures (0.1, 0, 512): return the trained prior instead"),
    ([2.2, 0.0], "you returned figures (2.2, 0)"),
    (2.2, "you returned a figure (2.2)"),
    (torch.tensor(0.1), "you returned a figure (0.1)"),
    (None, "not done yet"),
    ({"heldout_bits_per_code": 0.1}, "return the trained PixelCNNPrior itself"),
    ("runs/none/prior.npz", "no weights file at 'runs/none/prior.npz'"),
], ids=["three-figures", "two-figures", "one-figure", "tensor-figure", "none", "dict", "no-file"])
def test_returned_figures_or_other_things_are_refused_by_name(returned, hint):
    result = checks.check_heldout_prior(lambda train, val: returned)
    assert not result.passed and hint in result.message, result.message
    assert dict(result.measured) == {} and "Traceback" not in result.message


def test_a_prior_that_was_not_trained_fails_on_what_is_measured():
    result = checks.check_heldout_prior(lambda train, val: untrained())
    assert not result.passed and "not below 3.00" in result.message
    assert "has not learnt the maps it was given" in result.message  # not a memorising prior
    assert 3.9 < result.measured["heldout_bits_per_code"] < 4.2  # about log2 K: a uniform guess


@pytest.mark.parametrize("prior, hint", [
    (lambda: untrained(32), "the prior is for codebook_size = 32, but these code maps need "
                            "codebook_size = 16"),
    (lambda: untrained(16, num_classes=2), "num_classes = 2"),
    (lambda: untrained(16, cond_codebook_size=8), "cond_codebook_size = 8"),
], ids=["another-K", "class-conditional", "spatially-conditioned"])
def test_a_prior_for_other_codes_is_refused_by_name(prior, hint):
    result = checks.check_heldout_prior(lambda train, val: prior())
    assert not result.passed and "the prior cannot be used" in result.message
    assert hint in result.message, result.message


def test_the_function_may_hand_in_a_weights_file_judged_like_the_prior(tmp_path, reference_prior):
    from vqlesson.prior_weights import save_prior_weights

    path = save_prior_weights(reference_prior, tmp_path / "mine.npz")
    by_file = checks.check_heldout_prior(lambda train, val: str(path))
    assert by_file.passed, by_file.message
    assert by_file == checks.check_heldout_prior(lambda train, val: reference_prior)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.npz"]  # written atomically


def test_the_held_out_maps_are_never_given_and_the_secret_changes_them():
    from vqlesson.exercises_heldout import HELDOUT_PRIOR, exercise_maps

    inputs = HELDOUT_PRIOR.make_inputs(3)
    train, val, heldout = exercise_maps(3)
    assert sorted(inputs) == ["seed", "train", "val"]
    assert torch.equal(inputs["train"], train) and torch.equal(inputs["val"], val)
    given = torch.cat([train, val]).flatten(1)  # (48, 64)
    assert not (heldout.flatten(1)[:, None] == given[None]).all(-1).any()  # no held-out map given
    _, _, secret = exercise_maps(3, "the autograder's sha256")
    assert heldout.shape == secret.shape and not torch.equal(heldout, secret)
    assert torch.equal(exercise_maps(3, "x")[2], exercise_maps(3, "x")[2])  # seeded: the same


# Weights files a function may hand in (or a hostile notebook may forge): each is refused with
# its own message, none is ever unpickled.
def _write(path, data):
    path.write_bytes(data)
    return path


def _garbage(path, prior):
    return _write(path, b"these are not weights" * 50)


def _oversized(path, prior):
    from vqlesson.exercises_heldout import MAX_WEIGHTS_BYTES

    with open(path, "wb") as handle:
        handle.truncate(MAX_WEIGHTS_BYTES + 1)  # sparse: no disk used
    return path


def _torch_checkpoint(path, prior):
    torch.save(prior.state_dict(), path)
    return path


class _Trap:
    """Unpickling it would create the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return Path.touch, (Path(self.marker),)


def _plain_pickle(path, prior):
    import pickle

    return _write(path, pickle.dumps(_Trap(path.with_name("unpickled"))))


def _object_array(path, prior):
    import numpy as np

    with open(path, "wb") as handle:
        np.savez(handle, __prior__=np.array("{}"), w0=np.array([_Trap(path.with_name("unpickled"))],
                                                               dtype=object))
    return path


def _edited(path, prior, edit):
    """The weights file of ``prior`` with its header and arrays changed by ``edit``."""
    import io

    import numpy as np

    from vqlesson.prior_weights import weights_file_bytes

    with np.load(io.BytesIO(weights_file_bytes(prior)), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["__prior__"]))
    edit(header, arrays)
    arrays["__prior__"] = np.array(json.dumps(header))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def _other_k_tensors(path, prior):  # K = 32 weights under a config that claims K = 16
    return _edited(path, untrained(32, embed_dim=32), lambda h, a: h["config"].update(codebook_size=16))


def _position_table(path, prior):  # a tensor no prior of this config has, e.g. a grid's table
    import numpy as np

    def edit(header, arrays):
        header["tensors"].append("net.position.weight")
        arrays[f"w{len(header['tensors']) - 1}"] = np.zeros((16 * 16, 32), np.float32)

    return _edited(path, prior, edit)


def _huge_config(path, prior):
    return _edited(path, prior, lambda h, a: h["config"].update(channels=10**6, num_layers=10**4))


def _nan_weights(path, prior):
    return _edited(path, prior, lambda h, a: a["w0"].fill(float("nan")))


def _float64(path, prior):
    return _edited(path, prior, lambda h, a: a.update(w1=a["w1"].astype("float64")))


def _no_header(path, prior):
    return _edited(path, prior, lambda h, a: h.clear())


BAD_FILES = {
    "malformed": (_garbage, "the weights file is not an .npz archive"),
    "oversized": (_oversized, "over the limit"),
    "torch-checkpoint": (_torch_checkpoint, "is a PyTorch checkpoint (torch.save: a pickle), and "
                                            "pickles are never loaded"),
    "plain-pickle": (_plain_pickle, "the weights file is a pickle"),
    "object-array": (_object_array, "holds pickled data (an object array), which is never "
                                    "unpickled"),
    "another-K-tensors": (_other_k_tensors, "net.embedding.weight has shape (32, 32), but a prior "
                                            "of this config has (16, 32)"),
    "another-grid-table": (_position_table, "has a tensor 'net.position.weight' that a prior of "
                                            "its config does not have"),
    "huge-config": (_huge_config, "config field channels must be an int in [1, 256]"),
    "nan-weights": (_nan_weights, "holds NaN or infinite values"),
    "float64": (_float64, "has dtype float64, expected float32"),
    "no-header": (_no_header, "header is not a 'vqlesson-prior-weights' header"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_weights_file_fails_with_its_own_message_and_is_never_unpickled(name, tmp_path):
    write, hint = BAD_FILES[name]
    path = write(tmp_path / "prior.npz", untrained(embed_dim=32))
    result = checks.check_heldout_prior(lambda train, val: str(path))
    assert not result.passed and hint in result.message, result.message
    assert not (tmp_path / "unpickled").exists()
    assert dict(result.measured) == {} and "Traceback" not in result.message


# --------------------------------------------------------------------------------------------
# The forward-pass exercise's helpers: which mistakes leak, and where
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mistake, leaks", [
    ("no down-shift", True), ("no right-shift", True), ("horizontal from the future", True),
    ("vertical from the future", True), ("stacks swapped", True),
    ("shift in every block", False)])
def test_mistaken_forward_passes_leak_where_expected_and_the_library_does_not(mistake, leaks):
    from vqlesson.exercises_pixelcnn import (
        FORWARD_K,
        forward_net,
        leaked_positions,
        mistaken_forward,
        perturbed,
    )

    net = forward_net(0)
    codes = torch.randint(0, FORWARD_K, (2, 6, 6), generator=torch.Generator().manual_seed(0))
    found = {}
    with torch.no_grad():
        for name, fn in (("library", net), (mistake, lambda c: mistaken_forward(net, c, mistake))):
            found[name] = any(bool(leaked_positions(fn(codes), fn(perturbed(codes, p, FORWARD_K)),
                                                    p).any())
                              for p in ((3, 3), (2, 0), (5, 5)))
        assert not torch.allclose(mistaken_forward(net, codes, mistake), net(codes))
    assert found == {"library": False, mistake: leaks}


def test_leaked_positions_marks_only_moves_at_or_before_the_change():
    from vqlesson.exercises_pixelcnn import (
        forward_net,
        leaked_positions,
        mistaken_forward,
    )

    base = torch.zeros(1, 2, 3, 4)
    changed = base.clone()
    changed[0, 1, 1, 1] = 1.0  # before (1, 2): a leak
    changed[0, 0, 2, 0] = 1.0  # after it: allowed
    leaks = leaked_positions(base, changed, (1, 2))
    assert leaks.nonzero().tolist() == [[1, 1]]
    with pytest.raises(ValueError, match="mistake"):
        mistaken_forward(forward_net(0), torch.zeros(1, 3, 3, dtype=torch.int64), "no shift")
# Notebook 06: level-by-level sampling, which level decides the layout
# --------------------------------------------------------------------------------------------
def sample_hierarchy(model, top_prior, bottom_prior, n, generator, cond=lambda top: top,
                     shapes=lambda model: model.latent_shapes(), swap_out=False):
    top_shape, bottom_shape = shapes(model)
    top = top_prior.sample(n, top_shape, generator=generator)
    cond_map = cond(top)
    bottom = bottom_prior.sample(n, bottom_shape, generator=generator,
                                 **({} if cond_map is None else {"cond_map": cond_map}))
    images = model.decode_indices(top, bottom)
    return (bottom, top, images) if swap_out else (top, bottom, images)


def layout_follows_top(model, a, b, pooled=True, own=True, both=True):
    with torch.no_grad():
        (ta, ba), (tb, bb) = model.encode(a), model.encode(b)
        ab, ba_ = model.decode_indices(ta, bb), model.decode_indices(tb, ba)
        ra, rb = (model.decode_indices(ta, ba), model.decode_indices(tb, bb)) if own else (a, b)
    cell = a.shape[-1] // ta.shape[-1]
    pool = (lambda x: F.avg_pool2d(x, cell)) if pooled else (lambda x: x)
    pairs = [(ab, ra, rb), (ba_, rb, ra)][: 2 if both else 1]
    d_top = sum((pool(h) - pool(t)).pow(2).mean() for h, t, _ in pairs) / len(pairs)
    d_bottom = sum((pool(h) - pool(m)).pow(2).mean() for h, _, m in pairs) / len(pairs)
    return float(d_bottom / (d_top + d_bottom))


HIERARCHICAL = {
    "sample_hierarchy": (checks.check_sample_hierarchy, sample_hierarchy),
    "swap_levels": (checks.check_swap_levels, layout_follows_top),
}
HIERARCHICAL_TEMPLATES = {  # the student version's cells: the body is `...`
    "sample_hierarchy": lambda model, top_prior, bottom_prior, n, generator: None,
    "swap_levels": lambda model, a, b: None,
}


@pytest.mark.parametrize("name", sorted(HIERARCHICAL))
@pytest.mark.parametrize("seed", [0, 1])
def test_notebook_06_references_pass_for_two_seeds(name, seed, one_thread):
    check, fn = HIERARCHICAL[name]
    result = check(fn, seed=seed)
    assert result.passed, result.message
    assert repr(result).startswith(f"✅ {name}: passed")


@pytest.mark.parametrize("name", sorted(HIERARCHICAL))
def test_notebook_06_templates_fail_as_not_done(name):
    check, _ = HIERARCHICAL[name]
    result = check(HIERARCHICAL_TEMPLATES[name])
    assert not result.passed and "not done yet" in result.message


HIERARCHICAL_MISTAKES = [
    (checks.check_sample_hierarchy, lambda *a: sample_hierarchy(*a, cond=lambda top: None),
     "sampled without the top codes"),
    (checks.check_sample_hierarchy, lambda *a: sample_hierarchy(*a, cond=torch.zeros_like),
     "given a map of zeros"),
    (checks.check_sample_hierarchy,
     lambda *a: sample_hierarchy(*a, shapes=lambda model: model.latent_shapes()[::-1]),
     "the levels are swapped"),
    (checks.check_sample_hierarchy, lambda *a: sample_hierarchy(*a, swap_out=True),
     "the levels are swapped"),
    (checks.check_sample_hierarchy, lambda m, t, b, n, g: sample_hierarchy(m, t, b, n, None),
     "pass generator=generator"),
    (checks.check_sample_hierarchy,
     lambda *a: sample_hierarchy(*a)[:2] + (torch.zeros(3, 3, 32, 32),), "decode both levels"),
    (checks.check_swap_levels, lambda *a: layout_follows_top(*a, pooled=False), "average-pool"),
    (checks.check_swap_levels, lambda *a: layout_follows_top(*a, own=False),
     "compare with the reconstructions"),
    (checks.check_swap_levels, lambda *a: 1 - layout_follows_top(*a), "*bottom* donor"),
]


@pytest.mark.parametrize("check, wrong, hint", HIERARCHICAL_MISTAKES,
                         ids=[f"{c.__name__}-{h}" for c, _, h in HIERARCHICAL_MISTAKES])
def test_notebook_06_mistakes_get_their_hint(check, wrong, hint, one_thread):
    result = check(wrong)
    assert not result.passed
    assert hint in result.message, result.message
    assert "Traceback" not in result.message


class _TopDecides(torch.nn.Module):
    """A two-level stand-in whose decode is its top codes alone (the bottom is ignored)."""

    levels = ("top", "bottom")
    Codes = tuple

    def encode(self, x):
        top = (x[:, 0, ::8, ::8] > 0).long()  # (B, S/8, S/8)
        return top, top.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (B, S/4, S/4)

    def decode_indices(self, top, bottom):
        image = top.float().repeat_interleave(8, 1).repeat_interleave(8, 2)  # (B, S, S)
        return image[:, None].expand(-1, 3, -1, -1)  # (B, 3, S, S)

    def latent_shapes(self, image_size=None):
        return (2, 2), (4, 4)


def test_swap_layout_measures_which_level_the_decode_follows():
    from vqlesson.configs import vqvae2_config
    from vqlesson.experiments import swap_layout
    from vqlesson.vqvae2 import VQVAE2

    a, b = torch.ones(2, 3, 16, 16), -torch.ones(2, 3, 16, 16)
    swapped = swap_layout(_TopDecides(), a, b)
    assert swapped.top_share == pytest.approx(1.0)  # the decode is the top donor's
    assert torch.equal(swapped.a_top_b_bottom, swapped.recon_a)
    with pytest.raises(TypeError, match="VQVAE2"):
        swap_layout(torch.nn.Linear(1, 1), a, b)
    with pytest.raises(ValueError, match="same shape"):
        swap_layout(VQVAE2(vqvae2_config("ci", image_size=16)), a, b[:1])
