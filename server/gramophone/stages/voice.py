"""The voice: a formant-preserving pitch shift and a formant shift, and what it follows in a style.

``Voice`` is the chain's first stage (place ``"spectrum"``): it shifts the complex STFT
frames before they are analysed, so every later stage and the resynthesis treat the shifted
voice as the content (its phase is the content phase). It runs whatever ``style_weight`` is:
``pitch`` and ``formant`` are effects of their own; at 0, with the follows at 0, it passes
the frames untouched (an exact null transform). The pitch and formant it applies glide
toward their targets at ``slew_semitones_per_second``, frame by frame, so automation never
jumps; the shift works on the stream's own frames, so the latency does not change.

The follows need two features of the style, each learned on its own (``PitchProfile``,
``FormantProfile``, with ``dsp.voice``'s measures): the median log-F0 of its voiced frames and
their share, and the mean envelope of its voiced frames on a log-frequency axis. The
content's side is running (decayed over ``window_seconds``, ramped in over ``warmup_seconds``
of voiced frames), as the colouring's is, so the offline path follows as a live stream does.
A style whose voiced share is under ``voiced_share`` (a texture, a noise, a drum loop) has
no pitch or formants to follow: the follows then do nothing. A content with no voiced
frames never ramps them in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..dsp.analysis import AnalysisConfig, analyse
from ..dsp.voice import (PitchShifter, envelope_profile, frame_pitch, profile_axis, profile_shift,
                         spectral_envelope)
from ..params import PARAMETERS
from .base import Context, Learner, Stage, StyleClip, VoiceControls, ramp_in

MIN_VOICED_FRAMES = 20  # a style needs this many voiced frames for a median to stand on
# The content's running F0 histogram: semitones re 440 Hz (27.5–880 Hz), quarter-semitone bins.
PITCH_LOW, PITCH_HIGH, PITCH_STEP = -48.0, 12.0, 0.25
PITCH_BINS = int(round((PITCH_HIGH - PITCH_LOW) / PITCH_STEP))


def _clip_voice(clip: StyleClip) -> tuple[np.ndarray, np.ndarray]:
    """A style clip's per-frame F0 (semitones, NaN unvoiced) and envelope profile, audio channels pooled."""
    spectrum = analyse(clip.audio, clip.sample_rate, clip.analysis)
    n_fft = clip.analysis.n_fft(clip.sample_rate)
    magnitude = np.abs(spectrum.stft)
    pitch = frame_pitch(magnitude, n_fft, clip.sample_rate)
    profile = envelope_profile(spectral_envelope(magnitude, n_fft, clip.sample_rate), n_fft, clip.sample_rate)
    return pitch.reshape(-1), np.moveaxis(profile, -2, 0).reshape(profile.shape[-2], -1)


def _voiced_mix(parts: Sequence[tuple[np.ndarray, float]], share_index: int) -> tuple[np.ndarray, float]:
    """Each part's feature weighted by its mixture weight times its voiced share, and the mixture's share ``Σ wᵢ·sᵢ``."""
    weights = np.array([weight * feature[share_index] for feature, weight in parts])
    share = float(weights.sum())
    if share <= 0:
        return np.zeros_like(parts[0][0]), 0.0
    return sum(w * feature for (feature, _), w in zip(parts, weights)) / share, share


