"""The style's long-term spectrum on the quiet bins: a match EQ over the rendered clip, or the delivered stream.

Colouring, gram steps and the level map edit the analysis grid, and what resynthesis
delivers differs from what they asked: bins the edit fills come out about 7 dB under their
target (docs/research-log.md, "a phase that fits the filled bins"), and log1p hides the quiet range
from the colouring. A mastering engineer's match EQ compares two long-term spectra and applies
the difference; this one does so on the rendered audio, analysed again: each mel band's mean
dB over the clip against the style's, the difference's *shape* only (its mean over bands is
left out: loudness is the colouring's business), applied as a gain on the bins more than
``QUIET_DB`` under the clip's loudest bin, blending in over ``BLEND_DB``. The loud bins, where
words and notes live, keep the level the colouring and steps gave them, which is what keeps
intelligibility (STOI) and the held-out gain. Offline it needs the whole rendered clip; a
stream runs ``RunningMatchEQ``, which follows a running spectrum of the audio it delivered.
Measured in docs/research-log.md (section 7, and "The match EQ live, from the delivered audio").

Written here rather than taken from a library: librosa and pedalboard have no match EQ, and
what this needs (a mel band gain limited to the quiet bins) is one STFT and a few lines.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import librosa
import numpy as np
import scipy.fft

from ..blas import one_blas_thread
from ..dsp.analysis import AnalysisConfig, hann, magnitude_scale
from ..dsp.bands import mel_filters
from .base import Context, Stage, StyleClip, quiet_share, ramp_in

# The long-term spectrum's analysis, which a style target stores: fixed, not a preset's setting.
WINDOW_MS = 2048 / 22050 * 1000  # 93 ms: fine enough to part a voice's harmonics from the gaps between them
OVERLAP = 4  # hop = window / 4: exact overlap-add with a Hann window
MEL_BANDS = 128
MAX_FREQ_HZ = 11025.0  # bands up to here at every rate; bins above take the top band's gain
TOP_DB = 80.0  # band levels further under the clip's loudest band count as this far (as librosa.power_to_db)


@dataclass(frozen=True)
class MatchEQSettings:
    """The match EQ's settings (measured on held-out MFCCs, grams and STOI: docs/research-log.md, section 7)."""

    stage: ClassVar[str] = "match_eq"

    quiet_db: float = 32.0  # bins this far under the clip's loudest bin take the full gain ...
    blend_db: float = 10.0  # ... and bins blend_db closer to it none, with a straight blend between
    boost: float = 1.0  # share of a raising gain applied (a lowering one applies in full) ...
    live_boost: float = 0.5  # ... and live, where the full raise cost held-out gain (docs/research-log.md)
    live: bool = True  # whether a stream runs it (RunningMatchEQ)
    live_max_db: float = 30.0  # live: no band's gain beyond this, either way (see RunningMatchEQ)
    window_seconds: float = 4.0  # live: the running spectra's window
    warmup_seconds: float = 2.0  # live: the gain ramps in over this much delivered audio

    def __post_init__(self) -> None:
        if self.blend_db <= 0 or self.live_max_db <= 0 or self.window_seconds <= 0:
            raise ValueError("blend_db, live_max_db and window_seconds must be positive")
        if self.boost < 0 or self.live_boost < 0 or self.warmup_seconds < 0:
            raise ValueError("boost, live_boost and warmup_seconds must not be negative")

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "MatchEQ":
        return MatchEQ(self, analysis, sample_rate)


def _analysis_size(sample_rate: int) -> tuple[int, int]:
    """The long-term spectrum's window and hop in samples at ``sample_rate``."""
    n_fft = OVERLAP * max(1, round(WINDOW_MS * sample_rate / 1000 / OVERLAP))
    return n_fft, n_fft // OVERLAP


def _stft(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """The STFT of ``(channels, samples)`` audio at this module's analysis, and its hop."""
    n_fft, hop = _analysis_size(sample_rate)
    if audio.shape[-1] < n_fft:  # a clip shorter than one window: silence after it, as the edges are padded anyway
        audio = np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, n_fft - audio.shape[-1])])
    return librosa.stft(audio, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="constant"), hop


