"""The style's range: the most each frequency channel, and each frame, of the output may reach.

Colouring and gram steps can push a channel far above anything the style ever plays
there: a note onset coloured from thin running statistics, or a content note the style
never holds. Offline, outputs peaked at 2–3× full scale on the benchmark's pairs
(docs/research-log.md). The ceiling is the style's own loudest log1p magnitude in each
channel, widened to the channels within ``SPREAD_HZ`` so a note a little off the style's
pitches is not cut; the output is held under it (``Ceiling``, the bound beside the chain
and inside the optimiser). Held channel by channel, every channel may still reach its
ceiling in the same frame, which the style never does: a live stream's opening second
peaked at 1.9× full scale. So each frame's energy is held, too, under the style's loudest
frame (``FrameHold``, a stage of the chain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from scipy.ndimage import maximum_filter1d

from ..dsp.analysis import AnalysisConfig
from ..dsp.bands import frame_energy_db
from .base import Bound, Context, Stage, StyleClip, open_to_dry

# The widening a style target is learned with; fixed by the target's format, since one target
# serves every preset with its analysis. ±8 channels at the default 21.5 Hz spacing; measured
# against ±4 and ±2 (docs/research-log.md).
SPREAD_HZ = 172.0


def style_ceiling(peaks: np.ndarray, window_ms: float) -> np.ndarray:
    """Widen per-channel peaks ``(channels,)`` to the highest within ``SPREAD_HZ`` of each channel.

    ``window_ms`` sets the channel spacing (``1000 / window_ms`` Hz).
    """
    reach = int(round(SPREAD_HZ * window_ms / 1000))
    return maximum_filter1d(np.asarray(peaks, dtype=np.float32), size=2 * reach + 1, mode="nearest")


def ceiling_limit(content: np.ndarray, ceiling: np.ndarray, strength: float) -> np.ndarray:
    """The upper bound for an edit of ``content`` ``(..., channels, frames)`` at ``strength`` 0–1.

    At full strength the ceiling itself; at 0 nothing below the content, so the dry
    signal passes untouched; in between, a straight blend of the two.
    """
    return open_to_dry(ceiling[:, None].astype(np.float32), content, strength).astype(np.float32)


def hold_frames(logmag: np.ndarray, content: np.ndarray, loudest_db: np.ndarray | float, strength: float) -> np.ndarray:
    """``logmag`` with every frame louder than the style's loudest scaled down to it.

    A frame's magnitudes are scaled alike, so its spectral shape stays; frames under the
    bound are returned unchanged. At ``strength`` 0 the bound opens to the content's own
    frame energy (``content``, same shape), so the dry signal passes; in between, a
    straight blend in dB, as ``ceiling_limit`` blends.
    """
    energy = frame_energy_db(logmag)
    bound = open_to_dry(loudest_db, frame_energy_db(content), strength)
    over = np.maximum(energy - bound, 0.0)[..., None, :]
    if not over.any():
        return logmag
    held = np.log1p(np.expm1(np.maximum(logmag, 0.0)) * 10 ** (-over / 20)).astype(np.float32)
    return np.where(over > 0, held, logmag)


@dataclass(frozen=True)
class CeilingSettings:
    """The per-channel ceiling: it has no setting of its own beyond what the target learns (``SPREAD_HZ``)."""

    stage: ClassVar[str] = "ceiling"

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "Ceiling":
        return Ceiling()


class Ceiling(Bound):
    """The style's widened peak per channel, as an upper bound on every edit."""

    name: ClassVar[str] = "ceiling"

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        peaks = np.max([clip.logmag.max(axis=(0, 2)) for clip in clips], axis=0)
        return style_ceiling(np.maximum(np.zeros_like(peaks), peaks), clips[0].analysis.window_ms)

    def limit(self, content: np.ndarray, context: Context) -> np.ndarray | None:
        peaks = context.features.get(self.name)
        return None if peaks is None else ceiling_limit(content, peaks, context.pull)


@dataclass(frozen=True)
class FrameHoldSettings:
    """The frame bound: no frame louder than the style's loudest. Nothing to tune."""

    stage: ClassVar[str] = "frame_hold"

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "FrameHold":
        return FrameHold()


class FrameHold(Stage):
    """Every output frame held under the style's loudest frame energy (``hold_frames``)."""

    name: ClassVar[str] = "frame_hold"
    place: ClassVar[str] = "output"

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        return np.array(max(float(clip.frame_db.max()) for clip in clips), dtype=np.float32)

    def apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        return hold_frames(data, context.content, context.features[self.name], context.pull)
