"""Plugin benchmark: the Gramophone plugin in a host paced in real time.

The plugin's CLAP build (mono) in its test host (``clients/plugin/build/clap-host --realtime``:
each call runs once its block of input would have been captured), one ``gramophone serve`` on
loopback, 48 kHz, the built-in style, the soak's voice (a saw melody under a syllable envelope,
never silent), ``--seconds`` per run. A 5-second run first warms the server up (shown, not judged).

1. One instance at host blocks of 64, 128, 256, 512 and 1024 frames: the latency the plugin
   reports, the server's (``/connected``) and the difference, the tightest setting that would fit
   (the plugin's ``Needed latency``), the p99 and worst arrival of the wet answers against when
   the audio thread needed them (negative: early; the plugin's outputs), the dry share (blocks
   played dry from the first wet one on: output equal to the input, sample for sample, delayed by
   the latency), and the plugin's time in ``process()`` per host call, timed by the host.
2. 1 to 4 instances at once on the one server, host blocks of 256: each instance's dry share, and
   the server's late-chunk share (``/status`` over all sessions just before the hosts end:
   ``late_chunks`` ÷ chunks sent).

Each row also gives the server's own counts for the run's sessions: ``lost_blocks`` (blocks it
answered dry because the session fell behind, and gaps in seq) and ``late_blocks`` (answers that
left after its latency), to tell the server's misses from the plugin's.

Goals (printed pass/FAIL, exit 1 when one is missed): no dry block with one instance at host
blocks 128–1024; the reported latency no more than the server's plus one plugin block (512 frames);
and how many instances hold (no dry block, at most 5 % late chunks) on this machine.

Usage::

    make -C clients/plugin
    python -m bench.plugin                 # 20 s per run, about 4 minutes
    python -m bench.plugin --seconds 10 --markdown
    python -m bench.plugin --latency low --plugin-latency 70   # the server under 50 ms, the plugin at 70 ms
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pythonosc.osc_message import OscMessage

from gramophone.engine.latency import LATENCIES

from .common import Column, Server, chunk_seconds, message, report_goals, table
from .soak import BLOCK as VOICE_BLOCK
from .soak import Voice

RATE = 48_000
PLUGIN_BLOCK = 512  # the plugin's own block at 48 kHz
HOST_BLOCKS = (64, 128, 256, 512, 1024)
INSTANCES = (1, 2, 3, 4)
INSTANCE_BLOCK = 256
WARMUP_SECONDS = 5.0
LATE_CHUNKS = 0.05
BUILD = Path(__file__).resolve().parent.parent / "clients" / "plugin" / "build"


def voice(seconds: float, index: int) -> np.ndarray:
    """``seconds`` of the soak's voice, pitched per instance."""
    source = Voice(220.0 * 2 ** (-index / 5))
    frames = int(seconds * RATE)
    return np.concatenate([source.block() for _ in range(math.ceil(frames / VOICE_BLOCK))])[:frames]


def status(server: Server) -> list:
    """``/status/reply`` from a sender without a session: all sessions together."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        for _ in range(5):  # a loaded machine may leave a datagram unanswered for a while
            sock.sendto(message("/status"), (server.host, server.port))
            try:
                while (reply := OscMessage(sock.recv(65536))).address != "/status/reply":
                    pass
                return reply.params
            except TimeoutError:
                continue
    raise SystemExit("the server does not answer /status")


def run(server: Server, folder: Path, seconds: float, host_block: int, count: int, name: str,
        chunk: float, params: tuple[str, ...] = ()) -> list[dict]:
    """``count`` hosts at once, each with plugin ``params`` (``NAME=VALUE``); one row per host, plus the
    server's late-chunk share in each (its chunks last ``chunk`` seconds)."""
    hosts = []
    for index in range(count):
        stem = folder / f"{name}-{index}"
        audio = voice(seconds, index)
        audio.astype("<f4").tofile(f"{stem}.in")
        command = [str(BUILD / "clap-host"), str(BUILD / "gramophone-mono.clap"), "--in", f"{stem}.in",
                   "--out", f"{stem}.out", "--rate", str(RATE), "--block", str(host_block), "--realtime", "--flush",
                   "--param", f"Server port={server.port}", "--report", f"{stem}.json", "--trace", f"{stem}.jsonl",
                   *(argument for param in params for argument in ("--param", param))]
        hosts.append((stem, audio, subprocess.Popen(command, stderr=subprocess.DEVNULL)))
    time.sleep(seconds - 0.5)  # the sessions are still up: their counts are the server's whole story
    fields = status(server)
    late_chunks = fields[5] / max(1.0, count * seconds / chunk)
    lost, server_late = fields[6], fields[8] if len(fields) > 8 else None
    rows = []
    for stem, audio, proc in hosts:
        if proc.wait(seconds + 120) != 0:
            raise SystemExit(f"clap-host failed for {stem}")
        report = json.loads(Path(f"{stem}.json").read_text())
        outputs = report["outputs"]
        latency = report["latency"]
        out = np.fromfile(f"{stem}.out", "<f4")[latency: latency + len(audio)]
        blocks = len(audio) // PLUGIN_BLOCK
        dry = np.all((out[: blocks * PLUGIN_BLOCK] == audio[: blocks * PLUGIN_BLOCK]).reshape(blocks, -1), axis=1)
        first_wet = int(np.argmin(dry)) if not dry.all() else blocks
        rows.append({
            "run": name, "host_block": host_block, "instances": count,
            "reported": 1000 * latency / RATE, "server": outputs["Server latency"],
            "over": 1000 * latency / RATE - outputs["Server latency"], "needed": outputs["Needed latency"],
            "p99": outputs["Arrival p99"], "worst": outputs["Arrival worst"],
            "dry_blocks": int(dry[first_wet:].sum()), "dry_share": float(dry[first_wet:].mean()) if first_wet < blocks else 1.0,
            "late_blocks": int(outputs["Late blocks"]), "late_chunks": late_chunks, "lost": lost,
            "server_late": server_late,
            "us_mean": report["process_us"]["mean"], "us_p99": report["process_us"]["p99"],
            "us_max": report["process_us"]["max"], "host_late": report["late_calls"], "load": os.getloadavg()[0],
        })
    return rows


