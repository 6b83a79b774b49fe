"""Find Gramophone servers by zeroconf: ``gramophone-client discover`` and ``--host auto``.

A server advertises ``_osc._udp`` (and ``_oscjson._tcp`` when its HTTP port is on) with a TXT
record ``app=gramophone`` and both port numbers, so browsing one service type finds all.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

from .errors import GramophoneError

OSC_TYPE = "_osc._udp.local."


@dataclass(frozen=True)
class Found:
    """One advertised server."""

    name: str
    host: str
    osc_port: int
    http_port: int  # 0: its HTTP port is off
    version: str


class _Collector(ServiceListener):
    def __init__(self) -> None:
        self.found: list[Found] = []
        self.names: set[str] = set()
        self.lock = threading.Lock()
        self.any = threading.Event()

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        info = zc.get_service_info(type_, name, timeout=2000)
        if info is None:
            return
        props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
        addresses = info.parsed_addresses()
        if props.get("app") != "gramophone" or not addresses:
            return
        entry = Found(name.removesuffix("." + type_), addresses[0], info.port or 0,
                      int(props.get("http_port") or 0), props.get("version", ""))
        with self.lock:
            if name not in self.names:
                self.names.add(name)
                self.found.append(entry)
        self.any.set()

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass


def discover(seconds: float = 2.0, first: bool = False) -> list[Found]:
    """Servers answering within ``seconds``, in the order found; with ``first``, return at the first."""
    zc = Zeroconf()
    collector = _Collector()
    browser = ServiceBrowser(zc, OSC_TYPE, collector)
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (first and collector.any.is_set()):
            collector.any.wait(min(0.05, max(0.0, deadline - time.monotonic())))
    finally:
        browser.cancel()
        zc.close()
    with collector.lock:
        return list(collector.found)


def first_server(seconds: float) -> Found:
    """The first server found (``--host auto``), or a one-line error."""
    found = discover(seconds, first=True)
    if not found:
        raise GramophoneError(f"no Gramophone server found by zeroconf within {seconds:g} s; give --host and --port")
    return found[0]
