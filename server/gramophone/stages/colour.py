"""Closed-form colouring: map the content's spectral-envelope statistics onto the style's.

An affine map of log-magnitude frames reduced to a few mel-spaced bands that gives the
content's band mean and covariance the style's: of all such maps, the one that moves the
frames least (the optimal-transport map between the two Gaussians; Mroueh 2019, "Wasserstein
style transfer"), so each band's envelope over time stays as close to the content's as the
statistics allow. The change is applied back to the full grid as a smooth gain, so the
content's harmonic fine structure (and with it intelligibility) stays. It is one matrix
product per frame, which makes it cheap enough to run before the gram steps, offline and live.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..blas import one_blas_thread
from ..dsp.analysis import AnalysisConfig
from ..dsp.bands import BandBasis, BandStats
from .base import Context, Stage, StyleClip, ramp_in

# What the style target keeps for the nearest-envelope move; fixed by the target's format,
# since one target serves every preset with its analysis.
MAX_ENVELOPES = 4096  # band frames kept: 47 s of style at the default hop
SILENT_ENVELOPE_DB = 60.0  # frames this far under the style's loudest are silence, not an envelope it plays


@dataclass(frozen=True)
class ColourSettings:
    """The colouring's settings (measured on held-out nets and MFCCs: docs/research-log.md)."""

    stage: ClassVar[str] = "colour"

    strength: float = 1.0  # offline strength, 0–1 (live, the ``colour`` parameter sets it)
    window_seconds: float = 8.0  # time constant of the running content statistics it colours from
    warmup_seconds: float = 2.0  # it ramps in over this much audio, while statistics are thin
    neighbours: float = 0.0  # share of the way a coloured frame moves to its nearest style envelopes (0.5 by default)
    neighbour_count: int = 4  # style frames whose mean envelope a frame moves toward (4 and 16 measured alike)
    max_change: float = 1.5  # the most a channel's log1p magnitude may move (about ×4.5, 13 dB): see RunningColour
    ridge: float = 1e-3  # covariance regularisation, relative to its mean variance
    style_ridge: float = 1e-2  # floor on the content's, relative to the style's: caps the map's gain near 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0 or not 0.0 <= self.neighbours <= 1.0:
            raise ValueError("colour strength and neighbours must be within 0–1")

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "Colour":
        return Colour(self, analysis, bands, chunk_frames)


def _matrix_powers(covariance: np.ndarray, powers: tuple[float, ...], ridge: float) -> list[np.ndarray]:
    """``(covariance + ridge·I)`` to each power, from one eigendecomposition."""
    values, vectors = np.linalg.eigh(covariance + ridge * np.eye(len(covariance)))
    values = np.maximum(values, 1e-12)
    return [(vectors * values**power) @ vectors.T for power in powers]


def colour_transform(content: BandStats, style: BandStats,
                     settings: ColourSettings = ColourSettings()) -> tuple[np.ndarray, np.ndarray]:
    """``(A, b)`` such that ``A @ y + b`` has the style's mean and covariance for the content's ``y``.

    ``A = C^-½ (C^½ S C^½)^½ C^-½`` for content and style covariances ``C`` and ``S``: the
    symmetric map that moves the frames least (whitening then colouring, ``S^½ C^-½``, gives
    the same statistics but rotates each band's envelope into its neighbours', which cost
    intelligibility: docs/research-log.md). The content's covariance is regularised relative
    to the *style's* variance too, so a near-silent stretch is not lifted into loud noise.
    """
    size = len(style.covariance)
    style_variance = float(np.trace(style.covariance)) / size
    ridge = settings.ridge * float(np.trace(content.covariance)) / size + settings.style_ridge * style_variance + 1e-8
    root, inverse_root = _matrix_powers(content.covariance, (0.5, -0.5), ridge)
    style_covariance = style.covariance + (settings.ridge * style_variance + 1e-8) * np.eye(size)
    (middle,) = _matrix_powers(root @ style_covariance @ root, (0.5,), 0.0)
    matrix = inverse_root @ middle @ inverse_root
    return matrix.astype(np.float32), (style.mean - matrix @ content.mean).astype(np.float32)


