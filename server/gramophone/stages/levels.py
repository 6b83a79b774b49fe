"""The style's quiet levels, channel by channel: histogram matching below the loud range.

Colouring and gram steps work on log1p magnitudes, which are linear below 1: a bin 40 dB
under the loudest and one 80 dB under differ there by almost nothing, while a dB view (the
ear's, and the MFCCs') tells a noise floor, a breath or a hiss from silence. So below
``quiet_db`` (``LevelsSettings``) under the style's loudest level, each channel's output levels are mapped onto
the style's by quantile: a bin at the output's p-th percentile in its channel takes the
style's p-th percentile there. The loud range, where words and notes live, is left to the
colouring and the steps. Measured in docs/research-log.md (section 6).

The output's percentiles come from a running, decayed histogram per channel, so the live
stream and the offline path map alike; its strength ramps in while the histogram is thin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..dsp.analysis import AnalysisConfig
from .base import Context, Stage, StyleClip, quiet_share, ramp_in
from .colour import running_window

# The histogram's format, which a style target stores: fixed, not a preset's setting.
FLOOR = 1e-2  # magnitude added before the dB conversion: −40 dB in grid units, far under any audible bin
LOW_DB, HIGH_DB, STEP_DB = -40.0, 100.0, 1.0  # histogram range and resolution, in grid dB
BINS = int(round((HIGH_DB - LOW_DB) / STEP_DB))


@dataclass(frozen=True)
class LevelsSettings:
    """The quiet-level map's settings (measured on held-out MFCCs and grams: docs/research-log.md, section 6)."""

    stage: ClassVar[str] = "levels"

    quiet_db: float = 40.0  # mapped in full from this far under the style's loudest level ...
    blend_db: float = 10.0  # ... and not at all from blend_db closer to it, with a straight blend between
    window_seconds: float = 8.0  # the output histogram's running window, as the colouring's
    warmup_seconds: float = 2.0  # the map ramps in over this much audio, while the histogram is thin

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "Levels":
        return Levels(self, analysis, chunk_frames)


def to_db(logmag: np.ndarray) -> np.ndarray:
    """Grid log1p magnitudes as dB (with ``FLOOR`` added, so silence is finite)."""
    return (20.0 * np.log10(np.expm1(np.maximum(logmag, 0.0)) + FLOOR)).astype(np.float32)


def from_db(level: np.ndarray) -> np.ndarray:
    """The inverse of ``to_db``."""
    return np.log1p(np.maximum(10.0 ** (level / 20.0) - FLOOR, 0.0)).astype(np.float32)


def _channels_first(logmag: np.ndarray) -> np.ndarray:
    """``(..., channels, frames)`` as ``(channels, everything else)``: audio channels pooled."""
    return np.moveaxis(logmag, -2, 0).reshape(logmag.shape[-2], -1)


