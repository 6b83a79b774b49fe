"""Log-magnitude STFT analysis (frequency bins as channels) and resynthesis.

Sizes are defined in time, not samples, so 22.05, 44.1 and 48 kHz behave alike: the
bin spacing is ``1000 / window_ms`` Hz at every rate, and the network sees a fixed grid
of ``channels`` bins from 0 Hz up to ``max_freq_hz`` whatever the sample rate (bins above
it follow the gain of the top of the grid). Magnitudes are scaled so that a full-scale
sine reads about 512 at any window size, then compressed with ``log1p``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import librosa
import numpy as np

REFERENCE_SCALE = 1024.0  # magnitude of a unit-amplitude sine is about REFERENCE_SCALE / 2
TOP_BAND = 8  # channels at the top of the grid whose mean change is applied above the grid
# Where the output's magnitude exceeds the content's by more than FILL_START, the bin's phase
# is jittered at random, fully so from FILL_FULL on: see fill_phase.
FILL_START = 4.0
FILL_FULL = 16.0


@dataclass(frozen=True)
class AnalysisConfig:
    """STFT settings in milliseconds, so they mean the same at every sample rate."""

    window_ms: float = 46.44  # 1024 samples at 22.05 kHz
    overlap: int = 4  # hop = window / overlap; 4 gives exact overlap-add with a Hann window
    max_freq_hz: float = 11025.0

    def __post_init__(self) -> None:
        if not 5.0 <= self.window_ms <= 500.0:
            raise ValueError(f"window_ms must be within 5–500 ms, got {self.window_ms}")
        if self.overlap not in (2, 4, 8):
            raise ValueError(f"overlap must be 2, 4 or 8, got {self.overlap}")
        if self.max_freq_hz <= 0:
            raise ValueError("max_freq_hz must be positive")

    def n_fft(self, sample_rate: int) -> int:
        """Window length in samples: a multiple of ``overlap`` closest to ``window_ms``."""
        return max(self.overlap, self.overlap * round(self.window_ms * sample_rate / 1000 / self.overlap))

    def hop_length(self, sample_rate: int) -> int:
        return self.n_fft(sample_rate) // self.overlap

    @property
    def channels(self) -> int:
        """Frequency channels the network sees: bins from 0 Hz up to ``max_freq_hz``."""
        return int(self.max_freq_hz * self.window_ms / 1000) + 1

    @property
    def hop_ms(self) -> float:
        return self.window_ms / self.overlap

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Spectrum:
    """One clip's analysis: the network's log-magnitude grid and what resynthesis needs."""

    logmag: np.ndarray  # (audio channels, config.channels, frames) float32, log1p of scaled magnitude
    stft: np.ndarray  # (audio channels, n_fft // 2 + 1, frames) complex64, unscaled
    sample_rate: int
    length: int  # samples, to trim the resynthesis
    config: AnalysisConfig

    @property
    def frames(self) -> int:
        return self.logmag.shape[-1]


def hann(length: int) -> np.ndarray:
    """The periodic Hann window of ``length`` samples (float64), the one librosa's ``window="hann"`` uses."""
    import scipy.signal  # 1.5 s to import: here, so commands that analyse nothing (`style list`) do not wait for it

    return scipy.signal.get_window("hann", length, fftbins=True)


def magnitude_scale(config: AnalysisConfig, sample_rate: int) -> float:
    """Factor from a Hann-windowed STFT's magnitude to the reference scale."""
    return REFERENCE_SCALE / float(np.sum(hann(config.n_fft(sample_rate))))


def to_grid(magnitude: np.ndarray, channels: int) -> np.ndarray:
    """Crop or zero-pad the bin axis (-2) to the grid's channel count."""
    bins = magnitude.shape[-2]
    if bins >= channels:
        return magnitude[..., :channels, :]
    pad = [(0, 0)] * magnitude.ndim
    pad[-2] = (0, channels - bins)
    return np.pad(magnitude, pad)


