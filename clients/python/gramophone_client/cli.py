"""``gramophone-client``: render files, play live, and control a running Gramophone server."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .client import DEFAULT_PORT, Client
from .discover import discover, first_server
from .errors import GramophoneError, NoReply
from .live import LiveOptions, LivePlayer, device, list_devices
from .render import render, render_live


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", default="127.0.0.1",
                        help="server address, or auto: the first server zeroconf finds (default 127.0.0.1)")
    common.add_argument("--port", type=int, help=f"server port (default {DEFAULT_PORT}, or the one found with --host auto)")
    common.add_argument("--tcp", action="store_true", help="use TCP (SLIP framing) instead of UDP")
    common.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply (default 5)")
    common.add_argument("--floats", action="store_true", help="send audio as float lists instead of blobs")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(prog="gramophone-client", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("render", parents=[common], help="stream a file through the server into another file")
    p.add_argument("input", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--block", type=int, default=1024, help="block size in frames (default 1024)")
    p.add_argument("--live", action="store_true", help="pace in real time in live mode; report late and lost blocks")
    p.add_argument("--jitter-blocks", type=int, default=2, help="with --live: blocks of network slack (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = commands.add_parser("live", parents=[common], help="full-duplex audio through the server")
    p.add_argument("--input", help="input device (index or name substring)")
    p.add_argument("--output", help="output device (index or name substring)")
    p.add_argument("--block", type=int, default=512, help="block size in frames (default 512)")
    p.add_argument("--channels", type=int, choices=(1, 2), default=1)
    p.add_argument("--rate", type=int, help="sample rate (default: the input device's)")
    p.add_argument("--jitter-blocks", type=int, default=2, help="blocks of network slack before a reply counts as late (default 2)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--file", type=Path, help="play this file as the input instead of capturing")
    p.add_argument("--record", type=Path, help="also write what is played to this file")
    p.add_argument("--list-devices", action="store_true", help="list audio devices and exit")

    p = commands.add_parser("param", parents=[common], help="read or set a parameter; without NAME list them all")
    p.add_argument("name", nargs="?")
    p.add_argument("value", nargs="?", type=float)

    p = commands.add_parser("style", parents=[common], help="load, record, select, mix, list or delete styles")
    styles = p.add_subparsers(dest="action", required=True)
    s = styles.add_parser("load", parents=[common], help="load FILE (relative to the server's styles folder) as NAME")
    s.add_argument("name")
    s.add_argument("file")
    s = styles.add_parser("record", parents=[common], help="record a local audio FILE as style NAME")
    s.add_argument("name")
    s.add_argument("file", type=Path)
    s.add_argument("--block", type=int, default=1024)
    s = styles.add_parser("select", parents=[common], help="make NAME the active style")
    s.add_argument("name")
    s = styles.add_parser("mix", parents=[common], help="blend styles: NAME WEIGHT [NAME WEIGHT ...]")
    s.add_argument("pairs", nargs="+", metavar="NAME WEIGHT")
    styles.add_parser("list", parents=[common], help="list the loaded styles")
    s = styles.add_parser("delete", parents=[common], help="forget style NAME")
    s.add_argument("name")

    commands.add_parser("status", parents=[common], help="the server's load and health as a table")
    p = commands.add_parser("discover", help="list the servers zeroconf finds, on this machine and the network")
    p.add_argument("--wait", type=float, default=2.0, help="seconds to listen for answers (default 2)")
    p = commands.add_parser("ping", parents=[common], help="round-trip time to the server")
    p.add_argument("--count", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors are one line on stderr and exit status 1 (130 for Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "discover":
            return cmd_discover(args)
        if args.command == "live" and args.list_devices:
            print(list_devices())
            return 0
        if args.host == "auto":
            found = first_server(args.timeout)
            args.host, args.port = found.host, args.port or found.osc_port
        args.port = args.port or DEFAULT_PORT
        with Client(args.host, args.port, tcp=args.tcp, timeout=args.timeout,
                    encoding="floats" if args.floats else "blob") as client:
            return COMMANDS[args.command](client, args)
    except NoReply as error:
        print(f"gramophone-client: {error}; is `gramophone serve` running on {args.host}:{args.port}?", file=sys.stderr)
    except GramophoneError as error:
        print(f"gramophone-client: {error}", file=sys.stderr)
    except (OSError, RuntimeError) as error:  # unreadable or unwritable files
        print(f"gramophone-client: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


def cmd_render(client: Client, args: argparse.Namespace) -> int:
    audio, rate = sf.read(args.input, dtype="float32", always_2d=True)
    info = sf.info(str(args.input))
    started = time.monotonic()
    with tqdm(total=-(-len(audio) // args.block), unit="block", disable=args.quiet, file=sys.stderr) as bar:
        if args.live:
            out, report = render_live(client, audio, rate, args.block, args.jitter_blocks, bar.update)
        else:
            out, report = render(client, audio, rate, args.block, bar.update)
    elapsed = time.monotonic() - started
    client.disconnect()
    same_format = args.output.suffix.lower() == args.input.suffix.lower()
    sf.write(args.output, out, rate, subtype=info.subtype if same_format else None)
    seconds = len(audio) / rate
    line = (f"{args.input} -> {args.output}: {seconds:.2f} s of audio in {elapsed:.2f} s "
            f"({seconds / elapsed:.2f}x real time), server latency {report.latency_samples} samples")
    if args.live:
        line += f"; {report.late} late and {report.lost} lost of {report.blocks} blocks (played dry)"
    print(line)
    return 0


def cmd_live(client: Client, args: argparse.Namespace) -> int:
    options = LiveOptions(
        block_size=args.block, channels=args.channels, input_device=device(args.input),
        output_device=device(args.output), sample_rate=args.rate, jitter_blocks=args.jitter_blocks,
        duration=args.duration, file=args.file, record=args.record,
    )
    LivePlayer(client, options, lambda line: print(line, flush=True)).run()
    return 0


def cmd_param(client: Client, args: argparse.Namespace) -> int:
    if args.name is None:
        rows = client.params().values()
        print(f"{'parameter':<16}{'value':>10}{'min':>10}{'max':>10}{'default':>10}")
        for r in rows:
            print(f"{r.name:<16}{r.value:>10.4g}{r.minimum:>10.4g}{r.maximum:>10.4g}{r.default:>10.4g}")
        return 0
    print(f"{args.name} = {client.param(args.name, args.value):g}")
    return 0


def cmd_style(client: Client, args: argparse.Namespace) -> int:
    action = args.action
    if action == "load":
        client.style_load(args.name, args.file)
    elif action == "record":
        audio, rate = sf.read(args.file, dtype="float32", always_2d=True)
        client.connect(rate, min(audio.shape[1], 2), args.block)
        client.style_record(args.name, audio[:, :2])
        client.disconnect()
    elif action == "select":
        client.style_select(args.name)
    elif action == "mix":
        if len(args.pairs) % 2:
            raise GramophoneError("style mix takes NAME WEIGHT pairs")
        names, weights = args.pairs[0::2], args.pairs[1::2]
        try:
            client.style_mix(dict(zip(names, map(float, weights))))
        except ValueError:
            raise GramophoneError(f"weights must be numbers, got {' '.join(weights)}") from None
    elif action == "list":
        for name in client.style_list():
            print(name)
        return 0
    elif action == "delete":
        client.style_delete(args.name)
    print(f"style {action}: done")
    return 0


def cmd_status(client: Client, args: argparse.Namespace) -> int:
    s = client.status()
    rows = [
        ("sessions", f"{s.sessions}"),
        ("real-time factor", f"{s.rtf_avg:.3f} avg, {s.rtf_peak:.3f} peak"),
        ("iterations", f"{s.iterations_avg:.1f} avg per chunk"),
        ("latency", f"{s.latency_ms:.1f} ms"),
        ("late chunks", f"{s.late_chunks}"),
        ("lost blocks", f"{s.lost_blocks}"),
        ("queued blocks", f"{s.queued_blocks}"),
        ("late blocks", f"{s.late_blocks}"),
    ]
    for name, value in rows:
        print(f"{name:<18}{value}")
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    """One line per server: its name, OSC address and control page."""
    found = discover(args.wait)
    if not found:
        print(f"gramophone-client: no Gramophone server found by zeroconf within {args.wait:g} s", file=sys.stderr)
        return 1
    for server in found:
        page = f"http://{server.host}:{server.http_port}/ui" if server.http_port else "no HTTP port"
        print(f"{server.name}\tosc {server.host}:{server.osc_port}\t{page}\tversion {server.version}")
    return 0


def cmd_ping(client: Client, args: argparse.Namespace) -> int:
    times = []
    for _ in range(args.count):
        times.append(client.ping())
        print(f"pong from {args.host}:{args.port} in {1000 * times[-1]:.2f} ms")
    if args.count > 1:
        print(f"min {1000 * min(times):.2f} ms, median {1000 * float(np.median(times)):.2f} ms, max {1000 * max(times):.2f} ms")
    return 0


COMMANDS = {
    "render": cmd_render,
    "live": cmd_live,
    "param": cmd_param,
    "style": cmd_style,
    "status": cmd_status,
    "ping": cmd_ping,
}
