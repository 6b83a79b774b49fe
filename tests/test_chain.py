"""The chain of spectral stages (``stages/base.py``): order, the bound beside it, features, settings from presets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gramophone.dsp.analysis import AnalysisConfig
from gramophone.dsp.bands import BandStats
from gramophone.engine.presets import get_preset
from gramophone.stages import (LEARNERS, Ceiling, Chain, ColourSettings, FrameHold, LevelsSettings, Stage,
                               build_chain)
from testpresets import SMALL

CONFIG = AnalysisConfig()


class Lift(Stage):
    """A test stage that raises every bin by a fixed amount and records the chunks it saw."""

    name = "lift"
    place = "output"
    lifts = True
    learns = False

    def __init__(self, amount: float, chunk_frames: int | None = None) -> None:
        self.amount, self.chunk_frames, self.seen = amount, chunk_frames, []

    def apply(self, data: np.ndarray, context) -> np.ndarray:
        self.seen.append(data.shape[-1])
        return data + self.amount


def context_for(chain: Chain, content: np.ndarray, features: dict, style_weight: float = 1.0):
    bands = BandStats(mean=np.zeros(4), covariance=np.eye(4), count=1.0)
    return chain.context(style_weight, 1.0, bands, features, content)


def test_the_bound_follows_every_stage_that_lifts_and_the_pull_is_computed_once():
    content = np.zeros((1, 3, 5), dtype=np.float32)
    chain = Chain([Lift(2.0), Lift(2.0)], Ceiling())
    context = context_for(chain, content, {"ceiling": np.array([1.0, 3.0, 5.0], dtype=np.float32)}, style_weight=7.0)
    assert context.pull == 1.0
    limit = chain.limit(context)
    out = chain.run("output", content, context, limit)
    np.testing.assert_array_equal(out[0, :, 0], [1.0, 3.0, 4.0])  # 0 + 2 → under 1, 3, 5; then + 2 → under 1, 3, 5
    assert chain.run("anchor", content + 9, context, limit).max() == 5.0  # the optimiser starts within the bound


def test_a_stage_runs_only_at_its_place_and_a_running_one_steps_chunk_by_chunk():
    lift = Lift(1.0, chunk_frames=4)
    chain = Chain([lift])
    context = context_for(chain, np.zeros((1, 3, 10), dtype=np.float32), {})
    np.testing.assert_array_equal(chain.run("anchor", context.content, context), context.content)
    assert lift.seen == []
    assert np.all(chain.run("output", context.content, context) == 1.0)
    assert lift.seen == [4, 4, 2]


def test_a_stage_whose_feature_the_style_lacks_is_skipped():
    loud = np.full((1, 3, 2), 8.0, dtype=np.float32)
    chain = Chain([FrameHold()])
    held = chain.run("output", loud, context_for(chain, loud, {"frame_hold": np.array(0.0, dtype=np.float32)}))
    assert held.max() < loud.max()
    np.testing.assert_array_equal(chain.run("output", loud, context_for(chain, loud, {})), loud)


def test_every_stage_a_target_carries_has_a_learner_and_mixes_by_weight():
    assert set(LEARNERS) == {"colour", "ceiling", "levels", "frame_hold", "match_eq", "pitch", "formant"}
    a, b = np.zeros(4, dtype=np.float32), np.ones(4, dtype=np.float32)
    np.testing.assert_allclose(LEARNERS["ceiling"].mix([(a, 0.25), (b, 0.75)]), 0.75)


def test_a_preset_lists_its_stages_and_their_settings():
    default = get_preset("default")
    assert [settings.stage for settings in default.stages] == ["voice", "colour", "levels", "frame_hold", "match_eq",
                                                               "limiter"]
    assert default.ceiling is not None and default.colour == 1.0
    quieter = default.with_stage("levels", quiet_db=20.0)
    assert quieter.stage("levels") == LevelsSettings(quiet_db=20.0) and default.stage("levels") == LevelsSettings()
    assert default.with_overrides(colour=0.5).stage("colour") == dataclasses.replace(default.stage("colour"), strength=0.5)
    with pytest.raises(ValueError, match="no colour stage"):
        get_preset("article").with_stage("colour", strength=1.0)
    with pytest.raises(ValueError, match="each stage once"):
        dataclasses.replace(default, stages=(ColourSettings(), ColourSettings()))


class WholeClip(Lift):
    """A test stage that needs the whole clip and has no live version."""

    name = "whole_clip"
    offline_only = True


@dataclasses.dataclass(frozen=True)
class WholeClipSettings:
    stage = "whole_clip"

    def build(self, analysis, bands, chunk_frames, sample_rate) -> Stage:
        return WholeClip(0.0)


def test_a_live_chain_takes_each_stages_live_version():
    def chain(live: bool, stages=SMALL.stages) -> Chain:
        return build_chain(stages, SMALL.ceiling, SMALL.analysis, SMALL.colour_bands, 8, 22050, live=live)

    names = ["voice", "colour", "levels", "frame_hold", "match_eq", "limiter"]
    offline, live = chain(live=False), chain(live=True)
    assert [stage.name for stage in offline.stages] == names == [stage.name for stage in live.stages]
    assert [type(stage).__name__ for stage in offline.stages][4] == "MatchEQ"  # on the rendered audio
    eq = live.stages[4]
    assert type(eq).__name__ == "RunningMatchEQ" and eq.place == "output" and eq.lifts  # on the grid, bounded
    with_whole_clip = chain(live=True, stages=(*SMALL.stages, WholeClipSettings()))
    assert [stage.name for stage in with_whole_clip.stages] == names  # none: it is left out
    assert [stage.name for stage in chain(live=False, stages=(WholeClipSettings(),)).stages] == ["whole_clip"]
    low = get_preset("low-latency")  # its grid is too coarse for the live EQ: a stream leaves it out
    low_chain = build_chain(low.stages, low.ceiling, low.analysis, low.colour_bands, 2, 48000, live=True)
    assert "match_eq" not in [stage.name for stage in low_chain.stages]


def test_a_stage_setting_from_the_preset_changes_the_output(clips, style_a):
    """The quiet-level map's range is a setting: mapping nothing leaves the output as without the stage
    (but for the dB round trip, which reads a negative log1p magnitude as silence)."""
    from gramophone.engine.offline import stylize
    from testpresets import lacking

    audio, rate = clips["content"]
    style = lacking(style_a, "frame_hold")
    mapped = stylize(audio, rate, style, SMALL).output_logmag
    nothing_quiet = stylize(audio, rate, style, SMALL.with_stage("levels", quiet_db=200.0)).output_logmag
    without = stylize(audio, rate, lacking(style, "levels"), SMALL).output_logmag
    assert not np.allclose(mapped, nothing_quiet)
    np.testing.assert_allclose(nothing_quiet, np.maximum(without, 0.0), atol=1e-4)
