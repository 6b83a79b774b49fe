"""Bad input at scale: a real server under 10^5 bad packets.

1. A real ``gramophone serve`` on 127.0.0.1.  One live session streams a 220 Hz saw in real time
   (48 kHz mono, blocks of 512) for the whole run, a pinger sends ``/ping`` every 50 ms from its
   own socket, and meanwhile other senders (a separate process, so their work does not slow the
   measuring threads) send bad packets, paced and bounded in count and time: random bytes; OSC
   with wrong or truncated type tags and truncated strings; blob sizes that lie; bundles nested
   beyond the limit, trees of bad messages and element sizes that lie; bit flips, truncations
   and splices of a valid message for every address of docs/protocol.md; and garbage on TCP in
   both framings (SLIP and length-prefixed) on several connections at once, ending in broken
   escapes, huge length prefixes, a first byte of neither framing, or a clean close.
2. A coverage-guided phase: atheris runs ``bench/fuzz_target.py`` (``decode``, both framing
   decoders and ``sniff``) in a subprocess for ``--atheris-runs`` inputs, seeded with the same
   valid messages.

Goals: the server never crashes and exits 0 on SIGINT; the session loses no block; every ping
is answered (within 1 s); no packet earns more ``/fail`` replies than it holds messages (one per
message: a bundle of n messages may earn n); every connection ended by a framing fault gets
one ``/fail ?`` and is closed; no internal error in the log; atheris finds nothing.  Exits 1 if
a goal is missed.

Usage::

    python -m bench.fuzz                                  # 10^5 packets, 200 000 atheris runs
    python -m bench.fuzz --packets 5000 --atheris-runs 2000
    python -m bench.fuzz --markdown
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage

from gramophone.osc.framing import MAX_TCP_PACKET, LengthDecoder, SlipDecoder
from gramophone.osc.protocol import (
    BUNDLE_PREFIX,
    MAX_BUNDLE_DEPTH,
    PARAM_PREFIX,
    SIGNATURES,
    Command,
    decode,
    encode_message,
)

from .common import OUT, Column, Server, table
from .server import stream

BLOCK = 512
PING_EVERY = 0.05
PING_TIMEOUT = 1.0
UDP_SOCKETS = 4  # senders per UDP category: replies are counted per socket
TCP_THREADS = 3  # connections open at once per framing
SYNC_TOKEN = "fuzz: end of the batch"
# One valid message per address, harmless if it survives a mutation: no style is deleted, no file loaded.
VALID: dict[str, tuple] = {
    "/connect": (48000, 1, BLOCK), "/disconnect": (), "/mode": ("live",), "/content": (0, *[0.1] * 32),
    "/flush": (), "/reset": (), "/params": (), "/style/load": ("fuzz", "no-such-file.wav"),
    "/style/record/start": ("fuzz",), "/style/audio": (0, np.zeros(32, "<f4").tobytes()), "/style/record/stop": (),
    "/style/select": ("voice",), "/style/mix": ("voice", 1.0, "whisper", 0.0), "/style/list": (),
    "/style/delete": ("no-such-style",), "/status": (), "/ping": ("token",), "/sync": (1,), "/notify": (0,),
    "/version": (), "/log": ("info", "fuzz"), "/param/wet": (1.0,), "/param/iterations": (),
}
CORPUS = [encode_message(address, *args) for address, args in VALID.items()]
UNSUPPORTED_TAGS = "cSIrmt[]"
LIES = (0, 1, 3, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC, 0x00FFFFFF)


@dataclass
class Bad:
    """One bad packet and the most ``/fail`` replies it may earn: one per message it holds."""

    data: bytes
    most: int = 1


def osc_string(text: bytes) -> bytes:
    return text + b"\x00" * (4 - len(text) % 4)


def bundle(elements: list[bytes]) -> bytes:
    return BUNDLE_PREFIX + struct.pack(">Q", 1) + b"".join(struct.pack(">i", len(e)) + e for e in elements)


def random_bytes(rng: random.Random) -> Bad:
    return Bad(rng.randbytes(rng.choice((0, 1, 3, 4, 8, 16, 64, 256, 1024, 4096)) + rng.randrange(4)))


def bad_tags(rng: random.Random) -> Bad:
    """Type tags without a comma, more tags than arguments, refused tags, truncated strings, wrong types."""
    address = rng.choice(list(VALID)).encode()
    valid = encode_message(address.decode(), *VALID[address.decode()])
    head, tags = osc_string(address), rng.choice(("i", "s", "iii", "ib", "fff", "sf", "hd", "Tb"))
    payload = rng.randbytes(rng.randrange(16))
    variants: list[Callable[[], bytes]] = [
        lambda: head + osc_string(tags.encode()) + payload,  # no comma
        lambda: head + osc_string(b"," + tags.encode() * rng.randint(1, 64)) + payload,  # arguments missing
        lambda: head + osc_string(("," + tags + rng.choice(UNSUPPORTED_TAGS) + tags).encode()) + payload,
        lambda: head + b"," + tags.encode(),  # tag string not terminated
        lambda: address + rng.choice((b"", b",", b"\x01")),  # address not terminated
        lambda: valid[: rng.randrange(len(head), len(valid) + 1)] if len(valid) > len(head) else address,  # truncated
        lambda: head + osc_string(b",s") + rng.randbytes(rng.randint(1, 12)).replace(b"\x00", b"a"),  # string cut
        lambda: encode_message(address.decode(), *rng.choice((("x", "y", "z"), (1.5,), (b"\x01",), (None, True)))),
    ]
    return Bad(rng.choice(variants)())


def bad_blobs(rng: random.Random) -> Bad:
    """Blobs whose size is larger than the packet, negative, or off by a few bytes."""
    address = rng.choice(("/content", "/style/audio", "/ping", "/sync"))
    tags = ",ib" if address in ("/content", "/style/audio") else rng.choice((",b", ",bi", ",bs"))
    seq = struct.pack(">i", rng.randrange(100)) if tags == ",ib" else b""
    payload = rng.randbytes(rng.randrange(65))
    size = rng.choice((len(payload) + rng.randint(1, 9), len(payload) + 2**20, 2**31 - 1, -1, -4, -(2**31),
                       rng.randint(-(2**31), 2**31 - 1)))
    return Bad(osc_string(address.encode()) + osc_string(tags.encode()) + seq + struct.pack(">i", size) + payload)


def bundle_tree(rng: random.Random, depth: int) -> tuple[list[bytes], list[int]]:
    """A bundle's elements (bad messages and bundles within the depth limit) and the messages of each."""
    elements, counts = [], []
    for _ in range(rng.randint(0, 6)):
        if depth + 1 < MAX_BUNDLE_DEPTH and rng.random() < 0.3:
            inner, inner_counts = bundle_tree(rng, depth + 1)
            elements.append(bundle(inner))
            counts.append(sum(inner_counts))
        else:
            elements.append(rng.choice((mutated, bad_tags, bad_blobs, random_bytes))(rng).data)
            counts.append(1)  # none starts with "#bundle": one item each
    return elements, counts


