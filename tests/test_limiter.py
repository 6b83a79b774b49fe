"""The full-scale limiter: untouched under full scale, never over it, cuts ramped in ahead of
each peak and released slowly, one gain for all channels, the same bound segment by segment."""

from __future__ import annotations

import numpy as np
import pytest

from gramophone.dsp.limiter import LOOKAHEAD_SECONDS, RELEASE_DB_PER_SECOND, Limiter

RATE = 48000


def tone(seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
    """``(2, samples)``: a 220 Hz sine, the second channel at half the first's level."""
    t = np.arange(int(RATE * seconds)) / RATE
    left = amplitude * np.sin(2 * np.pi * 220 * t)
    return np.stack([left, 0.5 * left]).astype(np.float32)


def with_burst(audio: np.ndarray, start: float, seconds: float, factor: float) -> np.ndarray:
    loud = audio.copy()
    loud[:, int(start * RATE):int((start + seconds) * RATE)] *= factor
    return loud


def gain(out: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """The gain applied to the first channel, where the input is not near a zero crossing."""
    return np.where(np.abs(audio[0]) > 1e-2, out[0] / np.where(audio[0] == 0, 1, audio[0]), np.nan)


def test_audio_within_full_scale_passes_untouched():
    audio = tone(amplitude=0.99)
    assert np.array_equal(Limiter(RATE).process(audio), audio)


def test_a_burst_is_cut_to_full_scale_ahead_of_it_and_released_slowly():
    audio = with_burst(tone(), start=0.5, seconds=0.1, factor=3.0)  # peaks at 1.5
    out = Limiter(RATE).process(audio)
    assert np.abs(out).max() <= 1.0 + 1e-6
    assert np.abs(out).max() > 0.999  # just enough, not more
    g = gain(out, audio)
    onset, lookahead = int(0.5 * RATE), round(LOOKAHEAD_SECONDS * RATE)
    assert np.nanmax(np.abs(g[: onset - lookahead] - 1)) < 1e-6  # nothing before the look-ahead
    assert np.nanmin(g[onset - lookahead: onset]) < 0.95  # the cut starts before the burst
    assert np.nanmax(np.abs(np.diff(g[onset - lookahead: onset + lookahead]))) < 0.05  # ramped, not a step
    cut_db = 20 * np.log10(1.5)
    recovered = int((0.6 + cut_db / RELEASE_DB_PER_SECOND) * RATE) + 2 * lookahead
    assert np.nanmin(g[int(0.6 * RATE) + lookahead: int(0.6 * RATE) + 4 * lookahead]) < 0.7  # released slowly
    assert np.nanmax(np.abs(g[recovered:] - 1)) < 1e-6  # and fully


def test_all_channels_share_one_gain():
    audio = with_burst(tone(), start=0.3, seconds=0.05, factor=4.0)
    out = Limiter(RATE).process(audio)
    audible = np.abs(audio[1]) > 1e-2
    assert np.allclose(out[1][audible] / audio[1][audible], out[0][audible] / audio[0][audible], rtol=1e-4)


@pytest.mark.parametrize("segment", [1, 37, 768, 4096])
def test_segment_by_segment_the_bound_holds(segment):
    audio = with_burst(with_burst(tone(), 0.2, 0.05, 2.5), 0.7, 0.2, 1.6)
    whole = Limiter(RATE).process(audio)
    limiter = Limiter(RATE)
    parts = np.concatenate([limiter.process(audio[:, i:i + segment]) for i in range(0, audio.shape[1], segment)],
                           axis=1)
    assert np.abs(parts).max() <= 1.0 + 1e-6
    if segment >= 768:  # a live chunk's worth: only a peak near a segment's start is cut faster than whole
        assert np.mean(np.abs(parts - whole) < 1e-6) > 0.95


def test_reset_forgets_a_cut_in_progress():
    limiter = Limiter(RATE)
    limiter.process(with_burst(tone(0.1), 0.05, 0.05, 3.0))
    quiet = tone(0.1, amplitude=0.2)
    assert not np.array_equal(limiter.process(quiet), quiet)  # still recovering
    limiter.reset()
    assert np.array_equal(limiter.process(quiet), quiet)


@pytest.mark.parametrize(("rate", "full_scale"), [(0, 1.0), (48000, 0.0)])
def test_bad_settings_are_refused(rate, full_scale):
    with pytest.raises(ValueError):
        Limiter(rate, full_scale)
