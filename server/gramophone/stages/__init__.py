"""The spectral stages around the optimiser, each behind one interface, and the chain a preset builds (no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..dsp.analysis import AnalysisConfig
from .base import Bound, Chain, Context, Learner, Stage, StyleClip
from .ceiling import Ceiling, CeilingSettings, FrameHold, FrameHoldSettings
from .colour import Colour, ColourSettings
from .full_scale import FullScale, LimiterSettings
from .levels import Levels, LevelsSettings
from .match_eq import MatchEQ, MatchEQSettings
from .voice import FormantProfile, PitchProfile, Voice, VoiceControls, VoiceSettings

# Everything a style target learns, by name: a target carries every one, so any preset can use it.
LEARNERS: dict[str, type[Learner]] = {learner.name: learner for learner in (Colour, Ceiling, Levels, FrameHold, MatchEQ,
                                                                        PitchProfile, FormantProfile)}


class StageSettings(Protocol):
    """A stage's frozen settings, as a preset lists them; ``build`` makes the stage."""

    stage: str

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> Stage | Bound: ...


def build_chain(stages: Sequence[StageSettings], ceiling: CeilingSettings | None, analysis: AnalysisConfig,
                bands: int, chunk_frames: int, sample_rate: int, live: bool) -> Chain:
    """The chain of ``stages`` (a live one takes each stage's live version), with ``ceiling`` beside it."""
    built = [settings.build(analysis, bands, chunk_frames, sample_rate) for settings in stages]
    if live:
        built = [stage for stage in (stage.live() for stage in built) if stage is not None]
    bound = None if ceiling is None else ceiling.build(analysis, bands, chunk_frames, sample_rate)
    return Chain(built, bound)


__all__ = ["LEARNERS", "Bound", "Ceiling", "CeilingSettings", "Chain", "Colour", "ColourSettings", "Context",
           "FrameHold", "FrameHoldSettings", "FullScale", "Learner", "Levels", "LevelsSettings", "LimiterSettings",
           "MatchEQ", "MatchEQSettings", "FormantProfile", "PitchProfile", "Stage", "StageSettings", "StyleClip",
           "Voice", "VoiceControls", "VoiceSettings", "build_chain"]