def bad_bundles(rng: random.Random) -> Bad:
    """Nested deeper than the limit, trees of bad messages, element sizes that lie, truncations."""
    elements, counts = bundle_tree(rng, 0)
    data = bundle(elements)
    kind = rng.randrange(4)
    if kind == 0:  # deeper than the limit: one error for the whole chain
        data = rng.choice(CORPUS)
        for _ in range(rng.randint(MAX_BUNDLE_DEPTH + 1, 64)):
            data = bundle([data])
        return Bad(data)
    if kind == 1:  # a tree: one item per message
        return Bad(data, max(1, sum(counts)))
    if kind == 2 and elements:  # an element's size overruns the packet: the ones before it run, then one error
        index = rng.randrange(len(elements))
        at = 16 + sum(4 + len(e) for e in elements[:index])
        size = rng.choice((len(data) - at - 4 + rng.randint(1, 64), -1, -(2**31), 2**31 - 1))
        return Bad(data[:at] + struct.pack(">i", size) + data[at + 4 :], sum(counts[:index]) + 1)
    # cut anywhere: the elements before the cut, then one error (a lie that re-frames the rest has
    # no such bound, only one item per 4 bytes: tests/test_protocol_fuzz.py checks that one)
    cut, end, whole = rng.randrange(len(data) + 1), 16, 0
    for element, count in zip(elements, counts):
        end += 4 + len(element)
        if end > cut:
            break
        whole += count
    return Bad(data[:cut], whole + 1)


