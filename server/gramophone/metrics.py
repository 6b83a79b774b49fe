"""Quality measures on rendered audio: held-out grams, MFCC statistics, STOI.

The optimiser's own loss is easy to satisfy without sounding like the style (a small
random network is easily fooled), so the result is judged on the *rendered audio* with
measures it never optimised:

- every clip is mixed to mono, resampled to 22 050 Hz and brought to one RMS level
  (``TARGET_RMS``), so loudness never counts as style;
- one fixed analysis: n_fft 2048, hop 512, Hann, ``log1p(|STFT|)`` with the 1025 bins as
  channels (the article's representation, whatever preset produced the audio);
- **held-out gram distance**: under ``EVALUATORS``, random Conv1d + ReLU networks whose
  seeds (9001+), filter counts (256/768/1024) and kernels (3/5/7/9) differ from every
  preset's (seeds 0–15; 512 × 11, 4096 × 11, 4096 × 3), the gram ``G = F Fᵀ / T`` per
  frame; distance = mean over evaluators of ``‖G − Gₛ‖_F / ‖Gₛ‖_F``;
- **MFCC distance**: the 2-Wasserstein distance between Gaussians fitted to the MFCC
  frames (coefficients 1–19, mean and covariance), timbre statistics no network sees;
- **STOI** (pystoi) of the output against the content: intelligibility kept (speech);
- **own distance**: the held-out gram distance under networks the caller passes (the
  preset's own), to show how much of the gain only fools the optimised networks.

A second, independent judge, on which no stage of the chain is tuned:

- **timbre distance**: the same Gaussian 2-Wasserstein distance, but on the speech-recognition
  (HTK) front end, whose every setting differs from the MFCC measure's: 16 kHz, pre-emphasis
  0.97, 25 ms Hamming window (512-point FFT) every 10 ms, 26 HTK-mel bands, c1–c12, lifter 22;
- **F0 distance** (``voice=True``): ``librosa.pyin`` (50–1000 Hz) on the voiced frames; the
  median and the interquartile spread of log-F0 in semitones; distance = the Euclidean
  distance of (median, spread) to the style's, in semitones;
- **formant distance** (``voice=True``): Praat's Burg formants (praat-parselmouth; 5 formants
  under a 5 000 Hz ceiling) at pyin's voiced frames; the medians of F1–F3; distance = the root
  mean square of their differences to the style's, in semitones.

The voice gains are ``None`` (shown as n/a), with the reason in ``voice_note``, where they would
be noise: on material the caller does not call speech; when content, style or output is
unvoiced (pyin's voiced share below ``VOICED_SHARE_MIN``: espeak speech and its stylised outputs
read 0.62–0.86, brown noise 0.10, from spurious frames at the lowest pitch); and when the content is already within
``MIN_DRY_SEMITONES`` of the style (the two halves of one 10 s espeak clip differ by up to 1 st
in F0 and 2 st in formant medians, so a smaller dry distance is no base for a ratio).

Each gain is ``1 − d(output, style) / d(content, style)``: 0 for the untouched content,
1 for a perfect match of the style, negative when the output moved away from it.
Statistics of each clip are cached by content hash, so measuring many outputs against
one style and one content costs one analysis per output.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import librosa
import numpy as np
import parselmouth
import torch
from pystoi import stoi as pystoi_stoi
from torch import nn

EVAL_RATE = 22050
N_FFT = 2048
HOP = 512
TARGET_RMS = 0.1  # -20 dBFS: log1p is not scale-invariant, so the level is fixed first
N_MFCC = 20
MIN_SECONDS = 0.5  # shorter clips give too few frames for a covariance or a median

# The independent timbre measure: the HTK speech-recognition front end, every setting unlike the MFCC measure's.
TIMBRE_RATE = 16000
TIMBRE_N_FFT = 512
TIMBRE_WINDOW = 400  # 25 ms
TIMBRE_HOP = 160  # 10 ms
TIMBRE_BANDS = 26
TIMBRE_COEFFICIENTS = 13  # c0 dropped: c1–c12
TIMBRE_LIFTER = 22
PRE_EMPHASIS = 0.97

# The voice measures.
F0_MIN_HZ = 50.0
F0_MAX_HZ = 1000.0
PYIN_FRAME = 1024  # 46 ms: two periods of F0_MIN_HZ fit its half-window
PYIN_HOP = 256
FORMANT_CEILING_HZ = 5000.0  # Praat's advice for a male voice; one fixed ceiling so no output jumps between two
FORMANTS = 3
VOICED_SHARE_MIN = 0.25  # speech 0.62–0.86, brown noise 0.10: well clear of both
MIN_VOICED_FRAMES = 20  # 0.23 s of voiced frames, the least a median stands on
MIN_DRY_SEMITONES = 1.0  # a clip's own halves differ by up to this much: below it a gain is noise


@dataclass(frozen=True)
class EvaluatorSpec:
    """One held-out network: Conv1d(1025 → filters, kernel), no bias, ReLU, He-normal weights."""

    seed: int
    filters: int
    kernel: int


EVALUATORS: tuple[EvaluatorSpec, ...] = (
    EvaluatorSpec(9001, 256, 3),
    EvaluatorSpec(9002, 768, 5),
    EvaluatorSpec(9003, 1024, 7),
    EvaluatorSpec(9004, 256, 9),
)

FeatureInput = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class QualityReport:
    """Dry (content) and wet (output) distances to the style, and the gains they give."""

    held_out_gain: float
    mfcc_gain: float
    stoi: float | None
    own_gain: float | None
    held_out_dry: float
    held_out_wet: float
    mfcc_dry: float
    mfcc_wet: float
    own_dry: float | None
    own_wet: float | None
    timbre_gain: float
    timbre_dry: float
    timbre_wet: float
    f0_gain: float | None = None
    f0_dry: float | None = None  # semitones
    f0_wet: float | None = None
    formant_gain: float | None = None
    formant_dry: float | None = None  # semitones
    formant_wet: float | None = None
    voiced_content: float | None = None  # pyin's voiced share of the frames
    voiced_style: float | None = None
    voiced_output: float | None = None
    voice_note: str | None = None  # why a voice gain is n/a

    def as_dict(self) -> dict[str, float | str | None]:
        return asdict(self)


@dataclass(frozen=True)
class VoiceStats:
    """A clip's voice: pyin's voiced share, log-F0 median and spread, F1–F3 medians (semitones re 440 Hz).

    ``f0_median``, ``f0_spread`` and ``formants`` are ``None`` with fewer than
    ``MIN_VOICED_FRAMES`` voiced frames.
    """

    voiced_share: float
    f0_median: float | None
    f0_spread: float | None
    formants: np.ndarray | None


@dataclass
class _ClipStats:
    """What one clip contributes to every measure, computed once."""

    audio: np.ndarray  # mono, EVAL_RATE, RMS-normalised
    grams: list[torch.Tensor]
    mfcc_mean: np.ndarray
    mfcc_cov: np.ndarray
    mfcc_cov_sqrt: np.ndarray
    timbre_mean: np.ndarray
    timbre_cov: np.ndarray
    timbre_cov_sqrt: np.ndarray
    voice: VoiceStats | None = None  # filled on first use: pyin is slow


def normalise(audio: np.ndarray, sample_rate: int, rate: int | None = EVAL_RATE) -> np.ndarray:
    """Mono (mean of channels on the last axis of 2-D input), resampled to ``rate``, at ``TARGET_RMS``."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1 or audio.size == 0 or not np.all(np.isfinite(audio)):
        raise ValueError("audio must be a non-empty finite 1-D or (samples, channels) array")
    if rate is not None and sample_rate != rate:
        audio = librosa.resample(audio, orig_sr=sample_rate, target_sr=rate, res_type="soxr_hq")
    rms = float(np.sqrt(np.mean(audio**2)))
    if rms < 1e-8:
        raise ValueError("cannot measure a silent clip")
    return (audio * (TARGET_RMS / rms)).astype(np.float32)