def goals(single: list[dict], multi: list[dict]) -> list[tuple[bool, str]]:
    out = []
    for row in single:
        if 128 <= row["host_block"] <= 1024:
            out.append((row["dry_blocks"] == 0, f"host blocks of {row['host_block']}: no dry block "
                                                f"({row['dry_blocks']} dry, {row['late_blocks']} counted by the plugin)"))
    for row in single:
        over = row["over"]
        out.append((over <= 1000 * PLUGIN_BLOCK / RATE,
                    f"host blocks of {row['host_block']}: reported latency within one plugin block of the server's "
                    f"({over:+.1f} ms at the default setting; the tightest setting that fits is "
                    f"{row['needed'] - row['server']:+.1f} ms over it)"))
    most = 0
    for count in INSTANCES:
        if not all(r["dry_blocks"] == 0 and r["late_chunks"] <= LATE_CHUNKS for r in multi if r["instances"] == count):
            break
        most = count
    out.append((most >= 1, f"instances on one server that hold (no dry block, late chunks ≤ {LATE_CHUNKS:.0%}): {most} "
                           f"on {os.cpu_count()} cores"))
    return out


COLUMNS = [Column("run", "run"), Column("host_block", "host block"), Column("instances", "instances"),
           Column("reported", "reported ms", "{:.1f}"), Column("server", "server ms", "{:.1f}"),
           Column("over", "over ms", "{:+.1f}"), Column("needed", "needed ms", "{:.1f}"),
           Column("p99", "arrival p99 ms", "{:+.1f}"), Column("worst", "arrival worst ms", "{:+.1f}"),
           Column("dry_share", "dry", "{:.1%}"), Column("late_blocks", "late blocks"),
           Column("late_chunks", "late chunks", "{:.1%}"), Column("lost", "server lost_blocks"),
           Column("server_late", "server late_blocks"), Column("us_mean", "process µs mean", "{:.1f}"),
           Column("us_p99", "p99", "{:.1f}"), Column("us_max", "max", "{:.1f}"),
           Column("host_late", "host late calls"), Column("load", "load", "{:.1f}")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each run (default 20)")
    parser.add_argument("--latency", choices=LATENCIES, default="default", help="the server's --latency (default default)")
    parser.add_argument("--plugin-latency", type=float, metavar="MS",
                        help="the plugin's Plugin latency setting (default: the plugin's own, 195 ms)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if not (BUILD / "clap-host").exists():
        raise SystemExit("build the plugin first: make -C clients/plugin")
    chunk = chunk_seconds(RATE, LATENCIES[args.latency])
    params = () if args.plugin_latency is None else (f"Plugin latency={args.plugin_latency:g}",)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        server = Server(folder, "--latency", args.latency)
        try:
            rows = run(server, folder, WARMUP_SECONDS, 256, 1, "warm-up", chunk, params)
            single = [row for block in HOST_BLOCKS
                      for row in run(server, folder, args.seconds, block, 1, f"block {block}", chunk, params)]
            multi = [row for count in INSTANCES
                     for row in run(server, folder, args.seconds, INSTANCE_BLOCK, count, f"{count} instances", chunk,
                                    params)]
        except BaseException:
            print(server.log.read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            server.stop()
    print(f"\nThe plugin (CLAP, mono) at {RATE} Hz in a host paced in real time, {args.seconds:g} s per run, "
          f"plugin blocks of {PLUGIN_BLOCK}; serve --latency {args.latency}, a server chunk is {1000 * chunk:.1f} ms; "
          f"{os.cpu_count()} cores")
    print(table(rows + single + multi, COLUMNS, args.markdown))
    report_goals(goals(single, multi))


if __name__ == "__main__":
    main()
