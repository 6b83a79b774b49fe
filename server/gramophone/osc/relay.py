"""The answer relay: a small process that sends every live UDP answer by its due time.

The server's threads share one interpreter lock. Under load a thread that must answer a
block dry at its due time can wait for the lock longer than the latency's reserve, and the
answer leaves late. The relay is a separate process (its own interpreter, nothing but
sockets): the server hands it each live block's dry answer and due time when the block
arrives, and later the real answer. It sends the real answer if it comes in time, and the
dry one at the due time otherwise; so no answer waits for the server's lock, and each block
is answered once.

Messages, pickled, one per datagram of a ``SOCK_SEQPACKET`` socket pair (boundaries and
order kept, end of file seen when the other side goes away). Server to relay:

=========================================  =================================================
``("due", session, seq, due, addr, dry)``  a block arrived: send ``dry`` to ``addr`` by ``due``
``("answer", session, seq, packet, kind)``  its answer (``kind`` "processed" or "dry")
``("cancel", session, seq)``               owed nothing (``seq`` None: the whole session)
``("send", addr, packet)``                 any other reply, sent at once, in order with the answers
``("quit",)``                              send nothing more and exit
=========================================  =================================================

Relay to server: ``("dry", session, seq, ms_before_due, due)`` when it sent a block's dry answer
itself; ``("superseded", session, seq, kind, ms_before_due)`` when an answer came after that; ``("late",
session, seq, ms, kind)`` for any answer it sent after the due time.
"""

from __future__ import annotations

import heapq
import logging
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .. import priority

log = logging.getLogger("gramophone.relay")

# The relay sends a dry answer this long before its due time: its own wake-up and the send
# (well under 1 ms at real-time priority), and a moment when the machine itself stops (a virtual
# machine's CPU taken away): at 3 ms, a 30-minute soak here had 14 answers leave 0.5-2.7 ms late
# (one 11 ms). The same as the server's own watchdog (server.SEND_GUARD_SECONDS), which the
# latency's reserve holds.
SEND_AHEAD_SECONDS = 0.006
PIPE_BYTES = 4 << 20  # asked for, so blocks queue while the relay is slow to read; the system caps it (wmem_max)
MAX_MESSAGE_BYTES = 1 << 17  # a message carries at most one UDP datagram (64 KiB) and its key
HAND_OFF_SECONDS = 0.05  # the longest the receiving thread waits for room in the pipe (then it answers the block itself)
PATIENT_SECONDS = 1.0  # the longest a worker waits to hand over an answer or reply, whose order matters; then the relay is given up
RT_CPU_MICROSECONDS = 200_000  # the most real-time CPU the relay may use without sleeping, should a bug make it spin
REMEMBERED_ANSWERS = 4096  # keys the relay answered itself, to recognise an answer that comes after
START_SECONDS = 5.0

Key = tuple[int, int]


