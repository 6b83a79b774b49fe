"""The quiet-level map (``stages/levels.py``): dB levels, running histograms, quantile mapping below the loud range."""

from __future__ import annotations

import numpy as np
import pytest

from gramophone.stages.levels import LevelHistogram, LevelsSettings, LevelTable, RunningLevelMatch, from_db, to_db


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
