"""The offline pipeline (``engine/offline.py``): length, seeds, the null transform, bad input, and each stage of the chain
as the whole clip sees it; the held-out quality test uses the real default preset, the rest the small one."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gramophone import metrics
from gramophone.audio import AudioError, load_audio
from gramophone.dsp.bands import frame_energy_db
from gramophone.stages import LevelsSettings
from gramophone.stages.levels import LevelTable, to_db
from gramophone.stages.match_eq import long_term_spectrum
from gramophone.engine.presets import get_preset
from gramophone.engine.style import learn_style
from gramophone.engine.offline import stylize
from levelutil import level_distance
from testpresets import OTHER, SMALL, lacking, quick_warm_up, without


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_stylize_keeps_length_and_is_deterministic(clips, style_a):
    audio, rate = clips["content"]
    first = stylize(audio, rate, style_a, SMALL, seed=0)
    second = stylize(audio, rate, style_a, SMALL, seed=0)
    assert first.audio.shape == audio.shape and first.sample_rate == rate
    assert first.optimisation.iterations == SMALL.iterations
    np.testing.assert_array_equal(first.audio, second.audio)
    assert np.abs(first.audio - audio).max() > 1e-3  # it did something


def test_stylize_from_noise_depends_on_the_seed_only(clips, style_a):
    audio, rate = clips["content"]
    preset = SMALL.with_overrides(init="noise", iterations=3, phase="griffinlim", griffin_lim_iterations=4,
                                  griffin_lim_init="random")
    a, b = (stylize(audio, rate, style_a, preset, seed=s).audio for s in (5, 5))
    c = stylize(audio, rate, style_a, preset, seed=6).audio
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_stylize_with_style_weight_zero_returns_the_content(clips, style_a):
    audio, rate = clips["content"]
    result = stylize(audio, rate, style_a, SMALL.with_overrides(style_weight=0.0, iterations=2), seed=0)
    np.testing.assert_allclose(result.audio, audio, atol=1e-4)


def test_stylize_output_never_passes_full_scale(clips, style_a):
    """At style weight 0 the output is the content resynthesised: a passage over full scale
    comes out at full scale, and the rest as it went in."""
    audio, rate = clips["content"]
    loud = audio * (1.6 / np.abs(audio).max())
    out = stylize(loud, rate, style_a, SMALL.with_overrides(style_weight=0.0, iterations=2), seed=0).audio
    assert np.abs(out).max() <= 1.0 + 1e-6
    untouched = np.abs(out - loud) < 1e-4
    assert 0.2 < untouched.mean() < 1  # measured: 0.79 of the samples


def test_stylize_rejects_a_target_of_other_settings(clips):
    target = learn_style([clips["style"]], OTHER)
    with pytest.raises(ValueError, match="other analysis or network settings"):
        stylize(*clips["content"], target, SMALL)


def test_stylize_rejects_bad_content(clips, style_a):
    with pytest.raises(AudioError):
        stylize(np.zeros((1, 22050), dtype=np.float32), 22050, style_a, SMALL)
    with pytest.raises(AudioError):
        stylize(clips["content"][0][:, :100], 22050, style_a, SMALL)


def test_style_distance_on_rendered_audio_falls_under_held_out_evaluators(speech_pair):
    """The real default preset on the espeak pair, judged by networks it never optimised.

    Both the shipped recipe (colouring, then gram steps) and the gram steps on their own
    (no colouring) must move the rendered audio toward the style, so neither only fools
    the engine's own networks.
    """
    preset = get_preset("default")
    content, rate = load_audio(speech_pair[0])
    style, style_rate = load_audio(speech_pair[1])
    target = learn_style([(style, style_rate)], preset)

    def report(**overrides) -> metrics.QualityReport:
        result = stylize(content, rate, target, preset.with_overrides(**overrides))
        return metrics.measure(content[0], style[0], result.audio[0], rate, style_rate=style_rate)

    shipped = report(iterations=20)
    grams_only = report(iterations=20, colour=0.0)
    print(f"held-out gain: colour + grams {shipped.held_out_gain:.3f}, grams only {grams_only.held_out_gain:.3f}")
    assert shipped.held_out_gain > 0.05, shipped
    assert grams_only.held_out_gain > 0.05, grams_only
    assert shipped.mfcc_gain > 0.05 and grams_only.mfcc_gain > 0.05
    assert shipped.stoi > 0.6


def test_stylize_equalises_the_quiet_bins_toward_the_style_spectrum(clips, style_a):
    """Offline, the rendered clip's long-term spectrum ends closer to the style's than without the match EQ."""
    audio, rate = clips["content"]
    spectra = {flag: long_term_spectrum(stylize(audio, rate, style_a, (SMALL if flag else without(SMALL, "match_eq"))).audio,
                                        rate)[0] for flag in (False, True)}
    distance = {flag: float(np.abs(spectrum - style_a.features["match_eq"]).mean()) for flag, spectrum in spectra.items()}
    assert distance[True] < 0.8 * distance[False], distance
    dry = stylize(audio, rate, style_a, dataclasses.replace(SMALL, style_weight=0.0))
    unequalised = stylize(audio, rate, style_a, dataclasses.replace(without(SMALL, "match_eq"), style_weight=0.0))
    np.testing.assert_array_equal(dry.audio, unequalised.audio)  # style weight 0: no EQ either


def test_stylize_holds_the_output_under_the_style_range(clips):
    """A style far quieter than the content: colouring and steps alone would leave it loud."""
    style_audio, style_rate = clips["style"]
    quiet = learn_style([(style_audio * 0.01, style_rate)], SMALL, name="quiet")
    audio, rate = clips["content"]
    held = stylize(audio, rate, quiet, SMALL)
    assert np.all(held.output_logmag <= quiet.features["ceiling"][:, None] + 1e-6)
    free = stylize(audio, rate, quiet, without(SMALL, "ceiling", "frame_hold"))
    assert np.sqrt(np.mean(held.audio**2)) < 0.2 * np.sqrt(np.mean(free.audio**2))


def test_stylize_holds_every_frame_under_the_style_loudest(chord_and_arpeggio):
    chord, arpeggio, rate = chord_and_arpeggio
    style = learn_style([(arpeggio, rate)], SMALL, name="arpeggio")
    held = stylize(chord, rate, style, SMALL)
    assert frame_energy_db(held.output_logmag).max() <= style.features["frame_hold"] + 1e-3
    free = stylize(chord, rate, lacking(style, "frame_hold"), SMALL)  # as an older target
    assert frame_energy_db(free.output_logmag).max() > style.features["frame_hold"] + 4  # measured: 6.1 dB over


def test_stylize_maps_the_quiet_levels_toward_the_style_and_leaves_the_loud_ones(clips, style_a):
    preset = quick_warm_up(SMALL, 0.1)  # two-second clips: no long ramp-in
    style_a = lacking(style_a, "frame_hold")  # the frame bound scales whole frames: not this test's
    audio, rate = clips["content"]
    mapped = stylize(audio, rate, style_a, preset).output_logmag
    plain = stylize(audio, rate, style_a, without(preset, "levels")).output_logmag
    loud = to_db(plain) >= LevelTable(style_a.features["levels"]).top - LevelsSettings().quiet_db + LevelsSettings().blend_db
    assert loud.any() and (~loud).any()
    np.testing.assert_allclose(mapped[loud], plain[loud], atol=1e-4)
    assert level_distance(mapped, style_a) < 0.75 * level_distance(plain, style_a)  # measured: 0.57
