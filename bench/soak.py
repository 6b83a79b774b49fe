"""Soak benchmark: does the live promise hold for minutes, and under overload?

One ``gramophone serve`` on loopback, real-time 48 kHz mono sessions (blocks of 512, live mode, the
built-in style, a saw stepping through notes under a syllable-rate envelope), in three phases of
``--minutes`` each: 1 session, 2 sessions, then 4 sessions on this machine's cores. After the last
phase three sessions stop and one goes on alone for ``RECOVERY_SECONDS``: how soon do its blocks
come back wet again?

Per phase: blocks sent and returned, the worst and p99 delay (send of ``/content`` → arrival of the
matching ``/audio``) against the latency ``/connected`` reported, the dry share (a returned block equal
to the one sent, sample for sample, went back unprocessed) and ``lost_blocks``, the late share
(``late_chunks`` ÷ chunks) and ``late_blocks`` (``/status``, where the server sends it), the server's
RSS at the phase's start and end, ``/ping`` round trips (every 100 ms, from a socket of its own), and
the machine's load average when the row was taken (the soak shares the cores with whatever else runs),
and the share of CPU time the host stole over the phase (a virtual machine's cores taken away: with a
quarter stolen, 2 sessions here had 284 blocks dry in 2 minutes, against 0–10 with under 1.1 %).
A 5-second session first warms the server up (its row is shown, not judged): its first chunks
allocate about 3 % of its memory once, which is not the growth the RSS goal looks for.

Times are the kernel's (software timestamps of each packet leaving and arriving): the senders,
receivers and pinger are Python threads sharing one GIL, and a clock read in Python after a
``recv`` would count the wait for another thread's turn as server delay.

Usage::

    python -m bench.soak                      # 5 minutes per phase (about 16 minutes in all)
    python -m bench.soak --minutes 1 --markdown
    python -m bench.soak --phases 4 --minutes 1 --server-log /tmp/soak.log   # the overload alone, its log kept
    python -m bench.soak --phases 2 --log-level debug --server-log /tmp/soak.log   # every dry block named
    python -m bench.soak --latency low --phases 1                            # serve --latency low, one session
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import struct
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage

from gramophone.engine.latency import LATENCIES

from .common import Column, CpuTimes, Server, audio_message, chunk_seconds, message, report_goals, table
from .timing import TimedSocket

RATE = 48_000
BLOCK = 512
PERIOD = BLOCK / RATE
PHASES = (1, 2, 4)
RECOVERY_SECONDS = 10.0
WARMUP_SECONDS = 5.0  # one session first: the server's one-off allocations stay out of the phases
RSS_GROWTH = 0.05  # the most a phase may add to the server's RSS
PING_PERIOD = 0.1
COUNTS = (5, 6, 8)  # the /status/reply fields that count since the session began: late_chunks, lost_blocks, late_blocks
SETTLE = 0.5  # seconds past the latency to wait for the last real-time replies
MELODY = np.array([0, 3, 7, 5, 10, 7, 3, -2])  # semitones, one note per NOTE_SECONDS
NOTE_SECONDS = 0.4
SYLLABLE_HZ = 2.5

def _body(packet: bytes) -> bytes:
    """An OSC message without its address: what a dry ``/audio`` shares with its ``/content``."""
    return packet[(packet.index(b"\0") // 4 + 1) * 4:]


def _seq(body: bytes) -> int:
    """The first int argument of a message body (the block's ``seq``)."""
    return struct.unpack_from(">i", body, (body.index(b"\0") // 4 + 1) * 4)[0]


class Voice:
    """A saw stepping through a melody under a syllable-rate envelope: never silent, never steady."""

    def __init__(self, pitch: float) -> None:
        self.pitch, self.phase, self.sample = pitch, 0.0, 0

    def block(self) -> np.ndarray:
        t = (self.sample + np.arange(BLOCK)) / RATE
        freq = self.pitch * 2.0 ** (MELODY[(t / NOTE_SECONDS).astype(int) % MELODY.size] / 12)
        phase = (self.phase + np.cumsum(freq) / RATE) % 1.0
        self.phase, self.sample = float(phase[-1]), self.sample + BLOCK
        envelope = 0.05 + 0.25 * np.abs(np.sin(np.pi * SYLLABLE_HZ * t))
        return (envelope * (2 * phase - 1)).astype(np.float32)


class Session:
    """One live session on its own socket: when each block left and came back, and whether dry."""

    def __init__(self, server: Server, index: int) -> None:
        self.sock = TimedSocket(server.host, server.port)
        self.voice = Voice(220.0 * 2 ** (-index / 5))
        self.replies: deque[OscMessage] = deque()
        self.pending: dict[int, bytes] = {}  # seq → body of the /content not answered yet
        self.sent_at = self.returned_at = np.zeros(0)
        self.dry = np.zeros(0, dtype=bool)
        self.statuses: list[list] = []
        self.error: BaseException | None = None
        self.latency = self.request("/connect", RATE, 1, BLOCK, reply="/connected").params[1] / RATE
        self.tail = math.ceil(self.latency / PERIOD) + 2  # blocks after a block that bring its reply out

    def run(self, start: float, blocks: int, snapshot: int | None = None) -> None:
        """Send ``blocks`` blocks in real time from ``start`` (``/status`` after block ``snapshot`` too),
        wait for the real-time replies, ask ``/status`` and disconnect (which flushes the rest)."""
        try:
            self.sent_at, self.returned_at = np.full(blocks, np.nan), np.full(blocks, np.nan)
            self.dry = np.zeros(blocks, dtype=bool)
            for seq in range(blocks):
                self._until(start + seq * PERIOD)
                packet = audio_message(seq, self.voice.block())
                self.pending[seq] = _body(packet)
                self.sent_at[seq] = self.sock.send(packet)
                if seq + 1 == snapshot:
                    self.sock.send(message("/status"))
            self._until(time.time() + self.latency + SETTLE)
            if snapshot is not None:
                self.statuses.append(self.expect("/status/reply").params)
            self.statuses.append(self.request("/status", reply="/status/reply").params)
            self.request("/disconnect", reply="/done")
        except BaseException as error:  # handed to the main thread by join()
            self.error = error
        finally:
            self.sock.close()

    def request(self, address: str, *args, reply: str) -> OscMessage:
        self.sock.send(message(address, *args))
        return self.expect(reply)

    def expect(self, address: str, timeout: float = 30.0) -> OscMessage:
        """The first reply to ``address``, reading ``/audio`` meanwhile."""
        deadline = time.time() + timeout
        while True:
            for index, msg in enumerate(self.replies):
                if msg.address == "/fail":
                    raise SystemExit(f"the server refused {msg.params[0]}: {msg.params[1]}")
                if msg.address == address:
                    del self.replies[index]
                    return msg
            if time.time() > deadline:
                raise SystemExit(f"no {address} from the server within {timeout} s")
            self._until(min(deadline, time.time() + 0.05), stop_on_reply=True)

    def _until(self, moment: float, stop_on_reply: bool = False) -> None:
        """Read replies until ``moment`` (or the next control reply)."""
        while (left := moment - time.time()) > 0:
            if self.sock.wait(left) and self._read() and stop_on_reply:
                return

    def _read(self) -> bool:
        """Take every waiting packet; whether a control reply was among them."""
        control = False
        for data, at in self.sock.drain():
            if not data.startswith(b"/audio\0"):
                self.replies.append(OscMessage(data))
                control = True
                continue
            body = _body(data)
            seq = _seq(body)
            sent = self.pending.pop(seq, None)
            if sent is not None:
                self.returned_at[seq], self.dry[seq] = at, body == sent
        return control


class Pinger:
    """``/ping`` every ``PING_PERIOD`` from its own socket; round trips by kernel times."""

    def __init__(self, server: Server) -> None:
        self.sock = TimedSocket(server.host, server.port)
        self.trips: list[tuple[float, float]] = []  # (sent at, round trip in ms)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        sent: dict[int, float] = {}
        token = 0
        while not self.stopping.is_set():
            token += 1
            sent[token] = self.sock.send(message("/ping", token))
            due = sent[token] + PING_PERIOD
            while (left := due - time.time()) > 0:
                if self.sock.wait(left):
                    for data, at in self.sock.drain():
                        began = sent.pop(OscMessage(data).params[0], None)
                        if began is not None:
                            self.trips.append((began, 1000 * (at - began)))
        self.sock.close()

    def p99(self, begin: float, end: float) -> float | None:
        trips = [ms for at, ms in self.trips if begin <= at < end]
        return float(np.percentile(trips, 99)) if trips else None

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` (``VmRSS`` in ``/proc/PID/status``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def stage(name: str, kind: str, sessions: list[Session], seqs: list[range], statuses: list[list],
          sent_blocks: list[int], window: tuple[float, float], rss: tuple[float, float], pinger: Pinger,
          chunk: float, steal: float | None) -> dict:
    """One table row: the blocks ``seqs`` of each session, the ``/status`` counts that cover them
    (``sent_blocks`` each, for the count of chunks of ``chunk`` seconds), RSS and pings over ``window``,
    and the share of the machine's CPU time its host stole meanwhile."""
    delays = [(s.returned_at[r] - s.sent_at[r]) * 1000 for s, r in zip(sessions, seqs)]
    over = np.concatenate([d - 1000 * s.latency for s, d in zip(sessions, delays)])  # past each one's own promise
    returned = np.concatenate(delays)
    returned = returned[np.isfinite(returned)]
    over = over[np.isfinite(over)]
    reported = sorted({round(1000 * s.latency) for s in sessions})
    dry = sum(int(s.dry[r].sum()) for s, r in zip(sessions, seqs))
    sent = sum(len(r) for r in seqs)
    late_chunks = sum(st[5] for st in statuses)
    late_blocks = [st[8] for st in statuses if len(st) >= 9]
    return {"phase": name, "kind": kind, "sent": sent, "returned": returned.size,
            "reported": "–".join(map(str, (reported[0], reported[-1]) if len(reported) > 1 else reported)),
            "worst": float(returned.max()) if returned.size else None,
            "over": float(over.max()) if over.size else None,
            "p99": float(np.percentile(returned, 99)) if returned.size else None,
            "dry": dry, "dry_share": dry / sent, "lost": sum(st[6] for st in statuses),
            "late_share": late_chunks / (sum(sent_blocks) * PERIOD / chunk),
            "late_blocks": sum(late_blocks) if len(late_blocks) == len(statuses) else "n/a",
            "rss_start": rss[0], "rss_end": rss[1], "growth": rss[1] / rss[0] - 1, "ping_p99": pinger.p99(*window),
            "load": os.getloadavg()[0], "steal": steal, "unanswered": sum(len(s.pending) for s in sessions)}


def _steal(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    return None if after is None else after.steal_since(before)


def since(before: list, after: list) -> list:
    """A later ``/status/reply`` with its counts (late chunks, lost and late blocks) less an earlier one's."""
    return [a - b if index in COUNTS else a for index, (a, b) in enumerate(zip(after, before))]


def wet_again(session: Session, seqs: range, dropped: float, chunk: float) -> float:
    """Chunks (of ``chunk`` seconds) from the load drop until the block that starts the session's last
    all-wet run was sent (0 when no block sent after the drop came back dry; inf when the last one did)."""
    unwet = [seq for seq in seqs if session.dry[seq] or not np.isfinite(session.returned_at[seq])]
    if not unwet or session.sent_at[unwet[-1]] < dropped:
        return 0.0
    if unwet[-1] + 1 >= seqs.stop:
        return math.inf
    return max(0.0, session.sent_at[unwet[-1] + 1] - dropped) / chunk


def phase(server: Server, pinger: Pinger, count: int, blocks: int, chunk: float, recovery: int = 0,
          kind: str = "phase") -> list[dict]:
    """``count`` sessions streaming ``blocks`` counted blocks each (the server's chunks last ``chunk``
    seconds); with ``recovery``, the first goes on alone for that many blocks after the others stop
    (the load drop). One row per stage.

    Each session sends its ``tail`` after the counted blocks, so their replies come out in real
    time. The first one's ``/status`` for the phase is asked right after its counted blocks: its
    reply waits for the chunk in progress (the stream's lock), and that wait falls in the tail,
    before the drop, rather than in the recovery being measured.
    """
    sessions = [Session(server, index) for index in range(count)]
    tail = max(s.tail for s in sessions)
    dropped_seq = blocks + tail
    start = time.time() + 0.2
    rss_start, cpu_start = rss_mib(server.proc.pid), CpuTimes.now()
    plans = [(dropped_seq + recovery + tail, blocks) if index == 0 and recovery else (dropped_seq, None)
             for index in range(count)]
    threads = [threading.Thread(target=s.run, args=(start + index * PERIOD / count, *plan))
               for index, (s, plan) in enumerate(zip(sessions, plans))]
    for thread in threads:
        thread.start()
    end = start + blocks * PERIOD
    sleep_until(end)
    rss_end, cpu_end = rss_mib(server.proc.pid), CpuTimes.now()
    if recovery:
        sleep_until(start + (dropped_seq + recovery) * PERIOD)
        rss_after, cpu_after = rss_mib(server.proc.pid), CpuTimes.now()
    for thread in threads:
        thread.join()
    for s in sessions:
        if s.error is not None:
            raise s.error
    name = "warm-up" if kind == "warm-up" else f"{count} session{'s' * (count > 1)}"
    sent_blocks = [blocks if recovery and index == 0 else dropped_seq for index in range(count)]
    rows = [stage(name, kind, sessions, [range(blocks)] * count, [s.statuses[0] for s in sessions], sent_blocks,
                  (start, end), (rss_start, rss_end), pinger, chunk, _steal(cpu_start, cpu_end))]
    if recovery:
        first = sessions[0]
        dropped = max(float(np.nanmax(s.sent_at)) for s in sessions[1:])
        seqs = range(dropped_seq, dropped_seq + recovery)
        rows.append(stage(f"1 after {count}", "recovery", [first], [seqs], [since(*first.statuses)], [first.sent_at.size - blocks],
                          (dropped, dropped + recovery * PERIOD), (rss_end, rss_after), pinger, chunk,
                          _steal(cpu_end, cpu_after))
                    | {"wet_again": wet_again(first, seqs, dropped, chunk)})
    return rows


def goals(rows: list[dict]) -> list[tuple[bool, str]]:
    """Each goal of the soak as (met, what was measured); the warm-up has none."""
    out = []
    for row in rows:
        name, late_blocks, over = row["phase"], row["late_blocks"], row["over"]
        on_time = over is not None and over <= 0 and late_blocks in (0, "n/a")
        timing = (f"worst {row['worst'] or 0:.1f} ms, {over or 0:+.1f} ms against its session's reported "
                  f"{row['reported']} ms, late_blocks {late_blocks}")
        answered = row["returned"] == row["sent"] and row["unanswered"] == 0
        if row["kind"] == "recovery":
            out.append((row["wet_again"] <= 1, f"{name}: full wet service within one chunk of the drop "
                                              f"({row['wet_again']:.2f} chunks)"))
        elif row["kind"] == "phase" and row["phase"] in ("1 session", "2 sessions"):
            lost = answered and row["dry"] == 0 and row["lost"] == 0
            out.append((lost, f"{name}: nothing lost ({row['returned']}/{row['sent']} returned, {row['dry']} dry, "
                              f"lost_blocks {row['lost']}, {row['unanswered']} never answered)"))
            out.append((on_time, f"{name}: nothing later than reported ({timing})"))
            out.append((row["growth"] < RSS_GROWTH, f"{name}: RSS growth under {RSS_GROWTH:.0%} ({row['growth']:+.1%})"))
        elif row["kind"] == "phase":
            out.append((answered, f"{name}: every block answered ({row['returned']}/{row['sent']} returned, "
                                  f"{row['dry']} of them dry, {row['unanswered']} never answered)"))
            out.append((on_time, f"{name}: never later than reported ({timing})"))
    return out


COLUMNS = [Column("phase", "phase"), Column("sent", "sent"), Column("returned", "returned"),
           Column("reported", "reported ms"), Column("worst", "worst ms", "{:.1f}"),
           Column("over", "worst − reported ms", "{:+.1f}"), Column("p99", "p99 ms", "{:.1f}"),
           Column("dry_share", "dry", "{:.1%}"), Column("lost", "lost_blocks"),
           Column("late_share", "late chunks", "{:.1%}"), Column("late_blocks", "late_blocks"),
           Column("rss_start", "RSS start MiB", "{:.0f}"), Column("rss_end", "RSS end MiB", "{:.0f}"),
           Column("growth", "RSS growth", "{:+.1%}"), Column("ping_p99", "/ping p99 ms", "{:.2f}"),
           Column("wet_again", "wet again (chunks)", "{:.2f}"), Column("load", "load", "{:.1f}"),
           Column("steal", "stolen", "{:.1%}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each phase (default 5)")
    parser.add_argument("--phases", type=int, nargs="+", default=list(PHASES),
                        help="session counts, one phase each; the last is followed by the recovery (default 1 2 4)")
    parser.add_argument("--server-log", type=Path, help="keep the server's log there")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning"),
                        help="the server's --log-level (debug names every dry block and how early it went)")
    parser.add_argument("--latency", choices=LATENCIES, default="default", help="the server's --latency (default default)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    blocks = max(1, round(args.minutes * 60 / PERIOD))
    chunk = chunk_seconds(RATE, LATENCIES[args.latency])
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder), "--latency", args.latency, "--log-level", args.log_level)
        pinger = Pinger(server)
        try:
            rows = phase(server, pinger, 1, round(WARMUP_SECONDS / PERIOD), chunk, kind="warm-up")
            for index, count in enumerate(args.phases):
                last = index == len(args.phases) - 1 and count > 1
                rows += phase(server, pinger, count, blocks, chunk, round(RECOVERY_SECONDS / PERIOD) if last else 0)
        finally:
            pinger.stop()
            server.stop()
            if args.server_log:
                shutil.copyfile(server.log, args.server_log)
    print(f"\nSoak at {RATE} Hz mono, blocks of {BLOCK} in real time: {WARMUP_SECONDS:g} s of warm-up, then "
          f"{args.minutes:g} min per phase, then {RECOVERY_SECONDS:g} s alone after the last "
          f"(serve --latency {args.latency}: a chunk is {1000 * chunk:.1f} ms; {os.cpu_count()} cores)")
    print(table(rows, COLUMNS, args.markdown))
    report_goals(goals(rows))


if __name__ == "__main__":
    main()
