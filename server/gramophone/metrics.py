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
import torch
from pystoi import stoi as pystoi_stoi
from torch import nn

EVAL_RATE = 22050
N_FFT = 2048
HOP = 512
TARGET_RMS = 0.1  # -20 dBFS: log1p is not scale-invariant, so the level is fixed first
N_MFCC = 20


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

    def as_dict(self) -> dict[str, float | None]:
        return asdict(self)


@dataclass
class _ClipStats:
    """What one clip contributes to every measure, computed once."""

    audio: np.ndarray  # mono, EVAL_RATE, RMS-normalised
    grams: list[torch.Tensor]
    mfcc_mean: np.ndarray
    mfcc_cov: np.ndarray
    mfcc_cov_sqrt: np.ndarray


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


def mfcc_distance(a: _ClipStats, b: _ClipStats) -> float:
    """2-Wasserstein distance between the Gaussian MFCC fits of two clips.

    ``W₂² = ‖μₐ − μ_b‖² + tr(Σₐ + Σ_b − 2 (Σ_b^½ Σₐ Σ_b^½)^½)``; a true distance, so
    identical statistics give 0.
    """
    middle = b.mfcc_cov_sqrt @ a.mfcc_cov @ b.mfcc_cov_sqrt
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    squared = np.sum((a.mfcc_mean - b.mfcc_mean) ** 2) + np.trace(a.mfcc_cov) + np.trace(b.mfcc_cov) - 2 * cross
    return float(np.sqrt(max(squared, 0.0)))


def _gain(dry: float, wet: float) -> float:
    return 1.0 - wet / dry if dry > 0 else 0.0


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
        spectrogram = log_spectrogram(mono)
        mel = librosa.feature.melspectrogram(S=np.expm1(spectrogram) ** 2, sr=EVAL_RATE, n_fft=N_FFT)
        mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)[1:]  # c0 is level: normalised away
        cov = np.cov(mfcc)
        return _ClipStats(mono, grams(self.nets, spectrogram), mfcc.mean(axis=1), cov, _psd_sqrt(cov))

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
        own_nets: Sequence[nn.Module] | None = None,
        own_features: FeatureInput | None = None,
    ) -> QualityReport:
        """Score ``output`` (the wet signal) against ``content`` (dry) and ``style``.

        Clips may differ in length; ``style_rate`` and ``output_rate`` default to
        ``sample_rate``. ``speech`` adds STOI (output against content, over their common
        length). ``own_nets`` adds the distance under the caller's networks, fed by
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
