"""Analysis and resynthesis (``dsp/analysis.py``): sizes in time, rate-independent calibration, exact
resynthesis, the filled bins' phase, the top band, Griffin-Lim."""

from __future__ import annotations

import numpy as np
import pytest

from gramophone.dsp.analysis import FILL_FULL, FILL_START, AnalysisConfig, analyse, fill_phase, griffin_lim, synthesise


RATES = (16000, 22050, 44100, 48000)
CONFIG = AnalysisConfig()


def tone(rate: int, freq: float = 1000.0, seconds: float = 0.5, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)[np.newaxis]


def noise(rate: int, seconds: float = 0.5, channels: int = 1, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal((channels, int(rate * seconds)))).astype(np.float32)


def db(error: np.ndarray, reference: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(error**2)) / np.sqrt(np.mean(reference**2)) + 1e-30)


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_window_and_hop_are_defined_in_time(rate):
    n_fft, hop = CONFIG.n_fft(rate), CONFIG.hop_length(rate)
    assert n_fft % CONFIG.overlap == 0 and hop * CONFIG.overlap == n_fft
    # the window lasts window_ms, to within one hop-rounding step
    assert abs(n_fft / rate * 1000 - CONFIG.window_ms) <= CONFIG.overlap / rate * 1000
    assert hop / rate * 1000 == pytest.approx(CONFIG.hop_ms, abs=CONFIG.overlap / rate * 1000)


def test_default_window_is_1024_samples_at_22050():
    assert CONFIG.n_fft(22050) == 1024 and CONFIG.hop_length(22050) == 256


@pytest.mark.parametrize("kwargs", [{"window_ms": 1.0}, {"window_ms": 900.0}, {"overlap": 3}, {"max_freq_hz": 0.0}])
def test_bad_analysis_config_is_rejected(kwargs):
    with pytest.raises(ValueError):
        AnalysisConfig(**kwargs)


# -- analysis -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_grid_shape_is_the_same_at_every_rate(rate):
    spectrum = analyse(noise(rate, seconds=1.0), rate, CONFIG)
    assert spectrum.logmag.shape[:2] == (1, CONFIG.channels)
    assert spectrum.logmag.dtype == np.float32
    # about the same number of frames per second at every rate
    assert spectrum.frames == pytest.approx(1000 / CONFIG.hop_ms + 1, abs=2)
    assert spectrum.length == rate


@pytest.mark.parametrize("rate", RATES)
def test_a_full_scale_sine_reads_about_512_in_the_same_bin_at_every_rate(rate):
    """The documented calibration: bins are 1000/window_ms Hz apart, a unit sine reads ≈ 512."""
    spectrum = analyse(tone(rate, freq=1000.0), rate, CONFIG)
    middle = spectrum.logmag[0, :, spectrum.frames // 2]
    peak = int(np.argmax(middle))
    assert abs(peak - 1000.0 * CONFIG.window_ms / 1000) <= 1.0
    magnitude = np.expm1(middle[peak])
    assert 0.6 * 512 < magnitude <= 1.05 * 512  # between-bin frequencies lose a little at the peak


def test_level_changes_the_log_magnitudes_monotonically():
    quiet = analyse(tone(22050, amplitude=0.01), 22050, CONFIG).logmag
    loud = analyse(tone(22050, amplitude=0.5), 22050, CONFIG).logmag
    assert loud.max() > quiet.max() > 0


# -- resynthesis -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("channels", [1, 2])
def test_untouched_grid_resynthesises_the_input(rate, channels):
    """Content phase plus the unmodified grid must give the input back (bins above the grid too)."""
    clip = noise(rate, seconds=0.4, channels=channels)
    spectrum = analyse(clip, rate, CONFIG)
    out = synthesise(spectrum, spectrum.logmag.copy())
    assert out.shape == clip.shape and out.dtype == np.float32
    assert db(out - clip, clip) < -60


def test_fill_phase_randomises_only_bins_raised_far_above_the_content():
    rng = np.random.default_rng(1)
    content = (rng.standard_normal((1, 64, 50)) + 1j * rng.standard_normal((1, 64, 50))).astype(np.complex64)
    magnitude = np.abs(content)
    assert fill_phase(content, magnitude, np.random.default_rng(0)) is content  # nothing raised: untouched
    edited = content.copy()
    edited[:, :20] *= 2.0  # a boost: keeps the content's phase
    edited[:, 20:40] *= FILL_FULL * 2  # filled far above the content: phase at random
    edited[:, 40:] *= np.sqrt(FILL_START * FILL_FULL)  # half-way on the log scale: partly turned
    filled = fill_phase(edited, magnitude, np.random.default_rng(0))
    np.testing.assert_allclose(np.abs(filled), np.abs(edited), rtol=1e-5)
    turn = np.abs(np.angle(filled / edited))
    assert np.all(turn[:, :20] < 1e-5)
    assert turn[:, 20:40].mean() == pytest.approx(np.pi / 2, abs=0.15)  # |uniform(−π, π)| averages π/2
    assert turn[:, 40:].mean() == pytest.approx(np.pi / 4, abs=0.1) and turn[:, 40:].max() <= np.pi / 2 + 1e-5
    np.testing.assert_array_equal(filled, fill_phase(edited, magnitude, np.random.default_rng(0)))  # seeded


def test_resynthesis_of_a_tone_lifted_into_noise_keeps_the_lift():
    """Energy added around a pure tone must survive resynthesis and re-analysis.

    With the tone's own phase only 3 % of the added magnitude came back (its copies cancel);
    random phase loses some to overlap-add too, but keeps about 40 %.
    """
    rate = 22050
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(rate) / rate)).astype(np.float32)[None]
    spectrum = analyse(tone, rate, CONFIG)
    lifted = np.maximum(spectrum.logmag, 1.0)  # every empty bin raised to log1p magnitude 1
    again = analyse(synthesise(spectrum, lifted), rate, CONFIG).logmag
    empty = spectrum.logmag[..., 20:-20] < 0.01
    assert np.median(np.expm1(again[..., 20:-20][empty])) / np.expm1(1.0) > 0.3