class RunningColour:
    """Colouring against running content statistics, chunk by chunk, offline and live.

    The content's band mean and covariance are a decayed average over the past (time
    constant set by ``decay`` per chunk), bias-corrected so the opening chunks weigh
    equally instead of the first (often silent) one lingering. Four things, each
    measured on held-out nets (docs/research-log.md), keep it stable:

    - the transform is interpolated frame by frame from the previous chunk's to this
      chunk's, because a gain that jumps every chunk is a temporal pattern of its own;
    - its strength ramps in over the first ``warmup_frames`` frames, while the
      statistics are still too thin to trust;
    - the content covariance has a floor relative to the style's (``colour_transform``);
    - no channel moves by more than ``max_change``: unclipped, thin statistics (a
      note onset, the opening second) lifted near-silent bands by up to ×e¹¹ into
      bursts, and on plucks the colouring made the output less like the style.
    """

    def __init__(self, basis: BandBasis, decay: float, warmup_frames: int,
                 settings: ColourSettings = ColourSettings()) -> None:
        self.basis = basis
        self.decay = decay
        self.warmup_frames = max(warmup_frames, 1)
        self.settings = settings
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
        of its ``neighbour_count`` nearest style frames (kNN-VC's idea, on envelopes): the
        colouring matches the style's envelopes as one Gaussian, and a frame may still
        have an envelope the style never plays.
        """
        most = self.settings.max_change
        with one_blas_thread():  # small matrices: see ..blas
            change = np.clip(self._delta(logmag, style, strength), -most, most)
            share = self.settings.neighbours * strength * ramp_in(self.frames, self.warmup_frames)
            if envelopes is None or share <= 0:
                return change
            move = nearest_envelope_change(self.basis.to_bands @ (logmag + change), envelopes,
                                           self.settings.neighbour_count)
            return change + np.clip(share * self.basis.to_channels @ move, -most, most).astype(np.float32)

    def _delta(self, logmag: np.ndarray, style: BandStats, strength: float) -> np.ndarray:
        bands = self.basis.to_bands @ logmag
        chunk = BandStats.of(bands)
        self.weight = self.weight * self.decay + 1.0
        self.stats = chunk if self.stats is None else BandStats.mix([(self.stats, 1 - 1 / self.weight), (chunk, 1 / self.weight)])
        count = logmag.shape[-1]
        self.frames += count
        matrix, offset = colour_transform(self.stats, style, self.settings)
        trust = strength * ramp_in(self.frames, self.warmup_frames)
        matrix = trust * matrix + (1 - trust) * np.eye(len(matrix), dtype=np.float32)
        offset = trust * offset
        previous = self.previous or (matrix, offset)
        self.previous = (matrix, offset)
        share = (np.arange(1, count + 1, dtype=np.float32) / count)  # 0 → 1 across the chunk's frames
        now = np.einsum("ij,...jt->...it", matrix, bands) + offset[:, None]
        before = np.einsum("ij,...jt->...it", previous[0], bands) + previous[1][:, None]
        target = share * now + (1 - share) * before
        return (self.basis.to_channels @ (target - bands)).astype(np.float32)


def running_window(analysis: AnalysisConfig, chunk_frames: int, window_seconds: float,
                   warmup_seconds: float) -> tuple[float, int]:
    """A running stage's per-chunk decay and ramp-in frames (colouring and level matching share the form)."""
    chunk_seconds = chunk_frames * analysis.hop_ms / 1000
    return math.exp(-chunk_seconds / window_seconds), round(warmup_seconds * 1000 / analysis.hop_ms)


class Colour(Stage):
    """The colouring as a stage: the anchor's frames moved toward the style's band statistics and envelopes.

    Learns the style's sounding band frames (its envelopes); the band statistics themselves
    belong to the style target, which every preset's colouring reads.
    """

    name: ClassVar[str] = "colour"
    place: ClassVar[str] = "anchor"
    lifts: ClassVar[bool] = True

    def __init__(self, settings: ColourSettings, analysis: AnalysisConfig, bands: int, chunk_frames: int) -> None:
        self.settings = settings
        self.chunk_frames = chunk_frames
        basis = BandBasis.build(analysis.channels, analysis.max_freq_hz, bands)
        decay, warmup = running_window(analysis, chunk_frames, settings.window_seconds, settings.warmup_seconds)
        self.running = RunningColour(basis, decay, warmup, settings)

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        """Every clip's and channel's band frames louder than ``SILENT_ENVELOPE_DB`` under the loudest, thinned."""
        floor_db = max(float(clip.frame_db.max()) for clip in clips) - SILENT_ENVELOPE_DB
        sounding = [np.moveaxis(clip.band_frames, -2, 0)[:, clip.frame_db > floor_db] for clip in clips]
        return thin_envelopes(np.concatenate(sounding, axis=1), MAX_ENVELOPES)

    @classmethod
    def mix(cls, parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        """Each style's envelopes, thinned so their counts follow the weights.

        As many in all as the style with the fewest per unit of weight allows, at most ``MAX_ENVELOPES``.
        """
        weighted = [(envelopes, weight) for envelopes, weight in parts if weight > 0]
        total = min(MAX_ENVELOPES, min(envelopes.shape[1] / weight for envelopes, weight in weighted))
        return np.concatenate([thin_envelopes(envelopes, max(1, round(weight * total)))
                               for envelopes, weight in weighted], axis=1)

    @classmethod
    def check(cls, feature: np.ndarray, bands: int) -> bool:
        return feature.ndim == 2 and feature.shape[0] == bands and feature.shape[1] > 0

    @classmethod
    def ready(cls, features) -> bool:
        return True  # without envelopes (an older target) it still colours, only the nearest-envelope move is off

    def reset(self) -> None:
        self.running.reset()

    def apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        strength = context.colour * context.pull
        change = self.running.delta(data, context.bands, strength, context.features.get(self.name))
        return data if strength <= 0 else data + change


def thin_envelopes(envelopes: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of ``envelopes``' columns, evenly spaced, as float32."""
    keep = np.unique(np.linspace(0, envelopes.shape[1] - 1, min(count, envelopes.shape[1])).round().astype(int))
    return envelopes[:, keep].astype(np.float32)


def nearest_envelope_change(bands: np.ndarray, envelopes: np.ndarray, count: int) -> np.ndarray:
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
