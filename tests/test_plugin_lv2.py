"""The plugin as LV2: its description passes lv2_validate; lv2file runs it offline (and ignores the
latency, so the output is the input shifted by it); jalv runs it in real time under JACK's dummy
backend, which reads the latency from the plugin's port."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import require_tool
from pluginutil import STATUS, closed_port, error_db, lv2_path, plugin_build, plugin_server, plugin_speech  # noqa: F401

pytestmark = [pytest.mark.interop, pytest.mark.slow]

URI = {"gramophone-mono": "urn:gramophone:plugin:mono", "gramophone": "urn:gramophone:plugin:stereo"}
# The one term of KXStudio's LV2 vocabulary that DPF's descriptions use (on parameters hosts should
# not automate); lv2-dev ships the LV2 vocabularies only.
KXSTUDIO_TERMS = """@prefix lv2: <http://lv2plug.in/ns/lv2core#> .
@prefix rdfs: <http://www.w3.org/2000/01/rdf-schema#> .
<http://kxstudio.sf.net/ns/lv2ext/props#NonAutomatable> a lv2:PortProperty ;
    rdfs:label "non-automatable" ;
    rdfs:comment "The host should not automate this port." .
"""


@pytest.mark.parametrize("bundle", ["gramophone-mono", "gramophone"])
def test_the_description_validates(plugin_build: Path, tmp_path: Path, bundle: str):
    require_tool("sordi")
    terms = tmp_path / "kxstudio.ttl"
    terms.write_text(KXSTUDIO_TERMS)
    ttl = sorted(str(path) for path in (plugin_build / f"{bundle}.lv2").glob("*.ttl"))
    result = subprocess.run([require_tool("lv2_validate"), str(terms), *ttl], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "Found 0 errors" in result.stdout + result.stderr, result.stdout + result.stderr


def default_latency_ms(build: Path, tmp_path: Path) -> float:
    env = {**os.environ, "LV2_PATH": lv2_path(build, tmp_path, "gramophone-mono")}
    info = subprocess.run([require_tool("lv2info"), URI["gramophone-mono"]], capture_output=True, text=True, env=env,
                          check=True, timeout=60).stdout
    return float(re.search(r"Symbol:\s+latency_ms\n.*?Default:\s+(\S+)", info, re.S).group(1))


def run_lv2file(build: Path, tmp_path: Path, audio: np.ndarray, rate: int, **controls: float) -> np.ndarray:
    source, target = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(source, audio, rate, subtype="FLOAT")
    command = [require_tool("lv2file"), "-i", str(source), "-o", str(target)]
    for symbol, value in controls.items():
        command += ["-p", f"{symbol}:{value}"]
    env = {**os.environ, "LV2_PATH": lv2_path(build, tmp_path, "gramophone-mono")}
    result = subprocess.run([*command, URI["gramophone-mono"]], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    return sf.read(target, dtype="float32")[0]


def test_lv2file_without_a_server_gives_the_input_shifted_by_the_latency(plugin_build, plugin_speech, tmp_path):
    rate = 44100
    audio = plugin_speech[rate]
    out = run_lv2file(plugin_build, tmp_path, audio, rate, server_port=closed_port())
    latency = round(default_latency_ms(plugin_build, tmp_path) * rate / 1000)
    assert len(out) == len(audio) and not out[:latency].any()
    np.testing.assert_array_equal(out[latency:], audio[:-latency])


def test_lv2file_renders_through_the_server(plugin_build, plugin_server, plugin_speech, tmp_path):
    """Offline, so the auto mode renders: a style weight of 0 is the input, shifted, every block from the server."""
    rate = 44100
    audio = plugin_speech[rate]
    out = run_lv2file(plugin_build, tmp_path, audio, rate, server_port=plugin_server.port, style_weight=0)
    latency = round(default_latency_ms(plugin_build, tmp_path) * rate / 1000)
    assert error_db(out[latency:], audio[:-latency]) < -60
    assert not np.array_equal(out[latency:], audio[:-latency])


def test_jalv_in_real_time_reports_the_latency_to_jack_and_streams(plugin_build, plugin_server, tmp_path):
    rate, period = 48000, 256
    jackd = require_tool("jackd")
    name = f"gramophone-plugin-test-{os.getpid()}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_START_SERVER": "1",
           "LV2_PATH": lv2_path(plugin_build, tmp_path, "gramophone-mono")}
    jack = subprocess.Popen([jackd, "-n", name, "--no-realtime", "-d", "dummy", "-r", str(rate), "-p", str(period)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        subprocess.run([require_tool("jack_wait"), "-w", "-t", "10"], env=env, check=True, capture_output=True, timeout=20)
        client = "gramophone-jalv"
        jalv = subprocess.Popen([require_tool("jalv"), "-n", client, "-c", f"server_port={plugin_server.port}",
                                 URI["gramophone-mono"]], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        try:
            latency = round(default_latency_ms(plugin_build, tmp_path) * rate / 1000)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                ports = subprocess.run([require_tool("jack_lsp"), "-l", f"{client}:lv2_audio_out_1"], env=env,
                                       capture_output=True, text=True, timeout=10).stdout
                if f"playback latency = [ {latency} {latency} ]" in ports:
                    break
                time.sleep(0.5)
            assert f"playback latency = [ {latency} {latency} ]" in ports, ports
            time.sleep(3)  # a few seconds of real time, connected
            jalv.stdin.write("monitors\n")
            jalv.stdin.flush()
            time.sleep(1)
        finally:
            jalv.terminate()
            text = jalv.communicate(timeout=20)[0]
    finally:
        jack.terminate()
        jack.wait(10)
    monitors = {key: float(value) for key, value in re.findall(r"^(?:> )?(\w+) = (\S+)$", text, re.M)}
    assert STATUS[int(monitors["status"])] == "live" and monitors["connected"] == 1, text
    assert monitors["arrival_worst_ms"] < 0, text
    assert monitors["late_blocks"] <= 0.05 * 4 * rate / 512, text
