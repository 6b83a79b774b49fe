"""The Gramophone plugin (clients/plugin) for tests: its build, the CLAP test host, and checks.

    from pluginutil import plugin_build, run_clap_host, dry_blocks

The build is ``make -C clients/plugin`` (CI runs it before the tests; here it only brings the
build up to date). It needs make, a C++ compiler and DPF (Debian's dpf-source): without them
the plugin tests skip, or fail under GRAMOPHONE_REQUIRE_INTEROP=1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from conftest import REQUIRE_INTEROP, require_tool, speak
from serverutil import ServerProcess, running_server

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "clients" / "plugin"
BUILD = PLUGIN_DIR / "build"
DPF_PATH = Path(os.environ.get("DPF_PATH", "/usr/share/dpf"))
BLOCK = {44100: 512, 48000: 512}  # the plugin's own block at these rates (the largest power of two within 12 ms)
STATUS = ["no server", "connecting", "live", "render", "latency too small", "refused"]


def build() -> Path:
    """Bring ``clients/plugin/build`` up to date; its path."""
    require_tool("make")
    require_tool("g++")
    if not (DPF_PATH / "Makefile.plugins.mk").exists():
        message = f"DPF is not installed at {DPF_PATH} (Debian: dpf-source)"
        if REQUIRE_INTEROP:
            pytest.fail(f"{message}, and GRAMOPHONE_REQUIRE_INTEROP=1 demands it")
        pytest.skip(message)
    subprocess.run(["make", "-s", "-C", str(PLUGIN_DIR), f"DPF_PATH={DPF_PATH}"], check=True, timeout=900,
                   capture_output=True)
    return BUILD


@pytest.fixture(scope="session")
def plugin_build() -> Path:
    return build()


@pytest.fixture(scope="module")
def plugin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per test module, gone when the module ends. Its parameters are server-wide, but
    every plugin instance sends all of its own before it connects, so each test starts from the
    values it set."""
    with running_server(tmp_path_factory.mktemp("plugin-server")) as server:
        yield server


@pytest.fixture(scope="session")
def plugin_speech(audio_dir: Path) -> dict[int, np.ndarray]:
    """Three seconds of espeak-ng speech at 48 and 44.1 kHz, mono float32 (frames,), peak 0.5."""
    path = speak(audio_dir / "plugin_speech.wav", "The quick brown fox jumps over the lazy dog, twice.", "en-us")
    audio, rate = sf.read(path, dtype="float32")
    audio = 0.5 * audio / np.max(np.abs(audio))
    return {out: soxr.resample(audio, rate, out).astype(np.float32) for out in (48000, 44100)}


def require_module(name: str):
    """A Python package a test host needs (pedalboard): skip without it, or fail under
    GRAMOPHONE_REQUIRE_INTEROP=1."""
    try:
        return __import__(name)
    except ImportError:
        if REQUIRE_INTEROP:
            pytest.fail(f"Python package {name} is not installed, and GRAMOPHONE_REQUIRE_INTEROP=1 demands it")
        pytest.skip(f"Python package {name} is not installed")


def closed_port() -> int:
    """A UDP port nothing listens on (bound and released): a server that does not exist."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_f32(path: Path, audio: np.ndarray) -> Path:
    """``audio`` (frames, channels) or (frames,) as interleaved float32."""
    np.asarray(audio, "<f4").tofile(path)
    return path


def read_f32(path: Path, channels: int) -> np.ndarray:
    return np.fromfile(path, "<f4").reshape(-1, channels)


@dataclass
class HostRun:
    """What one run of the CLAP test host left: its output, report and trace."""

    output: np.ndarray  # (frames, channels)
    report: dict
    trace: list[dict]
    stderr: str

    @property
    def latency(self) -> int:
        return self.report["latency"]

    def outputs(self) -> dict[str, float]:
        return self.report["outputs"]


def run_clap_host(build_dir: Path, tmp_path: Path, audio: np.ndarray, *, plugin: str = "gramophone-mono",
                  rate: int = 48000, block: int = 256, realtime: bool = False, flush: bool = True,
                  params: dict[str, float] | None = None, ramps: dict[str, tuple[float, float]] | None = None,
                  stall: tuple[float, float] | None = None, timeout: float = 300.0, name: str = "run") -> HostRun:
    """Run ``audio`` (frames, channels) through the plugin in ``clients/plugin/build/clap-host``."""
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    paths = {kind: tmp_path / f"{name}.{kind}" for kind in ("in.f32", "out.f32", "report.json", "trace.jsonl")}
    write_f32(paths["in.f32"], audio)
    command = [str(build_dir / "clap-host"), str(build_dir / f"{plugin}.clap"), "--in", str(paths["in.f32"]),
               "--out", str(paths["out.f32"]), "--rate", str(rate), "--block", str(block),
               "--report", str(paths["report.json"]), "--trace", str(paths["trace.jsonl"])]
    command += ["--realtime"] * realtime + ["--flush"] * flush
    for key, value in (params or {}).items():
        command += ["--param", f"{key}={value}"]
    for key, (start, end) in (ramps or {}).items():
        command += ["--ramp", f"{key}={start}:{end}"]
    if stall is not None:
        command += ["--stall", f"{stall[0]}:{stall[1]}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    trace = [json.loads(line) for line in paths["trace.jsonl"].read_text().splitlines()]
    return HostRun(read_f32(paths["out.f32"], channels), json.loads(paths["report.json"].read_text()), trace,
                   result.stderr)


def clap_parameters(build_dir: Path, plugin: str = "gramophone-mono") -> dict[str, dict]:
    """The CLAP plugin's parameters by name, as the test host lists them (id, min, max, default, output)."""
    result = subprocess.run([str(build_dir / "clap-host"), str(build_dir / f"{plugin}.clap"), "--list"], check=True,
                            capture_output=True, text=True, timeout=60)
    return {entry["name"]: entry for entry in map(json.loads, result.stdout.splitlines())}


def lv2_path(build_dir: Path, tmp_path: Path, *bundles: str) -> str:
    """A folder holding only the given .lv2 bundles, for LV2_PATH (beside .vst3 and .clap, LV2 hosts complain)."""
    folder = tmp_path / "lv2"
    folder.mkdir(exist_ok=True)
    for bundle in bundles:
        link = folder / f"{bundle}.lv2"
        if not link.exists():
            link.symlink_to(build_dir / f"{bundle}.lv2")
    return str(folder)


def dry_blocks(output: np.ndarray, audio: np.ndarray, block: int) -> np.ndarray:
    """Per block of ``audio`` (frames, channels): whether ``output`` (aligned with it) is exactly it.
    A silent block is never dry: the server answers silence with silence."""
    count = len(audio) // block
    out, ref = output[: count * block].reshape(count, -1), audio[: count * block].reshape(count, -1)
    return np.all(out == ref, axis=1) & np.any(ref != 0, axis=1)


def error_db(output: np.ndarray, reference: np.ndarray) -> float:
    """Energy of the difference against the reference's, in dB."""
    diff = np.sum((output - reference) ** 2)
    return float(10 * np.log10(max(diff, 1e-30) / np.sum(reference**2)))