def analyse(audio: np.ndarray, sample_rate: int, config: AnalysisConfig) -> Spectrum:
    """STFT of ``(channels, samples)`` audio and its log1p-magnitude grid."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    n_fft = config.n_fft(sample_rate)
    stft = librosa.stft(
        audio, n_fft=n_fft, hop_length=config.hop_length(sample_rate), window="hann", center=True, pad_mode="constant"
    ).astype(np.complex64)
    return Spectrum(logmag=grid_logmag(stft, sample_rate, config), stft=stft, sample_rate=sample_rate,
                    length=audio.shape[-1], config=config)


def grid_logmag(stft: np.ndarray, sample_rate: int, config: AnalysisConfig) -> np.ndarray:
    """The log1p-magnitude grid of a complex STFT (``analyse``'s, and again after a spectrum stage edits the STFT)."""
    scaled = np.abs(stft) * magnitude_scale(config, sample_rate)
    return np.log1p(to_grid(scaled, config.channels)).astype(np.float32)


def apply_logmag(stft: np.ndarray, content_logmag: np.ndarray, logmag: np.ndarray, scale: float,
                 rng: np.random.Generator) -> np.ndarray:
    """A new complex STFT: the content's phase with the optimised magnitudes on the grid.

    Bins above the grid keep the content's magnitude times the mean gain of the grid's
    top ``TOP_BAND`` channels, so a 48 kHz stream's upper octave follows the effect.
    Bins the output fills where the content had almost nothing get random phase
    (``fill_phase``, drawn from ``rng``).
    """
    bins, channels = stft.shape[-2], logmag.shape[-2]
    used = min(bins, channels)
    magnitude = np.abs(stft)
    # the unit phasor; an empty bin's phase is 0 (as np.angle gives), a tenth of exp(1j * angle)'s cost
    filled = magnitude > 0
    phase = np.where(filled, stft / np.where(filled, magnitude, 1), np.complex64(1)).astype(np.complex64, copy=False)
    out = np.empty_like(stft)
    grid_magnitude = np.expm1(np.maximum(logmag[..., :used, :], 0.0)) / scale
    out[..., :used, :] = grid_magnitude * phase[..., :used, :]
    if bins > channels:
        content_top = np.expm1(content_logmag[..., channels - TOP_BAND :, :]).sum(axis=-2, keepdims=True)
        output_top = np.expm1(np.maximum(logmag[..., channels - TOP_BAND :, :], 0.0)).sum(axis=-2, keepdims=True)
        gain = (output_top + 1e-3) / (content_top + 1e-3)
        out[..., used:, :] = magnitude[..., used:, :] * gain * phase[..., used:, :]
    return fill_phase(out, magnitude, rng)


def fill_phase(stft: np.ndarray, content_magnitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Jitter the phase of bins whose magnitude the edit raised far above the content's.

    A bin the content barely fills carries only leakage from neighbouring partials (or
    no phase at all, in digital silence). Energy put there with that phase resynthesises
    as smeared copies of those partials, and much of it is gone when the audio is
    analysed again: a tone could not be turned into a noise texture (held-out MFCC gain
    0.22; 0.85 with this, docs/research-log.md). So from ``FILL_START`` times the content's
    magnitude on, the phase is rotated by a random angle, growing to a uniformly random
    phase at ``FILL_FULL`` times. Magnitudes are unchanged; an untouched bin keeps its phase.
    """
    ratio = np.abs(stft) / np.maximum(content_magnitude, 1e-12)
    share = np.clip(np.log(np.maximum(ratio, FILL_START) / FILL_START) / np.log(FILL_FULL / FILL_START), 0.0, 1.0)
    if not share.any():
        return stft
    turn = np.exp(1j * share * rng.uniform(-np.pi, np.pi, size=stft.shape))
    return (stft * turn).astype(stft.dtype)


def synthesise(
    spectrum: Spectrum,
    logmag: np.ndarray,
    phase: str = "content",
    griffin_lim_iterations: int = 32,
    momentum: float = 0.99,
    griffin_lim_init: str = "content",
    seed: int = 0,
) -> np.ndarray:
    """Audio ``(channels, samples)`` from an optimised log-magnitude grid.

    ``phase="content"`` reuses the content's own phase (free, coherent, keeps timing),
    random where the edit filled bins the content left nearly empty (``fill_phase``,
    seeded by ``seed``); ``"griffinlim"`` estimates a phase that fits the new magnitudes.
    """
    config, sr = spectrum.config, spectrum.sample_rate
    scale = magnitude_scale(config, sr)
    stft = apply_logmag(spectrum.stft, spectrum.logmag, logmag, scale, np.random.default_rng(seed))
    n_fft, hop = config.n_fft(sr), config.hop_length(sr)
    if phase == "griffinlim":
        stft = griffin_lim(np.abs(stft), stft if griffin_lim_init == "content" else None, n_fft, hop, spectrum.length,
                           griffin_lim_iterations, momentum, seed)
    elif phase != "content":
        raise ValueError(f"phase must be 'content' or 'griffinlim', got {phase!r}")
    audio = librosa.istft(stft, hop_length=hop, n_fft=n_fft, window="hann", center=True, length=spectrum.length)
    return audio.astype(np.float32)


def griffin_lim(
    magnitude: np.ndarray,
    init: np.ndarray | None,
    n_fft: int,
    hop: int,
    length: int,
    iterations: int,
    momentum: float,
    seed: int,
) -> np.ndarray:
    """Fast Griffin-Lim (Perraudin et al. 2013) starting from a given phase or a random one.

    Written here rather than calling ``librosa.griffinlim`` because librosa can only start
    from random or zero phase, and starting from the content's phase is the point.
    """
    if init is None:
        rng = np.random.default_rng(seed)
        angles = np.exp(2j * np.pi * rng.random(magnitude.shape)).astype(np.complex64)
    else:
        angles = np.exp(1j * np.angle(init)).astype(np.complex64)
    previous = np.zeros_like(angles)
    for _ in range(iterations):
        audio = librosa.istft(magnitude * angles, hop_length=hop, n_fft=n_fft, window="hann", center=True, length=length)
        rebuilt = librosa.stft(audio, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="constant")
        accelerated = rebuilt - (momentum / (1 + momentum)) * previous
        angles = (accelerated / (np.abs(accelerated) + 1e-16)).astype(np.complex64)
        previous = rebuilt
    return magnitude * angles
