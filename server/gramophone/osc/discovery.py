"""Zeroconf: advertise a running server as ``_osc._udp`` and ``_oscjson._tcp`` (OSCQuery), withdraw at shutdown.

Where the records go follows where the server listens: bound to loopback, on the loopback
interface only, with the address 127.0.0.1 (control apps on this machine find it; no other
machine could reach it, so nothing goes onto the network); bound to one address, on that
interface; bound to every address (``0.0.0.0``), on every interface with each IPv4 address.
Registering takes a second or two (mDNS probing), so it runs on a thread and never delays serving.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading

from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

log = logging.getLogger("gramophone.server")
OSC_TYPE = "_osc._udp.local."
OSCQUERY_TYPE = "_oscjson._tcp.local."


def service_name() -> str:
    """``Gramophone on HOSTNAME``, as control apps list it."""
    return f"Gramophone on {socket.gethostname()}"


class Advertiser:
    """The server's zeroconf records while it serves: ``start`` then ``close``."""

    def __init__(self, host: str, osc_port: int, http_port: int, version: str) -> None:
        self.address = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)[0][4][0]
        bound = ipaddress.ip_address(self.address)
        if bound.is_unspecified:
            self._interfaces: InterfaceChoice | list[str] = InterfaceChoice.All
            self._addresses = _ipv4_addresses()
        else:
            self._interfaces, self._addresses = [self.address], [self.address]
        hostname = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "gramophone"
        properties = {"app": "gramophone", "version": version, "osc_port": str(osc_port), "http_port": str(http_port)}
        self._infos = [ServiceInfo(OSC_TYPE, f"{service_name()}.{OSC_TYPE}", port=osc_port, properties=properties,
                                   parsed_addresses=self._addresses, server=f"{hostname}.local.")]
        if http_port:
            self._infos.append(ServiceInfo(OSCQUERY_TYPE, f"{service_name()}.{OSCQUERY_TYPE}", port=http_port,
                                           properties=properties, parsed_addresses=self._addresses,
                                           server=f"{hostname}.local."))
        self._zeroconf: Zeroconf | None = None
        self._thread = threading.Thread(target=self._register, name="zeroconf", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _register(self) -> None:
        try:
            self._zeroconf = Zeroconf(interfaces=self._interfaces, ip_version=IPVersion.V4Only)
            for info in self._infos:
                self._zeroconf.register_service(info, allow_name_change=True)  # a second server here gets "(2)"
        except (OSError, RuntimeError, ValueError) as error:  # no multicast here, or a name taken for good
            log.warning("zeroconf: not advertised (%s)", error)
            return
        names = ", ".join(f"{info.name.removesuffix('.' + info.type)!r} ({info.type.removesuffix('.local.')} "
                          f"port {info.port})" for info in self._infos)
        log.info("zeroconf: advertising %s on %s", names, ", ".join(self._addresses))

    def close(self) -> None:
        """Withdraw the records (mDNS goodbyes) and stop."""
        self._thread.join()
        if self._zeroconf is not None:
            self._zeroconf.unregister_all_services()
            self._zeroconf.close()
            log.info("zeroconf: withdrawn")


def _ipv4_addresses() -> list[str]:
    import ifaddr  # zeroconf's own dependency

    found = [ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips if isinstance(ip.ip, str)]
    return [a for a in found if not ipaddress.ip_address(a).is_loopback] or ["127.0.0.1"]
