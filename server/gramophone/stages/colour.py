"""Closed-form colouring: map the content's spectral-envelope statistics onto the style's.

A whitening–colouring transform (Li et al. 2017, "Universal style transfer via feature
transforms") applied to log-magnitude frames reduced to a few mel-spaced bands: the
content's band mean and covariance become the style's. The change is applied back to
the full grid as a smooth gain, so the content's harmonic fine structure (and with it
intelligibility) stays. It is one matrix product per frame, which makes it cheap enough
to run before the gram steps, offline and live.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np
from threadpoolctl import ThreadpoolController

# The colouring's matrices are small (bands × bands, bands × a chunk's frames): BLAS threads
# gain nothing on them, and OpenBLAS threads left spinning afterwards took the cores from
# torch's next step (live steps ran 3× slower on 2 cores). So its NumPy work runs on one.
_BLAS = ThreadpoolController()

MAX_CHANGE = 1.5  # the most a channel's log1p magnitude may move (about ×4.5, 13 dB): see RunningColour
NEIGHBOURS = 4  # style frames whose mean envelope a coloured frame moves toward (docs/quality.md: 4 and 16 alike)
RIDGE = 1e-3  # covariance regularisation, relative to its mean variance
STYLE_RIDGE = 1e-2  # floor on the content's, relative to the style's: caps the whitening gain near 10


@dataclass(frozen=True)
class BandBasis:
    """Projection of a channel grid onto mel bands and the smooth way back."""

    to_bands: np.ndarray  # (bands, channels): band averages
    to_channels: np.ndarray  # (channels, bands): interpolating weights, rows sum to 1

    @classmethod
    def build(cls, channels: int, max_freq_hz: float, bands: int) -> "BandBasis":
        filters = librosa.filters.mel(sr=2 * max_freq_hz, n_fft=2 * (channels - 1), n_mels=bands, norm=None, htk=True)
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


def _matrix_power(covariance: np.ndarray, power: float, ridge: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(covariance + ridge * np.eye(len(covariance)))
    return (vectors * np.maximum(values, 1e-12) ** power) @ vectors.T


def colour_transform(content: BandStats, style: BandStats) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` such that ``A @ y + b`` has the style's mean and covariance for the content's ``y``.

    The content's covariance is regularised relative to the *style's* variance too, so a
    near-silent stretch is not whitened into loud noise.
    """
    size = len(style.covariance)
    style_variance = float(np.trace(style.covariance)) / size
    ridge = RIDGE * float(np.trace(content.covariance)) / size + STYLE_RIDGE * style_variance + 1e-8
    matrix = _matrix_power(style.covariance, 0.5, RIDGE * style_variance + 1e-8) @ _matrix_power(content.covariance, -0.5, ridge)
    return matrix.astype(np.float32), (style.mean - matrix @ content.mean).astype(np.float32)


class RunningColour:
    """Colouring against running content statistics, chunk by chunk, offline and live.

    The content's band mean and covariance are a decayed average over the past (time
    constant set by ``decay`` per chunk), bias-corrected so the opening chunks weigh
    equally instead of the first (often silent) one lingering. Three things, each
    measured on held-out nets (docs/quality.md), keep it stable:

    - the transform is interpolated frame by frame from the previous chunk's to this
      chunk's, because a gain that jumps every chunk is a temporal pattern of its own;
    - its strength ramps in over the first ``warmup_frames`` frames, while the
      statistics are still too thin to trust;
    - the content covariance has a floor relative to the style's (``colour_transform``);
    - no channel moves by more than ``MAX_CHANGE``: unclipped, thin statistics (a
      note onset, the opening second) lifted near-silent bands by up to ×e¹¹ into
      bursts, and on plucks the colouring made the output less like the style.
    """

    def __init__(self, basis: BandBasis, decay: float, warmup_frames: int, neighbour_share: float = 0.0) -> None:
        self.basis = basis
        self.decay = decay
        self.warmup_frames = max(warmup_frames, 1)
        self.neighbour_share = neighbour_share
        self.reset()

    def reset(self) -> None:
        self.stats: BandStats | None = None
        self.weight = 0.0  # decayed number of chunks folded in: the bias correction
        self.frames = 0
        self.previous: tuple[np.ndarray, np.ndarray] | None = None

    def delta(self, logmag: np.ndarray, style: BandStats, strength: float,
              envelopes: np.ndarray | None = None) -> np.ndarray:
        """Fold ``(..., channels, frames)`` into the statistics; return its change toward ``style``.

        With the style's band frames (``envelopes``, ``(bands, count)``) and a neighbour
        share, each coloured frame then moves that share of the way to the mean envelope
        of its ``NEIGHBOURS`` nearest style frames (kNN-VC's idea, on envelopes): the
        colouring matches the style's envelopes as one Gaussian, and a frame may still
        have an envelope the style never plays.
        """
        with _BLAS.limit(limits=1, user_api="blas"):
            change = np.clip(self._delta(logmag, style, strength), -MAX_CHANGE, MAX_CHANGE)
            share = self.neighbour_share * strength * min(1.0, self.frames / self.warmup_frames)
            if envelopes is None or share <= 0:
                return change
            move = nearest_envelope_change(self.basis.to_bands @ (logmag + change), envelopes)
            return change + np.clip(share * self.basis.to_channels @ move, -MAX_CHANGE, MAX_CHANGE).astype(np.float32)

    def _delta(self, logmag: np.ndarray, style: BandStats, strength: float) -> np.ndarray:
        bands = self.basis.to_bands @ logmag
        chunk = BandStats.of(bands)
        self.weight = self.weight * self.decay + 1.0
        self.stats = chunk if self.stats is None else BandStats.mix([(self.stats, 1 - 1 / self.weight), (chunk, 1 / self.weight)])
        count = logmag.shape[-1]
        self.frames += count
        matrix, offset = colour_transform(self.stats, style)
        trust = strength * min(1.0, self.frames / self.warmup_frames)
        matrix = trust * matrix + (1 - trust) * np.eye(len(matrix), dtype=np.float32)
        offset = trust * offset
        previous = self.previous or (matrix, offset)
        self.previous = (matrix, offset)
        share = (np.arange(1, count + 1, dtype=np.float32) / count)  # 0 → 1 across the chunk's frames
        now = np.einsum("ij,...jt->...it", matrix, bands) + offset[:, None]
        before = np.einsum("ij,...jt->...it", previous[0], bands) + previous[1][:, None]
        target = share * now + (1 - share) * before
        return (self.basis.to_channels @ (target - bands)).astype(np.float32)


def nearest_envelope_change(bands: np.ndarray, envelopes: np.ndarray, count: int = NEIGHBOURS) -> np.ndarray:
    """For ``(..., bands, frames)``, the move of each frame to the mean of its ``count`` nearest envelopes.

    ``envelopes`` is ``(bands, N)``; nearest by Euclidean distance over the bands.
    """
    count = min(count, envelopes.shape[1])
    frames = np.moveaxis(bands, -2, -1)  # (..., frames, bands)
    keys = envelopes.T.astype(np.float32)  # (N, bands)
    # ‖f − k‖² up to the frame's own ‖f‖², which does not change the order.
    distance = (keys * keys).sum(axis=1) - 2 * frames @ keys.T  # (..., frames, N)
    nearest = np.argpartition(distance, count - 1, axis=-1)[..., :count]
    target = keys[nearest].mean(axis=-2)  # (..., frames, bands)
    return np.moveaxis(target - frames, -1, -2)
