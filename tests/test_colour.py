"""The closed-form colouring (``stages/colour.py``) and the band basis and statistics it reads (``dsp/bands.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from gramophone.dsp.analysis import AnalysisConfig
from gramophone.dsp.bands import BandBasis, BandStats
from gramophone.stages.colour import ColourSettings, RunningColour, colour_transform, nearest_envelope_change


CONFIG = AnalysisConfig()


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


def _power(covariance: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(covariance)
    return (vectors * values**power) @ vectors.T


def test_colour_transform_moves_the_frames_least_of_the_maps_that_match_the_style(basis):
    """Every ``S^½ R C^-½`` (R orthogonal) matches the statistics; the transform is the one of least move."""
    rng = np.random.default_rng(3)
    content = rng.standard_normal((16, 16)) @ rng.standard_normal((16, 600)) * 0.5 + 2.0
    style = rng.standard_normal((16, 16)) @ rng.standard_normal((16, 600)) * 0.4 + rng.uniform(0, 4, (16, 1))
    content_stats, style_stats = BandStats.of(content), BandStats.of(style)
    matrix, offset = colour_transform(content_stats, style_stats)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-4 * np.abs(matrix).max())

    def move(a: np.ndarray) -> float:
        b = style_stats.mean - a @ content_stats.mean
        return float(np.mean((a @ content + b[:, None] - content) ** 2))

    whiten_colour = _power(style_stats.covariance, 0.5) @ _power(content_stats.covariance, -0.5)
    rotations = [np.linalg.qr(rng.standard_normal((16, 16)))[0] for _ in range(20)]
    others = [whiten_colour] + [_power(style_stats.covariance, 0.5) @ r @ _power(content_stats.covariance, -0.5)
                                for r in rotations]
    assert move(matrix) < move(whiten_colour) - 0.1
    assert move(matrix) <= min(move(other) for other in others) + 1e-3


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
    """Near-silent content against a loud style: unclipped, the map lifts it by many log units."""
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
