"""Formant-preserving pitch and formant shifting on an STFT grid, and the voice measures it follows.

Everything works on the complex frames of one continuous STFT grid (Hann window, hop a
quarter of it), frame by frame with state carried across calls, so a live stream and an
offline clip shift alike and the shift adds no latency:

- ``spectral_envelope``: each frame's spectral envelope, its power smoothed along frequency
  over more than a harmonic spacing, so harmonics and envelope come apart;
- ``PitchShifter``: Laroche & Dolson's (1999) phase-vocoder pitch shift: the spectrum is divided
  by its envelope, each peak's region of influence is moved rigidly to the peak's frequency
  times the ratio (the window's lobe keeps its shape), its phase rotated by the accumulated
  frequency change (identity phase locking: every bin of a region turns with its peak), then
  multiplied by the envelope, itself warped by the formant factor;
- ``frame_pitch``: a per-frame F0 from the frame's own autocorrelation (Boersma 1993), causal
  and free given the frames: what the pitch follow estimates the content's and the style's
  median F0 with;
- ``envelope_profile`` and ``profile_shift``: the envelope on a log-frequency axis and the
  shift (in semitones) that best lines one clip's mean voiced envelope up with another's, as
  vocal-tract length normalisation does: what the formant follow moves the envelope by.

Written with NumPy rather than taken from librosa: ``librosa.effects.pitch_shift`` resamples
the time-stretched signal (no fixed grid, no formant preservation, not causal), and
``librosa.pyin``/``yin`` frame the signal themselves, pyin with a Viterbi pass over the whole
clip, so neither can run on a live stream's frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage

REFERENCE_HZ = 440.0  # semitones are counted from A4, as gramophone.metrics counts them


@dataclass(frozen=True)
class VoiceAnalysis:
    """The voice measures' settings: part of the format of what a style target learns, not a preset's.

    Measured on the espeak-ng voices of tests/conftest.py (male en-us about 100–140 Hz, female
    en-us+f3 about 200–300 Hz) and on noise: see docs/research-log.md, section "Pitch and formants".
    """

    envelope_hz: float = 300.0  # the envelope's smoothing width: 2–3 harmonics of a male voice; 200 Hz ripples under a female one, 500+ keeps formants in the residual
    f0_min_hz: float = 65.0  # the lowest F0: 3 periods fit the 46 ms window
    f0_max_hz: float = 600.0
    voicing: float = 0.5  # the least normalised autocorrelation peak of a voiced frame (Praat's 0.45, a little stricter)
    octave_share: float = 0.85  # the shortest lag whose peak reaches this share of the best wins (no sub-octaves)
    silence_db: float = -50.0  # frames quieter than this (energy re a full-scale sine) are not voiced
    profile_low_hz: float = 150.0  # the envelope profile's log-frequency axis: where F1–F3 live ...
    profile_high_hz: float = 4500.0
    profile_steps: int = 24  # ... in points per octave (half a semitone each)


VOICE_ANALYSIS = VoiceAnalysis()


def semitones(hz: np.ndarray | float) -> np.ndarray:
    """Frequencies as semitones re ``REFERENCE_HZ``."""
    return 12.0 * np.log2(np.asarray(hz, dtype=np.float64) / REFERENCE_HZ)


def spectral_envelope(magnitude: np.ndarray, n_fft: int, sample_rate: int,
                      settings: VoiceAnalysis = VOICE_ANALYSIS) -> np.ndarray:
    """The spectral envelope of frames ``(..., bins, frames)`` of magnitude (same shape, positive).

    The power spectrum smoothed along frequency by a Hann kernel ``envelope_hz`` wide, then
    its square root: it follows the harmonics' energy, where a cepstral (log-domain)
    envelope sinks into the empty bins under a voice's fundamental and lifts a shifted
    fundamental by up to 5× (measured on harmonic series of 110–280 Hz: docs/research-log.md).
    """
    half = max(1, round(settings.envelope_hz / 2 * n_fft / sample_rate))
    kernel = np.hanning(2 * half + 3)[1:-1]
    power = scipy.ndimage.convolve1d(magnitude.astype(np.float64) ** 2, kernel / kernel.sum(), axis=-2, mode="reflect")
    return np.sqrt(power) + 1e-12


def warp(envelope: np.ndarray, factor: float) -> np.ndarray:
    """``envelope(f / factor)`` along the bin axis (-2) of one frame or many: the envelope moved up by ``factor``."""
    bins = envelope.shape[-2]
    position = np.minimum(np.arange(bins) / factor, bins - 1)
    low = np.floor(position).astype(np.int64)
    high = np.minimum(low + 1, bins - 1)
    share = (position - low)[:, None] if envelope.ndim > 1 else position - low
    return envelope[..., low, :] * (1 - share) + envelope[..., high, :] * share


def _hann(n_fft: int) -> np.ndarray:
    """The periodic Hann window of the analysis (``analysis.hann``, without its scipy import)."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


def _window_autocorrelation(n_fft: int) -> np.ndarray:
    spectrum = np.fft.rfft(_hann(n_fft))
    correlation = np.fft.irfft(np.abs(spectrum) ** 2, n=n_fft)
    return correlation / correlation[0]