class PitchProfile(Learner):
    """The style's median F0 and voiced share: ``[median semitones re 440 Hz, voiced share]``.

    A style with fewer than ``MIN_VOICED_FRAMES`` voiced frames stores a share of 0.
    """

    name = "pitch"
    version = 1

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        pitch = np.concatenate([_clip_voice(clip)[0] for clip in clips])
        voiced = pitch[np.isfinite(pitch)]
        if voiced.size < MIN_VOICED_FRAMES:
            return np.zeros(2, dtype=np.float32)
        return np.array([np.median(voiced), voiced.size / pitch.size], dtype=np.float32)

    @classmethod
    def mix(cls, parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        """Medians weighted by weight × voiced share (an unvoiced style pulls none), shares by weight."""
        mixed, share = _voiced_mix(parts, 1)
        return np.array([mixed[0], share], dtype=np.float32)

    @classmethod
    def check(cls, feature: np.ndarray, bands: int) -> bool:
        return feature.shape == (2,) and bool(np.all(np.isfinite(feature))) and 0 <= feature[1] <= 1


class FormantProfile(Learner):
    """The style's mean voiced envelope: ``[voiced share, natural-log level at each point of dsp.voice.profile_axis]``."""

    name = "formant"
    version = 1

    @classmethod
    def learn(cls, clips: Sequence[StyleClip]) -> np.ndarray:
        voices = [_clip_voice(clip) for clip in clips]
        pitch = np.concatenate([p for p, _ in voices])
        profile = np.concatenate([q for _, q in voices], axis=1)
        voiced = np.isfinite(pitch)
        if np.count_nonzero(voiced) < MIN_VOICED_FRAMES:
            return np.zeros(1 + profile.shape[0], dtype=np.float32)
        return np.concatenate([[np.mean(voiced)], profile[:, voiced].mean(axis=1)]).astype(np.float32)

    @classmethod
    def mix(cls, parts: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
        mixed, share = _voiced_mix(parts, 0)
        mixed[0] = share
        return mixed.astype(np.float32)

    @classmethod
    def check(cls, feature: np.ndarray, bands: int) -> bool:
        return feature.shape == (1 + profile_axis().size,) and bool(np.all(np.isfinite(feature)))


def _within(name: str, value: float) -> float:
    spec = PARAMETERS[name]
    if not spec.minimum <= value <= spec.maximum:
        raise ValueError(f"{name} must be within {spec.minimum:g}–{spec.maximum:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class VoiceSettings:
    """The voice stage: offline controls (live, the parameters of the same names) and its tuned constants."""

    stage: ClassVar[str] = "voice"

    pitch: float = PARAMETERS["pitch"].default
    formant: float = PARAMETERS["formant"].default
    pitch_follow: float = PARAMETERS["pitch_follow"].default
    formant_follow: float = PARAMETERS["formant_follow"].default
    slew_semitones_per_second: float = 48.0  # an octave in 0.25 s: no jump between frames (tests/test_voice.py)
    window_seconds: float = 8.0  # the content's running voice statistics, as the colouring's window
    warmup_seconds: float = 1.0  # of voiced frames, before a follow applies in full
    voiced_share: float = 0.25  # a style with fewer voiced frames is unvoiced: speech 0.5–0.8, noise 0 (docs/research-log.md)
    formant_reach: float = 8.0  # the most semitones the formant follow searches (a man's to a child's formants)

    def __post_init__(self) -> None:
        for name in ("pitch", "formant", "pitch_follow", "formant_follow"):
            _within(name, getattr(self, name))
        if self.slew_semitones_per_second <= 0 or self.window_seconds <= 0 or self.warmup_seconds < 0:
            raise ValueError("slew_semitones_per_second and window_seconds must be positive, warmup_seconds not negative")

    def controls(self) -> VoiceControls:
        return VoiceControls(self.pitch, self.formant, self.pitch_follow, self.formant_follow)

    def build(self, analysis: AnalysisConfig, bands: int, chunk_frames: int, sample_rate: int) -> "Voice":
        return Voice(self, analysis, chunk_frames, sample_rate)


class Voice(Stage):
    """The pitch and formant shift as a stage: see the module docstring."""

    name = "voice"
    place = "spectrum"
    learns = False  # the follows read the pitch and formant features when the style has them

    def __init__(self, settings: VoiceSettings, analysis: AnalysisConfig, chunk_frames: int, sample_rate: int) -> None:
        self.settings = settings
        self.chunk_frames = chunk_frames
        self.sample_rate = sample_rate
        self.n_fft, self.hop = analysis.n_fft(sample_rate), analysis.hop_length(sample_rate)
        self.frame_seconds = self.hop / sample_rate
        self.shifter = PitchShifter(self.n_fft, self.hop, sample_rate)
        self.warmup_frames = settings.warmup_seconds / self.frame_seconds
        self.reset()

    def reset(self) -> None:
        self.shifter.reset()
        self._pitch: float | None = None  # the semitones applied at the last frame (None: start at the target)
        self._formant: float | None = None
        self._histogram = np.zeros(PITCH_BINS)  # the content's voiced F0, decayed
        self._profile = np.zeros(profile_axis().size)  # the sum of its voiced envelope profiles, decayed
        self._voiced = 0.0  # its voiced frames, decayed

    def apply(self, frames: np.ndarray, context: Context) -> np.ndarray:
        controls, settings = context.voice, self.settings
        pitch_style = context.features.get("pitch")
        formant_style = context.features.get("formant")
        pitch_follow = controls.pitch_follow if _voiced(pitch_style, 1, settings) else 0.0
        formant_follow = controls.formant_follow if _voiced(formant_style, 0, settings) else 0.0
        pitch, formant = controls.pitch, controls.formant
        envelope = None
        if pitch_follow > 0 or formant_follow > 0:
            magnitude = np.abs(frames)
            envelope = spectral_envelope(magnitude, self.n_fft, self.sample_rate)
            self._observe(magnitude, envelope)
            trust = ramp_in(self._voiced, self.warmup_frames)
            if pitch_follow > 0 and self._voiced > 0:
                pitch += pitch_follow * trust * (float(pitch_style[0]) - self._median())
            if formant_follow > 0 and self._voiced > 0:
                shift = profile_shift(self._profile / self._voiced, formant_style[1:], settings.formant_reach)
                formant += formant_follow * trust * shift
        pitches = self._glide("_pitch", float(np.clip(pitch, -24.0, 24.0)), frames.shape[-1])
        formants = self._glide("_formant", float(np.clip(formant, -12.0, 12.0)), frames.shape[-1])
        return self.shifter.process(frames, 2.0 ** (pitches / 12), 2.0 ** (formants / 12), envelope)

    def _glide(self, attribute: str, target: float, count: int) -> np.ndarray:
        """``count`` per-frame values from the last one toward ``target``, at most the slew per frame."""
        last = getattr(self, attribute)
        if last is None or last == target:
            setattr(self, attribute, target)
            return np.full(count, target)
        step = self.settings.slew_semitones_per_second * self.frame_seconds
        values = last + np.clip(target - last, -step * np.arange(1, count + 1), step * np.arange(1, count + 1))
        setattr(self, attribute, float(values[-1]))
        return values

    def _observe(self, magnitude: np.ndarray, envelope: np.ndarray) -> None:
        """Fold the frames' voiced F0 and envelope profiles into the content's running statistics."""
        decay = math.exp(-magnitude.shape[-1] * self.frame_seconds / self.settings.window_seconds)
        pitch = frame_pitch(magnitude, self.n_fft, self.sample_rate).reshape(-1)
        profile = envelope_profile(envelope, self.n_fft, self.sample_rate)
        profile = np.moveaxis(profile, -2, 0).reshape(profile.shape[-2], -1)
        voiced = np.isfinite(pitch)
        index = np.clip(((pitch[voiced] - PITCH_LOW) / PITCH_STEP).astype(np.int64), 0, PITCH_BINS - 1)
        self._histogram = self._histogram * decay + np.bincount(index, minlength=PITCH_BINS)
        self._profile = self._profile * decay + profile[:, voiced].sum(axis=1)
        self._voiced = self._voiced * decay + np.count_nonzero(voiced)

    def _median(self) -> float:
        """The content's running median F0, in semitones, from its histogram."""
        cumulative = np.cumsum(self._histogram)
        index = int(np.searchsorted(cumulative, cumulative[-1] / 2))
        return PITCH_LOW + (index + 0.5) * PITCH_STEP


def _voiced(feature: np.ndarray | None, share_index: int, settings: VoiceSettings) -> bool:
    """Whether the style has a voice to follow: the feature learned, with a voiced share of at least the settings'."""
    return feature is not None and float(feature[share_index]) >= settings.voiced_share


__all__ = ["FormantProfile", "PitchProfile", "Voice", "VoiceControls", "VoiceSettings"]