def mutate(rng: random.Random, data: bytes) -> bytes:
    """Bit flips, truncations, insertions, deletions, splices with another valid message, lying words."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        op = rng.randrange(6)
        if op == 0 and out:
            out[at % len(out)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del out[at:]
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 4))
        elif op == 3:
            del out[at : at + rng.randint(1, 8)]
        elif op == 4:
            other = rng.choice(CORPUS)
            out[at:] = other[rng.randrange(len(other)) :]
        else:
            out[at & ~3 : (at & ~3) + 4] = struct.pack(">I", rng.choice(LIES))
    return bytes(out)


def mutated(rng: random.Random) -> Bad:
    return Bad(mutate(rng, rng.choice(CORPUS)))


UDP_CATEGORIES: dict[str, Callable[[random.Random], Bad]] = {
    "random bytes": random_bytes, "type tags": bad_tags, "blob sizes": bad_blobs, "bundles": bad_bundles,
    "mutations": mutated,
}
TCP_CATEGORIES = {"tcp slip": SlipDecoder, "tcp length": LengthDecoder}


def aims_elsewhere(data: bytes) -> bool:
    """A ``/connect`` with a reply_port would send replies to whatever listens there on this machine."""
    return any(isinstance(i, Command) and i.address == "/connect" and len(i.values) == 4 for i in decode(data))


def draw(rng: random.Random, make: Callable[[random.Random], Bad]) -> Bad:
    while aims_elsewhere((bad := make(rng)).data):
        pass
    return bad


@dataclass
class Tally:
    """What one category sent and what came back."""

    packets: int = 0
    most: int = 0  # the /fail replies its packets may earn at most
    fails: int = 0
    others: int = 0  # any other reply (a mutation may have made a valid message)
    connections: int = 0
    faulted: int = 0  # connections ended by a framing fault
    closed: int = 0  # of those, closed by the server after exactly one /fail ?
    synced: bool = True  # every UDP sender's last /sync answered (so every reply was counted)


class Pacer:
    """Sleeps so that ``count`` packets go out at ``rate`` per second, until a deadline."""

    def __init__(self, rate: float, deadline: float) -> None:
        self.rate, self.deadline, self.start = rate, deadline, time.monotonic()

    def wait(self, sent: int) -> bool:
        """Sleep until packet ``sent`` is due; False once past the deadline."""
        now = time.monotonic()
        if now > self.deadline:
            return False
        time.sleep(max(0.0, self.start + sent / self.rate - now))
        return True


def udp_category(host: str, port: int, make: Callable, count: int, pacer: Pacer, seed: int) -> Tally:
    """``count`` bad packets round-robin from a few sockets; replies counted until each is synced."""
    rng, tally = random.Random(seed), Tally()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(UDP_SOCKETS)]
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
        sock.connect((host, port))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    synced: set[socket.socket] = set()

    def drain(timeout: float) -> None:
        for key, _ in selector.select(timeout):
            while True:
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    break
                reply = OscMessage(data)
                if (reply.address, reply.params) == ("/synced", [SYNC_TOKEN]):
                    synced.add(key.fileobj)
                else:
                    tally.fails += reply.address == "/fail"
                    tally.others += reply.address != "/fail"

    while tally.packets < count and pacer.wait(tally.packets):
        bad = draw(rng, make)
        socks[tally.packets % UDP_SOCKETS].send(bad.data)
        tally.packets, tally.most = tally.packets + 1, tally.most + bad.most
        drain(0)
    deadline = time.monotonic() + 30
    while len(synced) < len(socks) and time.monotonic() < deadline:
        for sock in set(socks) - synced:  # resent each second: a full buffer may have dropped it
            sock.send(encode_message("/sync", SYNC_TOKEN))
        resend = time.monotonic() + 1.0
        while len(synced) < len(socks) and (left := resend - time.monotonic()) > 0:
            drain(left)
    tally.synced = len(synced) == len(socks)
    for sock in socks:
        sock.close()
    return tally


def tcp_connection(host: str, port: int, framing: type, rng: random.Random, tally: Tally, lock: threading.Lock) -> None:
    """One connection: bad packets framed, written in random pieces, then a fault or a clean close."""
    frames = [draw(rng, rng.choice(list(UDP_CATEGORIES.values()))) for _ in range(rng.randint(1, 40))]
    data = b"".join(framing.encode(f.data) for f in frames)
    ending = rng.choice(("fault", "fault", "clean", "first byte"))
    if ending == "first byte":  # neither framing: refused at the first read, so one short write
        first = rng.choice([b for b in range(1, 256) if b not in b"\xc0/#"])
        data, frames = bytes([first]) + data[: rng.randrange(4096)], []
    elif ending == "fault":
        data += framing_fault(rng, framing)
    cuts = sorted(rng.sample(range(1, len(data)), min(3, len(data) - 1))) if frames else []
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            for a, b in zip([0, *cuts], [*cuts, len(data)]):
                sock.sendall(data[a:b])
            if ending == "clean":
                sock.shutdown(socket.SHUT_WR)
            fails, closing, eof = read_replies(sock, framing if frames else SlipDecoder)  # SLIP when neither
        except OSError:
            fails, closing, eof = 0, 0, False
    with lock:
        tally.connections += 1
        tally.packets += len(frames) + (ending != "clean")
        tally.most += sum(f.most for f in frames) + (ending != "clean")
        tally.fails += fails + closing
        tally.faulted += ending != "clean"
        tally.closed += ending != "clean" and closing == 1 and eof


def framing_fault(rng: random.Random, framing: type) -> bytes:
    """What must close the connection: a broken SLIP escape, or a length beyond the 8 MiB limit."""
    if framing is SlipDecoder:
        return rng.choice((b"\xc0/x\xdb\x01\xc0", b"\xc0/x\xdb\xc0", b"/ping\xdb\xdb\xc0"))
    return struct.pack(">I", rng.choice((MAX_TCP_PACKET + 1, 0x00FFFFFF, 0x7FFFFFFF, 0xFFFFFFFF)))


def read_replies(sock: socket.socket, framing: type) -> tuple[int, int, bool]:
    """Until the server closes: /fail replies, those that announce the close, and whether it closed."""
    decoder, fails, closing = framing(), 0, 0
    sock.settimeout(10)
    while data := sock.recv(65536):
        for packet in decoder.feed(data):
            reply = OscMessage(packet)
            if reply.address == "/fail":
                closing += "closing the connection" in reply.params[1]
                fails += "closing the connection" not in reply.params[1]
    return fails, closing, True


def tcp_category(host: str, port: int, framing: type, count: int, pacer: Pacer, seed: int) -> Tally:
    """Connections from a few threads at once until ``count`` packets have gone."""
    tally, lock = Tally(), threading.Lock()

    def run(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        while tally.packets < count and pacer.wait(tally.packets):
            tcp_connection(host, port, framing, rng, tally, lock)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(TCP_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally


def bad_traffic(host: str, port: int, packets: int, rate: float, seconds: float, start: multiprocessing.Event,
                results: multiprocessing.Queue) -> None:
    """Every category at once, each its share of ``packets`` and ``rate``; results as (name, Tally)."""
    start.wait()
    categories = len(UDP_CATEGORIES) + len(TCP_CATEGORIES)
    share, deadline = packets // categories, time.monotonic() + seconds
    out: dict[str, Tally] = {}

    def run(name: str, job: Callable[..., Tally], arg: object, seed: int) -> None:
        out[name] = job(host, port, arg, share, Pacer(rate / categories, deadline), seed)

    jobs = [(name, udp_category, make) for name, make in UDP_CATEGORIES.items()]
    jobs += [(name, tcp_category, framing) for name, framing in TCP_CATEGORIES.items()]
    threads = [threading.Thread(target=run, args=(*job, seed)) for seed, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put({name: out[name] for name, _, _ in jobs})


@dataclass
class Pings:
    """Round trips of the answered pings, and the count of those never answered."""

    times_ms: list[float] = field(default_factory=list)
    failures: int = 0


def pinger(host: str, port: int, stop: threading.Event, out: Pings) -> None:
    """A /ping every 50 ms from its own socket; one unanswered within a second is a failure."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        token = 0
        while not stop.is_set():
            token += 1
            began = time.monotonic()
            sock.send(encode_message("/ping", token))
            if wait_pong(sock, token, began + PING_TIMEOUT):
                out.times_ms.append(1000 * (time.monotonic() - began))
            else:
                out.failures += 1
            time.sleep(max(0.0, began + PING_EVERY - time.monotonic()))


