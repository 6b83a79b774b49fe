"""Shared fixtures: real audio made with espeak-ng and sox, and the interop skip switch."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REQUIRE_INTEROP = os.environ.get("GRAMOPHONE_REQUIRE_INTEROP") == "1"

CONTENT_TEXT = (
    "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, "
    "and the shells she sells are surely sea shells."
)
STYLE_TEXT = (
    "Peter Piper picked a peck of pickled peppers. How much wood would a woodchuck chuck "
    "if a woodchuck could chuck wood?"
)


def require_tool(name: str) -> str:
    """Path of an external tool; skip without it, or fail when CI demands interop tests."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed"
        if REQUIRE_INTEROP:
            pytest.fail(f"{message}, and GRAMOPHONE_REQUIRE_INTEROP=1 demands it")
        pytest.skip(message)
    return path


def speak(path: Path, text: str, voice: str) -> Path:
    """Speech from espeak-ng (22050 Hz mono 16-bit)."""
    subprocess.run([require_tool("espeak-ng"), "-v", voice, "-w", str(path), text], check=True)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small convolutions on a shared 2-core machine run many times faster on one thread."""
    import torch  # only the engine's tests need it

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audio")


@pytest.fixture(scope="session")
def speech_pair(audio_dir: Path) -> tuple[Path, Path]:
    """A male content voice and a female style voice, different texts."""
    content = speak(audio_dir / "content_male.wav", CONTENT_TEXT, "en-us")
    style = speak(audio_dir / "style_female.wav", STYLE_TEXT, "en-us+f3")
    return content, style


@pytest.fixture(scope="session")
def speech(speech_pair: tuple[Path, Path]) -> dict[str, tuple[np.ndarray, int]]:
    """The espeak pair loaded once: ``{"content": (audio, rate), "style": (audio, rate)}``, audio ``(1, samples)``."""
    from gramophone.audio import load_audio

    return {"content": load_audio(speech_pair[0]), "style": load_audio(speech_pair[1])}


@pytest.fixture(scope="session")
def clips(speech) -> dict[str, tuple[np.ndarray, int]]:
    """Two-second crops of the espeak pair, for the engine's tests on the small preset."""
    return {role: (audio[:, : 2 * rate], rate) for role, (audio, rate) in speech.items()}


@pytest.fixture(scope="session")
def style_a(clips):
    """The small preset's target of the female style voice (two seconds)."""
    from gramophone.engine.style import learn_style
    from testpresets import SMALL

    return learn_style([clips["style"]], SMALL, name="A")


@pytest.fixture(scope="session")
def style_b(clips):
    """The small preset's target of the male content voice (two seconds)."""
    from gramophone.engine.style import learn_style
    from testpresets import SMALL

    return learn_style([clips["content"]], SMALL, name="B")


@pytest.fixture(scope="session")
def tone_file(audio_dir: Path) -> Path:
    """Two seconds of a 440 Hz sine at 48 kHz, made with numpy."""
    sr = 48000
    t = np.arange(2 * sr) / sr
    path = audio_dir / "tone48k.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    return path


@pytest.fixture(scope="session")
def chord_and_arpeggio() -> tuple[np.ndarray, np.ndarray, int]:
    """Six tones at once and the same six one after another, ``(1, samples)`` at 22 050 Hz.

    Every channel peaks alike in both, but no frame of the arpeggio is as loud as the chord:
    a style's range channel by channel, not frame by frame.
    """
    rate = 22050
    t = np.arange(int(2.4 * rate)) / rate
    freqs = (220, 440, 880, 1320, 1760, 2640)
    chord = 0.15 * sum(np.sin(2 * np.pi * f * t) for f in freqs)
    arpeggio = np.concatenate([0.15 * np.sin(2 * np.pi * f * t[: int(0.4 * rate)]) for f in freqs])
    return chord.astype(np.float32)[None], arpeggio.astype(np.float32)[None], rate