class Relay:
    """The server's side: starts the relay process, hands it blocks, reads back what it did.

    ``on_event(message)`` runs on a thread of its own for every message the relay sends back.
    If the relay cannot start or dies, ``alive`` turns False and the server sends for itself.
    """

    def __init__(self, udp: socket.socket, on_event: Callable[[tuple], None]) -> None:
        self._on_event = on_event
        self._pipe, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for sock in (self._pipe, child):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIPE_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, PIPE_BYTES)
        self._pipe.settimeout(HAND_OFF_SECONDS)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "gramophone.osc.relay", str(udp.fileno()), str(child.fileno())],
                pass_fds=(udp.fileno(), child.fileno()), stdin=subprocess.DEVNULL)
        except BaseException:
            self._pipe.close()
            raise
        finally:
            child.close()
        self._send_lock = threading.Lock()
        self._closing = False
        self.alive = self._started()
        self._reader = threading.Thread(target=self._read, name="relay-events", daemon=True)
        if self.alive:
            self._reader.start()

    def _started(self) -> bool:
        """True once the relay says it is ready; it imports nothing heavy, so this takes ~50 ms."""
        ready, _, _ = select.select([self._pipe], [], [], START_SECONDS)
        try:
            return bool(ready) and pickle.loads(self._pipe.recv(64)) == ("ready",)
        except (OSError, EOFError, pickle.UnpicklingError):
            return False

    def due(self, session: int, seq: int, due: float, addr: tuple, dry: bytes) -> bool:
        """Hand a live block's dry answer over; False if the relay is gone (the server answers it then)."""
        return self._hand(("due", session, seq, due, addr, dry))

    def answer(self, session: int, seq: int, packet: bytes, kind: str) -> bool:
        """Hand a block's answer over; False if the relay is gone (the server sends it then)."""
        return self._hand(("answer", session, seq, packet, kind), PATIENT_SECONDS)

    def cancel(self, session: int, seq: int | None = None) -> None:
        self._hand(("cancel", session, seq), PATIENT_SECONDS)

    def send(self, addr: tuple, packet: bytes) -> bool:
        """Send a reply after every answer handed over before it (``/done`` after a flush's blocks)."""
        return self._hand(("send", addr, packet), PATIENT_SECONDS)

    def _hand(self, message: tuple, patience: float = HAND_OFF_SECONDS) -> bool:
        if not self.alive:
            return False
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        give_up = time.monotonic() + patience
        with self._send_lock:
            while True:
                try:
                    self._pipe.send(data)
                    return True
                except TimeoutError:
                    if time.monotonic() < give_up:
                        continue
                    if patience < PATIENT_SECONDS:  # the receiving thread: this block is the server's own to answer
                        log.warning("the answer relay is %.0f ms behind: a block is answered without it", 1000 * patience)
                        return False
                    self._give_up(f"it read nothing for {patience:.0f} s")
                    return False
                except OSError as error:
                    self._give_up(f"handing it a message failed: {error}")
                    return False

    def _give_up(self, why: str) -> None:
        """Stop the relay, so it sends nothing more; the reader declares it gone once its reports are read."""
        log.error("stopping the answer relay: %s", why)
        self._process.kill()

    def _read(self) -> None:
        while True:
            try:
                data = self._pipe.recv(1024)
            except TimeoutError:
                continue
            except OSError as error:
                return self._lost(str(error))
            if not data:
                return self._lost("it exited")
            try:
                self._on_event(pickle.loads(data))
            except Exception as error:  # a bug here must not stop the counting
                log.error("relay event %r: %r", data[:40], error)

    def _lost(self, why: str) -> None:
        if self.alive and not self._closing:
            self.alive = False
            self._process.poll()  # reaped now, not at shutdown
            log.error("the answer relay is gone (%s): the server sends its answers itself", why)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the relay once it has handled every message before (a block still owed is not answered)."""
        self._closing = True
        self._hand(("quit",))
        self.alive = False
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._reader.is_alive():
            self._reader.join(1.0)
        self._pipe.close()


# -- the relay process ------------------------------------------------------------------


class _Sender:
    """The relay's state: blocks owed an answer, their dry answers, and when each is due."""

    def __init__(self, udp: socket.socket, pipe: socket.socket) -> None:
        self.udp, self.pipe = udp, pipe
        self.owed: dict[Key, tuple[float, tuple, bytes]] = {}
        self.timers: list[tuple[float, int, int]] = []  # (send-by, session, seq), a heap
        self.answered_dry: OrderedDict[Key, float] = OrderedDict()  # each with its due time

    def handle(self, message: tuple) -> bool:
        """Apply one message from the server; False on ``quit``."""
        kind = message[0]
        if kind == "due":
            _, session, seq, due, addr, dry = message
            self.owed[(session, seq)] = (due, addr, dry)
            heapq.heappush(self.timers, (due - SEND_AHEAD_SECONDS, session, seq))
        elif kind == "answer":
            _, session, seq, packet, answer_kind = message
            owed = self.owed.pop((session, seq), None)
            if owed is not None:
                self._send(session, seq, owed, packet, answer_kind)
            elif (session, seq) in self.answered_dry:
                self._tell(("superseded", session, seq, answer_kind, 1000 * (self.answered_dry[(session, seq)] - time.monotonic())))
        elif kind == "send":
            self._sendto(message[2], message[1])
        elif kind == "cancel":
            _, session, seq = message
            if seq is not None:
                self.owed.pop((session, seq), None)
            else:
                for key in [key for key in self.owed if key[0] == session]:
                    del self.owed[key]
        return kind != "quit"

    def fire(self, now: float) -> float | None:
        """Send the dry answer of every block due by now; seconds until the next one, None if none."""
        while self.timers:
            send_by, session, seq = self.timers[0]
            owed = self.owed.get((session, seq))
            if owed is not None and owed[0] - SEND_AHEAD_SECONDS != send_by:
                owed = None  # the key was cancelled and used again: this timer is not its own
            if owed is not None and send_by > now:
                return send_by - now
            heapq.heappop(self.timers)
            if owed is None:
                continue  # answered or cancelled
            del self.owed[(session, seq)]
            self._send(session, seq, owed, owed[2], "dry")
            self.answered_dry[(session, seq)] = owed[0]
            if len(self.answered_dry) > REMEMBERED_ANSWERS:
                self.answered_dry.popitem(last=False)
            self._tell(("dry", session, seq, 1000 * (owed[0] - now), owed[0]))
        return None

    def _send(self, session: int, seq: int, owed: tuple[float, tuple, bytes], packet: bytes, kind: str) -> None:
        due, addr, _ = owed
        self._sendto(packet, addr)
        lateness = time.monotonic() - due
        if lateness > 0:
            self._tell(("late", session, seq, 1000 * lateness, kind))

    def _sendto(self, packet: bytes, addr: tuple) -> None:
        try:
            self.udp.sendto(packet, addr)
        except OSError:
            pass  # the client went away (ICMP unreachable): as the server's own sends

    def _tell(self, message: tuple) -> None:
        try:
            self.pipe.send(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # the server is gone; the loop sees the end of file next


def _serve(udp_fd: int, pipe_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the server says when to stop
    udp = socket.socket(fileno=udp_fd)
    udp.settimeout(HAND_OFF_SECONDS)  # the socket's description is shared: keep it non-blocking as the server does
    pipe = socket.socket(fileno=pipe_fd)
    if priority.keep_time_in_this_thread() == "real-time":
        import resource  # POSIX only, as is this process

        resource.setrlimit(resource.RLIMIT_RTTIME, (RT_CPU_MICROSECONDS, RT_CPU_MICROSECONDS))
    sender = _Sender(udp, pipe)
    pipe.send(pickle.dumps(("ready",)))
    pipe.setblocking(False)
    buffer = bytearray(MAX_MESSAGE_BYTES)
    view = memoryview(buffer)
    wait: float | None = None
    while True:
        # select, not poll: its timeout is in microseconds, poll's in whole milliseconds
        readable, _, _ = select.select([pipe], [], [], wait)
        while readable:
            try:
                size = pipe.recv_into(buffer)
            except BlockingIOError:
                break
            except OSError:
                return
            if not size or not sender.handle(pickle.loads(view[:size])):
                return
            if sender.timers and sender.timers[0][0] <= time.monotonic():
                sender.fire(time.monotonic())  # a burst of messages must not hold a due answer back
        wait = sender.fire(time.monotonic())


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
