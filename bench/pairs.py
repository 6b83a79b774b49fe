"""The benchmark's content/style pairs, made deterministically with espeak-ng, sox and NumPy.

Speech pairs use different voices *and* different texts for content and style, so a
result can only score by taking on the style's voice, not by copying its words: across
genders, accents and languages, and with the content as a real microphone gives it (room
reverb and noise). The music pairs move a melody toward another instrument, a tone
sequence and a drum loop toward noise textures, a plucked melody toward a bowed drone and
a piano toward an organ. Files are cut to ``seconds`` and cached in ``bench/out/pairs``;
run ``python -m bench.pairs`` to make them and print their paths.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050
SPEECH_WPM = 160  # a little slower than espeak's 175, so every text outlasts 10 s
DEFAULT_FOLDER = Path(__file__).resolve().parent / "out" / "pairs"

TEXTS = {
    "fox": "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore, and the shells "
    "she sells are surely sea shells. A big black bug bit a big black bear, and the bear bled.",
    "piper": "Peter Piper picked a peck of pickled peppers. How much wood would a woodchuck chuck if a woodchuck "
    "could chuck wood? Red lorry, yellow lorry, a proper copper coffee pot on the stove.",
    "baker": "Every morning the baker opens the shop before sunrise, lights the old oven and kneads the dough for "
    "the bread that the whole village will eat at breakfast time, with butter and a little honey.",
    "river": "The river ran fast and cold under the stone bridge, carrying leaves and small branches down toward "
    "the mill, where the great wooden wheel turned all night without making a single sound.",
    "stella": "Please call Stella and ask her to bring these things with her from the store: six spoons of fresh "
    "snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.",
    "frog": "We also need a small plastic snake and a big toy frog for the kids. She can scoop these things into "
    "three red bags, and we will go and meet her on Wednesday at the train station.",
    "nordwind": "Einst stritten sich Nordwind und Sonne, wer von ihnen beiden wohl der Stärkere wäre, als ein "
    "Wanderer, der in einen warmen Mantel gehüllt war, des Weges daherkam. Sie wurden einig, dass derjenige für "
    "den Stärkeren gelten sollte, der den Wanderer zwingen würde, seinen Mantel abzunehmen.",
    "bise": "La bise et le soleil se disputaient, chacun assurant qu'il était le plus fort, quand ils ont vu un "
    "voyageur qui s'avançait, enveloppé dans son manteau. Ils sont tombés d'accord que celui qui arriverait le "
    "premier à faire ôter son manteau au voyageur serait regardé comme le plus fort.",
}

# name: (content voice, content text, style voice, style text, what the content's microphone adds)
SPEECH_PAIRS = {
    "male-female": ("en-us", "fox", "en-us+f3", "piper", None),
    "female-male": ("en-us+f5", "baker", "en-us+m3", "river", None),
    "british-american": ("en-gb", "stella", "en-us+f2", "frog", None),
    "german-french": ("de", "nordwind", "fr+f4", "bise", None),
    "room-male-female": ("en-us", "fox", "en-us+f3", "piper", "room"),
    "noisy-female-male": ("en-us+f5", "baker", "en-us+m3", "river", "noise"),
}
ROOM_REVERB = ["reverb", "45", "50", "70"]  # sox: reverberance %, damping %, room scale %: a small, live room
NOISE_DB = -30.0  # pink noise this far under the speech's RMS: a quiet fan, a laptop microphone's hiss

PLUCK_NOTES = ["C3", "E3", "G3", "C4", "G3", "E3", "D3", "F3", "A3", "D4", "A3", "F3"]
ORGAN_NOTES = ["A3", "C4", "E4", "A4", "G3", "B3", "D4", "G4"]


@dataclass(frozen=True)
class Pair:
    """One benchmark pair: a content clip, a style clip, and whether STOI applies."""

    name: str
    content: Path
    style: Path
    speech: bool

    def load(self) -> tuple[np.ndarray, np.ndarray, int]:
        """Content and style as float32 mono arrays, and their (shared) sample rate."""
        content, rate = sf.read(self.content, dtype="float32")
        style, _ = sf.read(self.style, dtype="float32")
        return content, style, rate


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: apt-get install {name}")
    return path


def _speak(voice: str, text: str, scratch: Path, microphone: str | None = None) -> np.ndarray:
    """espeak-ng speech, as dry as it comes or through a room (sox reverb) and with pink noise, or with noise alone."""
    wav = scratch / "speech.wav"
    subprocess.run([_tool("espeak-ng"), "-v", voice, "-s", str(SPEECH_WPM), "-w", str(wav), text], check=True)
    if microphone == "room":
        wet = scratch / "room.wav"
        subprocess.run([_tool("sox"), "-R", str(wav), str(wet), *ROOM_REVERB, "gain", "-n", "-3"], check=True)
        wav = wet
    audio, rate = sf.read(wav, dtype="float32")
    assert rate == SAMPLE_RATE, f"espeak-ng wrote {rate} Hz"
    if microphone is not None:
        audio = audio + _pink_noise(audio.size, seed=len(text)) * np.sqrt(np.mean(audio**2)) * 10 ** (NOISE_DB / 20)
    return audio.astype(np.float32)


def _pink_noise(length: int, seed: int) -> np.ndarray:
    """Unit-RMS noise with a 1/f power spectrum, seeded."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(length))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1.0))
    noise = np.fft.irfft(spectrum, n=length)
    return noise / np.sqrt(np.mean(noise**2))