class LevelHistogram:
    """Per-channel histograms of dB levels, optionally decayed chunk by chunk."""

    def __init__(self, channels: int) -> None:
        self.counts = np.zeros((channels, BINS), dtype=np.float64)

    def add(self, levels: np.ndarray, decay: float = 1.0) -> None:
        """Fold ``(channels, frames)`` dB levels in, after scaling the past by ``decay``."""
        channels = self.counts.shape[0]
        index = np.clip(((levels - LOW_DB) / STEP_DB).astype(np.int64), 0, BINS - 1)
        flat = (np.arange(channels)[:, None] * BINS + index).ravel()
        self.counts *= decay
        self.counts += np.bincount(flat, minlength=channels * BINS).reshape(channels, BINS)

    def add_grid(self, logmag: np.ndarray) -> None:
        """Fold in every level of a log1p grid ``(..., channels, frames)``, audio channels pooled."""
        self.add(_channels_first(to_db(logmag)))

    def percentiles(self, levels: np.ndarray) -> np.ndarray:
        """Where each of ``(channels, frames)`` levels falls in its channel's histogram, 0–1."""
        cumulative = np.cumsum(self.counts, axis=1)
        total = np.maximum(cumulative[:, -1:], 1e-12)
        position = np.clip((levels - LOW_DB) / STEP_DB, 0.0, BINS - 1e-6)
        index = position.astype(np.int64)
        inside = position - index  # the level's place within its bin, spreading the bin's mass
        mass = np.take_along_axis(self.counts, index, axis=1)
        below = np.take_along_axis(cumulative, index, axis=1) - mass  # the mass of the bins under the level's
        return (below + inside * mass) / total

    def shares(self) -> np.ndarray:
        """Each channel's histogram as shares of its total: ``(channels, BINS)``."""
        return (self.counts / np.maximum(self.counts.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)


class LevelTable:
    """A histogram ``(channels, BINS)`` of shares, ready to turn percentiles back into levels.

    Kept as a full histogram, not a few quantiles: the quiet tail this maps is a few
    percent of the frames, and a grid of 101 quantiles put its levels off by up to 17 dB.
    Built once per style, as the cumulative sums are most of a lookup's cost.
    """

    def __init__(self, shares: np.ndarray) -> None:
        self.shares = shares
        channels = shares.shape[0]
        cumulative = np.cumsum(shares, axis=1, dtype=np.float64)
        self.cumulative = cumulative / np.maximum(cumulative[:, -1:], 1e-12)
        # One searchsorted serves every channel at once: channel c's sums are shifted up by 2c.
        self._shift = 2.0 * np.arange(channels)[:, None]
        self._flat = (self.cumulative + self._shift).ravel()
        self._first_bin = np.arange(channels)[:, None] * BINS
        filled = np.flatnonzero(shares.any(axis=0))
        self.top = LOW_DB + STEP_DB * (int(filled.max()) + 1) if filled.size else LOW_DB  # the loudest bin's upper edge

    def level_at(self, percentiles: np.ndarray) -> np.ndarray:
        """The level at each of ``(channels, frames)`` percentiles; the inverse of ``LevelHistogram.percentiles``."""
        wanted = np.clip(percentiles, 1e-9, 1.0 - 1e-9)  # the ends are the lowest and highest filled bins
        found = np.searchsorted(self._flat, (wanted + self._shift).ravel()).reshape(wanted.shape)
        index = np.clip(found - self._first_bin, 0, BINS - 1)
        share = np.take_along_axis(self.shares, index, axis=1)
        before = np.take_along_axis(self.cumulative, index, axis=1) - share
        inside = np.clip((wanted - before) / np.maximum(share, 1e-12), 0.0, 1.0)
        return (LOW_DB + STEP_DB * (index + inside)).astype(np.float32)


class RunningLevelMatch:
    """Maps each chunk's quiet levels onto the style's, from the output's running histogram.

    ``decay`` is how much of the histogram survives each chunk (the running window);
    the mapping ramps in over the first ``warmup_frames`` frames.
    """

    def __init__(self, channels: int, decay: float, warmup_frames: int,
                 settings: LevelsSettings = LevelsSettings()) -> None:
        self.channels = channels
        self.decay = decay
        self.warmup_frames = max(warmup_frames, 1)
        self.settings = settings
        self.reset()

    def reset(self) -> None:
        self.histogram = LevelHistogram(self.channels)
        self.frames = 0
        self._table: LevelTable | None = None

    def apply(self, logmag: np.ndarray, style: np.ndarray, strength: float) -> np.ndarray:
        """Fold ``(..., channels, frames)`` into the histogram; return it with its quiet levels mapped."""
        levels = _channels_first(to_db(logmag))
        self.histogram.add(levels, self.decay)
        self.frames += logmag.shape[-1]
        trust = strength * ramp_in(self.frames, self.warmup_frames)
        if trust <= 0:
            return logmag
        if self._table is None or self._table.shares is not style:  # a new style (or a crossfade's mixture)
            self._table = LevelTable(style)
        mapped = self._table.level_at(self.histogram.percentiles(levels))
        quiet = quiet_share(levels, self._table.top, self.settings.quiet_db, self.settings.blend_db)
        out = levels + trust * quiet * (mapped - levels)
        shape = (logmag.shape[-2], *logmag.shape[:-2], logmag.shape[-1])
        return np.moveaxis(from_db(out).reshape(shape), 0, -2)


class Levels(Stage):
    """The quiet-level map as a stage: learns each channel's dB level histogram of the style."""

    name: ClassVar[str] = "levels"
    place: ClassVar[str] = "output"
    lifts: ClassVar[bool] = True

    def __init__(self, settings: LevelsSettings, analysis: AnalysisConfig, chunk_frames: int) -> None:
        self.chunk_frames = chunk_frames
        decay, warmup = running_window(analysis, chunk_frames, settings.window_seconds, settings.warmup_seconds)
        self.running = RunningLevelMatch(analysis.channels, decay, warmup, settings)

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        histogram = LevelHistogram(clips[0].logmag.shape[-2])
        for clip in clips:
            histogram.add_grid(clip.logmag)
        return histogram.shares()

    @classmethod
    def check(cls, feature: np.ndarray, bands: int) -> bool:
        return feature.ndim == 2 and feature.shape[-1] == BINS  # another histogram resolution is unusable here

    def reset(self) -> None:
        self.running.reset()

    def apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        return self.running.apply(data, context.features[self.name], context.pull)
