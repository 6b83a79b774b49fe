"""The style's long-term spectrum on the quiet bins: a match EQ over the rendered clip (offline).

Colouring, gram steps and the level map edit the analysis grid, and what resynthesis
delivers differs from what they asked: bins the edit fills come out about 7 dB under their
target (docs/research-log.md, "a phase that fits the filled bins"), and log1p hides the quiet range
from the colouring. A mastering engineer's match EQ compares two long-term spectra and applies
the difference; this one does so on the rendered audio, analysed again: each mel band's mean
dB over the clip against the style's, the difference's *shape* only (its mean over bands is
left out: loudness is the colouring's business), applied as a gain on the bins more than
``QUIET_DB`` under the clip's loudest bin, blending in over ``BLEND_DB``. The loud bins, where
words and notes live, keep the level the colouring and steps gave them, which is what keeps
intelligibility (STOI) and the held-out gain. Offline only: it needs the whole rendered clip.
Measured in docs/research-log.md (section 7).

Written here rather than taken from a library: librosa and pedalboard have no match EQ, and
what this needs (a mel band gain limited to the quiet bins) is one STFT and a few lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import librosa
import numpy as np

from ..dsp.analysis import AnalysisConfig
from ..dsp.bands import mel_filters
from .base import Context, Stage, StyleClip, quiet_share

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

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "MatchEQ":
        return MatchEQ(self, sample_rate)


def _stft(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """The STFT of ``(channels, samples)`` audio at this module's analysis, and its hop."""
    n_fft = OVERLAP * max(1, round(WINDOW_MS * sample_rate / 1000 / OVERLAP))
    hop = n_fft // OVERLAP
    if audio.shape[-1] < n_fft:  # a clip shorter than one window: silence after it, as the edges are padded anyway
        audio = np.pad(audio, [(0, 0)] * (audio.ndim - 1) + [(0, n_fft - audio.shape[-1])])
    return librosa.stft(audio, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="constant"), hop


def _mel_basis(sample_rate: int, bins: int) -> np.ndarray:
    """``(MEL_BANDS, bins)`` triangular mel filters up to ``MAX_FREQ_HZ`` (or Nyquist, if lower)."""
    return mel_filters(sample_rate, 2 * (bins - 1), MEL_BANDS, fmax=min(MAX_FREQ_HZ, sample_rate / 2))


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
    gain_db = _bins_from_bands(style_spectrum - _shape(power, basis), basis)
    level = 10.0 * np.log10(np.maximum(power, 1e-20))
    quiet = quiet_share(level, level.max(), settings.quiet_db, settings.blend_db)
    gain = 10.0 ** (strength * quiet * gain_db[:, None] / 20.0)
    out = librosa.istft(stft * gain, hop_length=hop, n_fft=2 * (stft.shape[-2] - 1), window="hann", center=True,
                        length=audio.shape[-1])
    return out.astype(np.float32)


def _bins_from_bands(band_gain_db: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Per-bin dB gains: each bin's mean of the bands covering it, weighted by their filters; above the bands, the top band's."""
    cover = basis.sum(axis=0)
    gain = (basis.T @ band_gain_db) / np.maximum(cover, 1e-12)
    covered = np.flatnonzero(cover > 0)
    gain[covered.max() + 1:] = band_gain_db[-1]
    gain[:covered.min()] = band_gain_db[0]  # DC, under the first band's filter
    return gain


class MatchEQ(Stage):
    """The match EQ as a stage: learns the style's long-term spectrum; offline only (it needs the whole clip)."""

    name: ClassVar[str] = "match_eq"
    place: ClassVar[str] = "audio"
    offline_only: ClassVar[bool] = True

    def __init__(self, settings: MatchEQSettings, sample_rate: int) -> None:
        self.settings = settings
        self.sample_rate = sample_rate

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