def log_spectrogram(audio: np.ndarray) -> np.ndarray:
    """The evaluation representation: ``log1p(|STFT|)``, shape (1025, frames)."""
    return np.log1p(np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=HOP, window="hann", center=True)))


def build_evaluators(specs: Sequence[EvaluatorSpec] = EVALUATORS) -> list[nn.Module]:
    """The held-out networks, weights drawn with NumPy's PCG64 so every machine gets the same."""
    nets: list[nn.Module] = []
    for spec in specs:
        rng = np.random.default_rng(spec.seed)
        conv = nn.Conv1d(N_FFT // 2 + 1, spec.filters, spec.kernel, bias=False)
        weight = rng.standard_normal(conv.weight.shape) * np.sqrt(2.0 / (conv.in_channels * spec.kernel))
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
        net = nn.Sequential(conv, nn.ReLU()).requires_grad_(False).eval()
        nets.append(net)
    return nets


@torch.inference_mode()
def grams(nets: Sequence[nn.Module], spectrogram: np.ndarray) -> list[torch.Tensor]:
    """Per-frame grams ``F Fᵀ / T`` of a (channels, frames) input under each network."""
    x = torch.from_numpy(np.ascontiguousarray(spectrogram, dtype=np.float32))[None]
    out = []
    for net in nets:
        features = net(x)[0]
        out.append(features @ features.T / max(features.shape[-1], 1))
    return out


def gram_distance(grams_x: Sequence[torch.Tensor], grams_style: Sequence[torch.Tensor]) -> float:
    """Mean over networks of the relative Frobenius distance ``‖G − Gₛ‖ / ‖Gₛ‖``."""
    ratios = [float(torch.linalg.norm(g - s) / torch.linalg.norm(s).clamp_min(1e-12)) for g, s in zip(grams_x, grams_style)]
    return float(np.mean(ratios))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _gaussian_w2(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray,
                 cov_b_sqrt: np.ndarray) -> float:
    middle = cov_b_sqrt @ cov_a @ cov_b_sqrt
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    squared = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2 * cross
    return float(np.sqrt(max(squared, 0.0)))


def mfcc_distance(a: _ClipStats, b: _ClipStats) -> float:
    """2-Wasserstein distance between the Gaussian MFCC fits of two clips.

    ``W₂² = ‖μₐ − μ_b‖² + tr(Σₐ + Σ_b − 2 (Σ_b^½ Σₐ Σ_b^½)^½)``; a true distance, so
    identical statistics give 0.
    """
    return _gaussian_w2(a.mfcc_mean, a.mfcc_cov, b.mfcc_mean, b.mfcc_cov, b.mfcc_cov_sqrt)


def timbre_features(audio: np.ndarray) -> np.ndarray:
    """The independent timbre frames of an ``EVAL_RATE`` clip: HTK-style MFCC c1–c12, shape (12, frames)."""
    audio = librosa.resample(audio, orig_sr=EVAL_RATE, target_sr=TIMBRE_RATE, res_type="soxr_hq")
    spectrum = np.abs(librosa.stft(librosa.effects.preemphasis(audio, coef=PRE_EMPHASIS), n_fft=TIMBRE_N_FFT,
                                   hop_length=TIMBRE_HOP, win_length=TIMBRE_WINDOW, window="hamming")) ** 2
    mel = librosa.feature.melspectrogram(S=spectrum, sr=TIMBRE_RATE, n_fft=TIMBRE_N_FFT, n_mels=TIMBRE_BANDS, htk=True)
    return librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=TIMBRE_COEFFICIENTS, lifter=TIMBRE_LIFTER)[1:]


