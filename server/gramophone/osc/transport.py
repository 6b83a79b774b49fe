"""Sockets for the server: one UDP socket and one TCP listener on the same port number.

Each transport runs its own receiving threads and hands whole packets to callbacks; it
knows nothing of OSC beyond framing.  TCP replies go through a bounded per-connection
queue and a writer thread, so a client that stops reading never blocks a worker: when
its queue fills, the connection is closed.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import queue
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable

from .. import priority
from .framing import FramingError, LengthDecoder, SlipDecoder, feed_all, sniff

log = logging.getLogger(__name__)
UDP_RECEIVE_SIZE = 65_536  # whole datagrams (python-osc's servers read 8 192 by default)
UDP_BUFFER_BYTES = 4 * 1024 * 1024
TCP_QUEUE_PACKETS = 4096
POLL_SECONDS = 0.25
_connection_ids = itertools.count(1)

Address = tuple  # socket address as returned by recvfrom/accept
# Linux's SO_TIMESTAMPNS (Python's socket module does not name it): the kernel stamps each
# datagram on arrival, so a receive thread that waited for the interpreter cannot make a
# block look younger than it is, and live deadlines count from when it really came in.
SO_TIMESTAMPNS = 35
TIMESTAMP_BYTES = struct.calcsize("qq")  # struct timespec


def bind(host: str, port: int, attempts: int = 20) -> tuple[socket.socket, socket.socket]:
    """A UDP socket and a listening TCP socket on ``host`` and the same port.

    Port 0 picks a port free for both (tried a few times: the UDP port may be taken on TCP).
    """
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    for _ in range(attempts if port == 0 else 1):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind(sockaddr)
            chosen = udp.getsockname()[1]
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((sockaddr[0], chosen, *sockaddr[2:]))
            tcp.listen(64)
        except OSError:
            udp.close()
            tcp.close()
            if port != 0:
                raise
            continue
        try:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER_BYTES)
        except OSError:
            pass  # best effort: the kernel caps it at rmem_max anyway
        return udp, tcp
    raise OSError(f"no port free for both UDP and TCP on {host} after {attempts} attempts")


def is_loopback(sock: socket.socket) -> bool:
    return ipaddress.ip_address(sock.getsockname()[0]).is_loopback


class UdpTransport:
    """Receives whole datagrams on a thread; sends from any thread."""

    def __init__(self, sock: socket.socket, on_packet: Callable[[Address, bytes, float], None]) -> None:
        self.sock = sock
        self._on_packet = on_packet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-receive", daemon=True)

    def start(self) -> None:
        self.sock.settimeout(POLL_SECONDS)
        self._stamped = _enable_timestamps(self.sock)
        self._thread.start()

    def _receive(self) -> tuple[bytes, Address, float]:
        """One datagram, its sender, and its arrival on ``time.monotonic()``'s clock."""
        if not self._stamped:
            data, addr = self.sock.recvfrom(UDP_RECEIVE_SIZE)
            return data, addr, time.monotonic()
        data, ancillary, _flags, addr = self.sock.recvmsg(UDP_RECEIVE_SIZE, socket.CMSG_SPACE(TIMESTAMP_BYTES))
        return data, addr, _arrival(ancillary)

    def _run(self) -> None:
        priority.renice_this_thread(priority.TIMEKEEPING)  # a block's due time counts from its arrival
        own = self.sock.getsockname()
        while not self._stop.is_set():
            try:
                data, addr, arrival = self._receive()
            except TimeoutError:
                continue
            except OSError as error:  # e.g. ICMP port unreachable from an earlier reply
                log.debug("udp receive: %s", error)
                continue
            if _from_self(own, addr, self.sock.family):
                log.debug("udp: dropped a datagram from this socket itself")
                continue
            try:
                self._on_packet(addr, data, arrival)
            except Exception as error:  # a bug must never leave the server deaf
                _internal_error(addr, error)

    def send(self, addr: Address, data: bytes) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError as error:
            log.debug("udp send to %s: %s", addr, error)

    def stop_receiving(self) -> None:
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        self.sock.close()


