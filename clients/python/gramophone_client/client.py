"""`Client`: the Gramophone OSC protocol over UDP or TCP, for scripts, notebooks and the CLI."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pythonosc.osc_message import OscMessage

from .errors import ConnectionLost, GramophoneError, NoReply, ServerError, server_error
from .osc import MAX_UDP_FLOATS, Encoding, audio_of, build, build_audio, messages
from .transport import TcpTransport, UdpTransport

DEFAULT_PORT = 57300


@dataclass(frozen=True)
class Session:
    """What ``/connect`` established: the stream format and the server's fixed latency."""

    session_id: str
    latency_samples: int
    sample_rate: int
    channels: int
    block_size: int

    @property
    def latency_blocks(self) -> int:
        """Blocks that must be sent before block 0 can come back."""
        return -(-self.latency_samples // self.block_size)


@dataclass(frozen=True)
class ParamInfo:
    """One ``/params/reply`` row."""

    name: str
    value: float
    minimum: float
    maximum: float
    default: float


@dataclass(frozen=True)
class Status:
    """One ``/status/reply``: server-wide load and health."""

    sessions: int
    rtf_avg: float
    rtf_peak: float
    iterations_avg: float
    latency_ms: float
    late_chunks: int
    lost_blocks: int
    queued_blocks: int
    late_blocks: int  # answers that left later than the latency (0 from servers before the field)


AudioHandler = Callable[[int, np.ndarray], None]
ParamHandler = Callable[[str, float], None]


class Client:
    """A connection to a Gramophone server.

    Requests (``param``, ``status``, ``style_*``...) block until their reply and raise a
    ``ServerError`` subclass on ``/fail``. Audio is asynchronous: ``send_block`` returns at once
    and ``/audio`` replies go to ``receive_block`` (or to ``on_audio`` when given, called from the
    receiving thread). ``/param/NAME`` changes made by other sessions update ``param_values``
    and call ``on_param``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        tcp: bool = False,
        timeout: float = 5.0,
        encoding: Encoding = "blob",
        on_audio: AudioHandler | None = None,
        on_param: ParamHandler | None = None,
    ) -> None:
        self.timeout = timeout
        self.encoding: Encoding = encoding
        self.on_audio = on_audio
        self.on_param = on_param
        self.session: Session | None = None
        self.param_values: dict[str, float] = {}
        self.stream_failures: deque[ServerError] = deque(maxlen=32)
        self._transport = TcpTransport(host, port, timeout) if tcp else UdpTransport(host, port)
        self._replies: queue.Queue[OscMessage | None] = queue.Queue()
        self._audio: queue.Queue[tuple[int, np.ndarray] | ServerError] = queue.Queue()
        self._request_lock = threading.Lock()
        self._tokens = itertools.count(1)
        self._closed = threading.Event()
        self.lost: ConnectionLost | None = None
        self._receiver = threading.Thread(target=self._receive_loop, name="gramophone-receive", daemon=True)
        self._receiver.start()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def tcp(self) -> bool:
        """True over TCP (reliable, ordered); False over UDP."""
        return self._transport.reliable

    def close(self) -> None:
        """Stop the receiving thread and close the socket (does not send ``/disconnect``)."""
        self._closed.set()
        self._receiver.join(timeout=1.0)
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- stream ----------------------------------------------------------------------------

    def connect(self, sample_rate: int, channels: int = 1, block_size: int = 1024) -> Session:
        """Open a session; returns its id and the latency the server will add."""
        if channels not in (1, 2):
            raise GramophoneError(f"channels must be 1 or 2, got {channels}")
        if not self._transport.reliable and self.encoding == "floats" and block_size * channels > MAX_UDP_FLOATS:
            raise GramophoneError(f"{block_size}×{channels} floats do not fit one UDP datagram; use the blob encoding or TCP")
        reply = self._request("/connect", [int(sample_rate), int(channels), int(block_size)], "/connected")
        self.session = Session(str(reply.params[0]), int(reply.params[1]), int(sample_rate), channels, block_size)
        return self.session

    def disconnect(self, timeout: float | None = None) -> None:
        """Close the session (the server frees its stream state)."""
        self._request("/disconnect", [], "/done", timeout=timeout)
        self.session = None

    def set_mode(self, mode: str) -> str:
        """``live`` (deadline per chunk, dry when late) or ``render`` (full quality, no deadline)."""
        return str(self._request("/mode", [mode], "/done").params[1])

    def reset(self) -> None:
        """Forget the stream's history (between songs)."""
        self._request("/reset", [], "/done")

    def send_block(self, seq: int, block: np.ndarray) -> None:
        """Send one block (``block_size × channels`` samples, interleaved or shaped (frames, channels))."""
        self._send(build_audio("/content", seq, block, self.encoding))

    def receive_block(self, timeout: float | None = None) -> tuple[int, np.ndarray]:
        """The next ``/audio`` reply as ``(seq, samples)``, shaped (frames, channels).

        Raises the ``StreamError`` if the server refused a ``/content`` meanwhile.
        """
        try:
            item = self._audio.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            self._raise_if_lost()
            raise NoReply("no /audio reply in time") from None
        if isinstance(item, ServerError):
            raise item
        return item

    def flush(self, timeout: float | None = None) -> None:
        """Have the server push silence until every block sent so far has come back."""
        self._request("/flush", [], "/done", timeout=timeout)

    # -- parameters ------------------------------------------------------------------------

    def param(self, name: str, value: float | None = None) -> float:
        """Set ``name`` to ``value`` (returns the clamped value applied) or read it."""
        address = f"/param/{name}"
        reply = self._request(address, [] if value is None else [float(value)], address)
        return float(reply.params[0])

    def params(self) -> dict[str, ParamInfo]:
        """Every parameter with its value, range and default."""
        rows: dict[str, ParamInfo] = {}
        for message in self._collect("/params", [], "/params/reply"):
            name, value, low, high, default = message.params
            rows[str(name)] = ParamInfo(str(name), float(value), float(low), float(high), float(default))
        return rows

    # -- styles ----------------------------------------------------------------------------

    def style_load(self, name: str, file: str) -> None:
        """Load ``file`` (relative to the server's styles folder) as style ``name``."""
        self._request("/style/load", [name, file], "/done")

    def style_record(self, name: str, audio: np.ndarray) -> None:
        """Record ``audio`` (frames × channels, at the session's rate) as a new cached style."""
        session = self._require_session()
        self._request("/style/record/start", [name], "/done")
        flat = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        step = session.block_size * session.channels
        for seq, start in enumerate(range(0, flat.size, step)):
            chunk = flat[start:start + step]
            if chunk.size < step:
                chunk = np.concatenate([chunk, np.zeros(step - chunk.size, np.float32)])
            self._send(build_audio("/style/audio", seq, chunk, self.encoding))
            if not self._transport.reliable and seq % 16 == 15:
                self.sync()  # pace UDP so the server's receive buffer never overflows
        self._request("/style/record/stop", [], "/done", timeout=max(self.timeout, 120.0))

    def style_select(self, name: str) -> None:
        self._request("/style/select", [name], "/done")

    def style_mix(self, weights: Mapping[str, float]) -> None:
        """Make a blend of styles active, e.g. ``{"a": 0.7, "b": 0.3}``."""
        args: list[Any] = []
        for name, weight in weights.items():
            args += [name, float(weight)]
        self._request("/style/mix", args, "/done")

    def style_list(self) -> list[str]:
        return [str(name) for name in self._request("/style/list", [], "/style/list/reply").params]

    def style_delete(self, name: str) -> None:
        self._request("/style/delete", [name], "/done")

    # -- health ----------------------------------------------------------------------------

    def status(self, timeout: float | None = None) -> Status:
        p = self._request("/status", [], "/status/reply", timeout=timeout).params
        late = int(p[8]) if len(p) > 8 else 0
        return Status(int(p[0]), float(p[1]), float(p[2]), float(p[3]), float(p[4]), int(p[5]), int(p[6]), int(p[7]), late)

    def ping(self, timeout: float | None = None) -> float:
        """Round-trip time in seconds."""
        token = next(self._tokens)
        start = time.perf_counter()
        self._request("/ping", [token], "/pong", match=lambda m: list(m.params) == [token], timeout=timeout)
        return time.perf_counter() - start

    def sync(self) -> None:
        """Return once the server has handled everything sent before."""
        token = next(self._tokens)
        self._request("/sync", [token], "/synced", match=lambda m: list(m.params)[:1] == [token])

    # -- internals -------------------------------------------------------------------------

    def _require_session(self) -> Session:
        if self.session is None:
            raise GramophoneError("not connected: call connect() first")
        return self.session

    def _send(self, packet: bytes) -> None:
        self._raise_if_lost()
        self._transport.send(packet)

    def _raise_if_lost(self) -> None:
        if self.lost is not None:
            raise self.lost

    def _request(
        self,
        address: str,
        args: Sequence[Any],
        reply: str,
        *,
        match: Callable[[OscMessage], bool] | None = None,
        timeout: float | None = None,
    ) -> OscMessage:
        """Send one message and wait for its reply (``/done`` replies must name ``address``)."""
        if match is None and reply == "/done":
            match = lambda m: m.params[:1] == [address]  # noqa: E731
        with self._request_lock:
            self._drain()
            self._send(build(address, args))
            return self._await(address, reply, match, self.timeout if timeout is None else timeout)

    def _collect(self, address: str, args: Sequence[Any], row: str) -> list[OscMessage]:
        """Send one message and gather its ``row`` replies until ``/done address``."""
        rows: list[OscMessage] = []
        with self._request_lock:
            self._drain()
            self._send(build(address, args))
            while True:
                message = self._await(address, "", lambda m: m.address == row or m.params[:1] == [address], self.timeout, rows=True)
                if message.address != row:
                    return rows
                rows.append(message)

    def _await(
        self,
        address: str,
        reply: str,
        match: Callable[[OscMessage], bool] | None,
        timeout: float,
        rows: bool = False,
    ) -> OscMessage:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = self._replies.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise NoReply(f"no reply to {address} within {timeout:g} s") from None
            if message is None:
                self._raise_if_lost()
                continue
            if message.address == "/fail" and message.params[:1] == [address]:
                raise server_error(address, " ".join(str(p) for p in message.params[1:]))
            if (rows or message.address == reply) and (match is None or match(message)):
                return message

    def _drain(self) -> None:
        """Drop replies nobody waited for (answers to requests that timed out)."""
        while not self._replies.empty():
            self._replies.get_nowait()

    def _receive_loop(self) -> None:
        while not self._closed.is_set():
            try:
                packets = self._transport.receive()
            except ConnectionLost as error:
                if not self._closed.is_set():
                    self.lost = error
                    self._replies.put(None)
                return
            for packet in packets:
                try:
                    for message in messages(packet):
                        self._dispatch(message)
                except Exception:  # noqa: BLE001 - a malformed reply must not stop the receiver
                    continue

    def _dispatch(self, message: OscMessage) -> None:
        address, params = message.address, message.params
        if address == "/audio":
            seq, samples = int(params[0]), audio_of(params[1:])
            channels = self.session.channels if self.session else 1
            block = samples.reshape(-1, channels)
            if self.on_audio is not None:
                self.on_audio(seq, block)
            else:
                self._audio.put((seq, block))
            return
        if address == "/fail" and params[:1] in (["/content"], ["/style/audio"]):
            error = server_error(str(params[0]), " ".join(str(p) for p in params[1:]))
            self.stream_failures.append(error)
            if self.on_audio is None:
                self._audio.put(error)
            return
        if address.startswith("/param/") and params:
            name, value = address[len("/param/"):], float(params[0])
            self.param_values[name] = value
            if self.on_param is not None:
                self.on_param(name, value)
        self._replies.put(message)


def blocks_of(audio: np.ndarray, block_size: int) -> Iterable[np.ndarray]:
    """Consecutive ``block_size``-frame blocks of ``audio`` (frames, channels); the last zero-padded."""
    for start in range(0, len(audio), block_size):
        block = audio[start:start + block_size]
        if len(block) < block_size:
            block = np.concatenate([block, np.zeros((block_size - len(block), audio.shape[1]), np.float32)])
        yield block