def timbre_distance(a: _ClipStats, b: _ClipStats) -> float:
    """2-Wasserstein distance between the Gaussian fits of two clips' independent timbre frames."""
    return _gaussian_w2(a.timbre_mean, a.timbre_cov, b.timbre_mean, b.timbre_cov, b.timbre_cov_sqrt)


def voice_statistics(audio: np.ndarray) -> VoiceStats:
    """F0 (pyin) and F1–F3 (Praat's Burg) statistics over the voiced frames of an ``EVAL_RATE`` clip."""
    f0, voiced, _ = librosa.pyin(audio, fmin=F0_MIN_HZ, fmax=F0_MAX_HZ, sr=EVAL_RATE, frame_length=PYIN_FRAME,
                                 hop_length=PYIN_HOP)
    share = float(np.mean(voiced))
    if np.count_nonzero(voiced) < MIN_VOICED_FRAMES:
        return VoiceStats(share, None, None, None)
    pitch = 12 * np.log2(f0[voiced] / 440.0)
    low, median, high = np.percentile(pitch, [25, 50, 75])
    formant = parselmouth.Sound(audio.astype(np.float64), sampling_frequency=EVAL_RATE).to_formant_burg(
        time_step=PYIN_HOP / EVAL_RATE, max_number_of_formants=5, maximum_formant=FORMANT_CEILING_HZ)
    times = librosa.frames_to_time(np.flatnonzero(voiced), sr=EVAL_RATE, hop_length=PYIN_HOP)
    tracks = np.array([[formant.get_value_at_time(k, t) for k in range(1, FORMANTS + 1)] for t in times])
    tracks = tracks[np.all(np.isfinite(tracks), axis=1)]  # Praat gives NaN where it found fewer formants
    formants = 12 * np.log2(np.median(tracks, axis=0) / 440.0) if len(tracks) >= MIN_VOICED_FRAMES else None
    return VoiceStats(share, float(median), float(high - low), formants)


