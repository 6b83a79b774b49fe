"""OSCQuery on a real ``gramophone serve``: the namespace and HOST_INFO over HTTP, LISTEN and OSC over
the WebSocket (aiohttp's client, python-osc over UDP), style changes as PATH_ADDED / PATH_REMOVED,
bad requests, ``--allow``, and the one source of truth behind the tree and the docs."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from gramophone.osc.namespace import build_tree, find, param_table
from gramophone.params import PARAMETERS
from gramophone.osc.protocol import SIGNATURES
from serverutil import SERVER_COMMAND, OscClient, running_server

ROOT = Path(__file__).resolve().parent.parent
LISTEN_ROUNDS = 200


@pytest.fixture(scope="module")
def srv(tmp_path_factory, tone_file):
    root = tmp_path_factory.mktemp("oscquery")
    (root / "styles").mkdir()
    shutil.copy(tone_file, root / "styles" / "tone.wav")
    with running_server(root) as server:
        yield server
        assert server.stop() == 0
        assert "Traceback" not in server.log_text() and server.log_text().rstrip().endswith("stopped")


def url(srv, path: str = "/") -> str:
    return f"http://127.0.0.1:{srv.http_port}{path}"


def osc(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


async def frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> OscMessage | dict:
    """The next frame: a binary one as an OSC message, a text one as JSON."""
    message = await ws.receive(timeout)
    if message.type == aiohttp.WSMsgType.BINARY:
        return OscMessage(message.data)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def frame_for(ws, address: str, timeout: float = 5.0) -> OscMessage:
    """The next OSC frame to ``address``, skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        got = await frame(ws, max(deadline - time.monotonic(), 0.01))
        if isinstance(got, OscMessage) and got.address == address:
            return got


async def listen(ws, path: str) -> None:
    await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": path}))


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


# -- one source of truth -----------------------------------------------------------------


