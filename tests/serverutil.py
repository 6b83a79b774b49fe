"""A real ``gramophone serve`` process for tests, and a small python-osc client for it.

    from serverutil import running_server, OscClient

    with running_server(tmp_path, "--max-sessions", "2") as srv:
        with OscClient(srv.host, srv.port) as osc:            # UDP; transport="tcp" for TCP
            osc.send("/ping", "hi")
            assert osc.expect("/pong").params == ["hi"]
        print(srv.log_text())

The server listens on 127.0.0.1 and a free port (UDP and TCP on the same number; its HTTP
port, ``srv.http_port``, on another free one), advertises nothing by zeroconf unless the test
passes ``--zeroconf``, keeps its cache and styles folder under ``tmp_path``, and is stopped with SIGINT by PID when the
block ends (``srv.stop()`` returns the exit code if a test wants it earlier).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from bench.timing import TimedSocket
from gramophone.osc.framing import LengthDecoder, SlipDecoder

SERVER_COMMAND = [sys.executable, "-m", "gramophone", "serve"]
LISTENING = re.compile(r"listening on udp (\S+):(\d+)")
HTTP_LISTENING = re.compile(r"http \S+:(\d+) \(OSCQuery")
READY_TIMEOUT = 120.0  # first start imports torch and learns the default style


class ServerProcess:
    """A started server: where it listens, its PID and its log."""

    def __init__(self, proc: subprocess.Popen, log_path: Path, host: str, port: int) -> None:
        self.proc, self.log_path, self.host, self.port = proc, log_path, host, port
        self.tcp_port = port  # one port serves UDP, TCP with SLIP and TCP with length prefixes

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http_port(self) -> int:
        """The OSCQuery port the "listening" line names (a test that turned it off must not ask)."""
        match = HTTP_LISTENING.search(self.log_text())
        assert match, f"no http port in the log:\n{self.log_text()[-2000:]}"
        return int(match.group(1))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60.0) -> int:
        """Signal the server by PID and wait for it; kill it (and fail) if it hangs."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"server did not stop within {timeout} s:\n{self.log_text()[-3000:]}") from None
        return self.proc.returncode


@contextmanager
def running_server(tmp_path: Path, *extra_args: str, ready_timeout: float = READY_TIMEOUT) -> Iterator[ServerProcess]:
    """Start ``gramophone serve`` on 127.0.0.1 and a free port; yield once ``/ping`` answers."""
    index = len(list(tmp_path.glob("server-*.log"))) + 1
    log_path = tmp_path / f"server-{index}.log"
    args = ["--host", "127.0.0.1", "--port", "0", "--cache-dir", str(tmp_path / "cache"),
            "--styles-dir", str(tmp_path / "styles"), "--no-zeroconf", *extra_args]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([*SERVER_COMMAND, *args], stdout=log_file, stderr=subprocess.STDOUT)
    server = None
    try:
        host, port = _wait_listening(proc, log_path, ready_timeout)
        server = ServerProcess(proc, log_path, host, port)
        _wait_ping(server)
        yield server
    finally:
        if server is None:
            proc.kill()
            proc.wait()
        else:
            server.stop()


def _wait_listening(proc: subprocess.Popen, log_path: Path, timeout: float) -> tuple[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return match.group(1), int(match.group(2))
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.1)
    raise AssertionError(f"server not listening after {timeout} s:\n{log_path.read_text(errors='replace')}")


def _wait_ping(server: ServerProcess) -> None:
    with OscClient(server.host, server.port) as osc:
        for _ in range(50):
            osc.send("/ping", "ready")
            if osc.receive(0.2) is not None:
                return
    raise AssertionError(f"server does not answer /ping:\n{server.log_text()}")


