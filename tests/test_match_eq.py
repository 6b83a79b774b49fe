"""The match EQ of the quiet bins (match_eq.py): what it learns, what it moves and what it leaves, offline and live."""

import dataclasses

import librosa
import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from gramophone import Parameters, StreamProcessor, get_preset, learn_style
from gramophone.dsp.analysis import AnalysisConfig, analyse
from gramophone.stages.base import Context
from gramophone.stages.match_eq import (MEL_BANDS, MatchEQSettings, RunningMatchEQ, long_term_spectrum,
                                        match_spectrum)

RATE = 22050


def _noise(seconds: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(int(seconds * RATE))


def _lowpassed(audio: np.ndarray, cutoff_hz: float, order: int = 4) -> np.ndarray:
    return sosfilt(butter(order, cutoff_hz, fs=RATE, output="sos"), audio)


def _tone_over_floor(floor: np.ndarray) -> np.ndarray:
    """A loud 440 Hz tone with ``floor`` (already quiet) under it: ``(1, samples)``."""
    time = np.arange(floor.size) / RATE
    return (0.5 * np.sin(2 * np.pi * 440.0 * time) + floor)[None].astype(np.float32)


def _shape_distance(spectrum: np.ndarray, style: np.ndarray) -> float:
    """Mean absolute dB difference of two spectra's shapes over the bands given (each band set's own mean left out)."""
    difference = spectrum - style
    return float(np.abs(difference - difference.mean()).mean())


def _tone_level_db(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio[0] * np.hanning(audio.shape[-1])))
    return 20 * np.log10(spectrum[round(440.0 * audio.shape[-1] / RATE)])


def test_the_long_term_spectrum_is_a_shape_in_mel_bands():
    white, frames = long_term_spectrum(_noise(2, 0)[None], RATE)
    dark, _ = long_term_spectrum(_lowpassed(_noise(2, 1), 1000.0)[None], RATE)
    assert white.shape == (MEL_BANDS,) and white.dtype == np.float32 and frames > 40
    assert abs(float(white.mean())) < 1e-4 and abs(float(dark.mean())) < 1e-4  # loudness left out
    louder, _ = long_term_spectrum(10 * _noise(2, 0)[None], RATE)
    np.testing.assert_allclose(louder, white, atol=1e-3)
    assert dark[-20:].mean() < white[-20:].mean() - 20  # a low-pass shows as a falling top
    np.testing.assert_allclose(white[20:], white[20:].mean(), atol=3.0)  # white noise: flat on a mel scale above the lowest bands


def test_it_moves_the_quiet_floor_toward_the_style_and_leaves_loud_bins():
    floor = 1e-2 * _noise(4, 2)  # each bin 65 dB under the tone: "quiet", yet within the bands' 80 dB range
    audio = _tone_over_floor(floor)
    style, _ = long_term_spectrum(_lowpassed(_noise(4, 3), 1500.0, order=1)[None], RATE)  # a gentle tilt
    matched = match_spectrum(audio, RATE, style)
    assert matched.shape == audio.shape and matched.dtype == np.float32
    away = librosa.mel_frequencies(MEL_BANDS + 2, fmax=RATE / 2)[1:-1] > 1000.0  # bands the tone does not reach
    before, after = (_shape_distance(long_term_spectrum(clip, RATE)[0][away], style[away]) for clip in (audio, matched))
    assert after < 0.5 * before, (before, after)
    assert abs(_tone_level_db(matched) - _tone_level_db(audio)) < 0.1  # the loud tone keeps its level


