"""The frozen random feature networks (``engine/network.py``): seeds, shapes, mel-band inputs, the shared pool."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gramophone.engine.network import FeatureNet, NetworkConfig, build_pool, get_pool


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_same_seed_builds_the_same_weights():
    config = NetworkConfig(filters=16, kernel=5, layers=2, pool=3, bias=True, seed=7)
    first, second = build_pool(40, config), build_pool(40, config)
    assert len(first) == 3
    for a, b in zip(first, second):
        for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(pa, pb), name


@pytest.mark.parametrize("init", ["ulyanov", "torch", "he"])
def test_different_seeds_give_different_weights(init):
    config = NetworkConfig(filters=16, kernel=5, init=init)
    a, b = FeatureNet(40, config, seed=1), FeatureNet(40, config, seed=2)
    assert not torch.allclose(a.body[0].weight, b.body[0].weight)
    # and a pool's members differ from each other
    pool = build_pool(40, dataclasses.replace(config, pool=2))
    assert not torch.allclose(pool[0].body[0].weight, pool[1].body[0].weight)


def test_network_shapes_and_frozen_weights():
    config = NetworkConfig(filters=24, kernel=7, layers=2)
    net = FeatureNet(30, config, seed=0)
    out = net(torch.randn(2, 30, 50))
    assert out.shape == (2, 24, 50 - config.frames_lost)
    assert config.receptive_field == 13
    assert all(not p.requires_grad for p in net.parameters())
    padded = FeatureNet(30, dataclasses.replace(config, padding=True), seed=0)
    assert padded(torch.randn(1, 30, 50)).shape[-1] == 50


def test_a_network_with_input_bands_reads_mel_band_averages():
    config = NetworkConfig(filters=16, kernel=5, input_bands=12)
    net = FeatureNet(65, config, seed=0, max_freq_hz=11025.0)
    projection, conv = net.body[0], net.body[1]
    assert projection.weight.shape == (12, 65, 1) and conv.weight.shape == (16, 12, 5)
    np.testing.assert_allclose(projection.weight.sum(dim=1).numpy(), 1.0, atol=1e-5)  # each band an average
    flat = torch.full((1, 65, 9), 2.0)  # a flat spectrum averages to the same value in every band
    torch.testing.assert_close(projection(flat), torch.full((1, 12, 9), 2.0))
    assert net(torch.randn(2, 65, 30)).shape == (2, 16, 26)
    assert all(not p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="max_freq_hz"):
        FeatureNet(65, config, seed=0)


def test_get_pool_shares_one_pool_per_config():
    config = NetworkConfig(filters=8, kernel=3, pool=2, seed=123)
    assert get_pool(20, config) is get_pool(20, config)
    assert get_pool(20, config) is not get_pool(21, config)


@pytest.mark.parametrize("kwargs", [{"activation": "gelu"}, {"init": "xavier"}, {"filters": 0}, {"pool": 0},
                                    {"input_bands": -1}])
def test_bad_network_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        NetworkConfig(**kwargs)
