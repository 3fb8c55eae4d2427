"""vqlesson.prior_weights: a prior as a data-only file, and the reader that checks it first."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vqlesson.pixelcnn import PriorConfig
from vqlesson.pixelcnn_prior import PixelCNNPrior
from vqlesson.prior_weights import (CONFIG_LIMITS, WeightsError, check_config, read_prior_weights,
                                    save_prior_weights, weights_file_bytes)


def _prior(**config) -> PixelCNNPrior:
    torch.manual_seed(0)
    return PixelCNNPrior(PriorConfig(**{"codebook_size": 16, "channels": 8, "num_layers": 2,
                                        **config}))


@pytest.mark.parametrize("config", [{}, {"arch": "plain", "dropout": 0.3},
                                    {"num_classes": 2, "skip_connections": False}])
def test_a_prior_round_trips_through_its_weights_file(tmp_path, config):
    prior = _prior(**config)
    back = read_prior_weights(save_prior_weights(prior, tmp_path / "p.npz").read_bytes(), 2**20)
    assert back.config == prior.config and not back.training
    assert back.state_dict().keys() == prior.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in prior.state_dict().items())
    codes = torch.randint(0, 16, (2, 5, 5))
    label = torch.zeros(2, dtype=torch.int64) if config.get("num_classes") else None
    assert torch.equal(back.eval().logits(codes, label), prior.eval().logits(codes, label))


def test_the_config_is_checked_field_by_field_before_anything_is_built():
    fields = dataclasses.asdict(_prior().config)
    assert check_config(fields) == _prior().config
    for name, (low, high) in CONFIG_LIMITS.items():
        with pytest.raises(WeightsError, match=f"config field {name} must be an int"):
            check_config({**fields, name: high + 1})
    with pytest.raises(WeightsError, match="unknown field 'position_table'"):
        check_config({**fields, "position_table": 10**9})
    with pytest.raises(WeightsError, match="config field arch must be one of"):
        check_config({**fields, "arch": "transformer"})
    with pytest.raises(WeightsError, match="dropout must be"):
        check_config({**fields, "dropout": 1.5})
    with pytest.raises(WeightsError, match="channels must be an int"):
        check_config({**fields, "channels": 64.0})
    with pytest.raises(WeightsError, match="is for codebook_size = 16, but these code maps need"):
        check_config(fields, expect={"codebook_size": 512})


def test_the_reader_refuses_more_bytes_than_its_limit_and_non_bytes():
    data = weights_file_bytes(_prior())
    with pytest.raises(WeightsError, match="over the limit"):
        read_prior_weights(data, len(data) - 1)
    with pytest.raises(WeightsError, match="expected the weights file's bytes"):
        read_prior_weights(bytearray(data), len(data))
    with pytest.raises(TypeError, match="return the trained PixelCNNPrior itself"):
        weights_file_bytes(torch.nn.Linear(2, 2))
