"""Full scale: the rendered audio never passes it.

The frame bound (``ceiling.hold_frames``) holds each frame's energy under the style's
loudest, yet partials that add up in phase can still peak over full scale: live,
british → american reached 1.28 (docs/research-log.md), and a sound card or a 16-bit file
clips there. ``Limiter`` turns the gain down just enough, ahead of each peak.

Live, it works on the samples a chunk has just finished, all of which are known before
the first is heard, so its look-ahead adds no latency. Written by hand because the
limiters within reach (pedalboard's and JUCE's) have no look-ahead: they hard-clip the
onsets this one sees coming, and would be a large dependency for a few array operations.
"""

from __future__ import annotations

import numpy as np

FULL_SCALE = 1.0
LOOKAHEAD_SECONDS = 0.002  # the gain ramps down over this much audio before a peak
RELEASE_DB_PER_SECOND = 30.0  # and back up at this rate: a 3 dB cut recovers in 0.1 s
SILENT = 1e-9  # a sample this small never needs a cut; keeps the dB finite


class Limiter:
    """A look-ahead peak limiter over consecutive segments of ``(channels, samples)`` audio.

    All channels share one gain, so a stereo image stays where it was. A segment's gain
    is continuous with the previous segment's; a peak within the look-ahead of a
    segment's start, which could not be seen coming, is cut over the samples left.
    """

    def __init__(self, sample_rate: int, full_scale: float = FULL_SCALE, lookahead_seconds: float = LOOKAHEAD_SECONDS,
                 release_db_per_second: float = RELEASE_DB_PER_SECOND) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if full_scale <= 0:
            raise ValueError(f"full_scale must be positive, got {full_scale}")
        self.ceiling_db = 20 * np.log10(full_scale)
        self.lookahead = max(1, round(lookahead_seconds * sample_rate))
        self.release_db = release_db_per_second / sample_rate  # per sample
        self.reset()

    def reset(self) -> None:
        """Forget the gain: the next segment starts at unity."""
        self._held_db = 0.0  # the gain curve before smoothing, at the last sample processed
        self._recent_db = np.zeros(self.lookahead - 1)  # its last look-ahead − 1 values, for the smoothing

    def process(self, audio: np.ndarray) -> np.ndarray:
        """The next segment ``(channels, samples)``, every sample within full scale."""
        audio = np.asarray(audio)
        length = audio.shape[-1]
        if length == 0:
            return audio
        peak = np.abs(np.atleast_2d(audio)).max(axis=0)
        needed = np.minimum(0.0, self.ceiling_db - 20 * np.log10(np.maximum(peak, SILENT)))
        if not needed.any() and self._held_db == 0.0 and not self._recent_db.any():
            return audio  # nothing to cut and nothing still recovering: the usual case
        span = self.lookahead
        ahead = np.lib.stride_tricks.sliding_window_view(np.concatenate([needed, np.zeros(span - 1)]), span).min(axis=1)
        # Linear release in dB: held[n] = min over k ≤ n of ahead[k] + (n − k)·rate,
        # with the previous segment's last value standing at k = −1; a running minimum.
        steps = np.arange(length) * self.release_db
        earliest = self._held_db + self.release_db
        held = np.minimum(0.0, steps + np.minimum(earliest, np.minimum.accumulate(ahead - steps)))
        # A moving average over the look-ahead ramps each cut in; it stays under what each
        # sample needs, because every value it averages already saw that sample coming.
        history = np.concatenate([self._recent_db, held])
        sums = np.concatenate([[0.0], np.cumsum(history)])
        smoothed = (sums[span:] - sums[:-span]) / span
        gain_db = np.minimum(smoothed, needed)  # the opening samples: a peak the last segment could not see
        self._held_db = float(held[-1])
        self._recent_db = history[len(history) - (span - 1):]
        return (audio * 10 ** (gain_db / 20)).astype(audio.dtype, copy=False)
