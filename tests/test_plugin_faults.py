"""A host paced in real time keeps running while its server is killed and restarted: the plugin
plays dry through the gap, reconnects by itself, and is wet again, on time, afterwards."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from pluginutil import BLOCK, closed_port, dry_blocks, plugin_build, read_f32, plugin_speech, write_f32  # noqa: F401
from serverutil import running_server

pytestmark = [pytest.mark.interop, pytest.mark.slow]

RATE = 48000
SECONDS = 30
KILL_AT = 8.0  # seconds into the run


def test_the_server_killed_and_restarted_mid_stream(plugin_build: Path, plugin_speech, tmp_path: Path):
    voice = plugin_speech[RATE]
    t = np.arange(SECONDS * RATE) / RATE
    audio = (np.resize(voice, len(t)) + 0.05 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # never silent
    source, target, report, trace = (tmp_path / name for name in ("in.f32", "out.f32", "report.json", "trace.jsonl"))
    write_f32(source, audio)
    port = closed_port()
    with running_server(tmp_path, "--port", str(port)) as first:
        host = subprocess.Popen(
            [str(plugin_build / "clap-host"), str(plugin_build / "gramophone-mono.clap"), "--in", str(source),
             "--out", str(target), "--rate", str(RATE), "--block", "256", "--realtime", "--flush",
             "--param", f"Server port={port}", "--report", str(report), "--trace", str(trace)],
            stderr=subprocess.PIPE, text=True)
        time.sleep(KILL_AT)
        first.proc.kill()  # SIGKILL: no goodbye
        first.proc.wait()
    with running_server(tmp_path, "--port", str(port)):
        stderr = host.communicate(timeout=SECONDS + 60)[1]
    assert host.returncode == 0, stderr

    entries = [json.loads(line) for line in trace.read_text().splitlines()]
    connected = np.array([entry["outputs"]["Connected"] for entry in entries])
    times = np.array([entry["t"] for entry in entries])
    lost = int(np.argmax((connected[1:] == 0) & (connected[:-1] == 1))) + 1
    back = lost + int(np.argmax(connected[lost:] == 1))
    assert connected[:lost].any() and not connected[lost:back].any() and connected[back:].all(), connected
    print(f"lost the server at {times[lost]:.2f} s, back at {times[back]:.2f} s")

    final = json.loads(report.read_text())
    latency, block = final["latency"], BLOCK[RATE]
    out = read_f32(target, 1)[latency:, 0]
    dry = dry_blocks(out[:, None], audio[:, None], block)
    at = (np.arange(len(dry)) + 1) * block / RATE  # when each block's input was complete
    # The trace samples "Connected" every 0.25 s, and blocks held while the link was connecting go
    # out once it is up if their answer can still be in time: a block up to the plugin's latency
    # before the reconnect may come back wet.
    gap = (at > times[lost]) & (at < times[back] - 0.25 - latency / RATE)
    assert gap.sum() > 2 * RATE / block and dry[gap].all()  # seconds of it (a restart loads torch and warms up), all dry
    before = (at > times[lost] - 4) & (at < times[lost] - 0.5)
    after = at > times[back] + 1.0
    assert dry[before].mean() <= 0.05 and dry[after].mean() <= 0.05, (dry[before].mean(), dry[after].mean())
    outputs = final["outputs"]
    assert outputs["Arrival worst"] < 0 and outputs["Late blocks"] <= 0.05 * after.sum()  # this session
    assert final["process_us"]["max"] < 5000  # the audio thread never waited for the network
    assert "lost the server" in stderr
