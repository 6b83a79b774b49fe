"""Analysis and synthesis: sizes in time, rate-independent calibration, exact resynthesis,
Griffin-Lim, and the closed-form colouring."""

from __future__ import annotations

import numpy as np
import pytest

from gramophone.dsp.analysis import FILL_FULL, FILL_START, AnalysisConfig, analyse, fill_phase, griffin_lim, synthesise
from gramophone.dsp.bands import BandBasis, BandStats, frame_energy_db
from gramophone.stages.ceiling import ceiling_limit, hold_frames, style_ceiling
from gramophone.stages.colour import ColourSettings, RunningColour, colour_transform, nearest_envelope_change
from gramophone.stages.levels import LevelHistogram, LevelsSettings, LevelTable, RunningLevelMatch, from_db, to_db

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


def test_style_ceiling_widens_each_peak_to_its_neighbours():
    peaks = np.zeros(100, dtype=np.float32)
    peaks[50] = 3.0
    ceiling = style_ceiling(peaks, window_ms=46.44)  # 21.5 Hz channels: ±8 within 172 Hz
    assert np.all(ceiling[42:59] == 3.0) and np.all(ceiling[:42] == 0) and np.all(ceiling[59:] == 0)


def test_ceiling_limit_lets_the_dry_content_through_at_strength_zero():
    content = np.array([[0.5, 4.0], [2.0, 1.0]], dtype=np.float32)  # (channels, frames)
    ceiling = np.array([1.0, 3.0], dtype=np.float32)
    np.testing.assert_array_equal(ceiling_limit(content, ceiling, 1.0), [[1.0, 1.0], [3.0, 3.0]])
    np.testing.assert_array_equal(ceiling_limit(content, ceiling, 0.0), [[1.0, 4.0], [3.0, 3.0]])
    np.testing.assert_allclose(ceiling_limit(content, ceiling, 0.5), [[1.0, 2.5], [3.0, 3.0]])


def test_hold_frames_scales_only_the_frames_louder_than_the_bound():
    rng = np.random.default_rng(0)
    magnitude = np.abs(rng.standard_normal((1, 50, 6))).astype(np.float32) * np.array([1, 1, 10, 1, 100, 1], dtype=np.float32)
    logmag = np.log1p(magnitude)
    bound = float(frame_energy_db(logmag)[0, 0]) + 3.0  # frames 2 and 4 are far louder
    held = hold_frames(logmag, logmag, bound, 1.0)
    energy = frame_energy_db(held)[0]
    np.testing.assert_allclose(energy[[2, 4]], bound, atol=1e-3)
    np.testing.assert_array_equal(held[..., [0, 1, 3, 5]], logmag[..., [0, 1, 3, 5]])
    shape = np.expm1(held[0, :, 4]) / np.expm1(logmag[0, :, 4])  # one gain for the whole frame
    np.testing.assert_allclose(shape, shape[0], rtol=1e-3)


def test_hold_frames_lets_the_dry_content_through_at_strength_zero():
    content = np.log1p(np.full((1, 8, 3), 10.0, dtype=np.float32))
    quiet = float(frame_energy_db(content).max()) - 12.0
    np.testing.assert_array_equal(hold_frames(content, content, quiet, 0.0), content)
    louder = content + 1.0  # an edit above the content's own level is still held, to the content's level
    np.testing.assert_allclose(frame_energy_db(hold_frames(louder, content, quiet, 0.0)), frame_energy_db(content), atol=1e-3)
    np.testing.assert_allclose(frame_energy_db(hold_frames(content, content, quiet, 0.5)), quiet + 6.0, atol=1e-3)


def levels_grid(levels_db: np.ndarray) -> np.ndarray:
    """A log1p grid ``(1, channels, frames)`` at the given dB levels."""
    return from_db(np.asarray(levels_db, dtype=np.float32))[None]


def test_db_levels_round_trip_and_silence_is_finite():
    grid = np.array([[0.0, 0.001, 0.5, 3.0, 9.0]], dtype=np.float32)
    np.testing.assert_allclose(from_db(to_db(grid)), grid, atol=1e-5)
    assert np.isfinite(to_db(grid)).all() and to_db(grid)[0, 0] == pytest.approx(-40.0)


def test_histogram_percentiles_and_levels_are_inverses():
    rng = np.random.default_rng(0)
    levels = rng.uniform(-35, 60, size=(3, 500)).astype(np.float32)
    histogram = LevelHistogram(3)
    histogram.add(levels)
    percentiles = histogram.percentiles(levels)
    assert np.all((percentiles >= 0) & (percentiles <= 1))
    # order within each channel is kept, and the levels come back from their percentiles
    assert np.all(np.diff(percentiles[0][np.argsort(levels[0])]) >= 0)
    np.testing.assert_allclose(LevelTable(histogram.shares()).level_at(percentiles), levels, atol=1e-3)


