"""Style targets: the statistics a style is matched by, and everything they depend on.

A ``StyleTarget`` holds one gram matrix per network of the preset's pool plus the band
statistics and band frames (envelopes) the colouring step uses, the style's range and level
histograms and its long-term spectrum, together with the analysis and network settings they were computed with and a
hash of the source audio. It is learned from one or several
clips in well under a second, mixed linearly (``a*A + b*B``), and saved as ``.npz`` with
its metadata as JSON inside.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..dsp.analysis import analyse
from ..atomic import atomic_write
from ..audio import AudioError, resample, validate_audio
from ..stages.ceiling import frame_energy_db, style_ceiling
from ..stages.levels import BINS, LevelHistogram
from ..stages.match_eq import MEL_BANDS, long_term_spectrum
from ..stages.colour import BandBasis, BandStats
from .network import get_pool
from .presets import Preset

# 2 added the ceiling, 3 the level histogram, 4 the loudest frame, 5 the envelopes, 6 the long-term spectrum;
# older files load without them
FORMAT_VERSION = 6
MAX_ENVELOPES = 4096  # band frames kept for the nearest-envelope move: 47 s of style at the default hop
SILENT_ENVELOPE_DB = 60.0  # frames this far under the style's loudest are silence, not an envelope it plays


@dataclass
class StyleTarget:
    """Gram targets per pool network, band statistics, and what they depend on."""

    name: str
    grams: torch.Tensor  # (pool, filters, filters) float32: mean f·fᵀ over the style's frames
    bands: BandStats
    key: dict  # Preset.target_key(): analysis, network and colour settings
    source_hash: str
    sample_rate: int  # the rate it was learned at (the channel grid is the same at every rate)
    frames: int
    ceiling: np.ndarray | None = None  # (channels,) the style's widened peak log1p magnitudes (ceiling.py)
    levels: np.ndarray | None = None  # (channels, levels.BINS) each channel's dB level histogram, as shares (levels.py)
    loudest_db: np.ndarray | None = None  # () the energy of the style's loudest frame, in dB (ceiling.hold_frames)
    envelopes: np.ndarray | None = None  # (bands, count) the style's band frames, silence left out (colour.py)
    spectrum: np.ndarray | None = None  # (match_eq.MEL_BANDS,) the shape of its long-term mel spectrum in dB (match_eq.py)

    @property
    def complete(self) -> bool:
        """True when it carries everything the current format stores (older files lack some of it)."""
        return all(array is not None for array in (self.ceiling, self.levels, self.loudest_db, self.envelopes,
                                                   self.spectrum))

    def compatible_with(self, preset: Preset) -> bool:
        """True when ``preset`` analyses and featurises exactly as this target was learned."""
        return self.key == json.loads(json.dumps(preset.target_key()))

    def require(self, preset: Preset) -> None:
        if not self.compatible_with(preset):
            raise ValueError(f"style {self.name!r} was learned for other analysis or network settings than preset {preset.name!r}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically and durably as ``.npz`` (arrays) with the metadata as a JSON string inside."""
        path = Path(path)
        meta = {"format": FORMAT_VERSION, "name": self.name, "key": self.key, "source_hash": self.source_hash,
                "sample_rate": self.sample_rate, "frames": self.frames, "band_count": self.bands.count}
        arrays = {name: value for name, value in (("ceiling", self.ceiling), ("levels", self.levels),
                                                  ("loudest_db", self.loudest_db), ("envelopes", self.envelopes),
                                                  ("spectrum", self.spectrum)) if value is not None}
        with atomic_write(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, grams=self.grams.numpy(), band_mean=self.bands.mean,
                     band_covariance=self.bands.covariance, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StyleTarget":
        """Read a saved target; ValueError if the file is not one (corrupt, foreign, other version)."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") not in range(1, FORMAT_VERSION + 1):
                    raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
                grams = torch.from_numpy(np.array(data["grams"], dtype=np.float32))
                bands = BandStats(mean=np.array(data["band_mean"]), covariance=np.array(data["band_covariance"]),
                                  count=float(meta["band_count"]))
                ceiling, levels, loudest_db, envelopes, spectrum = (
                    np.array(data[name], dtype=np.float32) if name in data.files else None
                    for name in ("ceiling", "levels", "loudest_db", "envelopes", "spectrum"))
                if levels is not None and levels.shape[-1] != BINS:  # another histogram resolution: unusable here
                    levels = None
                if envelopes is not None and (envelopes.ndim != 2 or envelopes.shape[0] != len(bands.mean)
                                              or envelopes.shape[1] == 0):  # not band frames of these bands
                    envelopes = None
                if spectrum is not None and (spectrum.shape != (MEL_BANDS,) or not np.all(np.isfinite(spectrum))):
                    spectrum = None
            return cls(name=meta["name"], grams=grams, bands=bands, key=meta["key"], source_hash=meta["source_hash"],
                       sample_rate=int(meta["sample_rate"]), frames=int(meta["frames"]), ceiling=ceiling, levels=levels,
                       loudest_db=loudest_db, envelopes=envelopes, spectrum=spectrum)
        except (OSError, KeyError, TypeError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path}: not a Gramophone style target ({error})") from None


def audio_hash(sources: list[tuple[np.ndarray, int]]) -> str:
    """SHA-256 over every source's samples and rate: the identity of a style's audio."""
    digest = hashlib.sha256()
    for audio, sample_rate in sources:
        digest.update(str(sample_rate).encode())
        digest.update(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    return digest.hexdigest()


def learn_style(sources: list[tuple[np.ndarray, int]], preset: Preset, name: str = "style") -> StyleTarget:
    """Learn a target from one or several ``(audio (channels, samples), sample_rate)`` clips.

    Every clip's frames count alike: a longer clip weighs more. Channels are pooled.
    """
    if not sources:
        raise AudioError("a style needs at least one clip")
    config = preset.analysis
    pool = None
    sums: torch.Tensor | None = None
    band_frames, frame_db = [], []
    peaks = np.zeros(config.channels, dtype=np.float32)
    levels = LevelHistogram(config.channels)
    loudest_db = -np.inf
    spectra, spectrum_frames = [], []
    frames = 0
    basis = None
    for index, (audio, sample_rate) in enumerate(sources):
        if preset.sample_rate and sample_rate != preset.sample_rate:
            audio, sample_rate = resample(np.atleast_2d(audio), sample_rate, preset.sample_rate), preset.sample_rate
        audio = validate_audio(audio, f"style clip {index + 1}", min_samples=config.n_fft(sample_rate))
        spectrum = analyse(audio, sample_rate, config)
        if pool is None:
            pool = get_pool(config.channels, preset.network, config.max_freq_hz)
            basis = BandBasis.build(config.channels, config.max_freq_hz, preset.colour_bands)
        logmag = torch.from_numpy(spectrum.logmag)
        with torch.inference_mode():
            clip_sums = _gram_sums(pool, logmag)
        sums = clip_sums if sums is None else sums + clip_sums
        frames += _feature_frames(spectrum.frames, preset) * logmag.shape[0]
        band_frames.append(basis.to_bands @ spectrum.logmag)
        peaks = np.maximum(peaks, spectrum.logmag.max(axis=(0, 2)))
        levels.add_grid(spectrum.logmag)
        frame_db.append(frame_energy_db(spectrum.logmag))
        loudest_db = max(loudest_db, float(frame_db[-1].max()))
        clip_spectrum, clip_frames = long_term_spectrum(audio, sample_rate)
        spectra.append(clip_spectrum)
        spectrum_frames.append(clip_frames)
    grams = (sums / max(frames, 1)).float()
    bands = BandStats.of(np.concatenate(band_frames, axis=-1))
    envelopes = _sounding_envelopes(band_frames, frame_db, loudest_db - SILENT_ENVELOPE_DB)
    return StyleTarget(name=name, grams=grams, bands=bands, key=json.loads(json.dumps(preset.target_key())),
                       source_hash=audio_hash(sources), sample_rate=int(sources[0][1]), frames=frames,
                       ceiling=style_ceiling(peaks, config.window_ms), levels=levels.shares(),
                       loudest_db=np.array(loudest_db, dtype=np.float32), envelopes=envelopes,
                       spectrum=np.average(spectra, axis=0, weights=spectrum_frames).astype(np.float32))


def _sounding_envelopes(band_frames: list[np.ndarray], frame_db: list[np.ndarray], floor_db: float) -> np.ndarray:
    """Every clip's and channel's band frames above ``floor_db``, evenly thinned: ``(bands, ≤ MAX_ENVELOPES)``."""
    sounding = [np.moveaxis(bands, -2, 0)[:, energy > floor_db] for bands, energy in zip(band_frames, frame_db)]
    return _thin(np.concatenate(sounding, axis=1), MAX_ENVELOPES)


def _thin(envelopes: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of ``envelopes``' columns, evenly spaced, as float32."""
    keep = np.unique(np.linspace(0, envelopes.shape[1] - 1, min(count, envelopes.shape[1])).round().astype(int))
    return envelopes[:, keep].astype(np.float32)


def _feature_frames(frames: int, preset: Preset) -> int:
    return max(frames - preset.network.frames_lost, 1)


def _gram_sums(pool: list, logmag: torch.Tensor) -> torch.Tensor:
    """Sum over channels and frames of f·fᵀ, per network: ``(pool, filters, filters)``."""
    sums = []
    for net in pool:
        features = net(logmag)
        sums.append((features @ features.transpose(-1, -2)).sum(0))
    return torch.stack(sums)


def mix_targets(parts: list[tuple[StyleTarget, float]], name: str | None = None) -> StyleTarget:
    """The weighted mixture ``Σ wᵢ·Tᵢ`` of compatible targets; weights are normalised to sum to 1."""
    if not parts:
        raise ValueError("a mixture needs at least one style")
    if any(weight < 0 for _, weight in parts):
        raise ValueError("mixture weights must not be negative")
    total = sum(weight for _, weight in parts)
    if total <= 0:
        raise ValueError("mixture weights must not all be zero")
    first = parts[0][0]
    for target, _ in parts[1:]:
        if target.key != first.key:
            raise ValueError(f"styles {first.name!r} and {target.name!r} were learned with different settings")
    normalised = [(target, weight / total) for target, weight in parts]
    grams = sum(weight * target.grams for target, weight in normalised)
    bands = BandStats.mix([(target.bands, weight) for target, weight in normalised])
    label = name or "+".join(f"{weight:g}*{target.name}" for target, weight in parts)
    return StyleTarget(name=label, grams=grams, bands=bands, key=first.key,
                       source_hash=hashlib.sha256("".join(f"{t.source_hash}:{w:.6f}" for t, w in normalised).encode()).hexdigest(),
                       sample_rate=first.sample_rate, frames=sum(target.frames for target, _ in parts),
                       ceiling=_blend([(target.ceiling, weight) for target, weight in normalised]),
                       levels=_blend([(target.levels, weight) for target, weight in normalised]),
                       loudest_db=_blend([(target.loudest_db, weight) for target, weight in normalised]),
                       envelopes=_pool_envelopes(normalised),
                       spectrum=_blend([(target.spectrum, weight) for target, weight in normalised]))


def _blend(parts: list[tuple[np.ndarray | None, float]]) -> np.ndarray | None:
    """``Σ wᵢ·xᵢ`` as float32, or None if any part lacks the array (a target from an older format).

    For ceilings and loudest frames a blend between the styles' ranges; for level
    histograms the mixture of their distributions; for long-term spectra the mean of their
    shapes in dB — as their grams and statistics blend.
    """
    if any(array is None for array, _ in parts):
        return None
    return sum(weight * array for array, weight in parts).astype(np.float32)


def _pool_envelopes(parts: list[tuple[StyleTarget, float]]) -> np.ndarray | None:
    """A mixture's envelopes: each style's, thinned so their counts follow the weights; None if any lacks them.

    As many in all as the style with the fewest per unit of weight allows, at most ``MAX_ENVELOPES``.
    """
    if any(target.envelopes is None for target, _ in parts):
        return None
    weighted = [(target.envelopes, weight) for target, weight in parts if weight > 0]
    total = min(MAX_ENVELOPES, min(envelopes.shape[1] / weight for envelopes, weight in weighted))
    return np.concatenate([_thin(envelopes, max(1, round(weight * total))) for envelopes, weight in weighted], axis=1)
