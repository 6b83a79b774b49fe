"""The plugin as CLAP in clients/plugin/build/clap-host, a small host written against the CLAP
headers DPF ships (it provides clap.latency). It does not compensate the latency: the output is
the input (or its stylised version) ``latency`` frames later."""

from __future__ import annotations

import numpy as np
import pytest
from pluginutil import (BLOCK, STATUS, dry_blocks, error_db, plugin_build, plugin_server,  # noqa: F401
                        run_clap_host, plugin_speech)
from serverutil import OscClient, ServerProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

RATE = 48000


def test_offline_the_latency_setting_reaches_the_host_before_activation(plugin_build, plugin_server, plugin_speech, tmp_path):
    """The setting changes the latency before activation (the host's clap.latency hears of it);
    a style weight of 0 gives the input back, that many frames later, every block wet."""
    audio = plugin_speech[RATE]
    run = run_clap_host(plugin_build, tmp_path, audio, block=512,
                        params={"Server port": plugin_server.port, "Style weight": 0, "Plugin latency": 250})
    assert run.latency == round(0.250 * RATE) and run.report["latency_changed"]
    out = run.output[run.latency:, 0]
    assert error_db(out, audio) < -60
    assert not dry_blocks(out[:, None], audio[:, None], BLOCK[RATE]).any()
    assert not run.output[: run.latency].any()  # before the first input frame: silence
    assert STATUS[int(run.outputs()["Status"])] == "render"  # the host ran faster than real time


def test_in_real_time_the_answers_arrive_before_they_are_needed(plugin_build, plugin_server, plugin_speech, tmp_path):
    """Live, host blocks of 128: once connected the blocks are wet, every wet answer in before it
    was needed. A server on a busy machine may still answer a few blocks dry (it logs "falls
    behind"): the plugin plays those from its own copy, crossfaded, and counts them."""
    audio = plugin_speech[RATE]
    run = run_clap_host(plugin_build, tmp_path, audio, block=128, realtime=True, params={"Server port": plugin_server.port})
    outputs = run.outputs()
    assert STATUS[int(outputs["Status"])] == "live" and outputs["Connected"] == 1
    assert outputs["Server latency"] + 5 <= outputs["Needed latency"] <= run.latency / RATE * 1000
    assert outputs["Arrival p99"] <= outputs["Arrival worst"] < 0  # ms before they were needed
    out = run.output[run.latency:, 0]
    dry = dry_blocks(out[:, None], audio[:, None], BLOCK[RATE])
    connected = next(entry["t"] for entry in run.trace if entry["outputs"]["Connected"] == 1)
    first_wet = int(np.argmin(dry))
    assert first_wet * BLOCK[RATE] / RATE < connected + 0.5  # wet soon after connecting
    # the blocks it counts late are the dry ones pushed while the session was up: all from the first
    # wet one on, and perhaps a few just before it (too old to send once the session came up). The
    # trace is sampled, so the session came up at the latest trace entry still unconnected, or after.
    unconnected = max((entry["t"] for entry in run.trace if entry["t"] < connected), default=0.0)
    since_connected = max(0, int(unconnected * RATE / BLOCK[RATE]) - 1)
    assert dry[first_wet:].sum() <= outputs["Late blocks"] <= dry[since_connected:].sum()
    assert outputs["Late blocks"] <= 0.05 * len(dry)
    assert error_db(out, audio) > -20  # the default style changed the sound


def test_a_host_that_falls_behind_and_catches_up_is_still_live(plugin_build, plugin_server, plugin_speech, tmp_path):
    """A 300 ms stall, then calls back to back until the host is on time again: faster than real
    time for a moment, but never ahead of it, so not a bounce: the plugin never waits."""
    run = run_clap_host(plugin_build, tmp_path, plugin_speech[RATE], block=256, realtime=True, stall=(1.5, 300),
                        params={"Server port": plugin_server.port})
    assert all(STATUS[int(entry["outputs"]["Status"])] != "render" for entry in run.trace)
    assert STATUS[int(run.outputs()["Status"])] == "live"
    assert run.report["process_us"]["max"] < 5000


def test_a_latency_too_small_for_the_server_stays_dry_and_says_why(plugin_build, plugin_server, plugin_speech, tmp_path):
    audio = plugin_speech[RATE][: 2 * RATE]
    run = run_clap_host(plugin_build, tmp_path, audio, block=256, realtime=True,
                        params={"Server port": plugin_server.port, "Plugin latency": 100, "Mode": 1})
    outputs = run.outputs()
    assert STATUS[int(outputs["Status"])] == "latency too small" and outputs["Connected"] == 1
    assert outputs["Needed latency"] > 100 and outputs["Server latency"] > 100 - 5
    assert "set the latency to" in run.stderr
    log = plugin_server.log_text()
    assert "the latency cannot fit" in log  # it asked the server to fit its window first, which cannot be done
    assert "says: gramophone plugin: staying dry" in log  # and the server's log says why it stays dry
    np.testing.assert_array_equal(run.output[run.latency:, 0], audio)  # dry, in line with the wet path


def test_automation_reaches_the_server_and_its_last_value_wins(plugin_build, plugin_server: ServerProcess, plugin_speech,
                                                              tmp_path):
    """The wet knob moved every call for two seconds (rate-limited on the way); the server ends at its
    last value."""
    run_clap_host(plugin_build, tmp_path, plugin_speech[RATE][: 2 * RATE], block=256, realtime=True,
                  params={"Server port": plugin_server.port}, ramps={"Wet": (0.0, 0.625)})
    with OscClient(plugin_server.host, plugin_server.port) as osc:
        assert osc.request("/param/wet", reply="/param/wet").params[0] == pytest.approx(0.625)