def test_histogram_decays_the_past():
    histogram = LevelHistogram(1)
    histogram.add(np.full((1, 4), 10.0, dtype=np.float32))
    histogram.add(np.full((1, 4), 20.0, dtype=np.float32), decay=0.5)
    assert histogram.counts.sum() == pytest.approx(2 + 4)
    assert histogram.percentiles(np.array([[15.0]], dtype=np.float32))[0, 0] == pytest.approx(2 / 6)


def style_levels(grid: np.ndarray) -> np.ndarray:
    """A style's level histogram as ``learn_style`` folds it in: shares ``(channels, BINS)``."""
    histogram = LevelHistogram(grid.shape[-2])
    histogram.add_grid(grid)
    return histogram.shares()


def test_matching_against_its_own_levels_changes_nothing():
    rng = np.random.default_rng(1)
    grid = levels_grid(rng.uniform(-40, 60, size=(4, 300)))
    matcher = RunningLevelMatch(4, decay=1.0, warmup_frames=1)
    np.testing.assert_allclose(matcher.apply(grid, style_levels(grid), 1.0), grid, atol=1e-4)


def test_quiet_levels_take_the_style_distribution_and_loud_ones_stay():
    rng = np.random.default_rng(2)
    frames = 400
    # channel 0 loud in both (it sets the style's top at 60 dB); channel 1 a quiet floor in each
    style = levels_grid(np.stack([np.full(frames, 59.8), rng.uniform(-20, -10, frames)]))
    output_db = np.stack([rng.uniform(45, 55, frames), rng.uniform(-35, -25, frames)]).astype(np.float32)
    matcher = RunningLevelMatch(2, decay=1.0, warmup_frames=1)
    mapped = to_db(matcher.apply(levels_grid(output_db), style_levels(style), 1.0))[0]
    assert LevelTable(style_levels(style)).top - LevelsSettings().quiet_db > -10  # so all of channel 1 is quiet: mapped in full
    np.testing.assert_allclose(mapped[0], output_db[0], atol=1e-3)  # within the loud range: untouched
    assert mapped[1].min() > -20.5 and mapped[1].max() < -9.5
    assert np.all(np.diff(mapped[1][np.argsort(output_db[1])]) >= -1e-4)  # the order of the levels is kept


def test_level_matching_blends_in_with_strength_and_warm_up():
    rng = np.random.default_rng(3)
    style = style_levels(levels_grid(np.stack([np.full(200, 60.0), rng.uniform(-20, -10, 200)])))
    grid = levels_grid(np.stack([np.full(16, 50.0), rng.uniform(-35, -25, 16)]))
    assert np.array_equal(RunningLevelMatch(2, 1.0, 1).apply(grid, style, 0.0), grid)
    full = to_db(RunningLevelMatch(2, 1.0, 1).apply(grid, style, 1.0)) - to_db(grid)
    half = to_db(RunningLevelMatch(2, 1.0, 1).apply(grid, style, 0.5)) - to_db(grid)
    warming = to_db(RunningLevelMatch(2, 1.0, 64).apply(grid, style, 1.0)) - to_db(grid)  # 16 of 64 frames seen
    np.testing.assert_allclose(half, full / 2, atol=1e-3)
    np.testing.assert_allclose(warming, full / 4, atol=1e-3)
    assert np.abs(full[0, 1]).min() > 5  # the quiet channel did move


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


# -- colouring ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basis() -> BandBasis:
    return BandBasis.build(CONFIG.channels, CONFIG.max_freq_hz, 16)