def test_odd_length_is_kept():
    clip = noise(22050, seconds=1.0)[:, :12345]
    spectrum = analyse(clip, 22050, CONFIG)
    assert synthesise(spectrum, spectrum.logmag).shape == (1, 12345)


def test_raising_the_grid_raises_the_output_including_above_the_grid():
    """At 48 kHz the bins above max_freq_hz follow the gain of the grid's top band."""
    rate = 48000
    clip = noise(rate)
    spectrum = analyse(clip, rate, CONFIG)
    louder = synthesise(spectrum, np.log1p(2 * np.expm1(spectrum.logmag)))  # every grid magnitude × 2
    ratio = np.abs(np.fft.rfft(louder[0])) / (np.abs(np.fft.rfft(clip[0])) + 1e-9)
    freqs = np.fft.rfftfreq(clip.shape[1], 1 / rate)
    below = np.median(ratio[(freqs > 1000) & (freqs < 10000)])
    above = np.median(ratio[(freqs > 13000) & (freqs < 20000)])
    assert below == pytest.approx(2.0, rel=0.02)
    assert above == pytest.approx(2.0, rel=0.02)


def test_unknown_phase_mode_is_rejected():
    spectrum = analyse(noise(22050), 22050, CONFIG)
    with pytest.raises(ValueError):
        synthesise(spectrum, spectrum.logmag, phase="magic")


def _inconsistency(stft_out: np.ndarray, magnitude: np.ndarray, n_fft: int, hop: int, length: int) -> float:
    import librosa

    audio = librosa.istft(stft_out, hop_length=hop, n_fft=n_fft, window="hann", center=True, length=length)
    rebuilt = librosa.stft(audio, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="constant")
    return float(np.linalg.norm(np.abs(rebuilt) - magnitude) / np.linalg.norm(magnitude))


def test_griffin_lim_from_random_phase_converges_and_is_seeded():
    rate = 22050
    clip = noise(rate, seconds=0.3)
    spectrum = analyse(clip, rate, CONFIG)
    n_fft, hop = CONFIG.n_fft(rate), CONFIG.hop_length(rate)
    magnitude = np.abs(spectrum.stft)
    few = griffin_lim(magnitude, None, n_fft, hop, clip.shape[1], 1, 0.99, seed=3)
    many = griffin_lim(magnitude, None, n_fft, hop, clip.shape[1], 24, 0.99, seed=3)
    assert _inconsistency(many, magnitude, n_fft, hop, clip.shape[1]) < _inconsistency(few, magnitude, n_fft, hop,
                                                                                         clip.shape[1])
    again = griffin_lim(magnitude, None, n_fft, hop, clip.shape[1], 24, 0.99, seed=3)
    other = griffin_lim(magnitude, None, n_fft, hop, clip.shape[1], 24, 0.99, seed=4)
    np.testing.assert_array_equal(many, again)
    assert not np.allclose(many, other)


def test_griffin_lim_from_the_content_phase_stays_near_the_content():
    rate = 22050
    clip = noise(rate, seconds=0.3)
    spectrum = analyse(clip, rate, CONFIG)
    from_content = synthesise(spectrum, spectrum.logmag, phase="griffinlim", griffin_lim_iterations=8)
    from_random = synthesise(spectrum, spectrum.logmag, phase="griffinlim", griffin_lim_iterations=8,
                             griffin_lim_init="random")
    assert db(from_content - clip, clip) < -20
    assert db(from_random - clip, clip) > db(from_content - clip, clip) + 10
