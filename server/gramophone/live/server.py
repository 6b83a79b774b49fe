"""The OSC server: peers, sessions, ordered per-sender work, and worker threads.

Every sender (a UDP address and port, or a TCP connection) is a *peer* with a FIFO lane of
work; a worker takes one item from a peer at a time, so each sender's messages run in
order while different senders run in parallel on threads sized to the cores.  Quick
requests (``/ping``, ``/status``, ``/param``…) are answered on the receiving thread and
never wait behind computation.  A peer becomes a *session* with ``/connect``: it then owns
a stream processor.  The protocol itself is in docs/protocol.md.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import os
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .. import __version__

from .. import priority
from ..capacity import Capacity, Demand
from .library import LibraryError, StyleLibrary
from ..params import PARAMETERS, Parameters
from ..osc.protocol import PARAM_PREFIX, REPLY_ADDRESSES, Command, ProtocolError, decode, encode_audio, encode_message, fail, max_udp_samples
from ..osc.relay import Relay
from ..osc.transport import Address, TcpConnection, TcpListener, UdpTransport, bind, is_loopback

log = logging.getLogger("gramophone.server")
MAX_PEERS = 1024
MAX_LANE = 1024  # queued messages per sender, audio included
RENDER_QUEUE_BLOCKS = 256
FAILS_LOGGED_PER_SECOND = 20  # per sender; a client failing every block must not flood the log
LOGS_PER_SECOND = 5  # /log lines per sender: a client's messages are news, not a stream
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
MAX_LOG_CHARS = 500
WATCH_SECONDS = 0.002  # how often the watchdog looks at every live session
# A live block still unanswered this close to its due time goes back dry: the watchdog's
# period, a GIL hand-off (the serve command sets a 0.25 ms switch interval) and the send
# (the stream's latency reserve leaves room for it), plus the worst the watchdog has recently
# woken late (when the workers keep the interpreter busy, it waits for its turn), up to
# MAX_WAKE_LAG and decaying by WAKE_LAG_DECAY each look (about 2 s).
SEND_GUARD_SECONDS = 0.006
MAX_WAKE_LAG = 0.004
WAKE_LAG_DECAY = 0.999


class Processor(Protocol):
    """What the server needs of ``gramophone.stream.StreamProcessor``."""

    mode: str
    latency_samples: int
    prepared_budget: float
    input_grace_seconds: float  # how late a live block may be before its place is padded with silence
    early_dry_seconds: float  # how much earlier than others the watchdog answers its unfinished blocks
    demand: Demand  # the cores it needs in real time

    def prepare(self, sample_rate: int, channels: int, block_size: int, max_latency: int | None = None) -> None: ...
    def push(self, seq: int, block: np.ndarray, arrival: float | None = None) -> list[tuple[int, np.ndarray]]: ...
    def push_silence(self, arrival: float | None = None) -> list[tuple[int, np.ndarray]]: ...
    def skip(self, seq: int, arrival: float | None = None) -> list[tuple[int, np.ndarray]]: ...
    def learn_pending(self) -> int: ...  # steps put off until the chunk's blocks have been sent
    def flush(self) -> list[tuple[int, np.ndarray]]: ...
    def reset(self) -> None: ...
    def set_style(self, target: Any) -> None: ...
    def stats(self) -> Any: ...


ProcessorFactory = Callable[[Parameters, Any], Processor]


class Stepper(Protocol):
    """What the server needs of ``gramophone.engine.batch.BatchStepper``: the live steps of every session, batched."""

    def stats(self) -> Any: ...  # .steps, .stream_steps, .largest, .streams_per_step, .recent
    def close(self) -> None: ...


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 57300
    max_sessions: int = 8
    capacity: Capacity | None = None  # --max-sessions auto: also admit only while the sessions' demands fit
    idle_timeout: float = 300.0
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    workers: int = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    shutdown_timeout: float = 30.0
    relay: bool = True  # live UDP answers leave through the answer relay process (osc/relay.py)


@dataclass
class InFlight:
    """A block received and not yet answered: when its answer is due, and what to send if dry."""

    due: float  # time.monotonic() by which its /audio must leave (live); inf in render mode
    samples: np.ndarray
    encoding: str
    relayed: bool = False  # the answer relay holds its dry answer and sends whichever answer is in time


class Session:
    """A connected stream: its processor, format, and every block in flight until answered.

    Each block is answered exactly once: by the processor's output, or dry (its own input)
    when its due time comes first; whichever takes it from ``in_flight`` sends it.
    """

    def __init__(self, sid: int, processor: Processor, sample_rate: int, channels: int, block_size: int) -> None:
        self.id = sid
        self.processor = processor
        self.sample_rate, self.channels, self.block_size = sample_rate, channels, block_size
        self.in_flight: OrderedDict[int, InFlight] = OrderedDict()
        self.answer_lock = threading.Lock()
        self.dropped = 0  # blocks sent back dry because the session fell behind
        self.late_blocks = 0  # answers that still left after their due time
        self.behind = False
        self.latency_seconds = processor.latency_samples / sample_rate
        self.block_seconds = block_size / sample_rate
        blocks_in_latency = math.ceil(processor.latency_samples / block_size)
        self.live_queue = max(4, blocks_in_latency + 2)  # a block waiting longer cannot be on time
        self.expected_arrival = math.inf  # when the next live block would arrive in real time
        self.last_taken = -1  # the highest seq the stream has taken (or skipped)
        self.padding = False  # a block of silence is queued for a stalled input

    def register(self, seq: int, samples: np.ndarray, encoding: str, arrival: float, relayed: bool) -> InFlight | None:
        """Note a block received, due ``latency`` after its arrival in live mode; None if ``seq`` is in flight.

        ``relayed``: it is being handed to the relay (a live block only), so the watchdog leaves it alone.
        """
        live = self.processor.mode == "live"
        due = arrival + self.latency_seconds if live else math.inf
        block = InFlight(due, samples, encoding, relayed and live)
        with self.answer_lock:
            if seq in self.in_flight:
                return None
            self.in_flight[seq] = block
        self.expected_arrival = arrival + self.block_seconds
        return block

    def take(self, seq: int, due: float | None = None) -> InFlight | None:
        """Claim the answer to ``seq`` (only if due at ``due``, when given); None when it was answered already."""
        with self.answer_lock:
            block = self.in_flight.get(seq)
            if block is None or (due is not None and block.due != due):
                return None
            return self.in_flight.pop(seq)

    def overdue(self, now: float, guard: float, relayed_too: bool) -> list[tuple[int, InFlight]]:
        """Claim every block whose answer is due within ``guard`` seconds (but those the relay holds, if not ``relayed_too``)."""
        out = []
        with self.answer_lock:
            for seq, block in self.in_flight.items():
                if block.due - guard > now:
                    break
                if relayed_too or not block.relayed:
                    out.append((seq, block))
            for seq, _ in out:
                del self.in_flight[seq]
        return out

    def claim_taken(self) -> list[tuple[int, InFlight]]:
        """Claim the blocks the stream has taken (blocks still queued behind a /reset are not)."""
        with self.answer_lock:
            out = [(seq, block) for seq, block in self.in_flight.items() if seq <= self.last_taken]
            for seq, _ in out:
                del self.in_flight[seq]
        return out


class LogBudget:
    """At most ``per_second`` log lines a second of one kind from one sender; says how many it held back."""

    def __init__(self, per_second: int, kind: str) -> None:
        self.per_second, self.kind = per_second, kind
        self.window = 0.0
        self.count = 0

    def allow(self, label: str) -> bool:
        now = time.monotonic()
        if now - self.window >= 1.0:
            if self.count > self.per_second:
                log.warning("%s: %d more %s not logged", label, self.count - self.per_second, self.kind)
            self.window, self.count = now, 0
        self.count += 1
        return self.count <= self.per_second


class Peer:
    """One sender: where replies go, its ordered lane of work, and its session if any."""

    def __init__(self, key: Hashable, label: str, addr: Address, conn: TcpConnection | None) -> None:
        self.key, self.label, self.addr, self.conn = key, label, addr, conn
        self.reply_addr: Address = addr
        self.session: Session | None = None
        self.notify = False
        self.last_seen = time.monotonic()
        self.lane: deque[tuple[str, Callable[[], None], bool]] = deque()
        self.content_queued = 0
        self.connecting = 0  # /connect messages queued, not yet handled
        self.queued_connect: tuple | None = None  # the arguments of the last one queued, until handled
        self.scheduled = False
        self.cond = threading.Condition()
        self.via_relay = False  # once it has had a relayed session, every reply goes the relay's way, in order
        self.fail_budget = LogBudget(FAILS_LOGGED_PER_SECOND, "/fail")
        self.log_budget = LogBudget(LOGS_PER_SECOND, "/log")


class Server:
    """UDP and TCP on one port, sessions, and worker threads; ``start`` then ``shutdown``."""

    def __init__(self, config: ServerConfig, params: Parameters, library: StyleLibrary, factory: ProcessorFactory,
                 stepper: Stepper | None = None) -> None:
        self.config, self.params, self.library, self._factory = config, params, library, factory
        self._stepper = stepper  # steps the sessions' chunks together; the factory's processors hand it their steps
        self._peers: dict[Hashable, Peer] = {}
        self._lock = threading.Lock()
        self._runq: queue.Queue[Peer | None] = queue.Queue()
        self._outstanding = 0
        self._idle = threading.Condition(self._lock)
        self._session_ids = itertools.count(1)
        # One prepare at a time: each times its chunks to weigh its demand, and connects made at
        # once would otherwise time each other's warm-ups, not the load they will share.
        self._preparing = threading.Lock()
        self._denied: set[str] = set()
        self.http_port = 0  # the OSCQuery port (oscquery.py), 0 when off: logged and told in /version/reply
        self._stopping = threading.Event()
        self._relay: Relay | None = None
        self._relayed_sessions: dict[int, tuple[Peer, Session]] = {}  # by id, for what the relay reports
        udp_sock, tcp_sock = bind(config.host, config.port)
        self.port = udp_sock.getsockname()[1]
        self.loopback = is_loopback(udp_sock)
        self._udp = UdpTransport(udp_sock, self._on_datagram)
        self._tcp = TcpListener(tcp_sock, self._on_tcp_open, self._on_tcp_packet, self._on_tcp_error, self._on_tcp_close)
        self._workers = [threading.Thread(target=self._work, name=f"worker-{i}", daemon=True) for i in range(config.workers)]
        self._janitor = threading.Thread(target=self._expire, name="janitor", daemon=True)
        self._watchdog = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        self._immediate: dict[str, Callable[[Peer, Command], None]] = {
            "/ping": self._ping, "/status": self._status, "/params": self._params, "/style/list": self._style_list,
            "/version": self._version, "/notify": self._notify, "/log": self._log,
        }
        self._queued: dict[str, Callable[[Peer, Command], None]] = {
            "/disconnect": self._disconnect, "/mode": self._mode, "/reset": self._reset,
            "/flush": self._flush, "/sync": self._sync, "/style/load": self._style_load,
            "/style/record/start": self._record_start, "/style/audio": self._record_audio,
            "/style/record/stop": self._record_stop, "/style/select": self._style_select, "/style/mix": self._style_mix,
            "/style/delete": self._style_delete,
        }

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        if self.config.relay:
            self._start_relay()
        for worker in self._workers:
            worker.start()
        self._janitor.start()
        self._watchdog.start()
        self._udp.start()
        self._tcp.start()
        host = self.config.host
        http = f", http {host}:{self.http_port} (OSCQuery, control page /ui)" if self.http_port else ""
        log.info("gramophone %s listening on udp %s:%d and tcp %s:%d (SLIP or length-prefixed)%s; style %r active; %d workers",
                 __version__, host, self.port, host, self.port, http, self.library.active_name, len(self._workers))
        if not self.loopback:
            log.warning("listening on %s, not loopback: serving senders in %s", host,
                        ", ".join(map(str, self.config.allow)) or "every network")

    def shutdown(self) -> None:
        """Stop receiving, finish every chunk in flight, send the replies, then stop."""
        self._stopping.set()
        self._udp.stop_receiving()
        self._tcp.stop_receiving()
        with self._lock:
            sessions = [peer for peer in self._peers.values() if peer.session]
        log.info("shutting down: finishing %d session(s)", len(sessions))
        for peer in sessions:
            self._enqueue(peer, "/disconnect", lambda peer=peer: self._end_session(peer, flush=True))
        deadline = time.monotonic() + self.config.shutdown_timeout
        with self._idle:
            while self._outstanding and time.monotonic() < deadline:
                self._idle.wait(0.1)
            unfinished = self._outstanding
        if unfinished:
            log.warning("shutdown timeout: %d message(s) left unprocessed", unfinished)
        for _ in self._workers:
            self._runq.put(None)
        # Joined, not left as daemons: a worker still inside torch when the interpreter
        # finalises aborts the process (SIGABRT) instead of exiting 0.
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()) + 5.0)
        if self._stepper is not None:
            self._stepper.close()
            self._log_batching()
        for conn in list(self._tcp.connections):
            conn.finish(2.0)
        if self._relay is not None:
            self._relay.close()
        # The style cache needs no flush: every target is written atomically when learned.
        self._udp.close()
        log.info("stopped")

    # -- receiving ----------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        if not self.config.allow:
            return True
        address = ipaddress.ip_address(host)
        if any(address in net for net in self.config.allow):
            return True
        if host not in self._denied and len(self._denied) < MAX_PEERS:
            self._denied.add(host)
            log.warning("refused %s: not in --allow", host)
        return False

    def connection_handlers(self) -> tuple[Callable[[Any], bool], Callable[[Any, bytes, float], None], Callable[[Any], None]]:
        """(open, packet, close) for connections arriving another way (the OSCQuery WebSocket): served as TCP ones.

        A connection needs ``id`` (unique beside TCP's), ``addr``, ``label``, ``closed`` and ``send(packet)``.
        """
        return self._on_tcp_open, self._on_tcp_packet, self._on_tcp_close

    def _on_datagram(self, addr: Address, data: bytes, arrival: float) -> None:
        if not self._allowed(addr[0]):
            return
        key = ("udp", addr[0], addr[1])
        with self._lock:
            peer = self._peers.get(key)
            if peer is None and len(self._peers) < MAX_PEERS:
                peer = self._peers[key] = Peer(key, f"udp {addr[0]}:{addr[1]}", addr, None)
        if peer is None:
            self._udp.send(addr, fail("?", f"server busy: {MAX_PEERS} clients known; try again later"))
            return
        self._receive(peer, data, arrival)

    def _on_tcp_open(self, conn: TcpConnection) -> bool:
        if not self._allowed(conn.addr[0]):
            return False
        with self._lock:
            if len(self._peers) >= MAX_PEERS:
                return False
            self._peers[("tcp", conn.id)] = Peer(("tcp", conn.id), conn.label, conn.addr, conn)
        log.debug("%s connected", conn.label)
        return True

    def _on_tcp_packet(self, conn: TcpConnection, data: bytes, arrival: float) -> None:
        with self._lock:
            peer = self._peers.get(("tcp", conn.id))
        if peer is not None:
            self._receive(peer, data, arrival)

    def _on_tcp_error(self, conn: TcpConnection, message: str) -> None:
        log.warning("%s: %s; closing it", conn.label, message)
        conn.send(fail("?", f"{message}; closing the connection"))

    def _on_tcp_close(self, conn: TcpConnection) -> None:
        with self._lock:
            peer = self._peers.pop(("tcp", conn.id), None)
        if peer is not None:
            self._drop_session(peer, "connection closed")

    def _receive(self, peer: Peer, data: bytes, arrival: float) -> None:
        """Handle each message of a packet in order; its refusals get one /fail, the first's."""
        peer.last_seen = arrival
        refused: list[ProtocolError] = []
        for item in decode(data):
            if isinstance(item, ProtocolError):
                if item.address in REPLY_ADDRESSES:
                    log.debug("%s sent %s, a reply address: ignored", peer.label, item.address)
                else:
                    refused.append(item)
            elif item.address == "/content":
                self._content(peer, item, arrival)
            elif item.address.startswith(PARAM_PREFIX):
                self._param(peer, item)
            elif item.address == "/connect":
                self._connect_received(peer, item)
            elif item.address in self._immediate:
                self._guard(peer, item.address, lambda: self._immediate[item.address](peer, item))
            else:
                handler = self._queued[item.address]
                self._enqueue(peer, item.address, lambda handler=handler, item=item: handler(peer, item))
        if refused:  # one answer per packet: a bundle of bad messages must not multiply the replies
            more = f" (and {len(refused) - 1} more refused in this bundle)" if len(refused) > 1 else ""
            self._fail(peer, refused[0].address, refused[0].message + more)

    def _connect_received(self, peer: Peer, cmd: Command) -> None:
        """reply_port takes effect on receipt, so the /connect's own reply (or /fail) goes there too.

        The session itself is made on a worker; ``peer.connecting`` lets blocks sent right
        behind the /connect wait for it in the sender's lane instead of failing. A /connect
        identical to one still queued is a client's retry (Pd's and Max's patches resend
        until answered): the queued one answers it, rather than a second session replacing
        the first under blocks already sent to it.
        """
        if peer.connecting and peer.queued_connect == cmd.values:
            log.debug("%s: repeated /connect while one is queued; answered once", peer.label)
            return
        if len(cmd.values) >= 4 and cmd.values[3] != 0:  # 0: reply to the source port, as without it
            reply_port = cmd.values[3]
            if not 1 <= reply_port <= 65535:
                return self._fail(peer, "/connect", f"reply_port must be 0 or within 1–65535, got {reply_port}")
            if peer.conn is None and reply_port == self.port and ipaddress.ip_address(peer.addr[0]).is_loopback:
                return self._fail(peer, "/connect", f"reply_port {reply_port} is this server's own port")
            if peer.conn is None:  # over TCP replies always travel on the connection
                peer.reply_addr = (peer.addr[0], reply_port, *peer.addr[2:])
        if len(cmd.values) == 5 and cmd.values[4] <= 0:
            return self._fail(peer, "/connect", f"max_latency must be a positive number of samples, got {cmd.values[4]}")
        peer.connecting += 1
        peer.queued_connect = cmd.values
        if not self._enqueue(peer, "/connect", lambda: self._connect(peer, cmd)):
            peer.connecting -= 1

    # -- sending ------------------------------------------------------------------------

    def _send(self, peer: Peer, packet: bytes) -> None:
        if peer.conn is not None:
            peer.conn.send(packet)
        elif not (peer.via_relay and self._relay is not None and self._relay.send(peer.reply_addr, packet)):
            self._udp.send(peer.reply_addr, packet)

    def _reply(self, peer: Peer, address: str, *args: Any) -> None:
        self._send(peer, encode_message(address, *args))

    def _fail(self, peer: Peer, address: str, message: str) -> None:
        """``/fail`` to the sender and a log line (at most a few a second per sender)."""
        self._send(peer, fail(address, message))
        if peer.fail_budget.allow(peer.label):
            log.warning("fail %s %s: %s", peer.label, address, message)

    def _guard(self, peer: Peer, address: str, action: Callable[[], None]) -> None:
        """Run ``action``; anything it raises becomes a ``/fail``, never a dead thread."""
        try:
            action()
        except (ProtocolError, LibraryError, ValueError) as error:
            self._fail(peer, address, getattr(error, "message", None) or str(error).splitlines()[0])
        except Exception as error:  # a bug: keep serving everyone else
            log.error("internal error on %s from %s: %r", address, peer.label, error, exc_info=log.isEnabledFor(logging.DEBUG))
            self._send(peer, fail(address, f"internal error: {type(error).__name__}"))

    # -- work lanes ---------------------------------------------------------------------

    def _enqueue(self, peer: Peer, address: str, action: Callable[[], None], content: bool = False) -> bool:
        with peer.cond:
            if len(peer.lane) >= MAX_LANE:
                full = True
            else:
                full = False
                peer.lane.append((address, action, content))
                peer.content_queued += content
                schedule, peer.scheduled = not peer.scheduled, True
        if full:
            self._fail(peer, address, f"too many queued messages ({MAX_LANE}); wait for replies")
            return False
        with self._lock:
            self._outstanding += 1
        if schedule:
            self._runq.put(peer)
        return True

    def _work(self) -> None:
        while (peer := self._runq.get()) is not None:
            with peer.cond:
                address, action, content = peer.lane.popleft()
            self._guard(peer, address, action)
            with peer.cond:
                peer.content_queued -= content
                again = bool(peer.lane)
                peer.scheduled = again
                peer.cond.notify_all()
            if again:
                self._runq.put(peer)
            with self._idle:
                self._outstanding -= 1
                self._idle.notify_all()

    # -- audio --------------------------------------------------------------------------

    def _content(self, peer: Peer, cmd: Command, arrival: float) -> None:
        session = peer.session
        seq, samples = cmd.values
        if session is None and peer.connecting:
            self._enqueue(peer, "/content", lambda: self._push(peer, None, seq, samples, cmd.encoding, arrival), content=True)
            return
        if session is None:
            return self._fail(peer, "/content", "no session: send /connect first")
        expected = session.block_size * session.channels
        if samples.size != expected:
            return self._fail(peer, "/content", f"expected {expected} samples (block_size × channels), got {samples.size}")
        live = session.processor.mode == "live"
        limit = session.live_queue if live else RENDER_QUEUE_BLOCKS
        with peer.cond:
            if not live and peer.conn is not None:  # TCP render: hold the reader until there is room
                while peer.content_queued >= limit and not peer.conn.closed and not self._stopping.is_set():
                    peer.cond.wait(0.25)
            full = peer.content_queued >= limit
        if full and not live:
            return self._fail(peer, "/content", f"render queue full ({limit} blocks): wait for /audio replies before sending more")
        if not self._register(peer, session, seq, samples, cmd.encoding, arrival):
            return self._fail(peer, "/content", f"block {seq} is already in flight; send each seq once")
        if full:  # far behind: answered dry now; the worker will only skip it (not counted as queued audio)
            self._answer_dry(peer, session, seq, session.take(seq))
        self._enqueue(peer, "/content", lambda: self._push(peer, session, seq, samples, cmd.encoding, arrival),
                      content=not full)

    def _push(self, peer: Peer, session: Session | None, seq: int, samples: np.ndarray, encoding: str,
              arrival: float) -> None:
        if session is None:  # sent right behind its /connect: the session exists by now, or never will
            session = self._need_session(peer, "/content")
            expected = session.block_size * session.channels
            if samples.size != expected:
                raise ProtocolError("/content", f"expected {expected} samples (block_size × channels), got {samples.size}")
            if not self._register(peer, session, seq, samples, encoding, arrival):
                raise ProtocolError("/content", f"block {seq} is already in flight; send each seq once")
        elif peer.session is not session:
            return  # reconnected or disconnected since this block arrived
        session.last_taken = max(session.last_taken, seq)
        if session.processor.mode == "live" and seq not in session.in_flight:
            # answered dry while it waited: skipped, so the session catches up instead of processing it
            return self._send_blocks(peer, session, session.processor.skip(seq, arrival))
        if session.behind:
            session.behind = False
            log.info("session %d caught up (%d blocks went back dry so far)", session.id, session.dropped)
        try:
            released = session.processor.push(seq, samples, arrival)
        except ValueError:
            block = session.take(seq)  # refused: its /fail is its answer
            if block is not None and block.relayed and self._relay is not None:
                self._relay.cancel(session.id, seq)
            raise
        self._send_blocks(peer, session, released)
        session.processor.learn_pending()

    def _pad(self, peer: Peer, session: Session, arrival: float) -> None:
        """A live input stalled mid-chunk: silence in its place, so the blocks already sent come back on time."""
        session.padding = False
        if peer.session is session and session.processor.mode == "live" and session.in_flight:
            self._send_blocks(peer, session, session.processor.push_silence(arrival))
            session.processor.learn_pending()

    def _answer_dry(self, peer: Peer, session: Session, seq: int, block: InFlight | None) -> None:
        """A live block that cannot be on time goes back as it came (its own input, unprocessed)."""
        if block is None:
            return
        self._count_dry(session, seq, 1000 * (block.due - time.monotonic()))
        self._send_answer(peer, session, seq, block.samples, block, "dry")

    @staticmethod
    def _count_dry(session: Session, seq: int, ms_before_due: float, what: str = "answered dry") -> None:
        session.dropped += 1
        log.debug("session %d: block %d %s %.1f ms before it was due", session.id, seq, what, ms_before_due)
        if not session.behind:
            session.behind = True
            log.warning("session %d falls behind: blocks go back dry until it catches up", session.id)

    @staticmethod
    def _count_late(session: Session, seq: int, ms: float, kind: str) -> None:
        session.late_blocks += 1
        if session.late_blocks <= FAILS_LOGGED_PER_SECOND or session.late_blocks % 1000 == 0:
            log.warning("session %d: block %d left %.1f ms after its latency, %s (%d late so far)",
                        session.id, seq, ms, kind, session.late_blocks)

    def _send_answer(self, peer: Peer, session: Session, seq: int, samples: np.ndarray, block: InFlight,
                     kind: str = "processed") -> None:
        packet = encode_audio("/audio", seq, samples, block.encoding)
        if block.relayed and self._relays(session) and self._relay.answer(session.id, seq, packet, kind):
            return  # the relay sends it, or has sent the dry one
        lateness = time.monotonic() - block.due  # read before the send: after it, the GIL may keep this thread waiting
        self._send(peer, packet)
        if lateness > 0:
            self._count_late(session, seq, 1000 * lateness, kind)

    # -- the answer relay --------------------------------------------------------------

    def _start_relay(self) -> None:
        try:
            relay = Relay(self._udp.sock, self._relay_event)
        except (OSError, ValueError, AttributeError) as error:  # no SOCK_SEQPACKET or pass_fds (macOS, Windows)
            log.warning("no answer relay (%s): live answers leave from the server's own threads", error)
            return
        if relay.alive:
            self._relay = relay
        else:
            relay.close()
            log.warning("the answer relay did not start: live answers leave from the server's own threads")

    def _register(self, peer: Peer, session: Session, seq: int, samples: np.ndarray, encoding: str,
                  arrival: float) -> bool:
        """Note a block in flight; a live UDP one's dry answer and due time go to the relay at once."""
        relay = self._relay if self._relays(session) else None
        block = session.register(seq, samples, encoding, arrival, relayed=relay is not None)
        if block is None:
            return False
        if block.relayed and not relay.due(session.id, seq, block.due, peer.reply_addr, encode_audio("/audio", seq, samples, encoding)):
            block.relayed = False  # not handed over: the watchdog's to answer dry
        return True

    def _relays(self, session: Session) -> bool:
        """Whether the relay answers this session's unfinished blocks dry (else the watchdog does)."""
        return self._relay is not None and self._relay.alive and session.id in self._relayed_sessions

    def _relay_event(self, event: tuple) -> None:
        """What the relay did that the server's counts must know: its own dry answers, and late ones."""
        kind, sid, seq, *rest = event
        peer_session = self._relayed_sessions.get(sid)
        if peer_session is None:
            return
        session = peer_session[1]
        if kind == "dry":
            if session.take(seq, due=rest[1]) is not None:  # not answered here yet: the stream skips it, to catch up
                self._count_dry(session, seq, rest[0], "answered dry by the relay")
        elif kind == "superseded":  # answered here, too late: the relay's dry answer went instead
            if rest[0] != "dry":
                self._count_dry(session, seq, rest[1], "answered dry: its answer came")
        elif kind == "late":
            self._count_late(session, seq, rest[0], rest[1])

    def _send_blocks(self, peer: Peer, session: Session, blocks: list[tuple[int, np.ndarray]]) -> None:
        """Send each output the watchdog has not answered dry already."""
        for seq, samples in blocks:
            block = session.take(seq)
            if block is not None:
                self._send_answer(peer, session, seq, samples, block)

    # -- immediate handlers -------------------------------------------------------------

    def _ping(self, peer: Peer, cmd: Command) -> None:
        self._reply(peer, "/pong", *cmd.values)

    def _version(self, peer: Peer, cmd: Command) -> None:
        self._reply(peer, "/version/reply", "gramophone", __version__, self.http_port)

    def _notify(self, peer: Peer, cmd: Command) -> None:
        peer.notify = bool(cmd.values[0])
        self._reply(peer, "/done", "/notify", int(peer.notify))

    def _log(self, peer: Peer, cmd: Command) -> None:
        """A client's message in the server's log (a plugin saying why it stays dry), one line, rate-limited."""
        level, message = cmd.values
        if level not in LOG_LEVELS:
            raise ProtocolError("/log", f"level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        line = " ".join(message.split())[:MAX_LOG_CHARS]
        if line and peer.log_budget.allow(peer.label):
            log.log(LOG_LEVELS[level], "%s says: %s", peer.label, line)

    def _param(self, peer: Peer, cmd: Command) -> None:
        name = cmd.address[len(PARAM_PREFIX):]
        if not cmd.values:
            return self._reply(peer, cmd.address, self.params.get(name))
        try:
            applied = self.params.set(name, cmd.values[0])
        except ValueError as error:
            return self._fail(peer, cmd.address, str(error))
        log.debug("%s set %s = %g", peer.label, name, applied)
        packet = encode_message(cmd.address, applied)
        self._send(peer, packet)
        with self._lock:
            others = [p for p in self._peers.values() if p is not peer and (p.session or p.notify)]
        for other in others:
            self._send(other, packet)

    def _params(self, peer: Peer, cmd: Command) -> None:
        values = self.params.snapshot()
        for name, spec in PARAMETERS.items():
            self._reply(peer, "/params/reply", name, values[name], spec.minimum, spec.maximum, spec.default)
        self._reply(peer, "/done", "/params")

    def _style_list(self, peer: Peer, cmd: Command) -> None:
        self._reply(peer, "/style/list/reply", *self.library.names())

    def _status(self, peer: Peer, cmd: Command) -> None:
        """The sender's own session, or every session together when it has none (docs/protocol.md)."""
        with self._lock:
            sessions = [p.session for p in self._peers.values() if p.session]
        count = len(sessions)
        if peer.session is not None:
            sessions = [peer.session]
        stats = [(s, s.processor.stats()) for s in sessions]
        self._reply(
            peer, "/status/reply", count,
            _mean([st.rtf_avg for _, st in stats]),
            max([float(st.rtf_peak) for _, st in stats], default=0.0),
            _mean([st.iterations_avg for _, st in stats]),
            max([1000.0 * s.processor.latency_samples / s.sample_rate for s, _ in stats], default=0.0),
            sum(int(st.late_chunks) for _, st in stats),
            sum(int(st.lost_blocks) + s.dropped for s, st in stats),  # gaps in seq, and blocks answered dry
            sum(int(st.queued_blocks) for _, st in stats),
            sum(s.late_blocks for s, _ in stats),
            self._stepper.stats().recent if self._stepper is not None else 0.0,
        )

    def _log_batching(self) -> None:
        """How the sessions' steps were batched, over the server's life."""
        stats = self._stepper.stats()
        log.info("batched steps: %d steps took %d session steps (%.2f sessions per step, at most %d)",
                 stats.steps, stats.stream_steps, stats.streams_per_step, stats.largest)

    # -- queued handlers (run on workers, in each sender's order) ----------------------

    def _connect(self, peer: Peer, cmd: Command) -> None:
        try:
            self._make_session(peer, cmd)
        finally:
            peer.connecting -= 1
            if not peer.connecting:
                peer.queued_connect = None

    def _make_session(self, peer: Peer, cmd: Command) -> None:
        sample_rate, channels, block_size, *rest = cmd.values
        max_latency = rest[1] if len(rest) == 2 else None
        if peer.conn is None and block_size * channels > max_udp_samples():
            raise ProtocolError("/connect", f"block_size × channels = {block_size * channels} does not fit a UDP datagram "
                                f"as a float list (at most {max_udp_samples()}); use smaller blocks or TCP")
        processor = self._factory(self.params, self.library.active)
        with self._preparing:
            processor.prepare(sample_rate, channels, block_size, max_latency)
        session = Session(next(self._session_ids), processor, sample_rate, channels, block_size)
        with self._lock:  # count and claim together, so two connects cannot both take the last place
            others = [p.session for p in self._peers.values() if p.session and p is not peer]
            held = f"{len(others)} session{'' if len(others) == 1 else 's'}"
            if len(others) >= self.config.max_sessions:
                raise ProtocolError("/connect", f"server full: {held} (--max-sessions {self.config.max_sessions})")
            if self.config.capacity is not None:
                refusal = self.config.capacity.refusal([other.processor.demand for other in others], processor.demand)
                if refusal is not None:
                    raise ProtocolError("/connect", f"server full: {held}; {refusal} (--max-sessions auto)")
            replaced, peer.session = peer.session, session
        if replaced is not None:
            self._forget_relayed(replaced)
            log.info("session %d replaced by a new /connect", replaced.id)
        if self._relay is not None and self._relay.alive and peer.conn is None:
            self._relayed_sessions[session.id] = (peer, session)
            peer.via_relay = True
        log.info("session %d connected: %s, %d Hz, %d ch, blocks of %d, latency %d samples%s%s", session.id, peer.label,
                 sample_rate, channels, block_size, processor.latency_samples,
                 f" (at most {max_latency}: budget {processor.prepared_budget:.3f})" if max_latency else "",
                 f", replies to port {peer.reply_addr[1]}" if rest and rest[0] and peer.conn is None else "")
        self._reply(peer, "/connected", session.id, int(processor.latency_samples))

    def _disconnect(self, peer: Peer, cmd: Command) -> None:
        self._end_session(peer, flush=True)
        self._reply(peer, "/done", "/disconnect")

    def _end_session(self, peer: Peer, flush: bool) -> None:
        session = peer.session
        if session is None:
            return
        if flush:
            self._send_blocks(peer, session, session.processor.flush())
        self._drop_session(peer, "disconnected")

    def _drop_session(self, peer: Peer, why: str) -> None:
        session, peer.session = peer.session, None
        self.library.discard_recording(peer.key)
        if session is not None:
            self._forget_relayed(session)
            log.info("session %d %s (%s)", session.id, why, peer.label)

    def _forget_relayed(self, session: Session) -> None:
        """A session ended: the relay owes its blocks in flight nothing, as the server does not."""
        if self._relayed_sessions.pop(session.id, None) is not None and self._relay is not None:
            self._relay.cancel(session.id)

    def _need_session(self, peer: Peer, address: str) -> Session:
        if peer.session is None:
            raise ProtocolError(address, "no session: send /connect first")
        return peer.session

    def _mode(self, peer: Peer, cmd: Command) -> None:
        mode = cmd.values[0]
        if mode not in ("live", "render"):
            raise ProtocolError("/mode", f"mode must be 'live' or 'render', got {mode!r}")
        self._need_session(peer, "/mode").processor.mode = mode
        self._reply(peer, "/done", "/mode", mode)

    def _reset(self, peer: Peer, cmd: Command) -> None:
        session = self._need_session(peer, "/reset")
        session.processor.reset()
        for seq, block in session.claim_taken():  # forgotten by the stream, still owed an answer: dry, early
            self._send_answer(peer, session, seq, block.samples, block, "dry")
        session.last_taken = -1  # a new stream may number its blocks from 0 again
        self._reply(peer, "/done", "/reset")

    def _flush(self, peer: Peer, cmd: Command) -> None:
        session = self._need_session(peer, "/flush")
        self._send_blocks(peer, session, session.processor.flush())
        self._reply(peer, "/done", "/flush")

    def _sync(self, peer: Peer, cmd: Command) -> None:
        self._reply(peer, "/synced", *cmd.values)

    def _style_load(self, peer: Peer, cmd: Command) -> None:
        name, relative = cmd.values
        self.library.load(name, relative)
        log.info("style %r loaded from %s by %s", name, relative, peer.label)
        self._reply(peer, "/done", "/style/load", name)

    def _record_start(self, peer: Peer, cmd: Command) -> None:
        session = self._need_session(peer, "/style/record/start")
        self.library.record_start(peer.key, cmd.values[0], session.sample_rate, session.channels)
        log.info("%s records style %r", peer.label, cmd.values[0])
        self._reply(peer, "/done", "/style/record/start", cmd.values[0])

    def _record_audio(self, peer: Peer, cmd: Command) -> None:
        self.library.record_audio(peer.key, *cmd.values)

    def _record_stop(self, peer: Peer, cmd: Command) -> None:
        target = self.library.record_stop(peer.key)
        log.info("style %r recorded by %s", target.name, peer.label)
        self._reply(peer, "/done", "/style/record/stop", target.name)

    def _style_select(self, peer: Peer, cmd: Command) -> None:
        already = self.library.active_name == cmd.values[0]
        target = self.library.select(cmd.values[0])
        if not already:  # selecting the active style again must not restart every stream's crossfade
            self._apply_style(target)
        log.info("style %r selected by %s", cmd.values[0], peer.label)
        self._reply(peer, "/done", "/style/select", cmd.values[0])

    def _style_mix(self, peer: Peer, cmd: Command) -> None:
        values = cmd.values
        target = self.library.mix([(values[i], values[i + 1]) for i in range(0, len(values), 2)])
        self._apply_style(target)
        log.info("style mix %s selected by %s", target.name, peer.label)
        self._reply(peer, "/done", "/style/mix")

    def _style_delete(self, peer: Peer, cmd: Command) -> None:
        self.library.delete(cmd.values[0])
        log.info("style %r deleted by %s", cmd.values[0], peer.label)
        self._reply(peer, "/done", "/style/delete", cmd.values[0])

    def _apply_style(self, target: Any) -> None:
        """Every session switches at its next chunk boundary, in order with its own audio."""
        with self._lock:
            peers = [p for p in self._peers.values() if p.session]
        for other in peers:
            self._enqueue(other, "/style", lambda other=other, session=other.session: self._set_style(other, session, target))

    @staticmethod
    def _set_style(peer: Peer, session: Session, target: Any) -> None:
        if peer.session is session:
            session.processor.set_style(target)

    # -- housekeeping -------------------------------------------------------------------

    def _watch(self) -> None:
        """Keep every live session's promise: each block answered by its due time, even when input stops.

        Blocks the relay holds are the relay's to answer dry; the watchdog answers the rest (TCP
        sessions, a block the relay could not be handed, every block once the relay is gone).
        """
        if not priority.renice_this_thread(priority.TIMEKEEPING):
            log.debug("the watchdog runs at the process's priority (raising it was refused)")
        lag, expected = 0.0, time.monotonic() + WATCH_SECONDS
        while not self._stopping.wait(WATCH_SECONDS):
            now = time.monotonic()
            lag, expected = min(max(now - expected, lag * WAKE_LAG_DECAY), MAX_WAKE_LAG), now + WATCH_SECONDS
            with self._lock:
                live = [p for p in self._peers.values() if p.session and p.session.processor.mode == "live"]
            for peer in live:
                session = peer.session
                if session is None:
                    continue
                guard = SEND_GUARD_SECONDS + lag + session.processor.early_dry_seconds
                for seq, block in session.overdue(now, guard, relayed_too=not self._relays(session)):
                    self._answer_dry(peer, session, seq, block)
                self._pad_stalled(peer, session, now)

    def _pad_stalled(self, peer: Peer, session: Session, now: float) -> None:
        """Queue one block of silence where a stalled input's next block would have been.

        Its deadlines count from when that block would have arrived, so the padded chunk
        ends on the same schedule as a real one; the grace only shortens its steps.
        """
        grace = session.processor.input_grace_seconds
        if session.padding or not session.in_flight or peer.content_queued or now < session.expected_arrival + grace:
            return
        session.padding = True
        arrival, session.expected_arrival = session.expected_arrival, session.expected_arrival + session.block_seconds
        self._enqueue(peer, "/content", lambda: self._pad(peer, session, arrival), content=True)

    def _expire(self) -> None:
        """End idle sessions and forget idle UDP senders (``--idle-timeout``)."""
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            with self._lock:
                idle = [p for p in self._peers.values() if now - p.last_seen > self.config.idle_timeout and not p.lane]
                for peer in idle:
                    if peer.conn is None and not peer.session and not peer.notify:
                        del self._peers[peer.key]
            for peer in idle:
                if peer.session is not None:
                    self._drop_session(peer, f"expired after {self.config.idle_timeout:g} s idle")


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0