def f0_distance(a: VoiceStats, b: VoiceStats) -> float:
    """Euclidean distance of (median, interquartile spread) of log-F0, in semitones."""
    return float(np.hypot(a.f0_median - b.f0_median, a.f0_spread - b.f0_spread))


def formant_distance(a: VoiceStats, b: VoiceStats) -> float:
    """Root mean square over F1–F3 of the differences of the median formants, in semitones."""
    return float(np.sqrt(np.mean((a.formants - b.formants) ** 2)))


def _gain(dry: float, wet: float) -> float:
    return 1.0 - wet / dry if dry > 0 else 0.0


def voice_gains(content: VoiceStats, style: VoiceStats, output: VoiceStats,
                speech: bool = True) -> dict[str, float | str | None]:
    """The F0 and formant fields of a ``QualityReport``: gains where they are sound, else ``None`` and the reason."""
    fields: dict[str, float | str | None] = {"voiced_content": content.voiced_share, "voiced_style": style.voiced_share,
                                             "voiced_output": output.voiced_share}
    reasons = [] if speech else ["not speech"]
    for name, stats in (("content", content), ("style", style), ("output", output)):
        if stats.voiced_share < VOICED_SHARE_MIN or stats.f0_median is None:
            reasons.append(f"{name} unvoiced (voiced share {stats.voiced_share:.2f}, "
                           f"needs ≥ {VOICED_SHARE_MIN:g} and {MIN_VOICED_FRAMES} frames)")
    if reasons:
        return {**fields, "voice_note": "; ".join(reasons)}
    notes = []
    distances: dict[str, Callable[[VoiceStats, VoiceStats], float]] = {"f0": f0_distance}
    if all(stats.formants is not None for stats in (content, style, output)):
        distances["formant"] = formant_distance
    else:
        notes.append(f"formant: fewer than {MIN_VOICED_FRAMES} voiced frames with {FORMANTS} formants")
    for name, distance in distances.items():
        dry, wet = distance(content, style), distance(output, style)
        fields.update({f"{name}_dry": dry, f"{name}_wet": wet})
        if dry >= MIN_DRY_SEMITONES:
            fields[f"{name}_gain"] = _gain(dry, wet)
        else:
            notes.append(f"{name}: content {dry:.2f} st from the style, under {MIN_DRY_SEMITONES:g} st")
    return {**fields, "voice_note": "; ".join(notes) or None}


def _digest(audio: np.ndarray, sample_rate: int) -> str:
    array = np.ascontiguousarray(audio)
    return hashlib.blake2b(array.tobytes() + f"{array.dtype}{array.shape}{sample_rate}".encode(), digest_size=16).hexdigest()