def wait_pong(sock: socket.socket, token: int, deadline: float) -> bool:
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            reply = OscMessage(sock.recv(65536))
        except TimeoutError:
            return False
        if (reply.address, reply.params) == ("/pong", [token]):
            return True
    return False


def run_atheris(runs: int, folder: Path) -> dict:
    """bench/fuzz_target.py under atheris for ``runs`` inputs, seeded with every valid message."""
    corpus = folder / "corpus"
    corpus.mkdir()
    tokens = [encode_message("/ping", token) for token in (b"\x01", 1.5, 2**40, None, True)]  # every kind echoed
    framed = [framing.encode(packet) for framing in (SlipDecoder, LengthDecoder) for packet in CORPUS[:3]]
    seeds = CORPUS + tokens + [bundle(CORPUS[:3])] + framed
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(b"\x07" + seed)  # the first byte picks how the stream is cut
    artifacts = OUT / "fuzz"
    artifacts.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "bench.fuzz_target", f"-runs={runs}", "-timeout=10",
                               "-max_len=4096", f"-artifact_prefix={artifacts}/", str(corpus)],
                              capture_output=True, text=True, timeout=max(600.0, runs / 50))
    except subprocess.TimeoutExpired as expired:  # libFuzzer's -timeout should have caught a hang first
        proc = subprocess.CompletedProcess(expired.cmd, "timeout", str(expired.stdout or ""), str(expired.stderr or ""))
    log = proc.stdout + proc.stderr
    final = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)", log)
    crash = re.search(r"(Test unit written to \S+)", log)
    return {"runs": int(final[-1][0]) if final else None, "cov": int(final[-1][1]) if final else None,
            "corpus": int(final[-1][3]) if final else None, "seconds": time.monotonic() - began,
            "exit": proc.returncode, "crash": crash.group(1) if crash else None,
            "tail": "\n".join(log.splitlines()[-30:]) if proc.returncode else ""}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at the UDP socket on ``port`` because its buffer was full."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[-1])
    return 0