def frame_pitch(magnitude: np.ndarray, n_fft: int, sample_rate: int,
                settings: VoiceAnalysis = VOICE_ANALYSIS) -> np.ndarray:
    """F0 in semitones re 440 Hz of each frame ``(..., bins, frames)`` of unscaled Hann-STFT magnitude; NaN where unvoiced.

    The frame's autocorrelation (the inverse FFT of its power spectrum) divided by the
    window's (Boersma 1993), its highest peak between the lags of ``f0_max_hz`` and
    ``f0_min_hz`` refined by a parabola; the shortest lag within ``octave_share`` of it wins.
    Circular, not zero-padded: at the longest lag (under a third of the window) the Hann
    tails that wrap around carry under 2 % of the energy.
    """
    power = magnitude.astype(np.float64) ** 2
    correlation = np.fft.irfft(power, n=n_fft, axis=-2)
    energy = correlation[..., :1, :]
    shortest = max(2, int(np.floor(sample_rate / settings.f0_max_hz)))
    longest = min(n_fft // 3, int(np.ceil(sample_rate / settings.f0_min_hz)))
    lags = np.arange(shortest - 1, longest + 2)
    normalised = correlation[..., lags, :] / np.maximum(energy, 1e-30) / _window_autocorrelation(n_fft)[lags][:, None]
    middle = normalised[..., 1:-1, :]
    peaks = (middle > normalised[..., :-2, :]) & (middle >= normalised[..., 2:, :])
    heights = np.where(peaks, middle, -np.inf)
    best = heights.max(axis=-2, keepdims=True)
    chosen = np.argmax(heights >= settings.octave_share * best, axis=-2)[..., None, :]
    left, centre, right = (np.take_along_axis(normalised, chosen + offset, axis=-2)[..., 0, :] for offset in (0, 1, 2))
    curvature = left - 2 * centre + right
    delta = np.where(curvature < 0, 0.5 * (left - right) / np.where(curvature < 0, curvature, -1.0), 0.0)
    lag = lags[chosen[..., 0, :] + 1] + np.clip(delta, -0.5, 0.5)
    full_scale = np.sum(_hann(n_fft) ** 2) / 2  # the frame energy of a full-scale sine
    loud = 10 * np.log10(np.maximum(energy[..., 0, :], 1e-30) / full_scale) > settings.silence_db
    voiced = (best[..., 0, :] >= settings.voicing) & loud
    return np.where(voiced, semitones(sample_rate / lag), np.nan)


def profile_axis(settings: VoiceAnalysis = VOICE_ANALYSIS) -> np.ndarray:
    """The envelope profile's frequencies in Hz: ``profile_steps`` per octave from ``profile_low_hz``."""
    octaves = np.log2(settings.profile_high_hz / settings.profile_low_hz)
    return settings.profile_low_hz * 2.0 ** (np.arange(int(octaves * settings.profile_steps) + 1) / settings.profile_steps)


def envelope_profile(envelope: np.ndarray, n_fft: int, sample_rate: int,
                     settings: VoiceAnalysis = VOICE_ANALYSIS) -> np.ndarray:
    """Envelopes ``(..., bins, frames)`` as natural-log levels on the profile's log-frequency axis ``(..., points, frames)``."""
    position = profile_axis(settings) * n_fft / sample_rate
    low = np.floor(position).astype(np.int64)
    share = (position - low)[:, None]
    log = np.log(np.maximum(envelope, 1e-20))
    return log[..., low, :] * (1 - share) + log[..., low + 1, :] * share


def profile_shift(content: np.ndarray, style: np.ndarray, most_semitones: float,
                  settings: VoiceAnalysis = VOICE_ANALYSIS) -> float:
    """The semitones that move the ``content`` profile's envelope onto the ``style``'s (each a mean voiced profile).

    Both are detrended (a straight line in log level over log frequency removed: spectral
    tilt is timbre, not formant position); the shift is the lag of the highest Pearson
    correlation over their overlap, within ``most_semitones``, refined by a parabola.
    """
    axis = np.arange(content.size)
    content, style = _detrend(content, axis), _detrend(style, axis)
    steps_per_semitone = settings.profile_steps / 12
    most = int(round(most_semitones * steps_per_semitone))
    scores = np.array([_correlation(content[max(0, -lag):content.size - max(0, lag)],
                                    style[max(0, lag):style.size - max(0, -lag)]) for lag in range(-most, most + 1)])
    index = int(np.argmax(scores))
    delta = 0.0
    if 0 < index < scores.size - 1:
        curvature = scores[index - 1] - 2 * scores[index] + scores[index + 1]
        if curvature < 0:
            delta = float(np.clip(0.5 * (scores[index - 1] - scores[index + 1]) / curvature, -0.5, 0.5))
    return (index - most + delta) / steps_per_semitone


def _detrend(profile: np.ndarray, axis: np.ndarray) -> np.ndarray:
    slope, intercept = np.polyfit(axis, profile, 1)
    return profile - (slope * axis + intercept)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(np.dot(a, b) / max(np.sqrt(np.dot(a, a) * np.dot(b, b)), 1e-12))


class PitchShifter:
    """Laroche–Dolson pitch shift with identity phase locking, envelope kept or warped, over a running STFT grid.

    State carried from call to call, per audio channel: the last input frame's phase (for
    each bin's instantaneous frequency) and each output bin's accumulated phase rotation.
    A frame with ratio 1 and formant factor 1 passes unchanged and clears the rotation,
    so the shifter at rest is an exact null transform.
    """

    PEAK_REACH = 2  # a peak is the largest of its 2 neighbours each side (Laroche & Dolson's 4 nearest)

    def __init__(self, n_fft: int, hop: int, sample_rate: int, settings: VoiceAnalysis = VOICE_ANALYSIS) -> None:
        self.n_fft, self.hop, self.sample_rate, self.settings = n_fft, hop, sample_rate, settings
        self.bins = n_fft // 2 + 1
        self.omega = 2 * np.pi * np.arange(self.bins) / n_fft  # each bin's centre, radians per sample
        self.reset()

    def reset(self) -> None:
        self._last_phase: np.ndarray | None = None  # (channels, bins)
        self._rotation: np.ndarray | None = None

    def process(self, frames: np.ndarray, ratios: np.ndarray, factors: np.ndarray,
                envelope: np.ndarray | None = None) -> np.ndarray:
        """Frames ``(channels, bins, count)`` shifted by ``ratios`` (pitch) and ``factors`` (envelope), one of each per frame.

        ``envelope`` (``spectral_envelope`` of the frames) may be passed when the caller has it.
        """
        channels, bins, count = frames.shape
        if bins != self.bins:
            raise ValueError(f"frames have {bins} bins, the shifter {self.bins}")
        phase = np.angle(frames)
        magnitude = np.abs(frames)
        if self._last_phase is None:
            self._last_phase = phase[..., 0] - self.omega * self.hop  # the first frame reads its bins' centres
            self._rotation = np.zeros((channels, bins))
        moving = (ratios != 1.0) | (factors != 1.0)
        if not moving.any():
            self._last_phase = phase[..., -1]
            self._rotation[:] = 0.0
            return frames
        if envelope is None:
            envelope = spectral_envelope(magnitude, self.n_fft, self.sample_rate, self.settings)
        out = frames.copy()
        for index in range(count):
            advance = phase[..., index] - self._last_phase - self.omega * self.hop
            frequency = self.omega + (advance - 2 * np.pi * np.round(advance / (2 * np.pi))) / self.hop
            self._last_phase = phase[..., index]
            if not moving[index]:
                self._rotation[:] = 0.0
                continue
            for channel in range(channels):
                out[channel, :, index] = self._frame(channel, frames[channel, :, index], magnitude[channel, :, index],
                                                     phase[channel, :, index], frequency[channel],
                                                     envelope[channel, :, index], float(ratios[index]),
                                                     float(factors[index]))
        return out

    def _frame(self, channel: int, frame: np.ndarray, magnitude: np.ndarray, phase: np.ndarray,
               frequency: np.ndarray, envelope: np.ndarray, ratio: float, factor: float) -> np.ndarray:
        """One frame of one channel shifted; updates that channel's rotations."""
        target_envelope = warp(envelope[:, None], factor)[:, 0]
        if ratio == 1.0:
            self._rotation[channel] = 0.0
            return frame * (target_envelope / envelope)
        peaks = self._peaks(magnitude)
        if peaks.size == 0:  # digital silence
            return frame
        bins = self.bins
        source = np.arange(bins)
        region = np.searchsorted((peaks[:-1] + peaks[1:]) / 2, source)
        peak_bin = frequency[peaks] * self.n_fft / (2 * np.pi)
        shift = np.round(peak_bin * (ratio - 1.0)).astype(np.int64)
        landing = np.clip(peaks + shift, 0, bins - 1)
        rotation = self._rotation[channel][landing] + self.hop * (ratio - 1.0) * frequency[peaks]
        rotation = rotation - 2 * np.pi * np.round(rotation / (2 * np.pi))
        target = source + shift[region]
        valid = (target >= 0) & (target < bins)
        flat = magnitude / envelope * np.exp(1j * (phase + rotation[region]))
        real = np.bincount(target[valid], weights=flat.real[valid], minlength=bins)
        imaginary = np.bincount(target[valid], weights=flat.imag[valid], minlength=bins)
        landed = np.searchsorted((landing[:-1] + landing[1:]) / 2, source)
        self._rotation[channel] = rotation[landed]
        return ((real + 1j * imaginary) * target_envelope).astype(frame.dtype)

    def _peaks(self, magnitude: np.ndarray) -> np.ndarray:
        reach = self.PEAK_REACH
        padded = np.pad(magnitude, reach, constant_values=-1.0)
        peak = magnitude > 0
        for offset in range(1, reach + 1):
            peak &= magnitude >= padded[reach - offset:reach - offset + magnitude.size]
            peak &= magnitude >= padded[reach + offset:reach + offset + magnitude.size]
        return np.flatnonzero(peak)
