"""``gramophone serve --latency low`` and ``--latency short``: real servers whose 48 kHz sessions
answer within 50 ms and within 100 ms, wet.

The settings' parts (the analysis, 2-frame chunks, steps after each chunk's output) are tested in
test_stream.py; here a real-time sender streams speech through a real server.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import numpy as np
import pytest
import soxr

from serverutil import SERVER_COMMAND, OscClient, RealTimeSender, ServerProcess, running_server

pytestmark = pytest.mark.slow

RATE = 48000
OVERLOAD_SLACK = 0.010  # as in test_live_promise's overloaded sessions
BOUNDS = {"low": 0.050, "short": 0.100}  # what each setting promises at 48 kHz
PRESETS = {"low": "low-latency", "short": "default"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[Callable[[str], ServerProcess]]:
    """A server per setting, started on first use and kept for the module."""
    started: dict = {}
    with ExitStack() as stack:
        def server(setting: str) -> ServerProcess:
            if setting not in started:
                folder = tmp_path_factory.mktemp(f"latency-{setting}")
                started[setting] = stack.enter_context(running_server(folder, "--latency", setting))
            return started[setting]
        yield server


@pytest.fixture(scope="module")
def speech_48k(speech) -> np.ndarray:
    audio, rate = speech["content"]
    return soxr.resample(audio[0], rate, RATE).astype(np.float32)


@pytest.mark.parametrize("setting, block", [("low", 256), ("low", 512), ("short", 512)])
def test_a_48_khz_session_is_answered_within_the_settings_bound_wet_and_on_time(servers, speech_48k, setting, block):
    srv = servers(setting)
    assert (f"latency setting {setting}: preset {PRESETS[setting]}, 2 frames a chunk, steps after each chunk's output"
            in srv.log_text())
    count = int(4.0 * RATE / block)
    blocks = list(speech_48k[: count * block].reshape(count, block))
    sender = RealTimeSender(srv.host, srv.port, RATE, block)
    try:
        latency = sender.request("/connect", RATE, 1, block, reply="/connected").params[1] / RATE
        assert latency <= BOUNDS[setting]
        sender.send(0, blocks)
        time.sleep(latency + 0.3)
        names = ("sessions", "rtf_avg", "rtf_peak", "iterations_avg", "latency_ms", "late_chunks", "lost_blocks",
                 "queued_blocks", "late_blocks")
        status = dict(zip(names, sender.request("/status", reply="/status/reply").params))
        sender.request("/disconnect", reply="/done")
    finally:
        sender.close()
    delays = sender.delays()
    assert sorted(delays) == list(range(count)) and sender.repeats == 0
    # Steps back to back after every chunk keep the interpreter busy, and the watchdog may wake late:
    # the promise may slip by a few milliseconds for a rare block (bench.soak counts them).
    assert status["late_blocks"] <= 0.01 * count and max(delays.values()) <= latency + OVERLOAD_SLACK, status
    assert status["iterations_avg"] > 0.1, status  # the steps after the output do run (none in the first 0.5 s)
    dry = sum(np.array_equal(sender.samples[seq], block) for seq, block in enumerate(blocks))
    assert dry <= 0.02 * count, f"{dry} of {count} blocks went back dry"


def test_an_unknown_latency_setting_in_the_config_file_is_one_line(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('latency = "lowest"\n')
    done = subprocess.run([*SERVER_COMMAND, "--config", str(config)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "latency must be one of default, short, low" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_auto_admits_the_one_session_two_cores_hold_at_this_setting(tmp_path):
    """``--max-sessions auto`` weighs a session's steps at the setting's budget of 0.9: one fits the
    core the steps may use (0.8 of it), a second is refused with a /fail saying why."""
    with running_server(tmp_path, "--latency", "low", "--max-sessions", "auto") as server:
        assert "--max-sessions auto: room for 1 sessions" in server.log_text()
        with OscClient(server.host, server.port) as first, OscClient(server.host, server.port) as second:
            first.request("/connect", RATE, 1, 256, reply="/connected")
            address, reason = second.request("/connect", RATE, 1, 256, reply="/fail").params[:2]
            assert address == "/connect" and reason.startswith("server full: 1 session; 2 sessions' steps would need ")
