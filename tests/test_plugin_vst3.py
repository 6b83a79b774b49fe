"""The plugin as VST3 in pedalboard, a JUCE host: it reads the reported latency before processing
and compensates it, and renders offline (faster than real time), so the plugin's auto mode
switches the session to render and waits for the server."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from pluginutil import (BLOCK, closed_port, dry_blocks, error_db, plugin_build, plugin_server,  # noqa: F401
                        require_module, plugin_speech)
from serverutil import OscClient, ServerProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

RATE = 48000
STYLES = Path(__file__).resolve().parent.parent / "server" / "gramophone" / "data" / "styles"


def load(build: Path, name: str, monkeypatch: pytest.MonkeyPatch, port: int):
    """A new instance whose address parameters start at 127.0.0.1:``port`` (GRAMOPHONE_SERVER)."""
    pedalboard = require_module("pedalboard")
    monkeypatch.setenv("GRAMOPHONE_SERVER", f"127.0.0.1:{port}")
    plugin = pedalboard.load_plugin(str(build / f"{name}.vst3"))
    # By its normalised value: pedalboard rounds a plain value over this range to 1/1000 of it.
    plugin.parameters["server_port"].raw_value = (port - 1) / (65535 - 1)
    assert plugin.server_port == port
    return plugin


def test_without_a_server_the_output_is_the_input_in_bounded_time(plugin_build, plugin_speech, monkeypatch):
    audio = plugin_speech[RATE][None]
    for mode in ("auto", "render"):
        plugin = load(plugin_build, "gramophone-mono", monkeypatch, closed_port())
        plugin.mode = mode
        began = time.monotonic()
        out = plugin.process(audio, RATE)
        assert time.monotonic() - began < 5.0, mode  # no server, no wait
        assert plugin.reported_latency_samples == round(plugin.plugin_latency_ms * RATE / 1000)
        np.testing.assert_array_equal(out, audio)  # the dry path, compensated exactly


def test_style_weight_zero_is_the_input_through_the_server(plugin_build, plugin_server, plugin_speech, monkeypatch):
    """Mono and stereo (different signals left and right), lined up by the host's compensation."""
    voice = plugin_speech[RATE]
    tone = 0.3 * np.sin(2 * np.pi * 330 * np.arange(len(voice)) / RATE).astype(np.float32)
    for name, audio in (("gramophone-mono", voice[None]), ("gramophone", np.stack([voice, tone]))):
        plugin = load(plugin_build, name, monkeypatch, plugin_server.port)
        plugin.style_weight = 0
        out = plugin.process(audio, RATE)
        for channel in range(audio.shape[0]):
            assert error_db(out[channel], audio[channel]) < -60, (name, channel)
        assert not np.array_equal(out, audio)  # processed by the server, not the dry path


def test_the_default_style_stylises_and_a_bounce_equals_a_render(plugin_build, plugin_server: ServerProcess, plugin_speech,
                                                                 monkeypatch):
    from gramophone import metrics

    audio = plugin_speech[RATE]
    plugin = load(plugin_build, "gramophone-mono", monkeypatch, plugin_server.port)
    out = plugin.process(audio[None], RATE)[0]  # auto: a render, the pace says so
    block = BLOCK[RATE]
    assert not dry_blocks(out[:, None], audio[:, None], block).any()
    style, style_rate = sf.read(STYLES / "voice.flac", dtype="float32", always_2d=True)
    report = metrics.measure(audio, style[:, 0], out, RATE, style_rate=style_rate)
    print(f"held-out gain {report.held_out_gain:.3f}, MFCC gain {report.mfcc_gain:.3f}")
    assert report.held_out_gain > 0.3

    rendered = render_over_osc(plugin_server, audio, block)
    assert error_db(out, rendered) < -60  # the same full-quality render as a client's /mode render


def render_over_osc(server: ServerProcess, audio: np.ndarray, block: int) -> np.ndarray:
    """``audio`` through a render-mode session of the same server, as ``gramophone-client render``."""
    blocks = np.pad(audio, (0, -len(audio) % block)).reshape(-1, block)
    answers: dict[int, np.ndarray] = {}
    with OscClient(server.host, server.port) as osc:
        osc.request("/connect", RATE, 1, block, reply="/connected")
        osc.request("/mode", "render", reply="/done")
        for seq, part in enumerate(blocks):
            osc.send("/content", seq, part.astype("<f4").tobytes())
            if seq >= 64:  # keep a few dozen in flight
                reply = osc.expect("/audio", timeout=60)
                answers[reply.params[0]] = np.frombuffer(reply.params[1], "<f4")
        osc.send("/flush")
        while len(answers) < len(blocks):
            reply = osc.expect("/audio", timeout=60)
            answers[reply.params[0]] = np.frombuffer(reply.params[1], "<f4")
        osc.request("/disconnect", reply="/done")
    return np.concatenate([answers[seq] for seq in range(len(blocks))])[: len(audio)]


def test_the_server_address_is_saved_with_the_project(plugin_build, plugin_server, plugin_speech, monkeypatch):
    audio = plugin_speech[RATE][None]
    saved = load(plugin_build, "gramophone-mono", monkeypatch, closed_port())
    saved.parameters["server_port"].raw_value = (plugin_server.port - 1) / (65535 - 1)
    saved.parameters["style_weight"].raw_value = 0.0
    saved.process(np.zeros((1, 1024), np.float32), RATE)  # pedalboard hands the plugin new values in process()
    state = saved.raw_state
    restored = load(plugin_build, "gramophone-mono", monkeypatch, closed_port())
    restored.raw_state = state
    assert restored.server_port == plugin_server.port and restored.style_weight == 0
    out = restored.process(audio, RATE)
    assert error_db(out, audio) < -60 and not np.array_equal(out, audio)  # through the server

