"""Server benchmark: a real ``gramophone serve`` on loopback, driven like a live rig.

Measures, at 48 kHz mono with the built-in style and default parameters:

1. ``/content`` → ``/audio`` time in live mode for blocks of 256, 512 and 1024, blocks sent in
   real time, against the latency the server reports (p50, p99, worst; late chunks; dry blocks);
2. ``/ping`` round trips (p50, p99) from a second client while the block-512 session streams;
3. how many real-time sessions run at once before chunks go late or blocks come back dry, and the
   most of them again with a lower ``budget`` (``--low-budget``);
4. parameter messages per second (TCP, every reply read; UDP, up to ``/synced``).

Usage::

    python -m bench.server            # 6 s per stream, up to 6 sessions
    python -m bench.server --quick    # 3 s per stream, up to 3 sessions
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage

from gramophone.osc.framing import SlipDecoder

from .common import Column, Server, audio_message, chunk_seconds, message, table
from .timing import TimedSocket

RATE = 48_000


class Udp:
    """One UDP sender/receiver."""

    def __init__(self, server: Server) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((server.host, server.port))

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def receive(self, timeout: float) -> OscMessage | None:
        self.sock.settimeout(timeout)
        try:
            return OscMessage(self.sock.recv(65536))
        except TimeoutError:
            return None

    def expect(self, address: str, timeout: float = 30.0) -> OscMessage:
        deadline = time.monotonic() + timeout
        while (msg := self.receive(max(deadline - time.monotonic(), 0.001))) is not None:
            if msg.address == address:
                return msg
        raise SystemExit(f"no {address} from the server within {timeout} s")


def stream(server: Server, block: int, seconds: float, results: dict, ready: threading.Barrier | None = None) -> None:
    """One live session sending a 220 Hz saw in real time; fills ``results`` with timings and status.

    Delays are the kernel's (send and receive timestamps): the sessions' senders and readers
    share this process's GIL, and a clock read in Python would count that wait as the server's.
    """
    timed = TimedSocket(server.host, server.port)
    began = time.monotonic()
    timed.send(message("/connect", RATE, 1, block))
    latency = expect_timed(timed, "/connected").params[1]
    connect_seconds = time.monotonic() - began
    count = int(seconds * RATE / block)
    tail = -(-latency // block) + 2
    t = np.arange((count + tail) * block) / RATE
    signal_ = (0.2 * ((220 * t) % 1.0 * 2 - 1)).astype(np.float32)
    signal_[count * block:] = 0
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    replies: list[OscMessage] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            if timed.wait(0.1):
                for data, at in timed.drain():
                    msg = OscMessage(data)
                    if msg.address == "/audio":
                        arrived.setdefault(msg.params[0], at)
                    else:
                        replies.append(msg)

    reader = threading.Thread(target=receive)
    reader.start()
    if ready is not None:
        ready.wait()
    start = time.monotonic()
    for seq in range(count + tail):
        time.sleep(max(0.0, start + seq * block / RATE - time.monotonic()))
        sent[seq] = timed.send(audio_message(seq, signal_[seq * block:(seq + 1) * block]))
    time.sleep(latency / RATE + 0.5)
    timed.send(message("/status"))
    deadline = time.monotonic() + 10
    while not any(m.address == "/status/reply" for m in replies) and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    reader.join()
    status = next(m for m in replies if m.address == "/status/reply").params
    timed.send(message("/disconnect"))
    timed.close()
    delays = np.array([arrived[s] - sent[s] for s in range(count) if s in arrived]) * 1000
    results.update(block=block, latency_ms=1000 * latency / RATE, blocks=count, returned=len(delays),
                   p50=float(np.percentile(delays, 50)) if delays.size else None,
                   p99=float(np.percentile(delays, 99)) if delays.size else None,
                   worst=float(delays.max()) if delays.size else None,
                   iterations=status[3], rtf=status[1], late=status[5], dry=status[6],
                   late_blocks=status[8] if len(status) > 8 else None, seconds=seconds,
                   connect_ms=1000 * connect_seconds)


def expect_timed(timed: TimedSocket, address: str, timeout: float = 30.0) -> OscMessage:
    deadline = time.monotonic() + timeout
    while timed.wait(deadline - time.monotonic()):
        for data, _ in timed.drain():
            if (msg := OscMessage(data)).address == address:
                return msg
    raise SystemExit(f"no {address} from the server within {timeout} s")


def pings(server: Server, stop: threading.Event, out: list[float]) -> None:
    osc = Udp(server)
    token = 0
    while not stop.is_set():
        token += 1
        began = time.monotonic()
        osc.send(message("/ping", token))
        msg = osc.expect("/pong", 5.0)
        if msg.params == [token]:
            out.append(1000 * (time.monotonic() - began))
        time.sleep(0.02)


def at_once(server: Server, sessions: int, seconds: float) -> dict:
    """``sessions`` real-time streams of blocks of 512 started together: their totals."""
    results: list[dict] = [{} for _ in range(sessions)]
    barrier = threading.Barrier(sessions)
    threads = [threading.Thread(target=stream, args=(server, 512, seconds, r, barrier)) for r in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    late = sum(r["late"] for r in results)
    dry = sum(r["dry"] for r in results) + sum(r["blocks"] - r["returned"] for r in results)
    share = late / (chunks_in(seconds) * sessions)
    return {"sessions": sessions, "budget": 0.4, "iterations": np.mean([r["iterations"] for r in results]),
            "late": late, "share": share, "dry": dry, "reported": min(r["latency_ms"] for r in results),
            "worst": max(r["worst"] or 0 for r in results),
            "late_blocks": sum(r["late_blocks"] or 0 for r in results),
            "holds": "yes" if dry == 0 and share <= 0.05 else "no"}


def set_budget(server: Server, budget: float) -> None:
    """The optimiser's share of each chunk, for sessions connecting from now on."""
    osc = Udp(server)
    osc.send(message("/param/budget", budget))
    osc.expect("/param/budget")


