"""Mel bands over the analysis grid, their statistics, and frame energies (numpy only).

The colouring matches band statistics, the networks may read band averages, and the
match EQ compares mel band levels: one place builds mel filters (librosa's) for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

ENERGY_FLOOR = 1e-12  # keeps the dB of a silent frame finite


def mel_filters(sample_rate: float, n_fft: int, bands: int, fmax: float | None = None, *,
                htk: bool = False, norm: str | None = "slaney") -> np.ndarray:
    """``(bands, n_fft // 2 + 1)`` triangular mel filters (librosa's), up to ``fmax`` (Nyquist if None)."""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=bands, fmax=fmax, htk=htk, norm=norm)


@dataclass(frozen=True)
class BandBasis:
    """Projection of a channel grid onto mel bands and the smooth way back."""

    to_bands: np.ndarray  # (bands, channels): band averages
    to_channels: np.ndarray  # (channels, bands): interpolating weights, rows sum to 1

    @classmethod
    def build(cls, channels: int, max_freq_hz: float, bands: int) -> "BandBasis":
        filters = mel_filters(2 * max_freq_hz, 2 * (channels - 1), bands, htk=True, norm=None)
        filters = filters.astype(np.float64)
        to_bands = filters / np.maximum(filters.sum(axis=1, keepdims=True), 1e-12)
        weights = filters.T.copy()
        covered = weights.sum(axis=1) > 1e-9
        # Bins outside every triangle (0 Hz, the very top) take the nearest covered bin's weights.
        indices = np.arange(channels)
        nearest = np.searchsorted(indices[covered], indices).clip(0, covered.sum() - 1)
        weights[~covered] = weights[covered][nearest[~covered]]
        to_channels = weights / weights.sum(axis=1, keepdims=True)
        return cls(to_bands=to_bands.astype(np.float32), to_channels=to_channels.astype(np.float32))


@dataclass
class BandStats:
    """Mean and covariance of band frames: what the colouring matches."""

    mean: np.ndarray  # (bands,)
    covariance: np.ndarray  # (bands, bands)
    count: float

    @classmethod
    def of(cls, band_frames: np.ndarray) -> "BandStats":
        """Statistics of ``(..., bands, frames)``, pooling any leading axes."""
        bands = band_frames.shape[-2]
        frames = np.moveaxis(band_frames, -2, 0).reshape(bands, -1).astype(np.float64)
        mean = frames.mean(axis=1)
        centred = frames - mean[:, None]
        covariance = centred @ centred.T / max(frames.shape[1], 1)
        return cls(mean=mean, covariance=covariance, count=float(frames.shape[1]))

    @classmethod
    def mix(cls, parts: list[tuple["BandStats", float]]) -> "BandStats":
        """The statistics of a weighted mixture of sources (weights sum to 1)."""
        mean = sum(weight * stats.mean for stats, weight in parts)
        second = sum(weight * (stats.covariance + np.outer(stats.mean, stats.mean)) for stats, weight in parts)
        return cls(mean=mean, covariance=second - np.outer(mean, mean), count=sum(s.count for s, _ in parts))


def frame_energy_db(logmag: np.ndarray) -> np.ndarray:
    """Each frame's energy, ``Σ magnitude²`` over the channels of ``(..., channels, frames)``, in dB."""
    magnitude = np.expm1(np.maximum(logmag, 0.0))
    return 10 * np.log10(np.maximum(np.einsum("...ct,...ct->...t", magnitude, magnitude), ENERGY_FLOOR))
