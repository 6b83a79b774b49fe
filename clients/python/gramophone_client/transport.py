"""UDP and TCP (SLIP-framed) packet transports to the server, each with a blocking receive."""

from __future__ import annotations

import socket

from gramophone.osc.framing import SlipDecoder

from .errors import ConnectionLost

#: UDP datagrams up to 64 KB are read whole.
MAX_DATAGRAM = 65_536


class UdpTransport:
    """One UDP socket: sends to the server and receives its replies on the same source port."""

    reliable = False

    def __init__(self, host: str, port: int) -> None:
        self.address = (socket.gethostbyname(host), port)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self._sock.bind(("127.0.0.1" if self.address[0].startswith("127.") else "0.0.0.0", 0))
        self._sock.settimeout(0.2)

    def send(self, packet: bytes) -> None:
        try:
            self._sock.sendto(packet, self.address)
        except OSError as error:
            raise ConnectionLost(f"cannot send to {self.address[0]}:{self.address[1]}: {error}") from error

    def receive(self) -> list[bytes]:
        """Packets from the server (empty after a 0.2 s poll with nothing); others are ignored."""
        try:
            data, sender = self._sock.recvfrom(MAX_DATAGRAM)
        except (TimeoutError, ConnectionRefusedError):
            return []
        except OSError as error:
            raise ConnectionLost(str(error)) from error
        return [data] if sender == self.address else []

    def close(self) -> None:
        self._sock.close()


class TcpTransport:
    """One TCP connection speaking OSC 1.1 SLIP framing."""

    reliable = True

    def __init__(self, host: str, port: int, timeout: float) -> None:
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as error:
            raise ConnectionLost(f"cannot connect to {host}:{port} over TCP: {error}") from error
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.settimeout(0.2)
        self._decoder = SlipDecoder()

    def send(self, packet: bytes) -> None:
        try:
            self._sock.sendall(SlipDecoder.encode(packet))
        except OSError as error:
            raise ConnectionLost(f"TCP connection lost: {error}") from error

    def receive(self) -> list[bytes]:
        """Packets completed by the bytes that arrived (empty after a 0.2 s poll with nothing)."""
        try:
            data = self._sock.recv(MAX_DATAGRAM)
        except TimeoutError:
            return []
        except OSError as error:
            raise ConnectionLost(f"TCP connection lost: {error}") from error
        if not data:
            raise ConnectionLost("the server closed the TCP connection")
        return self._decoder.feed(data)

    def close(self) -> None:
        self._sock.close()