def _sox_notes(synth: Sequence[str], notes: Sequence[str], note_seconds: float, effects: Sequence[str], scratch: Path) -> np.ndarray:
    """A melody from sox ``synth`` notes, one file per note joined by sox (``-R``: repeatable)."""
    sox = _tool("sox")
    files = []
    for index, note in enumerate(notes):
        path = scratch / f"note{index:02d}.wav"
        args = [part.replace("NOTE", note) for part in synth]
        subprocess.run([sox, "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "synth",
                        str(note_seconds), *args], check=True)
        files.append(str(path))
    joined = scratch / "melody.wav"
    subprocess.run([sox, "-R", *files, str(joined), *effects], check=True)
    audio, _ = sf.read(joined, dtype="float32")
    return audio


def _pluck_melody(scratch: Path) -> np.ndarray:
    return _sox_notes(["pluck", "NOTE"], PLUCK_NOTES * 2, 0.45, ["gain", "-n", "-6"], scratch)


def _organ_melody(scratch: Path) -> np.ndarray:
    return _sox_notes(["sawtooth", "NOTE", "square", "NOTE"], ORGAN_NOTES * 2, 0.7,
                      ["lowpass", "2500", "tremolo", "6", "40", "gain", "-n", "-6"], scratch)


def _surf_noise(scratch: Path) -> np.ndarray:
    """Brown noise swelling slowly, like surf: a texture with no pitch at all."""
    path = scratch / "surf.wav"
    subprocess.run([_tool("sox"), "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "synth", "12",
                    "brownnoise", "tremolo", "0.3", "70", "gain", "-n", "-6"], check=True)
    audio, _ = sf.read(path, dtype="float32")
    return audio


def _tone_sequence(_: Path) -> np.ndarray:
    """Sine tones with three harmonics and soft attacks, 0.5 s each, from NumPy alone."""
    frequencies = [220.0, 277.2, 329.6, 440.0, 392.0, 329.6, 293.7, 246.9] * 3
    t = np.arange(int(0.5 * SAMPLE_RATE)) / SAMPLE_RATE
    envelope = np.minimum(1.0, t / 0.02) * np.exp(-3.0 * t)
    notes = [envelope * sum(np.sin(2 * np.pi * f * k * t) / k for k in (1, 2, 3)) for f in frequencies]
    audio = np.concatenate(notes)
    return (0.4 * audio / np.max(np.abs(audio))).astype(np.float32)


def _bowed_drone(scratch: Path) -> np.ndarray:
    """A sawtooth drone on A2 and E3 with a slow swell and vibrato, low-passed: a bowed string section's sustain."""
    path = scratch / "drone.wav"
    subprocess.run([_tool("sox"), "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "synth", "12",
                    "sawtooth", "A2", "sawtooth", "E3", "gain", "-10", "lowpass", "1800", "tremolo", "0.25", "35", "gain", "-n", "-6"],
                   check=True)
    audio, _ = sf.read(path, dtype="float32")
    return audio


def _drum_loop(_: Path) -> np.ndarray:
    """Kick, snare and hi-hat at 110 bpm from NumPy alone: a loop with no pitch and sharp onsets."""
    rng = np.random.default_rng(11)
    step = int(60 / 110 / 2 * SAMPLE_RATE)  # eighth notes
    t = np.arange(step) / SAMPLE_RATE
    kick = np.sin(2 * np.pi * (50 * t + 60 * (1 - np.exp(-t * 30)) / 30)) * np.exp(-t * 9)
    snare = rng.standard_normal(step) * np.exp(-t * 22) * 0.6 + np.sin(2 * np.pi * 190 * t) * np.exp(-t * 30) * 0.4
    hat = np.diff(rng.standard_normal(step + 1)) * np.exp(-t * 60) * 0.25
    bar = [kick + hat, hat, snare + hat, hat, kick + hat, kick * 0.6 + hat, snare + hat, hat]
    audio = np.concatenate(bar * 12)
    return (0.45 * audio / np.max(np.abs(audio))).astype(np.float32)


