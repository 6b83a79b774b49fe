"""The style's range (``stages/ceiling.py``): the widened per-channel ceiling and the frame hold, open to dry at strength 0."""

from __future__ import annotations

import numpy as np

from gramophone.dsp.bands import frame_energy_db
from gramophone.stages.ceiling import ceiling_limit, hold_frames, style_ceiling


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
