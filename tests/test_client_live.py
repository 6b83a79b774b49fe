"""``gramophone-client live`` under the JACK dummy backend, against a real server.

Each test runs its own jackd under a private server name (JACK_DEFAULT_SERVER), so other
JACK users on the machine are neither seen nor disturbed; JACK_NO_START_SERVER stops libjack
from starting one behind our back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import require_tool
from serverutil import ServerProcess, running_server

from gramophone_client import Client

pytestmark = [pytest.mark.interop, pytest.mark.slow]

RATE = 48000
BLOCK = 512
CLIENT = [sys.executable, "-c", "from gramophone_client.cli import main; raise SystemExit(main())"]


def jack_env(name: str) -> dict[str, str]:
    return {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def jack() -> Iterator[dict[str, str]]:
    """A jackd dummy backend at 48 kHz; yields the environment that reaches it."""
    jackd = require_tool("jackd")
    env = jack_env(f"gramophone-test-{os.getpid()}")
    proc = subprocess.Popen([jackd, "-n", env["JACK_DEFAULT_SERVER"], "-d", "dummy", "-r", str(RATE), "-p", "1024"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run([require_tool("jack_wait"), "-w", "-t", "10"], env=env, check=True, capture_output=True, timeout=20)
        yield env
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path, "--log-level", "info") as srv:
        with Client(srv.host, srv.port) as c:
            c.param("style_weight", 0)  # the null transform: wet and dry are both the input, delayed
        yield srv


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """Twenty seconds of a slow 200→2000 Hz sweep at 48 kHz: every block is distinct."""
    t = np.arange(20 * RATE) / RATE
    phase = 2 * np.pi * (200 * t + 1800 * t**2 / 40)
    path = tmp_path / "sweep.wav"
    sf.write(path, (0.5 * np.sin(phase)).astype(np.float32), RATE, subtype="FLOAT")
    return path


def delay_of(stdout: str) -> int:
    """The output delay in samples, from the 'output delayed N blocks' line."""
    match = re.search(r"output delayed (\d+) blocks", stdout)
    assert match, stdout
    return int(match.group(1)) * BLOCK


def assert_delayed_copy(recording: Path, source: Path, delay: int) -> np.ndarray:
    """The recording is the source delayed by ``delay``: never silence, never a jump."""
    out = sf.read(recording, dtype="float32")[0]
    src = sf.read(source, dtype="float32")[0]
    assert len(out) > delay + RATE
    np.testing.assert_allclose(out[delay:], src[: len(out) - delay], atol=1e-4)
    return out


def test_list_devices_shows_jack(jack: dict[str, str]) -> None:
    result = subprocess.run([*CLIENT, "live", "--list-devices"], env=jack, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "JACK" in result.stdout


def test_no_audio_device_is_one_line(tmp_path: Path) -> None:
    require_tool("jackd")
    env = jack_env("gramophone-nobody-home")
    probe = subprocess.run([sys.executable, "-c", "import sounddevice as sd; print(len(sd.query_devices()))"],
                           env=env, capture_output=True, text=True, timeout=30)
    if probe.stdout.strip() != "0":
        pytest.skip("this machine has audio devices besides JACK")
    for args in (["live", "--duration", "1"], ["live", "--list-devices"]):
        result = subprocess.run([*CLIENT, *args], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert result.stderr.startswith("gramophone-client: no audio device found") and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr + result.stdout


def test_live_streams_through_the_server(jack: dict[str, str], server: ServerProcess, sweep: Path, tmp_path: Path) -> None:
    record = tmp_path / "live.wav"
    result = subprocess.run(
        [*CLIENT, "live", "--port", str(server.port), "--block", str(BLOCK), "--duration", "3",
         "--file", str(sweep), "--record", str(record)],
        env=jack, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"live: {RATE} Hz, 1 ch, block {BLOCK}")
    status_lines = [line for line in lines if "| server: 1 sessions" in line]
    assert len(status_lines) >= 2 and all(re.match(r"in +[-\d.inf]+ dB +out", line) for line in status_lines)
    wet = int(re.search(r"wet (\d+)", status_lines[-1]).group(1))
    assert wet > 0, result.stdout
    assert lines[-1].startswith("stopped after")
    assert_delayed_copy(record, sweep, delay_of(result.stdout))


def test_server_stopped_mid_stream_plays_dry_then_ctrl_c(jack: dict[str, str], server: ServerProcess,
                                                          sweep: Path, tmp_path: Path) -> None:
    """The server goes away: the client says so every second and keeps playing the input; Ctrl-C is clean."""
    record = tmp_path / "live.wav"
    proc = subprocess.Popen(
        [*CLIENT, "live", "--port", str(server.port), "--block", str(BLOCK), "--file", str(sweep), "--record", str(record)],
        env=jack, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        while len([line for line in lines if "| server: 1 sessions" in line]) < 2:
            line = proc.stdout.readline()
            assert line, f"client ended early: {lines} {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line)
        assert server.stop() == 0
        stopped_at = len(lines)
        while len([line for line in lines[stopped_at:] if "playing dry" in line]) < 3:
            line = proc.stdout.readline()
            assert line, f"client ended early: {lines}"
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines += stdout.splitlines()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "server: no reply" in "".join(lines[stopped_at:])
    summary = lines[-1]
    dry = int(re.search(r"(\d+) played dry", summary).group(1))
    assert summary.startswith("stopped after") and dry >= 3 * RATE // BLOCK  # three seconds of dry blocks at least
    assert_delayed_copy(record, sweep, delay_of(lines[0]))
