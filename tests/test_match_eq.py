"""The match EQ of the quiet bins (match_eq.py): what it learns, what it moves and what it leaves."""

import librosa
import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from gramophone.stages.match_eq import MEL_BANDS, long_term_spectrum, match_spectrum

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