class Evaluator:
    """The held-out networks plus an LRU cache of per-clip statistics."""

    def __init__(self, specs: Sequence[EvaluatorSpec] = EVALUATORS, cache_size: int = 16) -> None:
        self.nets = build_evaluators(specs)
        self.cache_size = cache_size
        self._stats: OrderedDict[str, _ClipStats] = OrderedDict()
        self._own: OrderedDict[tuple, tuple[list[torch.Tensor], tuple]] = OrderedDict()

    def _remember(self, cache: OrderedDict, key: object, make: Callable[[], object]) -> object:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = make()
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return value

    def stats(self, audio: np.ndarray, sample_rate: int) -> _ClipStats:
        """A clip's evaluation statistics, cached by content hash."""
        return self._remember(self._stats, _digest(audio, sample_rate), lambda: self._compute(audio, sample_rate))

    def _compute(self, audio: np.ndarray, sample_rate: int) -> _ClipStats:
        mono = normalise(audio, sample_rate)
        if mono.size < MIN_SECONDS * EVAL_RATE:
            raise ValueError(f"clip is {mono.size / EVAL_RATE:.2f} s long; the measures need at least {MIN_SECONDS:g} s")
        spectrogram = log_spectrogram(mono)
        mel = librosa.feature.melspectrogram(S=np.expm1(spectrogram) ** 2, sr=EVAL_RATE, n_fft=N_FFT)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)[1:]  # c0 is level: normalised away
        cov = np.cov(mfcc)
        timbre = timbre_features(mono)
        timbre_cov = np.cov(timbre)
        return _ClipStats(mono, grams(self.nets, spectrogram), mfcc.mean(axis=1), cov, _psd_sqrt(cov),
                          timbre.mean(axis=1), timbre_cov, _psd_sqrt(timbre_cov))

    @staticmethod
    def voice(stats: _ClipStats) -> VoiceStats:
        """A clip's voice statistics, computed on first use and kept with its other statistics."""
        if stats.voice is None:
            stats.voice = voice_statistics(stats.audio)
        return stats.voice

    def own_grams(self, audio: np.ndarray, sample_rate: int, nets: Sequence[nn.Module], features: FeatureInput | None) -> list[torch.Tensor]:
        """Grams under the caller's networks, cached by clip hash and the networks' identity."""
        key = (_digest(audio, sample_rate), tuple(map(id, nets)), id(features))

        def make() -> tuple[list[torch.Tensor], tuple]:
            if features is None:
                spectrogram = log_spectrogram(normalise(audio, sample_rate))
            else:
                spectrogram = features(normalise(audio, sample_rate, rate=None), sample_rate)
            return grams(nets, spectrogram), (tuple(nets), features)  # holding the nets keeps their ids unique

        return self._remember(self._own, key, make)[0]

    def measure(
        self,
        content: np.ndarray,
        style: np.ndarray,
        output: np.ndarray,
        sample_rate: int,
        *,
        style_rate: int | None = None,
        output_rate: int | None = None,
        speech: bool = True,
        voice: bool = False,
        own_nets: Sequence[nn.Module] | None = None,
        own_features: FeatureInput | None = None,
    ) -> QualityReport:
        """Score ``output`` (the wet signal) against ``content`` (dry) and ``style``.

        Clips may differ in length (at least ``MIN_SECONDS`` each); ``style_rate`` and
        ``output_rate`` default to ``sample_rate``. ``speech`` adds STOI (output against
        content, over their common length). ``voice`` adds the F0 and formant measures (a few
        seconds of pyin per clip), n/a unless ``speech`` and every clip is voiced.
        ``own_nets`` adds the distance under the caller's networks, fed by
        ``own_features(audio, sample_rate) -> (channels, frames)`` (RMS-normalised mono at
        the clip's own rate) or, by default, the evaluation spectrogram.
        """
        style_rate = style_rate or sample_rate
        output_rate = output_rate or sample_rate
        c, s, o = self.stats(content, sample_rate), self.stats(style, style_rate), self.stats(output, output_rate)
        held_dry, held_wet = gram_distance(c.grams, s.grams), gram_distance(o.grams, s.grams)
        mfcc_dry, mfcc_wet = mfcc_distance(c, s), mfcc_distance(o, s)
        own_dry = own_wet = None
        if own_nets:
            own_style = self.own_grams(style, style_rate, own_nets, own_features)
            own_dry = gram_distance(self.own_grams(content, sample_rate, own_nets, own_features), own_style)
            own_wet = gram_distance(self.own_grams(output, output_rate, own_nets, own_features), own_style)
        timbre_dry, timbre_wet = timbre_distance(c, s), timbre_distance(o, s)
        voice_fields = voice_gains(self.voice(c), self.voice(s), self.voice(o), speech) if voice else {}
        intelligibility = None
        if speech:
            length = min(c.audio.size, o.audio.size)
            intelligibility = float(pystoi_stoi(c.audio[:length], o.audio[:length], EVAL_RATE))
        return QualityReport(
            held_out_gain=_gain(held_dry, held_wet),
            mfcc_gain=_gain(mfcc_dry, mfcc_wet),
            stoi=intelligibility,
            own_gain=None if own_dry is None else _gain(own_dry, own_wet),
            held_out_dry=held_dry,
            held_out_wet=held_wet,
            mfcc_dry=mfcc_dry,
            mfcc_wet=mfcc_wet,
            own_dry=own_dry,
            own_wet=own_wet,
            timbre_gain=_gain(timbre_dry, timbre_wet),
            timbre_dry=timbre_dry,
            timbre_wet=timbre_wet,
            **voice_fields,
        )


_DEFAULT: Evaluator | None = None


def default_evaluator() -> Evaluator:
    """One shared evaluator per process, so its cache serves every caller."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Evaluator()
    return _DEFAULT


def measure(content: np.ndarray, style: np.ndarray, output: np.ndarray, sample_rate: int, **options) -> QualityReport:
    """``Evaluator.measure`` on the shared evaluator; see there for the options."""
    return default_evaluator().measure(content, style, output, sample_rate, **options)
