"""One interface for the spectral stages around the optimiser, and the chain that runs them.

In the spirit of pedalboard's plugins and JUCE's AudioProcessor, a stage

- learns what it needs from a style's clips (``learn``: one array, or nothing),
- combines that for a mixture of styles (``mix``) and checks it when a file is loaded (``check``),
- forgets its running state between songs (``reset``),
- and applies itself (``apply``) given the *pull*, ``min(style_weight, 1)``: how far the
  stages go toward the style (beyond 1 only the optimiser's steps pull harder).

A live chain holds each stage's ``live()`` version (itself, a running one, or none for a stage
that needs the whole clip), and every stage hears the audio the chain delivered (``listen``).

A stage has a place in the flow: ``"spectrum"`` stages edit the complex STFT frames before
they are analysed (the pitch and formant shift: the chain then treats their output as the
content), ``"anchor"`` stages edit the analysis frames before the optimiser, ``"output"`` stages edit the optimised frames, ``"audio"`` stages the
resynthesised samples. Running stages (``chunk_frames``) keep statistics across chunks, so
offline they step through a clip chunk by chunk, as a live stream does. A stage that may
raise a bin (``lifts``) is followed by the ceiling, the bound beside the chain: see
``Chain``. Each stage's tuned constants are a frozen settings dataclass whose ``build``
makes the stage; a preset lists those settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from ..dsp.analysis import AnalysisConfig
from ..dsp.bands import BandStats

PLACES = ("spectrum", "anchor", "output", "audio")


@dataclass(frozen=True)
class StyleClip:
    """One style clip as the stages learn from it."""

    audio: np.ndarray  # (audio channels, samples)
    sample_rate: int
    logmag: np.ndarray  # (audio channels, grid channels, frames): the analysis grid
    band_frames: np.ndarray  # (audio channels, bands, frames): the grid's mel band averages
    frame_db: np.ndarray  # (audio channels, frames): each frame's energy in dB (dsp.bands.frame_energy_db)
    analysis: AnalysisConfig


@dataclass(frozen=True)
class VoiceControls:
    """The pitch and formant controls (the live parameters of the same names, or a preset's offline)."""

    pitch: float = 0.0  # semitones
    formant: float = 0.0  # semitones of envelope shift
    pitch_follow: float = 0.0  # 0–1 of the way from the content's median F0 to the style's
    formant_follow: float = 0.0  # 0–1 of the way from the content's formants to the style's


@dataclass(frozen=True)
class Context:
    """What a stage is applied with, for one chunk (or a whole clip offline)."""

    pull: float  # min(style_weight, 1), computed once by the chain
    colour: float  # the colouring's strength (the live ``colour`` parameter, or the preset's)
    bands: BandStats  # the style's band statistics
    features: Mapping[str, np.ndarray]  # what each stage learned from the style, by stage name
    content: np.ndarray  # the frames these are edited from (complex STFT frames for spectrum stages): the dry reference
    voice: VoiceControls = field(default_factory=VoiceControls)


class Learner:
    """What a stage or the bound learns from a style, and how it mixes and loads."""

    name: ClassVar[str]  # its key in a style target's features and in saved files
    version: ClassVar[int] = 1  # the format of what it learns
    learns: ClassVar[bool] = True  # False: needs nothing from the style

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        """What it needs from a style's clips (all of them: every clip's frames count)."""
        raise NotImplementedError(f"{cls.name!r} learns nothing")

    @classmethod
    def mix(cls, parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        """A mixture's feature from each style's and its weight (weights sum to 1): ``Σ wᵢ·xᵢ``."""
        return sum(weight * feature for feature, weight in parts).astype(np.float32)

    @classmethod
    def check(cls, feature: np.ndarray, bands: int) -> bool:
        """Whether a loaded feature is usable with a target of ``bands`` colouring bands."""
        return bool(np.all(np.isfinite(feature)))

    @classmethod
    def ready(cls, features: Mapping[str, np.ndarray]) -> bool:
        """Whether it can run with a style's features (an older file may lack its own: it is then skipped)."""
        return not cls.learns or cls.name in features


class Stage(Learner):
    """A spectral stage: see the module docstring."""

    place: ClassVar[str]
    lifts: ClassVar[bool] = False  # may raise a bin above what it was given
    offline_only: ClassVar[bool] = False  # needs the whole rendered clip
    chunk_frames: int | None = None  # running stages: the frames of each step through a clip

    def reset(self) -> None:
        """Forget the running state (between songs)."""

    def live(self) -> "Stage | None":
        """This stage in a live chain: itself, a running version, or None when it needs the whole clip."""
        return None if self.offline_only else self

    def listen(self, audio: np.ndarray) -> None:
        """Hear the ``(channels, samples)`` audio the chain delivered (live), after every audio stage."""

    def apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        """The stage applied to frames ``(..., channels, frames)`` or, for audio stages, samples."""
        raise NotImplementedError


class Bound(Learner):
    """The interface of the ceiling: an upper bound on every bin of an edit, beside the chain."""

    def limit(self, content: np.ndarray, context: Context) -> np.ndarray | None:
        """The most each bin of frames edited from ``content`` may reach; None if the style has no range."""
        raise NotImplementedError


class Chain:
    """A preset's stages in order, with the ceiling beside them.

    The ceiling bounds the anchor the optimiser starts from, the optimiser's every step
    (the engine passes ``limit`` to it), and the output of every stage that lifts bins.
    """

    def __init__(self, stages: Sequence[Stage], bound: Bound | None = None) -> None:
        for stage in stages:
            if stage.place not in PLACES:
                raise ValueError(f"stage {stage.name!r} has no place among {', '.join(PLACES)}")
        self.stages = list(stages)
        self.bound = bound

    def context(self, style_weight: float, colour: float, bands: BandStats, features: Mapping[str, np.ndarray],
                content: np.ndarray, voice: VoiceControls = VoiceControls()) -> Context:
        return Context(pull=min(style_weight, 1.0), colour=colour, bands=bands, features=features, content=content,
                       voice=voice)

    def reset(self) -> None:
        for stage in self.stages:
            stage.reset()

    def listen(self, audio: np.ndarray) -> None:
        """Every stage hears the audio the chain delivered."""
        for stage in self.stages:
            stage.listen(audio)

    def limit(self, context: Context) -> np.ndarray | None:
        """The ceiling's bound on frames edited from ``context.content``, or None."""
        return None if self.bound is None else self.bound.limit(context.content, context)

    def run(self, place: str, data: np.ndarray, context: Context, limit: np.ndarray | None = None) -> np.ndarray:
        """``data`` through every stage at ``place`` whose style feature is there, bounded by ``limit``.

        The bound follows every stage that lifts bins, and the anchor, where the optimiser
        starts, always lies within it. A running stage steps through frames longer than its
        chunk chunk by chunk (offline).
        """
        bounded = place != "anchor"  # the anchor's input, the dry analysis, may lie above the bound
        for stage in self.stages:
            if stage.place != place or not stage.ready(context.features):
                continue
            data = _stepped(stage, data, context)
            if stage.lifts and limit is not None:
                data, bounded = np.minimum(data, limit), True
        return data if bounded or limit is None else np.minimum(data, limit)


def _stepped(stage: Stage, data: np.ndarray, context: Context) -> np.ndarray:
    """The stage over ``data``, chunk by chunk when it keeps running statistics."""
    step = stage.chunk_frames
    if step is None or stage.place == "audio" or data.shape[-1] <= step:
        return stage.apply(data, context)
    parts = []
    for start in range(0, data.shape[-1], step):
        part = replace(context, content=context.content[..., start:start + step])
        parts.append(stage.apply(data[..., start:start + step], part))
    return np.concatenate(parts, axis=-1)


def ramp_in(frames: int, warmup_frames: int) -> float:
    """How far a running stage trusts its statistics after ``frames`` frames: 0 → 1 over the warm-up."""
    return min(1.0, frames / max(warmup_frames, 1))


def open_to_dry(bound: np.ndarray, content: np.ndarray, strength: float) -> np.ndarray:
    """A bound at ``strength`` 0–1: itself at 1, never under the content at 0 (the dry signal passes), a blend between."""
    return strength * bound + (1 - strength) * np.maximum(bound, content)


def quiet_share(level_db: np.ndarray, top_db: float, quiet_db: float, blend_db: float) -> np.ndarray:
    """1 for levels ``quiet_db`` or more under ``top_db``, 0 from ``blend_db`` closer to it, a straight blend between."""
    return np.clip((top_db - quiet_db - level_db) / blend_db + 1.0, 0.0, 1.0)