def test_a_loud_band_is_not_touched():
    """Noise within the quiet range (MatchEQSettings.quiet_db) of the loudest bin is not "quiet": the EQ leaves it, and moves only the dark top."""
    audio = _lowpassed(_noise(3, 4), 2000.0)[None].astype(np.float32)
    bright, _ = long_term_spectrum(_noise(3, 5)[None], RATE)
    matched = match_spectrum(audio, RATE, bright)
    power, matched_power = np.abs(np.fft.rfft(audio[0])) ** 2, np.abs(np.fft.rfft(matched[0])) ** 2
    hertz = np.fft.rfftfreq(audio.shape[-1], 1 / RATE)
    loud, dark = (hertz > 200) & (hertz < 1000), hertz > 8000
    np.testing.assert_allclose(matched_power[loud].sum(), power[loud].sum(), rtol=0.01)
    assert matched_power[dark].sum() > 10 * power[dark].sum()  # the premise: the EQ did lift the quiet top


def test_strength_scales_it_and_zero_returns_the_audio_itself():
    audio = _tone_over_floor(1e-3 * _noise(2, 6))
    style, _ = long_term_spectrum(_lowpassed(_noise(2, 7), 1500.0)[None], RATE)
    assert match_spectrum(audio, RATE, style, strength=0.0) is audio
    distance = [np.abs(long_term_spectrum(match_spectrum(audio, RATE, style, strength), RATE)[0] - style).mean()
                for strength in (0.0, 0.5, 1.0)]
    assert distance[0] > distance[1] > distance[2]


def test_boost_scales_the_raises_only():
    """``boost`` 0: the dark top of a content darker than the style stays where it was; cuts still apply."""
    audio = _lowpassed(_noise(3, 20), 2000.0)[None].astype(np.float32)
    bright, _ = long_term_spectrum(_noise(3, 21)[None], RATE)
    hertz = np.fft.rfftfreq(audio.shape[-1], 1 / RATE)
    top = hertz > 8000
    power = (np.abs(np.fft.rfft(audio[0])) ** 2)[top].sum()
    raised = (np.abs(np.fft.rfft(match_spectrum(audio, RATE, bright)[0])) ** 2)[top].sum()
    kept = (np.abs(np.fft.rfft(match_spectrum(audio, RATE, bright, settings=MatchEQSettings(boost=0.0))[0])) ** 2)
    assert raised > 10 * power and kept[top].sum() <= 1.01 * power
    bright_floor = _tone_over_floor(1e-2 * _noise(3, 22))
    floor = (np.abs(np.fft.rfft(bright_floor[0])) ** 2)[top].sum()
    dark, _ = long_term_spectrum(_lowpassed(_noise(3, 23), 1000.0)[None], RATE)
    cut = np.abs(np.fft.rfft(match_spectrum(bright_floor, RATE, dark, settings=MatchEQSettings(boost=0.0))[0])) ** 2
    assert cut[top].sum() < 0.1 * floor


def test_channels_share_one_equaliser():
    floor = 1e-3 * _noise(2, 8)
    mono = _tone_over_floor(floor)
    stereo = np.concatenate([mono, mono])
    style, _ = long_term_spectrum(_lowpassed(_noise(2, 9), 1500.0)[None], RATE)
    matched = match_spectrum(stereo, RATE, style)
    np.testing.assert_allclose(matched[0], matched[1], atol=1e-6)
    np.testing.assert_allclose(matched[:1], match_spectrum(mono, RATE, style), atol=1e-5)


@pytest.mark.parametrize("rate", [16000, 44100, 48000])
def test_the_spectrum_means_the_same_at_every_rate(rate):
    """A style learned at one rate equalises content at another: the bands stop at 11 kHz everywhere."""
    seconds = 2.0
    noise = np.random.default_rng(10).standard_normal(int(seconds * rate))
    at_rate, _ = long_term_spectrum(noise[None], rate)
    at_default, _ = long_term_spectrum(_noise(seconds, 10)[None], RATE)
    if rate >= 2 * 11025:
        np.testing.assert_allclose(at_rate[20:], at_default[20:], atol=2.0)
    matched = match_spectrum((0.01 * noise)[None].astype(np.float32), rate, at_default)
    assert matched.shape == (1, noise.size) and np.all(np.isfinite(matched))


