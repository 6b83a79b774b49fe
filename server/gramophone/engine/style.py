"""Style targets: the statistics a style is matched by, and everything they depend on.

A ``StyleTarget`` holds one gram matrix per network of the preset's pool, the band
statistics the colouring matches, and what each spectral stage learned from the style
(``features``, by stage name: ``stages.LEARNERS``), together with the analysis and network
settings they were computed with and a hash of the source audio. It is learned from one or
several clips in well under a second, mixed linearly (``a*A + b*B``), and saved as ``.npz``
with its metadata as JSON inside, each stage's feature with its own format version.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..audio import AudioError, resample, validate_audio
from ..dsp.analysis import analyse
from ..dsp.bands import BandBasis, BandStats, frame_energy_db
from ..stages import LEARNERS, StyleClip
from .network import get_pool
from .presets import Preset

# 7 stores each stage's feature under its stage's name with a version of its own; 2–6 added the
# ceiling, level histogram, loudest frame, envelopes and long-term spectrum one by one, and load
# as they did (version 1 of each stage)
FORMAT_VERSION = 7
LEGACY_NAMES = {"envelopes": "colour", "ceiling": "ceiling", "levels": "levels", "loudest_db": "frame_hold",
                "spectrum": "match_eq"}  # formats 2–6: array name → stage


@dataclass
class StyleTarget:
    """Gram targets per pool network, band statistics, each stage's feature, and what they depend on."""

    name: str
    grams: torch.Tensor  # (pool, filters, filters) float32: mean f·fᵀ over the style's frames
    bands: BandStats
    key: dict  # Preset.target_key(): analysis, network and colour settings
    source_hash: str
    sample_rate: int  # the rate it was learned at (the channel grid is the same at every rate)
    frames: int
    features: dict[str, np.ndarray] = field(default_factory=dict)  # stage name → what it learned (an older file may lack some)

    @property
    def complete(self) -> bool:
        """True when it carries every stage's feature (older files lack some)."""
        return all(name in self.features for name in LEARNERS)

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
                "sample_rate": self.sample_rate, "frames": self.frames, "band_count": self.bands.count,
                "stages": {name: LEARNERS[name].version for name in self.features}}
        arrays = {f"feature_{name}": feature for name, feature in self.features.items()}
        with atomic_write(path) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, grams=self.grams.numpy(), band_mean=self.bands.mean,
                     band_covariance=self.bands.covariance, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StyleTarget":
        """Read a saved target; ValueError if the file is not one (corrupt, foreign, other version).

        A stage's feature that is missing, of another version or unusable (``Learner.check``)
        is left out: that stage then does not run with this target.
        """
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("format") not in range(1, FORMAT_VERSION + 1):
                    raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT_VERSION}")
                grams = torch.from_numpy(np.array(data["grams"], dtype=np.float32))
                bands = BandStats(mean=np.array(data["band_mean"]), covariance=np.array(data["band_covariance"]),
                                  count=float(meta["band_count"]))
                if meta["format"] < 7:
                    stored = {stage: (array, 1) for array, stage in LEGACY_NAMES.items()}
                else:
                    stored = {stage: (f"feature_{stage}", version) for stage, version in meta.get("stages", {}).items()}
                features = {}
                for stage, (array, version) in stored.items():
                    learner = LEARNERS.get(stage)
                    if learner is None or version != learner.version or array not in data.files:
                        continue
                    feature = np.array(data[array], dtype=np.float32)
                    if learner.check(feature, len(bands.mean)):
                        features[stage] = feature
            return cls(name=meta["name"], grams=grams, bands=bands, key=meta["key"], source_hash=meta["source_hash"],
                       sample_rate=int(meta["sample_rate"]), frames=int(meta["frames"]), features=features)
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

    Every clip's frames count alike: a longer clip weighs more. Channels are pooled. Every
    stage learns its feature, whether or not ``preset`` runs it, so the target serves any
    preset with the same analysis.
    """
    if not sources:
        raise AudioError("a style needs at least one clip")
    config = preset.analysis
    pool = get_pool(config.channels, preset.network, config.max_freq_hz)
    basis = BandBasis.build(config.channels, config.max_freq_hz, preset.colour_bands)
    sums: torch.Tensor | None = None
    clips: list[StyleClip] = []
    frames = 0
    for index, (audio, sample_rate) in enumerate(sources):
        if preset.sample_rate and sample_rate != preset.sample_rate:
            audio, sample_rate = resample(np.atleast_2d(audio), sample_rate, preset.sample_rate), preset.sample_rate
        audio = validate_audio(audio, f"style clip {index + 1}", min_samples=config.n_fft(sample_rate))
        spectrum = analyse(audio, sample_rate, config)
        logmag = torch.from_numpy(spectrum.logmag)
        with torch.inference_mode():
            clip_sums = _gram_sums(pool, logmag)
        sums = clip_sums if sums is None else sums + clip_sums
        frames += _feature_frames(spectrum.frames, preset) * logmag.shape[0]
        clips.append(StyleClip(audio=audio, sample_rate=sample_rate, logmag=spectrum.logmag,
                               band_frames=basis.to_bands @ spectrum.logmag,
                               frame_db=frame_energy_db(spectrum.logmag), analysis=config))
    grams = (sums / max(frames, 1)).float()
    bands = BandStats.of(np.concatenate([clip.band_frames for clip in clips], axis=-1))
    return StyleTarget(name=name, grams=grams, bands=bands, key=json.loads(json.dumps(preset.target_key())),
                       source_hash=audio_hash(sources), sample_rate=int(sources[0][1]), frames=frames,
                       features={stage: learner.learn(clips) for stage, learner in LEARNERS.items()})


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
    """The weighted mixture ``Σ wᵢ·Tᵢ`` of compatible targets; weights are normalised to sum to 1.

    Grams and band statistics blend; each stage mixes its feature (``Learner.mix``), and a
    stage that any part lacks (a target from an older format) is left out of the mixture.
    """
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
    features = {stage: learner.mix([(target.features[stage], weight) for target, weight in normalised])
                for stage, learner in LEARNERS.items() if all(stage in target.features for target, _ in parts)}
    return StyleTarget(name=label, grams=grams, bands=bands, key=first.key,
                       source_hash=hashlib.sha256("".join(f"{t.source_hash}:{w:.6f}" for t, w in normalised).encode()).hexdigest(),
                       sample_rate=first.sample_rate, frames=sum(target.frames for target, _ in parts), features=features)