def chunks_in(seconds: float) -> float:
    return seconds / chunk_seconds(RATE)


def param_rates(server: Server, count: int) -> dict:
    """Messages per second: TCP with every reply read back; UDP until /synced."""
    with socket.create_connection((server.host, server.port)) as sock:
        framer = SlipDecoder()
        began = time.monotonic()
        sock.sendall(b"".join(SlipDecoder.encode(message("/param/wet", i / count)) for i in range(count)))
        replies = 0
        while replies < count:
            replies += len(framer.feed(sock.recv(65536)))
        tcp = count / (time.monotonic() - began)
    osc = Udp(server)
    began = time.monotonic()
    for i in range(count):
        osc.send(message("/param/wet", i / count))
        if i % 50 == 49:  # read the replies as they come: unread, they overflow this socket's buffer
            while osc.receive(0.0001) is not None:
                pass
    osc.send(message("/sync", 1))
    osc.expect("/synced")
    udp = count / (time.monotonic() - began)
    osc.send(message("/param/wet", 1.0))
    return {"tcp": tcp, "udp": udp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--max-sessions", type=int)
    parser.add_argument("--low-budget", type=float, default=0.25,
                        help="budget of a last run at the most sessions (default 0.25)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 6.0)
    most = args.max_sessions or (3 if args.quick else 6)
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder))
        try:
            rows = []
            ping_times: list[float] = []
            for block in (256, 512, 1024):
                row: dict = {}
                stop = threading.Event()
                pinger = threading.Thread(target=pings, args=(server, stop, ping_times)) if block == 512 else None
                if pinger:
                    pinger.start()
                stream(server, block, seconds, row)
                stop.set()
                if pinger:
                    pinger.join()
                rows.append(row)
            print(f"\nLive /content → /audio at {RATE} Hz, {seconds:g} s of blocks sent in real time (one session)")
            print(table(rows, [Column("block", "block"), Column("latency_ms", "reported ms", "{:.0f}"),
                               Column("p50", "p50 ms", "{:.0f}"), Column("p99", "p99 ms", "{:.0f}"),
                               Column("worst", "worst ms", "{:.0f}"), Column("returned", "returned"),
                               Column("blocks", "sent"), Column("iterations", "steps/chunk", "{:.1f}"),
                               Column("late", "late chunks"), Column("dry", "dry blocks"),
                               Column("late_blocks", "late blocks"), Column("connect_ms", "/connect ms", "{:.0f}")],
                        args.markdown))
            if ping_times:
                print(f"\n/ping round trip while a block-512 session streams: p50 {np.percentile(ping_times, 50):.2f} ms, "
                      f"p99 {np.percentile(ping_times, 99):.2f} ms, worst {max(ping_times):.2f} ms ({len(ping_times)} pings)")
            capacity = []
            for sessions in range(1, most + 1):
                capacity.append(at_once(server, sessions, seconds))
                if capacity[-1]["dry"] or capacity[-1]["share"] > 0.5:
                    break
            set_budget(server, args.low_budget)
            capacity.append(at_once(server, most, seconds) | {"budget": args.low_budget})
            set_budget(server, 0.4)
            print(f"\nReal-time sessions at once ({RATE} Hz mono, blocks of 512; holds = no dry block, ≤ 5 % late chunks)")
            print(table(capacity, [Column("sessions", "sessions"), Column("budget", "budget"),
                                   Column("iterations", "steps/chunk", "{:.1f}"),
                                   Column("late", "late chunks"), Column("share", "late share", "{:.0%}"),
                                   Column("dry", "dry/missing blocks"), Column("reported", "reported ms", "{:.0f}"),
                                   Column("worst", "worst ms", "{:.0f}"), Column("late_blocks", "late blocks"),
                                   Column("holds", "holds")], args.markdown))
            held = [row["sessions"] for row in capacity if row["holds"] == "yes" and row["budget"] == 0.4]
            print(f"sessions held: {max(held) if held else 0} (cores: {os.cpu_count()})")
            rates = param_rates(server, 2000)
            print(f"\nParameter messages: {rates['tcp']:.0f}/s over TCP (each reply read), {rates['udp']:.0f}/s over UDP")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