@pytest.mark.filterwarnings("error")
def test_a_clip_shorter_than_one_window_is_equalised_quietly():
    audio = (0.1 * _noise(0.02, 11))[None].astype(np.float32)
    spectrum, frames = long_term_spectrum(audio, RATE)
    assert frames >= 1 and np.all(np.isfinite(spectrum))
    assert match_spectrum(audio, RATE, spectrum).shape == audio.shape


def test_a_spectrum_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="128 bands"):
        match_spectrum(np.zeros((1, RATE), dtype=np.float32), RATE, np.zeros(40))


# The live version: RunningMatchEQ, on the grid, from a running spectrum of the audio it delivered.

def _running(live_boost: float = 0.5) -> RunningMatchEQ:
    return RunningMatchEQ(MatchEQSettings(live_boost=live_boost), AnalysisConfig(), RATE)


def _context(style: np.ndarray, pull: float = 1.0) -> Context:
    return Context(pull=pull, colour=1.0, bands=None, features={"match_eq": style}, content=None)


def _grid_gain_db(eq: RunningMatchEQ, audio: np.ndarray, style: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each grid bin's dB gain from the stage on ``audio``'s own grid, after it heard ``audio``; and the grid."""
    eq.listen(audio)
    grid = analyse(audio, RATE, AnalysisConfig()).logmag
    out = eq.apply(grid, _context(style))
    before, after = np.expm1(grid), np.expm1(out)
    return 20 * np.log10(np.maximum(after, 1e-12) / np.maximum(before, 1e-12)), before


def _effect_off(audio: np.ndarray, style: np.ndarray, *stages: RunningMatchEQ) -> None:
    """``audio`` delivered to each stage half a second at a time, its grid passed with the effect off."""
    for start in range(0, audio.shape[-1], RATE // 2):
        part = audio[:, start:start + RATE // 2]
        part_grid = analyse(part, RATE, AnalysisConfig()).logmag
        for stage in stages:
            stage.listen(part)
            stage.apply(part_grid, _context(style, pull=0.0))


def test_live_it_raises_quiet_bins_by_the_boost_share_cuts_in_full_and_leaves_the_loud_ones():
    dark = _tone_over_floor(1e-2 * _lowpassed(_noise(4, 12), 1000.0))
    bright, _ = long_term_spectrum(_noise(4, 13)[None], RATE)
    hertz = np.fft.rfftfreq(AnalysisConfig().n_fft(RATE), 1 / RATE)[:AnalysisConfig().channels]
    top, tone = hertz > 4000, np.abs(hertz - 440.0) < 30
    half, _ = _grid_gain_db(_running(0.5), dark, bright)
    full, grid = _grid_gain_db(_running(1.0), dark, bright)
    assert full[..., top, :].mean() > 6  # the dark content's quiet top raised toward the bright style
    np.testing.assert_allclose(half[..., top, :].mean(), 0.5 * full[..., top, :].mean(), rtol=0.05)
    assert np.abs(full[..., tone, :][grid[..., tone, :] > 0.5 * grid.max()]).max() < 0.01  # the loud tone kept
    brighter = _tone_over_floor(1e-2 * _noise(4, 14))
    darker, _ = long_term_spectrum(_lowpassed(_noise(4, 15), 1000.0)[None], RATE)
    cut_half, _ = _grid_gain_db(_running(0.5), brighter, darker)
    cut_full, _ = _grid_gain_db(_running(1.0), brighter, darker)
    assert cut_full[..., top, :].mean() < -6
    np.testing.assert_allclose(cut_half[..., top, :], cut_full[..., top, :], atol=1e-3)


def test_live_it_waits_to_hear_the_stream_and_forgets_on_reset():
    eq = _running()
    style, _ = long_term_spectrum(_noise(2, 16)[None], RATE)
    grid = analyse(_tone_over_floor(1e-2 * _lowpassed(_noise(3, 17), 1000.0)), RATE, AnalysisConfig()).logmag
    assert eq.apply(grid, _context(style)) is grid  # nothing delivered yet: nothing to equalise from
    eq.listen(_tone_over_floor(1e-2 * _lowpassed(_noise(3, 17), 1000.0)))
    assert eq.apply(grid, _context(style, pull=0.0)) is grid  # the effect off: the frames themselves
    assert not np.allclose(eq.apply(grid, _context(style)), grid)
    eq.reset()
    assert eq.apply(grid, _context(style)) is grid


def test_live_after_a_stretch_with_the_effect_off_it_equalises_from_what_it_heard_then():
    """While the effect is off the delivered audio carries no gain, so none is taken back out of it:
    back on, the stage acts as one that heard only that stretch."""
    style, _ = long_term_spectrum(_noise(2, 24)[None], RATE)
    dark = _tone_over_floor(1e-2 * _lowpassed(_noise(24, 25), 1000.0))
    grid = analyse(dark[:, :RATE], RATE, AnalysisConfig()).logmag
    used, fresh = _running(), _running()
    used.listen(dark[:, :4 * RATE])
    for _ in range(20):
        used.apply(grid, _context(style))  # a gain applied and recorded
    _effect_off(dark[:, 4 * RATE:], style, used, fresh)  # 20 s: nothing applied
    np.testing.assert_allclose(used.apply(grid, _context(style)), fresh.apply(grid, _context(style)), atol=0.05)


def test_live_the_gain_ramps_in_over_the_warm_up_of_delivered_audio():
    """Half the warm-up heard: about half the gain in dB; the whole warm-up: the gain of a stage with none."""
    style, _ = long_term_spectrum(_noise(2, 28)[None], RATE)
    dark = _tone_over_floor(1e-2 * _lowpassed(_noise(3, 29), 1000.0))
    grid = analyse(dark, RATE, AnalysisConfig()).logmag

    def gain_db(warmup_seconds: float, heard_seconds: float) -> np.ndarray:
        eq = RunningMatchEQ(MatchEQSettings(warmup_seconds=warmup_seconds), AnalysisConfig(), RATE)
        eq.listen(dark[:, :round(heard_seconds * RATE)])
        return 20 * np.log10(np.maximum(np.expm1(eq.apply(grid, _context(style))), 1e-12)
                             / np.maximum(np.expm1(grid), 1e-12))

    whole = gain_db(0.0, 2.2)  # 2 s of analysis frames: the first frame takes a whole 93 ms window
    assert np.abs(whole).max() > 6  # the premise: there is a gain to ramp in
    np.testing.assert_allclose(gain_db(2.0, 2.2), whole, atol=1e-4)
    unramped = gain_db(0.0, 1.0)
    halfway = gain_db(2.0, 1.0) / np.where(np.abs(unramped) > 1, unramped, np.nan)
    assert 0.4 < np.nanmedian(halfway) < 0.6


def test_live_a_loud_stretch_before_the_effect_went_off_is_forgotten_while_off():
    """The quiet bins are judged against the loudest grid bin of the last ``window_seconds``, the
    frames passed while the effect was off included: 20 s later a loud start no longer counts."""
    style, _ = long_term_spectrum(_noise(2, 30)[None], RATE)
    dark = _tone_over_floor(1e-2 * _lowpassed(_noise(22, 31), 1000.0))
    grid = analyse(dark[:, :RATE], RATE, AnalysisConfig()).logmag
    loud = np.log1p(np.expm1(grid) * 1000.0)  # 60 dB louder
    used, fresh = _running(), _running()
    used.listen(dark[:, :2 * RATE])
    used.apply(loud, _context(style))
    _effect_off(dark[:, 2 * RATE:], style, used, fresh)
    np.testing.assert_allclose(used.apply(grid, _context(style)), fresh.apply(grid, _context(style)), atol=0.05)


@pytest.mark.parametrize("setting", [{"blend_db": 0.0}, {"live_max_db": -3.0}, {"window_seconds": 0.0},
                                     {"warmup_seconds": -1.0}, {"live_boost": -0.5}])
def test_settings_out_of_range_are_refused(setting):
    with pytest.raises(ValueError):
        MatchEQSettings(**setting)


def test_live_a_gain_the_audio_never_shows_stays_within_its_bound():
    """Heard once, then applied again and again with nothing new delivered (as where resynthesis
    delivers none of the gain): the gain grows toward the style, but no bin's beyond ``live_max_db``."""
    style, _ = long_term_spectrum(_noise(2, 26)[None], RATE)
    dark = _tone_over_floor(1e-2 * _lowpassed(_noise(3, 27), 1000.0))
    grid = analyse(dark, RATE, AnalysisConfig()).logmag

    def gains(bound: float) -> list[float]:
        eq = RunningMatchEQ(MatchEQSettings(live_max_db=bound), AnalysisConfig(), RATE)
        eq.listen(dark)
        outs = [eq.apply(grid, _context(style)) for _ in range(100)]
        return [float((20 * np.log10(np.maximum(np.expm1(out), 1e-12) / np.maximum(np.expm1(grid), 1e-12))).max())
                for out in (outs[0], outs[-1])]

    free, bound = gains(30.0), gains(3.0)
    assert free[1] > free[0] + 3 and free[1] > 6  # the premise: unheld, it grows past 3 dB
    assert max(bound) <= 3.0 + 1e-3


def test_live_in_a_stream_it_moves_the_delivered_spectrum_toward_the_styles():
    """Through a real stream (render mode, the EQ alone of the stages): with it, the output's long-term
    spectrum away from the loud tone ends nearer the style's than without it, and the first chunks,
    before it has heard anything, are untouched."""
    content = _tone_over_floor(1e-2 * _noise(8, 18))
    style_clip = (0.3 * _lowpassed(_noise(4, 19), 1000.0))[None].astype(np.float32)
    preset = get_preset("default")
    only_eq = dataclasses.replace(preset, stages=tuple(s for s in preset.stages if s.stage in ("match_eq", "limiter")))
    without = dataclasses.replace(preset, stages=tuple(s for s in preset.stages if s.stage == "limiter"))
    style = learn_style([(style_clip, RATE)], preset)
    outputs = []
    for chosen in (only_eq, without):
        params = Parameters()
        params.set("iterations", 0)
        outputs.append(StreamProcessor(params, style, chosen, mode="render").process(content, RATE, block_size=512))
    with_eq, without_eq = outputs
    away = librosa.mel_frequencies(MEL_BANDS + 2, fmax=11025.0)[1:-1] > 1500.0
    target = style.features["match_eq"][away]
    last = slice(-4 * RATE, None)
    distance = [_shape_distance(long_term_spectrum(out[:, last], RATE)[0][away], target) for out in outputs]
    assert distance[0] < 0.5 * distance[1], distance
    np.testing.assert_array_equal(with_eq[:, :RATE // 10], without_eq[:, :RATE // 10])


def test_live_its_numpy_work_runs_on_one_blas_thread(monkeypatch):
    """Spinning OpenBLAS threads took the cores from a server's steps: the stage's work holds BLAS to one."""
    from threadpoolctl import threadpool_info

    from gramophone.stages import match_eq

    seen = []
    add = match_eq.RunningMean.add

    def recording(self, rows, decay):
        seen.append([pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"])
        add(self, rows, decay)

    monkeypatch.setattr(match_eq.RunningMean, "add", recording)
    eq = _running()
    audio = _tone_over_floor(1e-2 * _noise(3, 28))
    style, _ = long_term_spectrum(_noise(2, 29)[None], RATE)
    eq.listen(audio)
    eq.apply(analyse(audio, RATE, AnalysisConfig()).logmag, _context(style))
    assert len(seen) == 2 and all(threads and set(threads) == {1} for threads in seen)