def live(server: Server, seconds: float, during: Callable[[], None]) -> dict:
    """The session and the pinger for ``seconds``; ``during`` runs once the session is up."""
    session, pings, stop = {}, Pings(), threading.Event()
    streamer = threading.Thread(target=stream, args=(server, BLOCK, seconds, session))
    pinging = threading.Thread(target=pinger, args=(server.host, server.port, stop, pings))
    began, cpu, drops = time.monotonic(), cpu_seconds(server.proc.pid), udp_drops(server.port)
    streamer.start()
    time.sleep(1.0)  # the session connects first
    pinging.start()
    during()
    streamer.join()
    stop.set()
    pinging.join()
    times = np.array(pings.times_ms)
    return {**session, "cpu": (cpu_seconds(server.proc.pid) - cpu) / (time.monotonic() - began),
            "drops": udp_drops(server.port) - drops,
            "pings": len(times), "ping_failures": pings.failures,
            "ping50": np.percentile(times, 50) if times.size else None,
            "ping99": np.percentile(times, 99) if times.size else None}


def attack(args: argparse.Namespace, folder: Path) -> dict:
    """Phase 1: the session alone (the machine's own baseline), then under the bad traffic."""
    load = os.getloadavg()[0]
    server = Server(folder)
    seconds = args.packets / args.rate * 1.2 + 5  # the stream outlasts the traffic, which stops by then anyway
    ctx = multiprocessing.get_context("fork")  # forked before any thread of ours exists
    start, results = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=bad_traffic, args=(server.host, server.port, args.packets, args.rate, seconds - 3,
                                                  start, results))
    child.start()
    tallies: dict[str, Tally] = {}
    senders: dict[str, float] = {}

    def flood() -> None:
        began, cpu = time.monotonic(), cpu_seconds(child.pid)
        start.set()
        tallies.update(results.get())
        seconds = time.monotonic() - began
        senders.update(cpu=(cpu_seconds(child.pid) - cpu) / seconds, seconds=seconds)
        child.join()

    alone = live(server, args.baseline_seconds, lambda: None)
    attacked = live(server, seconds, flood)
    alive = server.proc.poll() is None
    server.stop()
    log = server.log.read_text(errors="replace")
    (OUT / "fuzz").mkdir(parents=True, exist_ok=True)
    (OUT / "fuzz" / "server.log").write_text(log)
    return {"tallies": tallies, "alone": alone, "attacked": attacked, "alive": alive, "exit": server.proc.returncode,
            "internal": log.count("internal error") + log.count("Traceback"), "senders": senders, "load": load,
            "sessions": len(re.findall(r"session \d+ connected", log)) - 2,
            "styles": len(re.findall(r"style .* selected by", log))}


