"""Choosing the sampling temperature on held-out images by the realism measure
(vqlesson.temperature): the rule, and the whole search on a tiny VQ-VAE and prior."""

from __future__ import annotations

import pytest
import torch

from vqlesson.temperature import (
    TemperatureSearch,
    choose_temperature,
    pick_temperature,
    within_bounds,
)
from vqlesson.two_sample import TwoSampleConfig


def row(t, accuracy, within=True):
    return {"temperature": t, "accuracy": accuracy, "within": within}


def test_the_rule_lowest_accuracy_within_the_bounds():
    assert pick_temperature([row(0.8, 0.70), row(0.9, 0.60), row(1.0, 0.65)]) == 0.9
    # a lower accuracy outside the bounds does not count ...
    assert pick_temperature([row(0.8, 0.55, within=False), row(0.9, 0.60), row(1.0, 0.65)]) == 0.9
    # ... unless no candidate is within them
    assert pick_temperature([row(0.8, 0.55, False), row(0.9, 0.60, False)]) == 0.8
    assert pick_temperature([row(0.8, 0.6), row(1.0, 0.6)]) == 1.0  # a tie: the warmer one
    with pytest.raises(ValueError, match="rows"):
        pick_temperature([])


def test_the_bounds():
    search = TemperatureSearch()
    real = {"outside": 0.6, "inside": 0.02, "diversity": 0.9}
    ok = {"outside": 0.5, "inside": 0.03, "diversity": 0.85}
    assert within_bounds(ok, real, search)
    assert not within_bounds({**ok, "outside": 0.44}, real, search)  # 27 % below real
    assert not within_bounds({**ok, "outside": 0.76}, real, search)
    assert not within_bounds({**ok, "inside": 0.05}, real, search)  # 2.5x real
    assert not within_bounds({**ok, "diversity": 0.8}, real, search)  # 0.89x real
    for bad in (dict(temperatures=()), dict(temperatures=(0.0, 1.0)), dict(inside_factor=0),
                dict(near_black=0), dict(seed=-1)):
        with pytest.raises(ValueError):
            TemperatureSearch(**bad)


def test_choose_temperature_measures_every_candidate(one_thread):
    from test_prior import tiny_prior, tiny_vqvae

    torch.manual_seed(0)
    vqvae, prior = tiny_vqvae(), tiny_prior(k=16)
    real = torch.rand(8, 3, 16, 16) * 2 - 1  # (8, 3, S, S) in [-1, 1]
    search = TemperatureSearch(temperatures=(0.5, 1.0, 2.0),
                               two_sample=TwoSampleConfig(epochs=2), seed=3)
    choice = choose_temperature(vqvae, (prior,), real, search)
    assert [r["temperature"] for r in choice.rows] == [0.5, 1.0, 2.0]
    assert choice.temperature == pick_temperature(choice.rows)
    for r in choice.rows:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["outside"] <= 1 and 0 <= r["inside"] <= 1
        assert 0 <= r["diversity"] <= 1
        assert r["within"] == within_bounds(r, choice.reference, search)
    assert set(choice.reference) == {"outside", "inside", "diversity"}
    assert "(chosen)" in choice.table and choice.table.count("\n") == 2 + 3
    # the same random numbers for every candidate: a colder prior is less diverse
    assert choice.rows[0]["diversity"] < choice.rows[2]["diversity"]
    again = choose_temperature(vqvae, (prior,), real, search)
    assert again.rows == choice.rows  # deterministic for a seed
    with pytest.raises(ValueError, match="len"):
        choose_temperature(vqvae, (prior,), real[:3], search)


def test_the_figures_of_the_choice_and_of_priors_side_by_side():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vqlesson.plots import sample_panels, temperature_choice
    from vqlesson.temperature import TemperatureChoice

    rows = [dict(row(t, a), standard_error=0.03, diversity=d, outside=0.6, inside=0.01)
            for t, a, d in [(0.8, 0.7, 0.9), (0.9, 0.6, 0.95), (1.0, 0.62, 0.97)]]
    fig = temperature_choice(TemperatureChoice(0.9, rows, {"diversity": 0.96}, ""))
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "two-sample accuracy"
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    fig = sample_panels({"without position": images, "with position": images}, n=4, ncols=2)
    titles = [ax.get_title(loc) for ax in fig.axes for loc in ("left", "center")]
    assert "without position" in titles and "with position" in titles
    assert len(fig.axes) == 2 * 4
    with pytest.raises(ValueError, match="panels"):
        sample_panels({})
    plt.close("all")