class TcpConnection:
    """One client connection: a reader thread (framing sniffed) and a writer thread."""

    def __init__(self, sock: socket.socket, addr: Address) -> None:
        self.sock = sock
        self.addr = addr
        self.id = next(_connection_ids)
        self.label = f"tcp {addr[0]}:{addr[1]}"
        self.framing: SlipDecoder | LengthDecoder | None = None
        self._out: queue.Queue[bytes | None] = queue.Queue(TCP_QUEUE_PACKETS)
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write, name=f"tcp-write-{self.id}", daemon=True)
        self._writer.start()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def send(self, packet: bytes) -> None:
        """Queue one OSC packet, framed like the client's own; closes on a full queue."""
        if self.closed:
            return
        framed = (self.framing or SlipDecoder).encode(packet)
        try:
            self._out.put_nowait(framed)
        except queue.Full:
            log.warning("%s is not reading its replies (%d queued); closing it", self.label, TCP_QUEUE_PACKETS)
            self.close()

    def _write(self) -> None:
        while True:
            data = self._out.get()
            if data is None:
                break
            try:
                self.sock.sendall(data)
            except OSError:
                break
        self.close()

    def finish(self, timeout: float) -> None:
        """Send what is queued (up to ``timeout``), then close."""
        try:
            self._out.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._writer.join(timeout)
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            self._out.put_nowait(None)
        except queue.Full:
            pass


class TcpListener:
    """Accepts connections; each gets a reader thread feeding ``on_packet``."""

    def __init__(
        self,
        sock: socket.socket,
        on_open: Callable[[TcpConnection], bool],
        on_packet: Callable[[TcpConnection, bytes, float], None],
        on_error: Callable[[TcpConnection, str], None],
        on_close: Callable[[TcpConnection], None],
    ) -> None:
        self.sock = sock
        self._on_open, self._on_packet, self._on_error, self._on_close = on_open, on_packet, on_error, on_close
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-accept", daemon=True)
        self.connections: set[TcpConnection] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.sock.settimeout(POLL_SECONDS)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, addr = self.sock.accept()
            except TimeoutError:
                continue
            except OSError as error:
                log.debug("tcp accept: %s", error)
                continue
            client.settimeout(None)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = TcpConnection(client, addr)
            if not self._on_open(conn):
                conn.close()
                continue
            with self._lock:
                self.connections.add(conn)
            threading.Thread(target=self._read, args=(conn,), name=f"tcp-read-{conn.id}", daemon=True).start()

    def _read(self, conn: TcpConnection) -> None:
        try:
            while True:
                try:
                    data = conn.sock.recv(UDP_RECEIVE_SIZE)
                except OSError:
                    data = b""
                if not data or self._stop.is_set():
                    break
                arrival = time.monotonic()
                try:
                    if conn.framing is None:
                        conn.framing = sniff(data[0])
                except FramingError as error:
                    self._on_error(conn, str(error))
                    break
                packets, fault = feed_all(conn.framing, [data])
                for packet in packets:
                    try:
                        self._on_packet(conn, packet, arrival)
                    except Exception as error:  # a bug must never leave the connection deaf
                        _internal_error(conn.addr, error)
                if fault is not None:
                    self._on_error(conn, fault)
                    break
        finally:
            if not self._stop.is_set():  # at shutdown the server finishes connections itself
                with self._lock:
                    self.connections.discard(conn)
                self._on_close(conn)
                conn.finish(1.0)

    def stop_receiving(self) -> None:
        """Stop accepting and reading; connections stay open for the last replies."""
        self._stop.set()
        self._thread.join()
        self.sock.close()
        with self._lock:
            for conn in self.connections:
                try:
                    conn.sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


def _from_self(own: Address, addr: Address, family: int) -> bool:
    """Whether ``addr`` is this socket's own address.

    Every datagram gets an answer (a ``/fail`` at least), so one that comes from the socket
    itself (a reply sent to its own port by ``/connect … reply_port``, or a forged source)
    would be answered to itself, and that answer again, for ever.
    """
    if addr[1] != own[1]:
        return False
    if addr[0] == own[0]:
        return True
    return ipaddress.ip_address(own[0]).is_unspecified and _is_local(addr[0], family)


def _is_local(host: str, family: int) -> bool:
    """Whether ``host`` is an address of this machine (only those can be bound)."""
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


def _enable_timestamps(sock: socket.socket) -> bool:
    """Ask Linux to stamp each datagram's arrival; elsewhere arrivals are read after receiving."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def _arrival(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The kernel's arrival stamp (wall clock) moved onto ``time.monotonic()``; now if there is none."""
    now = time.monotonic()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESTAMP_BYTES:
            seconds, nanoseconds = struct.unpack("qq", data[:TIMESTAMP_BYTES])
            waited = time.time() - (seconds + nanoseconds * 1e-9)
            return now - min(max(waited, 0.0), 1.0)  # a wall-clock step must not move it far
    return now


def _internal_error(addr: Address, error: Exception) -> None:
    log.error("internal error on a packet from %s: %r", addr, error, exc_info=log.isEnabledFor(logging.DEBUG))