class OscClient:
    """Send python-osc messages and receive replies over UDP or TCP (SLIP or length-prefixed).

    Replies that ``expect`` skips stay in a backlog for later calls.
    """

    def __init__(self, host: str, port: int, transport: str = "udp", framing: str = "slip", bind_port: int = 0) -> None:
        self.transport = transport
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind(("127.0.0.1", bind_port))
            self.sock.connect((host, port))
        else:
            self.sock = socket.create_connection((host, port), timeout=10)
            self.framer = SlipDecoder() if framing == "slip" else LengthDecoder()
        self.local_port = self.sock.getsockname()[1]
        self.backlog: deque[OscMessage] = deque()

    def __enter__(self) -> "OscClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, address: str, *args: Any, types: str | None = None) -> None:
        """Send one message; ``types`` forces type tags (e.g. ``"iff"``), else python-osc guesses."""
        builder = OscMessageBuilder(address)
        for index, arg in enumerate(args):
            builder.add_arg(arg, types[index] if types else None)
        self.send_raw(builder.build().dgram)

    def send_raw(self, packet: bytes) -> None:
        if self.transport == "udp":
            self.sock.send(packet)
        else:
            self.sock.sendall(self.framer.encode(packet))

    def receive(self, timeout: float = 10.0) -> OscMessage | None:
        """The next reply (backlog first), or None after ``timeout`` seconds."""
        if self.backlog:
            return self.backlog.popleft()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                return None
            if self.transport == "udp":
                return OscMessage(data)
            if not data:
                return None
            self.backlog.extend(OscMessage(packet) for packet in self.framer.feed(data))
            if self.backlog:
                return self.backlog.popleft()

    def expect(self, address: str, timeout: float = 10.0) -> OscMessage:
        """The first reply to ``address`` within ``timeout``; others are kept for later."""
        skipped: list[OscMessage] = []
        for index, msg in enumerate(self.backlog):
            if msg.address == address:
                del self.backlog[index]
                return msg
        pending = list(self.backlog)
        self.backlog.clear()
        deadline = time.monotonic() + timeout
        try:
            while (msg := self.receive(max(deadline - time.monotonic(), 0.001))) is not None:
                if msg.address == address:
                    return msg
                skipped.append(msg)
                if time.monotonic() > deadline:
                    break
        finally:
            self.backlog = deque(pending + skipped + list(self.backlog))
        raise AssertionError(f"no {address} within {timeout} s; got {[str(m)[:80] for m in pending + skipped][:10]}")

    def request(self, address: str, *args: Any, reply: str, timeout: float = 10.0) -> OscMessage:
        self.send(address, *args)
        return self.expect(reply, timeout)


class RealTimeSender:
    """A UDP client that sends blocks at the real rate and notes, by the kernel's timestamps, when
    each block left and when its ``/audio`` came back (``sent[seq]``, ``returned[seq]``, seconds
    since the epoch); ``samples[seq]`` is what came back. Replies are read on a thread.
    """

    def __init__(self, host: str, port: int, rate: int, block: int) -> None:
        self.sock = TimedSocket(host, port)
        self.rate, self.block = rate, block
        self.sent: dict[int, float] = {}
        self.returned: dict[int, float] = {}
        self.samples: dict[int, np.ndarray] = {}
        self.other: list[OscMessage] = []
        self.repeats = 0
        self._stop = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop:
            if not self.sock.wait(0.05):
                continue
            for data, at in self.sock.drain():
                msg = OscMessage(data)
                if msg.address != "/audio":
                    self.other.append(msg)
                elif msg.params[0] in self.returned:
                    self.repeats += 1
                else:
                    self.returned[msg.params[0]] = at
                    self.samples[msg.params[0]] = np.frombuffer(msg.params[1], "<f4")

    def message(self, address: str, *args: Any) -> None:
        builder = OscMessageBuilder(address)
        for arg in args:
            builder.add_arg(arg)
        self.sock.send(builder.build().dgram)

    def request(self, address: str, *args: Any, reply: str, timeout: float = 10.0) -> OscMessage:
        """Send a message and wait for its reply among those the reader thread collects."""
        seen = len(self.other)
        self.message(address, *args)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.other[seen:]:
                if msg.address == reply:
                    return msg
            time.sleep(0.01)
        raise AssertionError(f"no {reply} within {timeout} s; got {[str(m)[:80] for m in self.other[seen:]]}")

    def send(self, first_seq: int, blocks: list[np.ndarray]) -> None:
        """Send ``blocks`` (float32) as blobs from ``first_seq`` on, one per block period."""
        start = time.monotonic()
        for index, block in enumerate(blocks):
            time.sleep(max(0.0, start + index * self.block / self.rate - time.monotonic()))
            builder = OscMessageBuilder("/content")
            builder.add_arg(first_seq + index)
            builder.add_arg(np.asarray(block, "<f4").tobytes())
            self.sent[first_seq + index] = self.sock.send(builder.build().dgram)

    def close(self) -> None:
        self._stop = True
        self._reader.join()
        self.sock.close()

    def delays(self) -> dict[int, float]:
        """Seconds from each block leaving to its answer arriving, for the blocks answered."""
        return {seq: self.returned[seq] - at for seq, at in self.sent.items() if seq in self.returned}
