"""Reading, validating, resampling and writing audio.

Audio is always a float32 array shaped ``(channels, samples)``. Bad input raises
``AudioError`` with a one-line message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from .atomic import atomic_write

SUBTYPES = {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}
SILENCE_RMS = 1e-5  # below -100 dBFS there is nothing to analyse


class AudioError(ValueError):
    """Audio that cannot be used, with a message fit for one line of a terminal."""


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
    """Read any file soundfile understands (WAV, FLAC, OGG, AIFF), optionally resampled and mixed to mono.

    Returns ``(audio, sample_rate)`` with audio shaped ``(channels, samples)``.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({_short(error)}); use WAV, FLAC, OGG or AIFF") from None
    audio = np.ascontiguousarray(data.T)
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
    if sample_rate is not None and sample_rate != sr:
        audio = resample(audio, sr, sample_rate)
        sr = sample_rate
    return audio, int(sr)


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """High-quality resampling (soxr through librosa), channel by channel."""
    if orig_sr == target_sr:
        return audio
    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq", axis=-1).astype(np.float32)


def validate_audio(audio: np.ndarray, name: str, min_samples: int = 1) -> np.ndarray:
    """Reject empty, too short, non-finite or silent audio; return it as float32 ``(channels, samples)``."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[np.newaxis]
    if audio.ndim != 2 or audio.size == 0:
        raise AudioError(f"{name}: the clip is empty")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{name}: contains NaN or infinite samples; re-export the file")
    if audio.shape[1] < min_samples:
        raise AudioError(
            f"{name}: {audio.shape[1]} samples is shorter than one analysis window ({min_samples}); use a longer clip"
        )
    if float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) < SILENCE_RMS:
        raise AudioError(f"{name}: the clip is silent; choose one with sound in it")
    return audio


def save_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, bits: str = "16") -> Path:
    """Write WAV or FLAC (by extension) atomically and durably: a failed or killed write leaves no partial file.

    ``bits`` is ``"16"``, ``"24"`` or ``"float"`` (float is WAV only).
    """
    path = Path(path)
    if bits not in SUBTYPES:
        raise AudioError(f"bit depth {bits!r} is not one of {', '.join(SUBTYPES)}")
    if not path.parent.is_dir():
        raise AudioError(f"{path}: the folder {path.parent} does not exist; create it first")
    file_format = {".wav": "WAV", ".flac": "FLAC"}.get(path.suffix.lower())
    if file_format is None:
        raise AudioError(f"{path}: write .wav or .flac")
    if file_format == "FLAC" and bits == "float":
        raise AudioError(f"{path}: FLAC holds 16 or 24 bits, not float; write a .wav")
    frames = np.asarray(audio, dtype=np.float32)
    frames = frames[np.newaxis] if frames.ndim == 1 else frames
    if bits != "float":
        frames = np.clip(frames, -1.0, 1.0)
    with atomic_write(path) as temporary:
        sf.write(temporary, frames.T, sample_rate, subtype=SUBTYPES[bits], format=file_format)
    return path


def rms(audio: np.ndarray) -> float:
    """Root-mean-square level of all samples."""
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def _short(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
