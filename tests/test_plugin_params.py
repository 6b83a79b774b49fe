"""Every server parameter is a plugin parameter with the server's range and default, in all three
formats: the LV2 description (lv2info), the CLAP host's list and pedalboard's VST3."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from pluginutil import clap_parameters, lv2_path, plugin_build, plugin_server, require_module  # noqa: F401
from serverutil import OscClient, ServerProcess

pytestmark = [pytest.mark.interop, pytest.mark.slow]

URI = "urn:gramophone:plugin:mono"
ENABLED = "http://lv2plug.in/ns/lv2core#enabled"


def server_parameters(server: ServerProcess) -> dict[str, tuple[float, float, float]]:
    """name -> (min, max, default) from /params."""
    out = {}
    with OscClient(server.host, server.port) as osc:
        osc.send("/params")
        while (reply := osc.receive(10)) is not None and reply.address != "/done":
            if reply.address == "/params/reply":
                name, _value, low, high, default = reply.params
                out[name] = (low, high, default)
    return out


def lv2_ports(build: Path, tmp_path: Path) -> dict[str, dict]:
    """Control ports by symbol: name, minimum, maximum, default, designation."""
    env = {**os.environ, "LV2_PATH": lv2_path(build, tmp_path, "gramophone-mono")}
    text = subprocess.run([require_tool("lv2info"), URI], check=True, capture_output=True, text=True, env=env,
                          timeout=60).stdout
    ports = {}
    for chunk in re.split(r"\n\tPort \d+:\n", text)[1:]:
        fields = dict(re.findall(r"^\t\t(\w+):\s+(\S.*)$", chunk, re.M))
        if "Symbol" in fields:
            ports[fields["Symbol"]] = fields
    return ports


def test_every_server_parameter_is_a_plugin_parameter_with_its_range(plugin_build, plugin_server, tmp_path):
    server = server_parameters(plugin_server)
    ports = lv2_ports(plugin_build, tmp_path)
    clap = clap_parameters(plugin_build)
    pedalboard = require_module("pedalboard")
    vst3 = pedalboard.load_plugin(str(plugin_build / "gramophone-mono.vst3")).parameters
    # pedalboard keys a parameter by its name and unit ("pitch_st"): look it up by its name, as CLAP's is
    vst3_by_name = {parameter.name.removesuffix(f" {parameter.units}") if parameter.units else parameter.name: parameter
                    for parameter in vst3.values()}
    assert server, "the server listed no parameters"
    for name, (low, high, default) in server.items():
        if name == "bypass":  # the host's own bypass: LV2's inverted lv2:enabled, VST3's and CLAP's bypass
            assert any(port.get("Designation") == ENABLED for port in ports.values())
            assert "bypass" in vst3 and "Bypass" in clap
            continue
        port = ports[name]  # the LV2 symbol is the server's name
        assert (float(port["Minimum"]), float(port["Maximum"]), float(port["Default"])) == pytest.approx(
            (low, high, default), rel=1e-6), name
        entry = clap[port["Name"]]
        assert (entry["min"], entry["max"], entry["default"]) == pytest.approx((low, high, default), rel=1e-6), name
        vst3_parameter = vst3_by_name[port["Name"]]
        assert vst3_parameter.range[:2] == pytest.approx((low, high), rel=1e-6), name
    assert set(clap_parameters(plugin_build, "gramophone")) == set(clap)  # stereo and mono alike
