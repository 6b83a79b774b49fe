"""Kernel timestamps of UDP packets sent to and received from a server (Linux).

Benchmarks and tests run several senders and readers as Python threads sharing one GIL; a clock
read in Python after ``recv`` (or before ``send``) would count the wait for another thread's
turn as the server's delay. The kernel's software timestamps of each packet leaving and
arriving do not. Kept free of the engine's imports so tests and benchmarks can both use it.
"""

from __future__ import annotations

import select
import socket
import struct
import time

# Linux's <asm-generic/socket.h> and <linux/net_tstamp.h>; Python's socket module does not name them.
SO_TIMESTAMPNS = 35
SO_TIMESTAMPING = 37
TX_SOFTWARE, SOFTWARE, OPT_TSONLY = 1 << 1, 1 << 4, 1 << 11
STAMP_SEND = [(socket.SOL_SOCKET, SO_TIMESTAMPING, struct.pack("I", TX_SOFTWARE))]
STAMP_SPACE = socket.CMSG_SPACE(48)  # three timespecs (SCM_TIMESTAMPING) is the largest


def _stamp(ancillary: list[tuple[int, int, bytes]], kind: int) -> float | None:
    """The first timespec of a ``kind`` control message, in seconds since the epoch."""
    for level, found, data in ancillary:
        if level == socket.SOL_SOCKET and found == kind:
            seconds, nanoseconds = struct.unpack_from("qq", data)
            return seconds + nanoseconds * 1e-9
    return None


class TimedSocket:
    """A UDP socket to the server that reads when the kernel sent and received each packet."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)  # a flush's burst of replies
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, SOFTWARE | OPT_TSONLY)
        self.sock.connect((host, port))
        self.sock.setblocking(False)

    def send(self, data: bytes) -> float:
        """Send one packet; when it left (loopback stamps it inside the send call), else just before."""
        before = time.time()
        self.sock.sendmsg([data], STAMP_SEND)
        try:
            _, ancillary, _, _ = self.sock.recvmsg(0, STAMP_SPACE, socket.MSG_ERRQUEUE)
        except BlockingIOError:
            return before
        return _stamp(ancillary, SO_TIMESTAMPING) or before

    def wait(self, timeout: float) -> bool:
        """Whether a packet is waiting (or arrives within ``timeout``)."""
        return bool(select.select([self.sock], [], [], max(timeout, 0.0))[0])

    def drain(self) -> list[tuple[bytes, float]]:
        """Every waiting packet with its kernel arrival time."""
        packets = []
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(65536, STAMP_SPACE)
            except BlockingIOError:
                return packets
            packets.append((data, _stamp(ancillary, SO_TIMESTAMPNS) or time.time()))

    def close(self) -> None:
        self.sock.close()
