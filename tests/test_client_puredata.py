"""``gramophone~`` in headless Pd 0.53 against a real server: the help patch loads, a WAV streams through.

The test patch plays a WAV through ``[gramophone~]`` in real time and writes what comes out
with ``[soundfiler]``. With ``style_weight 0`` the output must be the input delayed by exactly
the latency the abstraction reports; with the default style it must be changed.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import require_tool, speak
from serverutil import ServerProcess, running_server

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PATCH_DIR = Path(__file__).resolve().parents[1] / "clients" / "puredata"
BLOCK = 1024
PD_ERRORS = re.compile(r"couldn't create|error|bad arguments|no method", re.IGNORECASE)


def pd_escape(text: str) -> str:
    return text.replace("$", "\\$").replace(",", " \\,").replace(";", " \\;")


def streaming_patch(wav: Path, out: Path, port: int, rate: int, frames: int, seconds: float, messages: list[str],
               jitter: int = 4) -> str:
    """A patch: load ``wav``, play it through [gramophone~] after a second, record, write ``out``, quit."""
    boxes = [
        "obj 10 10 loadbang", "obj 10 35 t b b b", f"msg 10 60 read -resize {wav} src", "obj 10 85 soundfiler",
        "msg 150 60 ; pd dsp 1", "obj 10 110 delay 1000", "obj 10 135 t b b", "obj 10 160 tabplay~ src",
        f"obj 10 190 gramophone~ 127.0.0.1 {port} {BLOCK} {jitter}", "obj 10 220 tabwrite~ dst",
        "obj 250 220 print GRAMOPHONE", f"obj 10 250 delay {int(seconds * 1000)}", "msg 150 275 status",
        f"msg 10 275 write -wave -bytes 4 -rate {rate} {out} dst", "obj 10 300 soundfiler",
        "obj 10 325 delay 300", "msg 10 350 ; pd quit", "obj 300 10 array define src",
        f"obj 300 35 array define dst {frames}",
    ]
    wires = [(0, 0, 1, 0), (1, 2, 2, 0), (2, 0, 3, 0), (1, 1, 4, 0), (1, 0, 5, 0), (5, 0, 6, 0), (6, 1, 7, 0),
             (6, 1, 9, 0), (7, 0, 8, 0), (8, 0, 9, 0), (8, 1, 10, 0), (6, 0, 11, 0), (11, 0, 12, 0), (12, 0, 8, 1),
             (11, 0, 13, 0), (13, 0, 14, 0), (11, 0, 15, 0), (15, 0, 16, 0)]
    for text in messages:  # sent at load, before the stream starts
        boxes.append(f"msg 300 {60 + 25 * len(wires)} {text}")
        wires += [(1, 0, len(boxes) - 1, 0), (len(boxes) - 1, 0, 8, 1)]
    lines = ["#N canvas 0 50 800 600 12;"] + [f"#X {pd_escape(box)};" for box in boxes]
    lines += [f"#X connect {a} {o} {b} {i};" for a, o, b, i in wires]
    return "\n".join(lines) + "\n"


def run_pd(patch: Path, rate: int, timeout: float = 60) -> str:
    """Run ``patch`` in real time without audio hardware; returns what Pd printed."""
    result = subprocess.run(
        [require_tool("pd"), "-nogui", "-nosound", "-nomidi", "-r", str(rate), "-path", str(PATCH_DIR), "-open", str(patch)],
        capture_output=True, text=True, timeout=timeout,
    )
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("pd-server"), "--log-level", "info") as srv:
        yield srv


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return speak(tmp_path_factory.mktemp("pd-audio") / "speech.wav", "The quick brown fox jumps over the lazy dog.", "en-us")


def stream(server: ServerProcess, speech: Path, tmp_path: Path, messages: list[str], jitter: int = 4) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Stream ``speech`` through [gramophone~]; returns input, output, reported latency and Pd's log."""
    audio, rate = sf.read(speech, dtype="float32")
    out = tmp_path / "out.wav"
    frames = len(audio) + 2 * rate
    patch = tmp_path / "stream.pd"
    patch.write_text(streaming_patch(speech, out, server.port, rate, frames, frames / rate + 0.2, messages, jitter))
    log = run_pd(patch, rate)
    assert not PD_ERRORS.search(log.replace("/fail", "")), log
    latency = re.search(r"GRAMOPHONE: latency (\d+)", log)
    assert latency and out.exists(), log
    return audio, sf.read(out, dtype="float32")[0], int(latency.group(1)), log


def test_help_patch_loads_without_errors(tmp_path: Path) -> None:
    quitter = tmp_path / "quit.pd"
    quitter.write_text("#N canvas 0 50 300 200 12;\n#X obj 10 10 loadbang;\n#X obj 10 35 delay 1500;\n"
                       "#X msg 10 60 \\; pd quit;\n#X connect 0 0 1 0;\n#X connect 1 0 2 0;\n")
    result = subprocess.run(
        [require_tool("pd"), "-nogui", "-nosound", "-nomidi", "-path", str(PATCH_DIR),
         "-open", str(PATCH_DIR / "gramophone~-help.pd"), "-open", str(quitter)],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0
    assert not PD_ERRORS.search(result.stdout + result.stderr), result.stderr


def test_null_transform_is_aligned(server: ServerProcess, speech: Path, tmp_path: Path) -> None:
    audio, out, latency, log = stream(server, speech, tmp_path, ["param style_weight 0"])
    assert "GRAMOPHONE: done /param/style_weight" in log or "GRAMOPHONE: param style_weight 0" in log, log
    assert re.search(r"GRAMOPHONE: stats [1-9]\d* \d+ \d+", log), log  # some blocks came back wet
    np.testing.assert_allclose(out[latency:latency + len(audio)], audio, atol=1e-4)
    assert np.abs(out[:latency]).max() < 1e-4  # nothing comes out before the input does


def test_default_style_changes_the_audio(server: ServerProcess, speech: Path, tmp_path: Path) -> None:
    audio, out, latency, log = stream(server, speech, tmp_path, ["param style_weight 1"], jitter=24)
    wet, dry = map(int, re.search(r"GRAMOPHONE: stats (\d+) (\d+)", log).groups())
    assert wet > dry, log
    aligned = out[latency:latency + len(audio)]
    change = np.sqrt(np.mean((aligned - audio) ** 2) / np.mean(audio**2))
    assert change > 0.1, f"relative difference {change:.3f}: not stylised"
    assert np.sqrt(np.mean(aligned**2)) > 0.1 * np.sqrt(np.mean(audio**2)), "the output is nearly silent"
