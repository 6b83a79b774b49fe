"""Server benchmark: a real ``gramophone serve`` on loopback, driven like a live rig.

Measures, at 48 kHz mono with the built-in style and default parameters:

1. ``/content`` → ``/audio`` time in live mode for blocks of 256, 512 and 1024, blocks sent in
   real time, against the latency the server reports (p50, p99, worst; late chunks; dry blocks);
2. ``/ping`` round trips (p50, p99) from a second client while the block-512 session streams;
3. sessions held: 1, 2, 4, 6 and 8 real-time sessions at once, each streaming the male → female
   pair's content with the pair's style selected; a count *holds* when no block comes back dry, at
   most 5 % of chunks go late, no answer arrives later than the reported latency (kernel
   timestamps, 2 ms of loopback allowed) and every session's held-out gain is at least 0.8 of a lone
   session's on the same clip (the 1-session row). With ``--max-sessions auto`` the server refuses
   the sessions its cores cannot hold: a row then judges the ones it admitted, and says why it
   refused the rest;
4. parameter messages per second (TCP, every reply read; UDP, up to ``/synced``).

Usage::

    python -m bench.server                # 6 s per stream; 1, 2, 4, 6 and 8 sessions
    python -m bench.server --quick        # 3 s per stream; 1, 2 and 4 sessions
    python -m bench.server --batch off    # each session steps alone (the server before batching)
    python -m bench.server --max-sessions auto   # the server admits what its cores hold
    python -m bench.server --latency low --sessions 1 2   # serve --latency low (under 50 ms at 48 kHz)
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage

from gramophone import metrics
from gramophone.engine.latency import LATENCIES
from gramophone.audio import resample
from gramophone.osc.framing import SlipDecoder

from .common import Column, Server, audio_message, chunk_seconds, message, table
from .pairs import Pair, make_pair
from .timing import TimedSocket

RATE = 48_000
SESSION_COUNTS = (1, 2, 4, 6, 8)
QUALITY_PAIR = "male-female"
LOOPBACK_SLACK_MS = 2.0  # the loopback hop after the server's send (tests/test_live_promise.py allows the same)


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


def stream(server: Server, block: int, seconds: float, results: dict, ready: threading.Barrier | None = None,
           audio: np.ndarray | None = None) -> None:
    """One live session sending ``audio`` (48 kHz mono; a 220 Hz saw if None) in real time; fills
    ``results`` with timings, status and the ``output`` it got back (zeros where nothing came).

    Delays are the kernel's (send and receive timestamps): the sessions' senders and readers
    share this process's GIL, and a clock read in Python would count that wait as the server's.
    """
    timed = TimedSocket(server.host, server.port)
    began = time.monotonic()
    timed.send(message("/connect", RATE, 1, block))
    answer = expect_timed(timed, ("/connected", "/fail"))
    if answer.address == "/fail":  # --max-sessions auto: the server holds no more
        results["refused"] = answer.params[1]
        timed.close()
        if ready is not None:
            ready.wait()
        return
    latency = answer.params[1]
    connect_seconds = time.monotonic() - began
    count = int(seconds * RATE / block)
    tail = -(-latency // block) + 2
    if audio is None:
        t = np.arange((count + tail) * block) / RATE
        signal_ = (0.2 * ((220 * t) % 1.0 * 2 - 1)).astype(np.float32)
    else:
        signal_ = np.zeros((count + tail) * block, dtype=np.float32)
        signal_[:min(audio.size, count * block)] = audio[:count * block]
    signal_[count * block:] = 0
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    returned: dict[int, np.ndarray] = {}
    replies: list[OscMessage] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            if timed.wait(0.1):
                for data, at in timed.drain():
                    msg = OscMessage(data)
                    if msg.address == "/audio":
                        arrived.setdefault(msg.params[0], at)
                        returned.setdefault(msg.params[0], np.asarray(msg.params[1:], dtype=np.float32))
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
    silence = np.zeros(block, dtype=np.float32)
    results["output"] = np.concatenate([returned.get(seq, silence) for seq in range(count)])
    results.update(block=block, latency_ms=1000 * latency / RATE, blocks=count, returned=len(delays),
                   p50=float(np.percentile(delays, 50)) if delays.size else None,
                   p99=float(np.percentile(delays, 99)) if delays.size else None,
                   worst=float(delays.max()) if delays.size else None,
                   iterations=status[3], rtf=status[1], late=status[5], dry=status[6],
                   late_blocks=status[8] if len(status) > 8 else None, batch=status[9] if len(status) > 9 else None,
                   seconds=seconds,
                   connect_ms=1000 * connect_seconds)


def expect_timed(timed: TimedSocket, addresses: tuple[str, ...], timeout: float = 30.0) -> OscMessage:
    """The first reply to one of ``addresses``."""
    deadline = time.monotonic() + timeout
    while timed.wait(deadline - time.monotonic()):
        for data, _ in timed.drain():
            if (msg := OscMessage(data)).address in addresses:
                return msg
    raise SystemExit(f"no {' or '.join(addresses)} from the server within {timeout} s")


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


def at_once(server: Server, sessions: int, seconds: float, chunk: float,
            audio: np.ndarray | None = None) -> tuple[dict, list[dict]]:
    """``sessions`` real-time streams of blocks of 512 started together (chunks of ``chunk`` seconds):
    the admitted ones' totals and results."""
    results: list[dict] = [{} for _ in range(sessions)]
    barrier = threading.Barrier(sessions)
    threads = [threading.Thread(target=stream, args=(server, 512, seconds, r, barrier, audio)) for r in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [r["refused"] for r in results if "refused" in r]
    results = [r for r in results if "refused" not in r]
    late = sum(r["late"] for r in results)
    dry = sum(r["dry"] for r in results) + sum(r["blocks"] - r["returned"] for r in results)
    share = late / (seconds / chunk * len(results))
    totals = {"sessions": sessions, "admitted": len(results), "refusal": refused[0] if refused else "",
              "iterations": np.mean([r["iterations"] for r in results]),
              "late": late, "share": share, "dry": dry, "reported": min(r["latency_ms"] for r in results),
              "worst_over": max((r["worst"] or 0) - r["latency_ms"] for r in results),
              "worst": max(r["worst"] or 0 for r in results),
              "batch": max((r["batch"] or 0) for r in results),
              "late_blocks": sum(r["late_blocks"] or 0 for r in results)}
    return totals, results


def use_pair_style(server: Server, pair: Pair) -> None:
    """Load the pair's style clip into the server's style folder and select it for every session."""
    shutil.copy(pair.style, server.styles / "bench-style.wav")
    osc = Udp(server)
    osc.send(message("/style/load", "bench", "bench-style.wav"))
    osc.expect("/done", 120.0)
    osc.send(message("/style/select", "bench"))
    osc.expect("/done")


def sessions_held(server: Server, seconds: float, counts: tuple[int, ...], chunk: float) -> list[dict]:
    """Each count of sessions streaming the quality pair's content at once, with every session's held-out gain."""
    pair = make_pair(QUALITY_PAIR, 10.0)
    content, style, rate = pair.load()
    use_pair_style(server, pair)
    audio = resample(content[None], rate, RATE)[0]
    length = min(content.size, int(seconds * rate))
    rows = []
    lone = None
    for sessions in counts:
        totals, results = at_once(server, sessions, seconds, chunk, audio)
        gains = [metrics.measure(content[:length], style, r["output"][: int(length * RATE / rate)], rate,
                                 output_rate=RATE, speech=pair.speech).held_out_gain for r in results]
        if sessions == 1:
            lone = gains[0]
        ratio = min(gains) / lone if lone else None
        on_time = totals["worst_over"] <= LOOPBACK_SLACK_MS
        holds = totals["dry"] == 0 and totals["share"] <= 0.05 and on_time and ratio is not None and ratio >= 0.8
        rows.append(totals | {"gain_min": min(gains), "gain_max": max(gains), "ratio": ratio,
                              "holds": "yes" if holds else "no"})
        print(f"{sessions} session(s), {totals['admitted']} admitted: held-out gain {min(gains):.2f}–{max(gains):.2f}, "
              f"late {totals['share']:.0%}, dry {totals['dry']}, holds {rows[-1]['holds']}", flush=True)
    return rows


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
    parser.add_argument("--sessions", type=int, nargs="+", help="session counts to run (default 1 2 4 6 8)")
    parser.add_argument("--batch", choices=("on", "off"), default="on", help="the server's --batch (default on)")
    parser.add_argument("--max-sessions", default="32", metavar="N|auto",
                        help="the server's --max-sessions (default 32; auto: sessions beyond what it holds are refused)")
    parser.add_argument("--latency", choices=LATENCIES, default="default", help="the server's --latency (default default)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 6.0)
    counts = tuple(args.sessions or ((1, 2, 4) if args.quick else SESSION_COUNTS))
    if counts[0] != 1:
        parser.error("--sessions must start with 1: the lone session is what quality is compared to")
    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder), "--batch", args.batch, "--max-sessions", args.max_sessions, "--latency", args.latency)
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
            print(f"\nLive /content → /audio at {RATE} Hz, {seconds:g} s of blocks sent in real time (one session, "
                  f"--latency {args.latency})")
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
            capacity = sessions_held(server, seconds, counts, chunk_seconds(RATE, LATENCIES[args.latency]))
            print(f"\nReal-time sessions at once ({RATE} Hz mono, blocks of 512, {QUALITY_PAIR} with its style, "
                  f"--batch {args.batch}, --max-sessions {args.max_sessions}, --latency {args.latency}; holds = no dry "
                  "block, ≤ 5 % late chunks, "
                  "no answer after the reported latency, every session's held-out gain ≥ 0.8 of the lone session's)")
            print(table(capacity, [Column("sessions", "sessions"), Column("admitted", "admitted"),
                                   Column("iterations", "steps/chunk", "{:.1f}"),
                                   Column("batch", "sessions per step", "{:.1f}"),
                                   Column("share", "late chunks", "{:.0%}"), Column("dry", "dry/missing blocks"),
                                   Column("reported", "reported ms", "{:.0f}"), Column("worst", "worst ms", "{:.0f}"),
                                   Column("late_blocks", "late blocks"), Column("gain_min", "held-out gain (least)", "{:.2f}"),
                                   Column("gain_max", "(most)", "{:.2f}"), Column("ratio", "least ÷ lone", "{:.2f}"),
                                   Column("holds", "holds")], args.markdown))
            refusals = sorted({row["refusal"] for row in capacity if row["refusal"]})
            for refusal in refusals:
                print(f"refused: {refusal}")
            held = [row["admitted"] for row in capacity if row["holds"] == "yes"]
            print(f"sessions held: {max(held) if held else 0} (cores: {os.cpu_count()}; load average at the end: "
                  f"{os.getloadavg()[0]:.2f})")
            rates = param_rates(server, 2000)
            print(f"\nParameter messages: {rates['tcp']:.0f}/s over TCP (each reply read), {rates['udp']:.0f}/s over UDP")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