def test_band_basis_rows_are_averages_and_the_way_back_is_a_partition(basis):
    np.testing.assert_allclose(basis.to_bands.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(basis.to_channels.sum(axis=1), 1.0, atol=1e-5)
    assert basis.to_bands.shape == (16, CONFIG.channels) and basis.to_channels.shape == (CONFIG.channels, 16)


def test_colour_transform_maps_content_statistics_onto_the_style(basis):
    rng = np.random.default_rng(1)
    # Content variance well above the ridge floor (1 % of the style's), which shrinks quieter content on purpose.
    content = rng.standard_normal((16, 400)) * 2.0 + 2.0
    style = rng.standard_normal((16, 16)) @ rng.standard_normal((16, 400)) * 0.2 + rng.uniform(0, 4, (16, 1))
    content_stats, style_stats = BandStats.of(content), BandStats.of(style)
    matrix, offset = colour_transform(content_stats, style_stats)
    moved = BandStats.of(matrix @ content + offset[:, None])
    np.testing.assert_allclose(moved.mean, style_stats.mean, atol=1e-3)
    np.testing.assert_allclose(moved.covariance, style_stats.covariance, atol=0.02 * np.abs(style_stats.covariance).max())


def test_running_colour_is_zero_at_strength_zero_and_for_the_style_itself(basis):
    logmag = np.abs(np.random.default_rng(2).standard_normal((1, CONFIG.channels, 60))).astype(np.float32) * 3
    stats = BandStats.of(basis.to_bands @ logmag)
    louder = BandStats(stats.mean + 1.0, stats.covariance, stats.count)
    colour = RunningColour(basis, decay=1.0, warmup_frames=1)
    assert np.abs(colour.delta(logmag, stats, 1.0)).max() < 0.05
    colour.reset()
    np.testing.assert_allclose(colour.delta(logmag, louder, 0.0), 0.0, atol=1e-5)
    colour.reset()
    raised = colour.delta(logmag, louder, 1.0)
    assert np.mean(raised) == pytest.approx(1.0, abs=0.05)


def test_running_colour_never_moves_a_channel_beyond_its_clip(basis):
    """Near-silent content against a loud style: unclipped, the whitening lifts it by many log units."""
    quiet = np.random.default_rng(4).random((1, CONFIG.channels, 32)).astype(np.float32) * 1e-3
    loud = np.random.default_rng(5).random((1, CONFIG.channels, 256)).astype(np.float32) * 4.0 + 6.0
    colour = RunningColour(basis, decay=1.0, warmup_frames=1)
    delta = colour.delta(quiet, BandStats.of(basis.to_bands @ loud), 1.0)
    assert np.abs(delta).max() == pytest.approx(ColourSettings().max_change)


def test_nearest_envelope_change_moves_each_frame_to_its_neighbours_mean():
    rng = np.random.default_rng(6)
    envelopes = rng.uniform(0, 4, (16, 50)).astype(np.float32)
    # Each frame lies close to a pair of envelopes and far from every other one.
    envelopes[:, 10] = envelopes[:, 11] = 20.0
    envelopes[:, 40], envelopes[:, 41] = -20.0, -21.0
    frames = np.stack([np.full(16, 19.0), np.full(16, -19.0)], axis=-1)[None]  # (1, bands, frames)
    change = nearest_envelope_change(frames, envelopes, count=2)
    np.testing.assert_allclose(frames + change, np.stack([np.full(16, 20.0), np.full(16, -20.5)], axis=-1)[None],
                               atol=1e-5)
    # More neighbours than envelopes: the mean of them all.
    np.testing.assert_allclose(nearest_envelope_change(frames, envelopes[:, :3], count=8)[0, :, 0],
                               envelopes[:, :3].mean(axis=1) - 19.0, atol=1e-5)


def test_running_colour_moves_a_share_of_the_way_to_the_nearest_envelopes(basis):
    """Frames scattered around three envelopes the style plays: coloured with their own
    statistics they stay where they are; the neighbour share pulls each onto its envelope,
    and nothing of it happens without envelopes."""
    rng = np.random.default_rng(7)
    played = rng.uniform(0, 4, (16, 3))
    envelopes = np.repeat(played, 4, axis=1) + rng.normal(0, 0.01, (16, 12))
    which = rng.integers(0, 3, 40)
    bands = played[:, which] + rng.normal(0, 0.3, (16, 40))
    logmag = (basis.to_channels @ bands)[None].astype(np.float32)
    stats = BandStats.of(basis.to_bands @ logmag)

    def off(delta: np.ndarray) -> float:
        """How far the frames' bands lie from the envelopes they scatter around."""
        return float(np.abs(basis.to_bands @ (logmag + delta)[0] - played[:, which]).mean())

    def colour(share: float, with_envelopes: bool = True) -> np.ndarray:
        return RunningColour(basis, decay=1.0, warmup_frames=1, settings=ColourSettings(neighbours=share)).delta(
            logmag, stats, 1.0, envelopes.astype(np.float32) if with_envelopes else None)

    plain = colour(0.0)
    np.testing.assert_array_equal(colour(1.0, with_envelopes=False), plain)
    # Measured 0.46 and 0.72 of the way left: the move goes back to the grid as a smooth gain,
    # which re-read as bands is a little blurred.
    assert off(colour(1.0)) < 0.6 * off(plain)
    assert off(colour(1.0)) < off(colour(0.5)) < 0.85 * off(plain)


def test_band_stats_mixture_weights():
    rng = np.random.default_rng(3)
    data_a, data_b = rng.standard_normal((4, 100)), rng.standard_normal((4, 100)) + 3
    a, b = BandStats.of(data_a), BandStats.of(data_b)
    only_a = BandStats.mix([(a, 1.0), (b, 0.0)])
    np.testing.assert_allclose(only_a.mean, a.mean)
    np.testing.assert_allclose(only_a.covariance, a.covariance, atol=1e-12)
    # an equal mixture of two equally long sources has the statistics of both pooled together
    both = BandStats.mix([(a, 0.5), (b, 0.5)])
    pooled = BandStats.of(np.concatenate([data_a, data_b], axis=1))
    np.testing.assert_allclose(both.mean, pooled.mean, atol=1e-12)
    np.testing.assert_allclose(both.covariance, pooled.covariance, atol=1e-10)