def _mel_basis(sample_rate: int, bins: int) -> np.ndarray:
    """``(MEL_BANDS, bins)`` triangular mel filters up to ``MAX_FREQ_HZ`` (or Nyquist, if lower)."""
    return mel_filters(sample_rate, 2 * (bins - 1), MEL_BANDS, fmax=min(MAX_FREQ_HZ, sample_rate / 2))


def _mel_db(power: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``(frames, MEL_BANDS)`` band levels in dB of ``(frames, bins)`` power, unclipped."""
    return 10.0 * np.log10(np.maximum(power @ basis.T, 1e-20))


def _band_db(power: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``(MEL_BANDS, frames)`` band levels in dB of a ``(channels, bins, frames)`` power grid, channels pooled."""
    return librosa.power_to_db(basis @ power.mean(axis=0), ref=1.0, amin=1e-20, top_db=TOP_DB)


def long_term_spectrum(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """The shape of ``(channels, samples)`` audio's long-term mel spectrum, and the frames it averages.

    Each band's mean dB over frames, less the mean over bands (so it sums to zero): ``(MEL_BANDS,)``.
    """
    stft, _ = _stft(np.atleast_2d(audio), sample_rate)
    return _shape(np.abs(stft) ** 2, _mel_basis(sample_rate, stft.shape[-2])), stft.shape[-1]


def _shape(power: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """The long-term spectrum's shape of a ``(channels, bins, frames)`` power grid: see ``long_term_spectrum``."""
    levels = _band_db(power, basis).mean(axis=1)
    return (levels - levels.mean()).astype(np.float32)


def match_spectrum(audio: np.ndarray, sample_rate: int, style_spectrum: np.ndarray, strength: float = 1.0,
                   settings: MatchEQSettings = MatchEQSettings()) -> np.ndarray:
    """``(channels, samples)`` audio with its quiet bins equalised toward ``style_spectrum``'s shape.

    ``strength`` (0–1) scales the gain; at 0 the audio is returned as it is.
    """
    style_spectrum = np.asarray(style_spectrum, dtype=np.float64)
    if style_spectrum.shape != (MEL_BANDS,):
        raise ValueError(f"a long-term spectrum has {MEL_BANDS} bands, got shape {style_spectrum.shape}")
    if strength <= 0:
        return audio
    audio = np.atleast_2d(audio)
    stft, hop = _stft(audio, sample_rate)
    power = np.abs(stft) ** 2
    basis = _mel_basis(sample_rate, stft.shape[-2])
    gain_db = _bins_from_bands(_band_gain(style_spectrum, _shape(power, basis), settings.boost), basis)
    level = 10.0 * np.log10(np.maximum(power, 1e-20))
    quiet = quiet_share(level, level.max(), settings.quiet_db, settings.blend_db)
    gain = 10.0 ** (strength * quiet * gain_db[:, None] / 20.0)
    out = librosa.istft(stft * gain, hop_length=hop, n_fft=2 * (stft.shape[-2] - 1), window="hann", center=True,
                        length=audio.shape[-1])
    return out.astype(np.float32)


def _band_gain(style_spectrum: np.ndarray, shape: np.ndarray, boost: float) -> np.ndarray:
    """Each band's dB gain toward the style's shape: ``boost`` of a raise, all of a cut."""
    gain = style_spectrum - shape
    return np.where(gain > 0, boost * gain, gain)


def _bins_from_bands(band_gain_db: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Per-bin dB gains: each bin's mean of the bands covering it, weighted by their filters; above the bands, the top band's."""
    cover = basis.sum(axis=0)
    gain = (basis.T @ band_gain_db) / np.maximum(cover, 1e-12)
    covered = np.flatnonzero(cover > 0)
    gain[covered.max() + 1:] = band_gain_db[-1]
    gain[:covered.min()] = band_gain_db[0]  # DC, under the first band's filter
    return gain


class MatchEQ(Stage):
    """The match EQ as a stage: learns the style's long-term spectrum; offline it equalises the whole rendered
    clip, and a stream runs its running version (``live``) unless the settings say not to."""

    name: ClassVar[str] = "match_eq"
    place: ClassVar[str] = "audio"

    def __init__(self, settings: MatchEQSettings, analysis: AnalysisConfig, sample_rate: int) -> None:
        self.settings = settings
        self.analysis = analysis
        self.sample_rate = sample_rate

    def live(self) -> "RunningMatchEQ | None":
        return RunningMatchEQ(self.settings, self.analysis, self.sample_rate) if self.settings.live else None

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        """Every clip's long-term spectrum, weighted by its frames."""
        spectra, frames = zip(*(long_term_spectrum(clip.audio, clip.sample_rate) for clip in clips))
        return np.average(spectra, axis=0, weights=frames).astype(np.float32)

    @classmethod
    def check(cls, feature: np.ndarray, bands: int) -> bool:
        return feature.shape == (MEL_BANDS,) and bool(np.all(np.isfinite(feature)))

    def apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        return match_spectrum(data, self.sample_rate, context.features[self.name], context.pull, self.settings)


class RunningMean:
    """A decayed, bias-corrected running mean of vectors."""

    def __init__(self, size: int) -> None:
        self.total = np.zeros(size)
        self.weight = 0.0

    def add(self, rows: np.ndarray, decay: float) -> None:
        """Fold in ``(count, size)`` rows in order, each scaling the past by ``decay``."""
        for row in rows:
            self.total = self.total * decay + row
            self.weight = self.weight * decay + 1.0

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.weight, 1e-12)


class RunningMatchEQ(Stage):
    """The match EQ live: the delivered audio's running long-term spectrum, the gain on the grid's quiet bins.

    A stream has no whole clip, and an EQ on the audio would need a window of latency. So the
    gain goes on the output grid before resynthesis, but it is computed from the audio the
    stream delivered (``listen``), analysed as offline: what the grid asks for and what
    resynthesis delivers differ in the bins the edit filled, and measured on the grid instead
    the EQ lowered the held-out gain (docs/research-log.md, "Not kept: the match EQ live, on the
    grid", and "The match EQ live, from the delivered audio"). That audio
    already carries the gain applied so far, so the gain's own running change of the grid's
    band levels is taken back out of it: the gain follows the running spectrum, not its own
    past. Where resynthesis delivers only part of a gain (bins it fills with random phase come
    out quieter), the gain grows until the delivered audio has moved; where it delivers none of
    it, the gain would grow without end, so it is held within ``live_max_db``. Quiet bins are
    those ``quiet_db`` under the loudest grid bin of the last ``window_seconds``; a raise
    applies ``live_boost`` of itself.
    """

    name: ClassVar[str] = "match_eq"
    place: ClassVar[str] = "output"
    lifts: ClassVar[bool] = True

    def __init__(self, settings: MatchEQSettings, analysis: AnalysisConfig, sample_rate: int) -> None:
        self.settings = settings
        self.sample_rate = sample_rate
        channels = analysis.channels
        self.grid_hop = analysis.hop_length(sample_rate)
        self.scale = magnitude_scale(analysis, sample_rate)
        basis = _mel_basis(sample_rate, analysis.n_fft(sample_rate) // 2 + 1)
        # the grid's channels: its bins up to 11 kHz, zero-padded where the rate has fewer (analysis.to_grid)
        self.grid_basis = np.pad(basis, ((0, 0), (0, max(0, channels - basis.shape[1]))))[:, :channels]
        self.n_fft, self.hop = _analysis_size(sample_rate)
        self.window = hann(self.n_fft).astype(np.float32)
        self.fft_size = scipy.fft.next_fast_len(self.n_fft, real=True)  # zero-padded: 4 460 at 48 kHz is 4 × 5 × 223
        self.basis = _mel_basis(sample_rate, self.fft_size // 2 + 1)
        self.window_frames = max(1, round(settings.window_seconds * sample_rate / self.grid_hop))
        self.warmup_frames = round(settings.warmup_seconds * sample_rate / self.hop)  # of delivered audio's analysis
        self.reset()

    def reset(self) -> None:
        self._pending: np.ndarray | None = None  # delivered samples not yet in a full analysis frame
        self._heard = 0  # analysis frames of delivered audio since the reset
        self._delivered = RunningMean(MEL_BANDS)  # band dB of the delivered audio
        self._own = RunningMean(MEL_BANDS)  # the gain's own change of the grid's band dB
        self._top_db = -np.inf  # the delivered audio's loudest band level, for the floor TOP_DB under it
        self._grid_tops: deque[tuple[float, int]] = deque()  # each recent chunk's loudest grid bin, and its frames

    def _decay(self, hop: int) -> float:
        return math.exp(-hop / (self.settings.window_seconds * self.sample_rate))

    def listen(self, audio: np.ndarray) -> None:
        """Fold the delivered ``(channels, samples)`` audio into the running spectrum, channels' power pooled."""
        with one_blas_thread():  # small matrices: see ..blas
            self._listen(audio)

    def _listen(self, audio: np.ndarray) -> None:
        audio = np.asarray(audio, dtype=np.float32)
        pending = audio if self._pending is None else np.concatenate([self._pending, audio], axis=-1)
        count = (pending.shape[-1] - self.n_fft) // self.hop + 1
        if count > 0:
            frames = np.lib.stride_tricks.sliding_window_view(pending, self.n_fft, axis=-1)[:, ::self.hop][:, :count]
            power = (np.abs(scipy.fft.rfft(frames * self.window, n=self.fft_size, axis=-1)) ** 2).mean(axis=0)
            level = _mel_db(power, self.basis)
            self._heard += count
            self._top_db = max(self._top_db, float(level.max()))
            self._delivered.add(np.maximum(level, self._top_db - TOP_DB), self._decay(self.hop))
            pending = pending[:, count * self.hop:]
        self._pending = pending

    def _grid_band_db(self, magnitude: np.ndarray) -> np.ndarray:
        """``(frames, MEL_BANDS)`` band dB of ``(channels, grid channels, frames)`` grid magnitudes."""
        return _mel_db((magnitude ** 2).mean(axis=0).T, self.grid_basis)

    def _grid_top(self, level: np.ndarray) -> float:
        """The loudest grid bin of the last ``window_seconds``, this chunk's ``level`` included."""
        self._grid_tops.append((float(level.max()), level.shape[-1]))
        while sum(frames for _, frames in self._grid_tops) - self._grid_tops[0][1] >= self.window_frames:
            self._grid_tops.popleft()
        return max(top for top, _ in self._grid_tops)

    def apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        with one_blas_thread():  # small matrices: see ..blas
            return self._apply(data, context)

    def _apply(self, data: np.ndarray, context: Context) -> np.ndarray:
        magnitude = np.expm1(np.maximum(data, 0.0)) / self.scale
        level = 20.0 * np.log10(np.maximum(magnitude, 1e-10))
        top = self._grid_top(level)  # every chunk counts toward the loudest level, applied or not
        strength = context.pull * ramp_in(self._heard, self.warmup_frames)
        if strength <= 0:  # frames left alone: the gain's record of its own change goes on, at nothing
            self._own.add(np.zeros((data.shape[-1], MEL_BANDS)), self._decay(self.grid_hop))
            return data
        before = self._delivered.mean - self._own.mean  # the delivered spectrum as it would be without the gain
        band_gain = np.clip(_band_gain(context.features[self.name], before - before.mean(), self.settings.live_boost),
                            -self.settings.live_max_db, self.settings.live_max_db)
        bin_gain = _bins_from_bands(band_gain, self.grid_basis)
        quiet = quiet_share(level, top, self.settings.quiet_db, self.settings.blend_db)
        gained = magnitude * 10.0 ** (strength * quiet * bin_gain[:, None] / 20.0)
        self._own.add(self._grid_band_db(gained) - self._grid_band_db(magnitude), self._decay(self.grid_hop))
        return np.log1p(gained * self.scale).astype(np.float32)