def report(result: dict, fuzzing: dict | None, args: argparse.Namespace) -> list[str]:
    """Print the figures; the goals missed."""
    rows, missed = [], []
    for name, t in result["tallies"].items():
        rows.append({"category": name, "packets": t.packets, "fails": t.fails, "most": t.most,
                     "per": t.fails / t.packets if t.packets else None, "others": t.others,
                     "connections": t.connections or None,
                     "closed": f"{t.closed} / {t.faulted}" if t.connections else None,
                     "ok": "yes" if t.fails <= t.most and t.synced and t.closed == t.faulted else "NO"})
        if t.fails > t.most:
            missed.append(f"{name}: {t.fails} /fail for at most {t.most}")
        if not t.synced:
            missed.append(f"{name}: a sender's last /sync went unanswered")
        if t.closed != t.faulted:
            missed.append(f"{name}: {t.faulted - t.closed} faulted connection(s) not closed after one /fail ?")
    total, senders = sum(t.packets for t in result["tallies"].values()), result["senders"]
    print(f"\nBad packets against a live server: {total} in {senders['seconds']:.0f} s from a process of their own "
          f"({senders['cpu']:.0%} of a core); UDP replies counted per socket, TCP per connection")
    print(table(rows, [Column("category", "category"), Column("packets", "packets"), Column("fails", "/fail"),
                       Column("most", "at most (1 per message)"), Column("per", "/fail per packet", "{:.3f}"),
                       Column("others", "other replies"), Column("connections", "connections"),
                       Column("closed", "faults closed after one /fail ?"), Column("ok", "ok")], args.markdown))
    live_rows = [{**result[key], "when": when, "returned": f"{result[key]['returned']} / {result[key]['blocks']}",
                  "answered": f"{result[key]['pings']} / {result[key]['pings'] + result[key]['ping_failures']}"}
                 for key, when in (("alone", "alone"), ("attacked", "under the bad packets"))]
    print(f"\nThe live session (48 kHz mono, blocks of {BLOCK}, in real time) and /ping every "
          f"{PING_EVERY * 1000:.0f} ms from another socket (answered within {PING_TIMEOUT:g} s)")
    print(table(live_rows, [Column("when", "session"), Column("seconds", "seconds", "{:.0f}"),
                            Column("returned", "blocks returned"), Column("dry", "dry blocks"),
                            Column("late", "late chunks"), Column("iterations", "steps/chunk", "{:.1f}"),
                            Column("p50", "p50 ms", "{:.0f}"), Column("p99", "p99 ms", "{:.0f}"),
                            Column("latency_ms", "reported ms", "{:.0f}"), Column("cpu", "server CPU", "{:.0%}"),
                            Column("drops", "datagrams dropped"),
                            Column("answered", "pings answered"),
                            Column("ping50", "ping p50 ms", "{:.2f}"), Column("ping99", "ping p99 ms", "{:.2f}")],
                 args.markdown))
    print(f"server: {'alive' if result['alive'] else 'DEAD'} at the end, exit code {result['exit']} after SIGINT, "
          f"{result['internal']} internal errors logged; the bad packets that came out valid made {result['sessions']} "
          f"sessions and {result['styles']} style changes (log: {OUT / 'fuzz' / 'server.log'}); "
          f"load average before the run {result['load']:.1f} on {os.cpu_count()} cores")
    s = result["attacked"]
    if s["returned"] != s["blocks"]:
        missed.append(f"the session lost {s['blocks'] - s['returned']} block(s)")
    if s["ping_failures"] or not s["pings"]:
        missed.append(f"{s['ping_failures']} /ping unanswered")
    if not result["alive"] or result["exit"] != 0:
        missed.append(f"server alive {result['alive']}, exit code {result['exit']}")
    if result["internal"]:
        missed.append(f"{result['internal']} internal error(s) in the server log")
    if fuzzing is not None:
        print(f"\natheris on decode, SlipDecoder, LengthDecoder and sniff: {fuzzing['runs']} runs in "
              f"{fuzzing['seconds']:.0f} s, coverage {fuzzing['cov']} edges, corpus {fuzzing['corpus']}, "
              f"exit code {fuzzing['exit']}{', ' + fuzzing['crash'] if fuzzing['crash'] else ''}")
        if fuzzing["exit"] != 0 or fuzzing["runs"] is None:
            missed.append(f"atheris: exit code {fuzzing['exit']}\n{fuzzing['tail']}")
    return missed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000, help="bad packets in all (TCP frames included)")
    parser.add_argument("--rate", type=float, default=1500.0, help="bad packets per second, all senders together")
    parser.add_argument("--baseline-seconds", type=float, default=10.0, help="the session alone, before")
    parser.add_argument("--atheris-runs", type=int, default=200_000, help="atheris inputs (0: skip that phase)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    missing = set(SIGNATURES) - set(VALID)
    if missing or not any(a.startswith(PARAM_PREFIX) for a in VALID):
        raise SystemExit(f"VALID lacks a message for {sorted(missing) or PARAM_PREFIX}")
    with tempfile.TemporaryDirectory() as folder:
        result = attack(args, Path(folder))
        fuzzing = run_atheris(args.atheris_runs, Path(folder)) if args.atheris_runs else None
    missed = report(result, fuzzing, args)
    for goal in missed:
        print(f"MISSED: {goal}")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