def test_protocol_layer_imports_no_torch():
    code = ("import sys, gramophone.osc.oscquery, gramophone.osc.namespace, gramophone.osc.discovery, gramophone_client.discover; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_docs_parameter_table_is_the_specs():
    """docs/protocol.md's table is generated from params.py (``python -m gramophone.osc.namespace``)."""
    assert param_table() in (ROOT / "docs" / "protocol.md").read_text()


def test_daw_guide_parameter_rows_match_the_specs():
    rows = re.findall(r"^\| `/param/(\w+)` \| ([^|]+) \| ([^|]+) \|$", (ROOT / "docs" / "daw.md").read_text(), re.M)
    assert sorted(name for name, _, _ in rows) == sorted(PARAMETERS)
    for name, span, default in rows:
        spec = PARAMETERS[name]
        low, high = re.findall(r"-?[\d.]+", span)
        assert (float(low), float(high), float(default)) == (spec.minimum, spec.maximum, spec.default), name


def test_tree_holds_every_address_of_the_protocol_table():
    documented = set(re.findall(r"^\| `(/[\w/]+)` \|", (ROOT / "docs" / "protocol.md").read_text(), re.M))
    assert documented == set(SIGNATURES) | {"/param/NAME"}
    tree = build_tree({name: spec.default for name, spec in PARAMETERS.items()}, ["a", "b"], "a")
    for address in [*SIGNATURES, *(f"/param/{name}" for name in PARAMETERS), "/style/names/a"]:
        node = find(tree, address)
        assert node is not None and node["FULL_PATH"] == address and node["DESCRIPTION"], address
    assert find(tree, "/style/select")["RANGE"] == [{"VALS": ["a", "b"]}]
    assert find(tree, "/connect")["TYPE"] == "iii" and find(tree, "/style/mix")["TYPE"] == "sf"


# -- HTTP ----------------------------------------------------------------------------------


def test_namespace_and_host_info_over_http(srv):
    async def go():
        async with aiohttp.ClientSession() as http:
            tree = await (await http.get(url(srv))).json()
            info = await (await http.get(url(srv, "?HOST_INFO"))).json()
            wet = await (await http.get(url(srv, "/param/wet?VALUE"))).json()
            gain = await (await http.get(url(srv, "/param/gain_db"))).json()
        return tree, info, wet, gain

    with OscClient(srv.host, srv.port) as client:
        client.request("/param/wet", 0.75, reply="/param/wet")
        tree, info, wet, gain = run(go())
        assert client.request("/version", reply="/version/reply").params == ["gramophone", "0.1.0", srv.http_port]
        client.request("/param/wet", 1.0, reply="/param/wet")
    assert info["OSC_PORT"] == srv.port and info["OSC_TRANSPORT"] == "UDP" and info["NAME"].startswith("Gramophone on ")
    assert all(info["EXTENSIONS"][name] for name in ("ACCESS", "VALUE", "RANGE", "DESCRIPTION", "LISTEN", "PATH_ADDED"))
    assert wet == {"VALUE": [0.75]}
    assert gain == {"FULL_PATH": "/param/gain_db", "TYPE": "f", "ACCESS": 3, "VALUE": [0.0],
                    "RANGE": [{"MIN": -60.0, "MAX": 24.0}], "CLIPMODE": ["both"], "UNIT": ["dB"],
                    "DESCRIPTION": PARAMETERS["gain_db"].doc}
    assert set(tree["CONTENTS"]["param"]["CONTENTS"]) == set(PARAMETERS)
    assert find(tree, "/style/names/voice") is not None and find(tree, "/style/select")["VALUE"] == ["voice"]
    assert f"http 127.0.0.1:{srv.http_port} (OSCQuery, control page /ui)" in srv.log_text()


def test_bad_requests_get_a_status_and_one_line_and_nothing_else_moves(srv):
    async def go():
        out = {}
        async with aiohttp.ClientSession() as http:
            for name, method, path, headers in [
                ("unknown path", "GET", "/nope", {}), ("bad attribute", "GET", "/param/wet?COLOUR", {}),
                ("attribute absent", "GET", "/connect?VALUE", {}), ("value set by query", "GET", "/param/wet?VALUE=3", {}),
                ("post", "POST", "/param/wet", {}), ("foreign host", "GET", "/", {"Host": "evil.example:80"}),
                ("foreign page's websocket", "GET", "/", {"Origin": "http://evil.example", "Upgrade": "websocket",
                                                           "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                                           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}),
                ("file outside the page", "GET", "/ui/../../etc/passwd", {}), ("no such page file", "GET", "/ui/x.js", {}),
            ]:
                async with http.request(method, url(srv, path), headers=headers) as response:
                    out[name] = response.status, await response.text()
            async with http.ws_connect(url(srv)) as ws:  # malformed commands are ignored, bad OSC gets /fail
                for text in ["not json", "[1, 2]", '{"COMMAND": "LISTEN"}', '{"COMMAND": "LISTEN", "DATA": 5}',
                             '{"COMMAND": "LISTEN", "DATA": "/nope"}', '{"COMMAND": "EXPLODE", "DATA": "/param/wet"}']:
                    await ws.send_str(text)
                await ws.send_bytes(b"\x00garbage")
                out["bad osc"] = (await frame(ws)).params
                await ws.send_bytes(osc("/ping", "still here"))
                out["ping"] = (await frame(ws)).params
        return out

    got = run(go())
    assert got["unknown path"] == (404, "no OSC address /nope (GET / lists them)\n")
    assert got["bad attribute"][0] == 400 and got["bad attribute"][1].startswith("unknown attribute 'COLOUR'; known:")
    assert got["value set by query"][0] == 400
    assert got["attribute absent"][0] == 204 and got["post"][0] == 405
    assert got["foreign host"][0] == 403 and "does not name this server" in got["foreign host"][1]
    assert got["foreign page's websocket"] == (403, "WebSocket from another site (http://evil.example) refused\n")
    assert got["file outside the page"][0] == 404 and got["no such page file"][0] == 404
    bad_osc, ping = got.pop("bad osc"), got.pop("ping")
    assert all(text.count("\n") <= 1 for _, text in got.values())  # one line each, never a traceback
    assert bad_osc[0] == "?" and ping == ["still here"]
    with socket.create_connection(("127.0.0.1", srv.http_port), timeout=5) as raw:  # not even HTTP
        raw.sendall(b"\x16\x03\x01 garbage\r\n\r\n")
        assert re.match(rb"HTTP/1\.[01] 400 ", raw.recv(100))
    with OscClient(srv.host, srv.port) as client:
        assert client.request("/ping", 1, reply="/pong").params == [1]
        assert client.request("/param/wet", reply="/param/wet").params == [1.0]


# -- WebSocket: LISTEN and OSC -----------------------------------------------------------


def test_listen_hears_every_change_whoever_makes_it(srv):
    """OSC over UDP, another WebSocket client, and nothing after IGNORE; /notify clients hear the WebSocket's."""
    async def go(udp: OscClient, watcher: OscClient):
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(url(srv)) as listener, http.ws_connect(url(srv)) as setter:
                await listen(listener, "/param/wet")
                await listen(listener, "/param/colour")
                await asyncio.sleep(0.1)  # the text frame and the UDP datagram travel apart
                udp.send("/param/wet", 0.25)
                from_osc = (await frame_for(listener, "/param/wet")).params
                await setter.send_bytes(osc("/param/colour", 0.5))
                from_ws = (await frame_for(listener, "/param/colour")).params
                setter_reply = (await frame(setter)).params
                heard_by_notify = await asyncio.to_thread(watcher.expect, "/param/colour")
                await listener.send_str(json.dumps({"COMMAND": "IGNORE", "DATA": "/param/wet"}))
                await asyncio.sleep(0.1)
                udp.send("/param/wet", 1.0)
                udp.send("/param/colour", 1.0)
                after_ignore = await frame(listener)
        return from_osc, from_ws, setter_reply, heard_by_notify.params, after_ignore

    with OscClient(srv.host, srv.port) as udp, OscClient(srv.host, srv.port) as watcher:
        watcher.request("/notify", 1, reply="/done")
        from_osc, from_ws, setter_reply, heard, after_ignore = run(go(udp, watcher))
    assert from_osc == [0.25] and from_ws == [0.5] and setter_reply == [0.5] and heard == [0.5]
    assert after_ignore.address == "/param/colour" and after_ignore.params == [1.0]  # wet no longer heard


def test_listen_latency_from_an_osc_param_to_the_frame(srv):
    """Figures: p50 and p99 of UDP send → WebSocket frame received, over a few hundred changes."""
    async def go(udp: OscClient) -> list[float]:
        delays = []
        async with aiohttp.ClientSession() as http, http.ws_connect(url(srv)) as ws:
            await listen(ws, "/param/wet")
            await asyncio.sleep(0.1)
            for index in range(LISTEN_ROUNDS):
                value = (index % 100) / 100
                began = time.perf_counter()
                udp.send("/param/wet", value)
                got = await frame_for(ws, "/param/wet")
                delays.append(time.perf_counter() - began)
                assert got.params[0] == pytest.approx(value)
        return delays

    with OscClient(srv.host, srv.port) as udp:
        delays = run(go(udp))
        udp.request("/param/wet", 1.0, reply="/param/wet")
    p50, p99 = (1000 * float(np.percentile(delays, q)) for q in (50, 99))
    print(f"LISTEN latency over {LISTEN_ROUNDS} changes: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p99 < 50.0


def test_styles_learned_and_deleted_are_path_added_and_removed(srv):
    async def go(client: OscClient):
        async with aiohttp.ClientSession() as http, http.ws_connect(url(srv)) as ws:
            await listen(ws, "/style/select")
            await asyncio.sleep(0.1)
            await asyncio.to_thread(client.request, "/style/load", "tone", "tone.wav", reply="/done", timeout=60)
            added = [await frame(ws) for _ in range(3)]
            node = await (await http.get(url(srv, "/style/names/tone"))).json()
            await asyncio.to_thread(client.request, "/style/select", "tone", reply="/done", timeout=60)
            selected = (await frame_for(ws, "/style/select")).params
            await asyncio.to_thread(client.request, "/style/select", "voice", reply="/done", timeout=60)
            await frame_for(ws, "/style/select")
            await ws.send_bytes(osc("/style/delete", "tone"))  # the page's way: OSC over the WebSocket
            removed = await frame(ws)
            while isinstance(removed, OscMessage):  # /done /style/delete comes too
                removed = await frame(ws)
            gone = (await http.get(url(srv, "/style/names/tone"))).status
        return added, node, selected, removed, gone

    with OscClient(srv.host, srv.port, "tcp") as client:
        added, node, selected, removed, gone = run(go(client))
    assert added == [{"COMMAND": "PATH_ADDED", "DATA": "/style/names/tone"},
                     {"COMMAND": "PATH_CHANGED", "DATA": "/style/select"},
                     {"COMMAND": "PATH_CHANGED", "DATA": "/style/delete"}]
    assert node["FULL_PATH"] == "/style/names/tone" and selected == ["tone"]
    assert removed == {"COMMAND": "PATH_REMOVED", "DATA": "/style/names/tone"} and gone == 404


# -- options -------------------------------------------------------------------------------


def test_http_port_obeys_allow_and_turns_off(tmp_path):
    """A request from 127.0.0.2 to a server that allows only 127.0.0.1 is refused, as its OSC would be."""
    with running_server(tmp_path, "--http-port", "0") as off:
        assert " http " not in off.log_text().split("listening on", 1)[1].splitlines()[0]
        with OscClient(off.host, off.port) as client:
            assert client.request("/version", reply="/version/reply").params[2] == 0
    with running_server(tmp_path, "--allow", "127.0.0.1/32") as srv:
        async def go():
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
            async with aiohttp.ClientSession(connector=connector) as http:
                async with http.get(url(srv)) as refused:
                    return refused.status, await refused.text()

        assert run(go()) == (403, "127.0.0.2 is not in --allow\n")
        assert "refused http from 127.0.0.2: not in --allow" in srv.log_text()


def test_a_taken_http_port_fails_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*SERVER_COMMAND, "--port", "0", "--http-port", str(port), "--no-zeroconf",
                               "--cache-dir", str(tmp_path / "c"), "--styles-dir", str(tmp_path / "s")],
                              capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and f"--http-port {port}: cannot listen on 127.0.0.1:{port}" in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
