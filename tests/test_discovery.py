"""Zeroconf for real on this machine: a served ``gramophone serve --zeroconf`` is found by
``gramophone-client discover`` and ``--host auto``, and is gone once it stops."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from zeroconf import ServiceBrowser, ServiceInfo, ServiceListener, Zeroconf

from conftest import REQUIRE_INTEROP
from gramophone_client.discover import discover
from serverutil import running_server

pytestmark = pytest.mark.interop
CLIENT = [sys.executable, "-c", "from gramophone_client.cli import main; raise SystemExit(main())"]
PROBE_TYPE = "_gramoprobe._tcp.local."


class _Seen(ServiceListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.names.append(name)

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass


def require_loopback_multicast() -> None:
    """Skip (fail under GRAMOPHONE_REQUIRE_INTEROP=1) where mDNS cannot cross the loopback interface."""
    publisher = Zeroconf(interfaces=["127.0.0.1"])
    browser_zc = Zeroconf()
    seen = _Seen()
    info = ServiceInfo(PROBE_TYPE, f"probe {time.monotonic_ns()}.{PROBE_TYPE}", port=9, parsed_addresses=["127.0.0.1"])
    try:
        publisher.register_service(info)
        browser = ServiceBrowser(browser_zc, PROBE_TYPE, seen)
        for _ in range(50):
            if seen.names:
                break
            time.sleep(0.1)
        browser.cancel()
    finally:
        publisher.close()
        browser_zc.close()
    if not seen.names:
        message = "mDNS does not reach the loopback interface here"
        if REQUIRE_INTEROP:
            pytest.fail(f"{message}, and GRAMOPHONE_REQUIRE_INTEROP=1 demands it")
        pytest.skip(message)


def test_advertised_while_serving_found_by_the_client_and_withdrawn(tmp_path):
    require_loopback_multicast()
    with running_server(tmp_path, "--zeroconf") as srv:
        listed = subprocess.run([*CLIENT, "discover", "--wait", "5"], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        line = next(line for line in listed.stdout.splitlines() if f"osc 127.0.0.1:{srv.port}" in line)
        assert line.startswith(f"Gramophone on {socket.gethostname()}")
        assert f"http://127.0.0.1:{srv.http_port}/ui" in line
        pinged = subprocess.run([*CLIENT, "ping", "--host", "auto"], capture_output=True, text=True, timeout=60)
        assert pinged.returncode == 0 and f"pong from 127.0.0.1:{srv.port}" in pinged.stdout, pinged.stderr
        assert "zeroconf: advertising" in srv.log_text() and "on 127.0.0.1" in srv.log_text()
        assert srv.stop() == 0
        assert "zeroconf: withdrawn" in srv.log_text()
    assert all(found.osc_port != srv.port for found in discover(3.0))
