"""Frozen random Conv1d feature networks over log-magnitude spectrograms.

The frequency bins are the input channels and time is the convolution axis. Weights are
drawn with NumPy's PCG64 generator from a seed, so the same config and seed give the same
network on every machine and every torch version; the networks are never trained.
With ``input_bands`` a network first averages the grid into that many mel bands (a fixed
1 × 1 convolution), so its random convolution reads fewer, perceptually spaced channels:
about half the cost of a step for the same held-out effect (docs/research-log.md).
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from ..dsp.bands import BandBasis
from .network_config import NetworkConfig

# NetworkConfig accepts exactly these names (network_config.ACTIVATIONS).
ACTIVATION_MODULES: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "none": nn.Identity}


def _weights(rng: np.random.Generator, init: str, out_ch: int, in_ch: int, kernel: int) -> tuple[np.ndarray, np.ndarray]:
    fan_in, fan_out = in_ch * kernel, out_ch * kernel
    shape = (out_ch, in_ch, kernel)
    if init == "ulyanov":  # Ulyanov & Lebedev 2016: Glorot-normal scaled by sqrt(2)
        weight = rng.standard_normal(shape) * np.sqrt(2.0) * np.sqrt(2.0 / (fan_in + fan_out))
    elif init == "he":
        weight = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    else:  # PyTorch's default Conv1d init: kaiming_uniform(a=sqrt(5)) == U(±1/sqrt(fan_in))
        weight = rng.uniform(-1.0, 1.0, shape) / np.sqrt(fan_in)
    bias = rng.uniform(-1.0, 1.0, out_ch) / np.sqrt(fan_in)
    return weight.astype(np.float32), bias.astype(np.float32)


class FeatureNet(nn.Module):
    """One frozen random network: ``(batch, channels, frames) -> (batch, filters, frames')``.

    ``max_freq_hz`` (the grid's top frequency) places the mel bands when the config has
    ``input_bands``.
    """

    def __init__(self, in_channels: int, config: NetworkConfig, seed: int, max_freq_hz: float | None = None) -> None:
        super().__init__()
        rng = np.random.default_rng(seed)
        layers: list[nn.Module] = []
        channels = in_channels
        if config.input_bands:
            if max_freq_hz is None:
                raise ValueError("a network with input_bands needs the grid's max_freq_hz")
            to_bands = BandBasis.build(in_channels, max_freq_hz, config.input_bands).to_bands
            projection = torch.nn.utils.skip_init(nn.Conv1d, in_channels, config.input_bands, 1, bias=False)
            with torch.no_grad():
                projection.weight.copy_(torch.from_numpy(to_bands)[:, :, None])
            layers.append(projection)
            channels = config.input_bands
        for index in range(config.layers):
            # skip_init: torch's own initialisation would be drawn and then overwritten.
            conv = torch.nn.utils.skip_init(nn.Conv1d, channels, config.filters, config.kernel, bias=config.bias,
                                            padding=config.kernel // 2 if config.padding else 0)
            weight, bias = _weights(rng, config.init, config.filters, channels, config.kernel)
            with torch.no_grad():
                conv.weight.copy_(torch.from_numpy(weight))
                if conv.bias is not None:
                    conv.bias.copy_(torch.from_numpy(bias))
            layers.append(conv)
            if index < config.layers - 1 or config.final_activation:
                layers.append(ACTIVATION_MODULES[config.activation]())
            channels = config.filters
        self.body = nn.Sequential(*layers)
        self.requires_grad_(False)
        self.eval()

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        return self.body(spectrogram)


def build_pool(in_channels: int, config: NetworkConfig, max_freq_hz: float | None = None) -> list[FeatureNet]:
    """The ``config.pool`` networks, seeded ``config.seed`` onwards."""
    return [FeatureNet(in_channels, config, config.seed + offset, max_freq_hz) for offset in range(config.pool)]


_POOLS: dict[tuple[int, NetworkConfig, float | None], list[FeatureNet]] = {}
_POOLS_LOCK = threading.Lock()


def get_pool(in_channels: int, config: NetworkConfig, max_freq_hz: float | None = None) -> list[FeatureNet]:
    """The pool for ``config``, built once per process and shared (the networks are read-only)."""
    key = (in_channels, config, max_freq_hz)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = build_pool(in_channels, config, max_freq_hz)
        return _POOLS[key]