def _rain_noise(scratch: Path) -> np.ndarray:
    """Pink noise through a band-pass with a slow swell: a rain texture, brighter than the surf."""
    path = scratch / "rain.wav"
    subprocess.run([_tool("sox"), "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(path), "synth", "12",
                    "pinknoise", "sinc", "400-7000", "tremolo", "0.15", "30", "gain", "-n", "-8"], check=True)
    audio, _ = sf.read(path, dtype="float32")
    return audio


def _piano_melody(_: Path) -> np.ndarray:
    """Struck-string notes from NumPy alone: slightly stretched partials, each decaying faster than the one below."""
    notes = [261.6, 329.6, 392.0, 523.3, 440.0, 349.2, 293.7, 392.0, 329.6, 261.6, 246.9, 293.7] * 2
    t = np.arange(int(0.45 * SAMPLE_RATE)) / SAMPLE_RATE
    out = []
    for f in notes:
        partials = [np.sin(2 * np.pi * f * k * np.sqrt(1 + 0.0004 * k * k) * t) * np.exp(-t * (2.5 + 1.5 * k)) / k
                    for k in range(1, 9) if f * k < SAMPLE_RATE / 2]
        out.append(np.minimum(1.0, t / 0.003) * sum(partials))
    audio = np.concatenate(out)
    return (0.4 * audio / np.max(np.abs(audio))).astype(np.float32)


NOISE_PAIRS: dict[str, tuple[Callable[[Path], np.ndarray], Callable[[Path], np.ndarray]]] = {
    "pluck-organ": (_pluck_melody, _organ_melody),
    "tones-surf": (_tone_sequence, _surf_noise),
    "pluck-drone": (_pluck_melody, _bowed_drone),
    "drums-rain": (_drum_loop, _rain_noise),
    "piano-organ": (_piano_melody, _organ_melody),
}

PAIR_NAMES = (*SPEECH_PAIRS, *NOISE_PAIRS)


def _cut(audio: np.ndarray, seconds: float) -> np.ndarray:
    """At most ``seconds`` long, with a 10 ms fade-out so the cut does not click."""
    audio = audio[: int(round(seconds * SAMPLE_RATE))].copy()
    fade = min(audio.size, SAMPLE_RATE // 100)
    audio[audio.size - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return audio


def _write(path: Path, make: Callable[[Path], np.ndarray], seconds: float) -> None:
    """Make the clip in a scratch folder and move it into place atomically."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.wav")
    with tempfile.TemporaryDirectory() as scratch:
        sf.write(partial, _cut(make(Path(scratch)), seconds), SAMPLE_RATE, subtype="PCM_16")
    os.replace(partial, path)


def make_pair(name: str, seconds: float = 10.0, folder: Path = DEFAULT_FOLDER) -> Pair:
    """The pair ``name`` (one of ``PAIR_NAMES``), made on first use and cached in ``folder``."""
    folder = Path(folder)
    stem = f"{name}-{seconds:g}s"
    content, style = folder / f"{stem}-content.wav", folder / f"{stem}-style.wav"
    if name in SPEECH_PAIRS:
        content_voice, content_text, style_voice, style_text, microphone = SPEECH_PAIRS[name]
        _write(content, lambda scratch: _speak(content_voice, TEXTS[content_text], scratch, microphone), seconds)
        _write(style, lambda scratch: _speak(style_voice, TEXTS[style_text], scratch), seconds)
        return Pair(name, content, style, speech=True)
    if name in NOISE_PAIRS:
        make_content, make_style = NOISE_PAIRS[name]
        _write(content, make_content, seconds)
        _write(style, make_style, seconds)
        return Pair(name, content, style, speech=False)
    raise ValueError(f"unknown pair {name!r}; choose from {', '.join(PAIR_NAMES)}")


def make_pairs(names: Sequence[str] = PAIR_NAMES, seconds: float = 10.0, folder: Path = DEFAULT_FOLDER) -> list[Pair]:
    """Every named pair, in order."""
    return [make_pair(name, seconds, folder) for name in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIR_NAMES), choices=PAIR_NAMES)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    args = parser.parse_args()
    for pair in make_pairs(args.pairs, args.seconds, args.folder):
        print(f"{pair.name:18s} speech={pair.speech!s:5s} {pair.content}  {pair.style}")


if __name__ == "__main__":
    main()
