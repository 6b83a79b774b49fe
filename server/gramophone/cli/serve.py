"""``gramophone serve``: options, the TOML config file, startup and graceful shutdown.

``cli.py`` calls ``add_serve_parser(subparsers)`` and, for the ``serve`` command,
``run_serve(args)``.  Options given on the command line override the config file, key
by key (a repeated option given on the command line replaces the file's list).
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from ..capacity import Capacity
from ..engine.latency import LATENCIES
from ..params import PARAMETERS, Parameters

log = logging.getLogger("gramophone.server")

DEFAULTS: dict[str, Any] = {
    "host": "127.0.0.1",
    "port": 57300,
    "styles_dir": None,  # default_styles_dir()
    "style": [],
    "cache_dir": None,  # the engine's default cache folder
    "max_sessions": 8,
    "log_level": "info",
    "allow": [],
    "idle_timeout": 300.0,
    "max_record_seconds": 120.0,
    "latency": "default",
    "chunk_frames": None,  # the latency setting's
    "param": [],
    "http_port": None,  # --port + 1 (a free one with --port 0); 0: off
    "zeroconf": True,
    "device": "auto",
    "batch": "on",
}
TYPES = {"http_port": int, "max_sessions": (int, str), "chunk_frames": int}  # config keys whose default does not tell their type
LOG_LEVELS = ("debug", "info", "warning", "error")
DEVICES = ("auto", "cpu", "cuda")


# The watchdog that answers late blocks dry must get the interpreter within a millisecond or
# so while two workers run NumPy between torch calls. A thread waiting for it gets it after
# about one interval per busy thread ahead of it: at the default 5 ms, or even at 1 ms, the
# watchdog woke up to 10 ms late with two sessions per worker; at 0.25 ms rarely more than 1.
SWITCH_INTERVAL_SECONDS = 0.00025
BATCH_WARM_UP = 8  # batch sizes the stepper runs and times before the server listens
AUTO_MOST_SESSIONS = 32  # --max-sessions auto: the cores decide, up to this many


class ConfigError(ValueError):
    """A bad option or config file, reported on one line."""


def default_styles_dir() -> Path:
    """The only folder ``/style/load`` may read by default: ``$XDG_DATA_HOME/gramophone/styles``."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "gramophone" / "styles"


def add_serve_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand; every default is ``None`` so the config file can fill it."""
    parser = subparsers.add_parser(
        "serve", help="run the OSC server (UDP and TCP)",
        description="Live style transfer over OSC. The protocol is in docs/protocol.md.",
    )
    add = parser.add_argument
    add("--host", help=f"address to listen on (default {DEFAULTS['host']}; others need --allow)")
    add("--port", type=int, help=f"UDP and TCP port (default {DEFAULTS['port']}; 0 picks a free one)")
    add("--styles-dir", help="the only folder /style/load may read (default ~/.local/share/gramophone/styles)")
    add("--style", action="append", metavar="NAME=FILE", help="preload a style from an audio file (repeatable)")
    add("--cache-dir", help="where learned styles are cached (default ~/.cache/gramophone)")
    add("--config", metavar="FILE.toml", help="read these options from a TOML file (same keys as the flags)")
    add("--max-sessions", metavar="N|auto", help=f"most streams at once (default {DEFAULTS['max_sessions']}), or auto: as "
        "many as this machine's cores hold in real time, each session's demand measured when it connects")
    # its own dest: the top-level parser's --log-level (default "warning") must not be overwritten
    add("--log-level", dest="serve_log_level", choices=LOG_LEVELS, help=f"default {DEFAULTS['log_level']}")
    add("--allow", action="append", metavar="CIDR", help="serve only senders in this network (repeatable)")
    add("--idle-timeout", type=float, help=f"seconds before a silent session ends (default {DEFAULTS['idle_timeout']:g})")
    add("--max-record-seconds", type=float,
        help=f"longest /style/record recording (default {DEFAULTS['max_record_seconds']:g})")
    add("--latency", choices=LATENCIES, help="; ".join(f"{name}: {setting.about}" for name, setting in LATENCIES.items())
        + f" (default {DEFAULTS['latency']})")
    add("--chunk-frames", type=int, help="STFT frames per chunk, the latency–CPU knob (default: the --latency "
        "setting's, 8 for default and 2 for low)")
    add("--device", choices=DEVICES, help="where the live steps run: cuda (every session's steps batched on the GPU), "
        "cpu, or auto (cuda when there is one; the default)")
    add("--batch", choices=("on", "off"), help="step the sessions whose chunks are due together as one batch "
        "(default on; off: each session steps alone, on the CPU)")
    add("--param", action="append", metavar="NAME=VALUE",
        help="a parameter's starting value, as /param/NAME would set it (repeatable), e.g. budget=0.5")
    add("--http-port", type=int, metavar="PORT", help="OSCQuery (HTTP and WebSocket) and the control page at /ui, on --host "
        "under the same --allow (default --port + 1: 57301, or a free one with --port 0; 0 turns it off)")
    add("--zeroconf", action=argparse.BooleanOptionalAction, help="advertise _osc._udp and _oscjson._tcp by "
        "zeroconf while serving (default on; bound to loopback, on the loopback interface only)")
    return parser


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the config file, then the command line."""
    merged = dict(DEFAULTS)
    if getattr(args, "config", None):
        merged.update(read_config(Path(args.config)))
    given = {key: value for key, value in vars(args).items() if value is not None and key != "log_level"}
    given["log_level"] = given.pop("serve_log_level", None)
    merged.update({key: value for key, value in given.items() if key in DEFAULTS and value is not None})
    if merged["log_level"] not in LOG_LEVELS:
        raise ConfigError(f"log-level must be one of {', '.join(LOG_LEVELS)}")
    if merged["device"] not in DEVICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICES)}")
    if merged["batch"] not in ("on", "off"):
        raise ConfigError("batch must be on or off")
    if merged["latency"] not in LATENCIES:
        raise ConfigError(f"latency must be one of {', '.join(LATENCIES)}")
    return merged


def read_config(path: Path) -> dict[str, Any]:
    """The TOML file's keys (``styles-dir`` or ``styles_dir``); ``style`` may be a table NAME = FILE."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in DEFAULTS:
            raise ConfigError(f"{path}: unknown key {key!r}; known: {', '.join(k.replace('_', '-') for k in DEFAULTS)}")
        if name in ("style", "param") and isinstance(value, dict):
            value = [f"{entry}={item}" for entry, item in value.items()]
        expected = TYPES.get(name) or (type(DEFAULTS[name]) if DEFAULTS[name] is not None else str)
        if expected is float and isinstance(value, int):
            value = float(value)
        if not isinstance(value, expected) or (expected is list and not all(isinstance(v, str) for v in value)):
            kind = {list: "a list of strings", (int, str): "an integer or a string"}.get(expected) or expected.__name__
            raise ConfigError(f"{path}: {key} must be {kind}")
        out[name] = value
    return out


def parse_allow(cidrs: list[str]) -> tuple:
    try:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
    except ValueError as error:
        raise ConfigError(f"--allow: {error}") from None


def parse_styles(specs: list[str]) -> list[tuple[str, Path]]:
    out = []
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name or not file:
            raise ConfigError(f"--style {spec!r}: write NAME=FILE")
        out.append((name, Path(file).expanduser()))
    return out


def parse_params(specs: list[str]) -> list[tuple[str, float]]:
    """``NAME=VALUE`` starting values, checked against the parameter table (not clamped: a typo fails)."""
    out = []
    for spec in specs:
        name, sep, text = spec.partition("=")
        if name not in PARAMETERS or not sep:
            raise ConfigError(f"--param {spec!r}: write NAME=VALUE with NAME one of {', '.join(PARAMETERS)}")
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--param {spec!r}: {text!r} is not a number") from None
        bounds = PARAMETERS[name]
        if not bounds.minimum <= value <= bounds.maximum:
            raise ConfigError(f"--param {spec!r}: {name} must be within {bounds.minimum:g}–{bounds.maximum:g}")
        out.append((name, value))
    return out


def run_serve(args: argparse.Namespace) -> int:
    """Run the server until SIGINT or SIGTERM; 0 after a clean shutdown, 2 on bad options."""
    stop = threading.Event()
    install_signal_handlers(stop)  # before the slow startup, so an early signal still ends cleanly
    try:
        opts = settings(args)
        configure_logging(opts["log_level"])
        check_exposure(opts["host"], opts["allow"])
        oscquery_port = http_port(opts)
        check_ports_free(opts["host"], opts["port"], oscquery_port)
        server = build_server(opts)
        http = None if oscquery_port is None else build_http(server, opts["host"], oscquery_port)
    except (ConfigError, ValueError, OSError) as error:
        log.error("%s", (str(error).splitlines() or [type(error).__name__])[0])
        return 2
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    # What start-up built (torch, librosa, the styles) lives as long as the server: kept out of
    # the collector's sweeps, a full collection no longer stalls every thread for milliseconds.
    gc.freeze()
    if http is not None:
        http.start()  # before the "listening" line, so the page answers once it is logged
    server.start()
    advertiser = advertise(server, opts)
    while not stop.wait(0.5):
        pass
    if advertiser is not None:
        advertiser.close()
    if http is not None:
        http.stop_receiving()
    server.shutdown()
    if http is not None:
        http.close()
    return 0


def http_port(opts: dict[str, Any]) -> int | None:
    """The OSCQuery port (``--http-port``; by default the OSC port + 1, any free one beside port 0), None when off."""
    if opts["http_port"] == 0:
        return None
    port = opts["http_port"] if opts["http_port"] is not None else (opts["port"] + 1 if opts["port"] else 0)
    if not 0 <= port <= 65535:
        raise ConfigError(f"--http-port {port}: must be within 0–65535")
    return port


def check_ports_free(host: str, osc_port: int, oscquery_port: int | None) -> None:
    """Bind and let go of the numbered ports, so that a taken one fails in a moment, not after the
    engine's start-up. They are held only later, once the server can answer what arrives on them."""
    from ..osc.oscquery import bind_http
    from ..osc.transport import bind

    if osc_port:
        try:
            sockets = bind(host, osc_port)
        except OSError as error:
            raise OSError(f"--port {osc_port}: cannot listen on {host}:{osc_port} ({error.strerror})") from None
        for sock in sockets:
            sock.close()
    if oscquery_port:
        bind_http(host, oscquery_port).close()


def build_http(server, host: str, port: int):
    """The OSCQuery port beside the OSC one, bound now (before the "listening" line)."""
    from ..osc.discovery import service_name
    from ..osc.oscquery import OscQuery

    http = OscQuery(server, host, port, service_name())
    server.http_port = http.port
    return http


def advertise(server, opts: dict[str, Any]):
    """Zeroconf records for the running server (``--zeroconf``), or None."""
    from .. import __version__
    from ..osc.discovery import Advertiser

    if not opts["zeroconf"]:
        return None
    try:
        advertiser = Advertiser(opts["host"], server.port, server.http_port, __version__)
    except OSError as error:  # an IPv6-only host: the records are IPv4
        log.warning("zeroconf: not advertised (%s)", error)
        return None
    advertiser.start()
    return advertiser


def configure_logging(level: str) -> None:
    """``--log-level`` for gramophone's own loggers; libraries (numba, torch) log warnings and up only."""
    number = getattr(logging, level.upper())
    logging.basicConfig(level=max(number, logging.WARNING), stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gramophone").setLevel(number)


def check_exposure(host: str, allow: list[str]) -> None:
    """Refuse to serve beyond this machine unless ``--allow`` says who may use it."""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)}
    except socket.gaierror as error:
        raise ConfigError(f"--host {host}: {error.strerror}") from None
    if allow or all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses):
        return
    raise ConfigError(f"--host {host} is reachable from other machines, and anyone who reaches it could use the "
                      "server: say who may, with --allow 192.168.1.0/24 (your network) or --allow 0.0.0.0/0 (everyone)")


def build_server(opts: dict[str, Any]):
    """Load the engine, the styles and the sockets (may take a few seconds: torch, first style)."""
    from ..engine.cache import StyleCache  # the engine imports torch: only once options are known good
    from ..live.library import DEFAULT_STYLE, LibraryError, StyleLibrary
    from ..engine.presets import get_preset
    from ..live.server import Server, ServerConfig
    from ..engine.stream import StreamConfig, StreamProcessor, warm_up

    allow = parse_allow(opts["allow"])
    styles = parse_styles(opts["style"])
    stepper = make_stepper(opts["device"], opts["batch"])
    latency = LATENCIES[opts["latency"]]
    params = Parameters()
    if latency.budget is not None:
        params.set("budget", latency.budget)
    for name, value in parse_params(opts["param"]):
        params.set(name, value)
    try:
        chunk_frames = latency.chunk_frames if opts["chunk_frames"] is None else opts["chunk_frames"]
        stream_config = StreamConfig(chunk_frames=chunk_frames,
                                     window_seconds=latency.window_seconds,
                                     steps_after_output=latency.steps_after_output)
    except ValueError as error:
        raise ConfigError(f"--chunk-frames: {error}") from None
    styles_dir = Path(opts["styles_dir"]).expanduser() if opts["styles_dir"] else default_styles_dir()
    styles_dir.mkdir(parents=True, exist_ok=True)
    preset = get_preset(latency.preset)
    library = StyleLibrary(styles_dir, StyleCache(opts["cache_dir"]), preset, opts["max_record_seconds"])
    try:
        for name, path in styles:
            library.add_file(name, path)
            log.info("style %r preloaded from %s", name, path)
        names = library.names()
        first = DEFAULT_STYLE if DEFAULT_STYLE in names else (styles[0][0] if styles else (names or [None])[0])
        if first is None:
            raise ConfigError("no style available: give --style NAME=FILE")
        library.select(first)
    except LibraryError as error:
        raise ConfigError(str(error)) from None
    cores = len(os.sched_getaffinity(0))
    max_sessions, capacity = parse_max_sessions(opts["max_sessions"], cores)
    # Batched, a session's worker waits while its chunk steps with the others': one worker per
    # session keeps every session's chunk able to join the step it is due for.
    workers = cores + max_sessions if stepper is not None else cores
    config = ServerConfig(host=opts["host"], port=opts["port"], max_sessions=max_sessions, capacity=capacity,
                          idle_timeout=opts["idle_timeout"], allow=allow, workers=workers)
    log.info("styles folder %s; %d styles known", styles_dir, len(library.names()))
    # Each worker runs its own chunks: give each a share of the cores rather than letting
    # every worker's torch spin up a thread per core (oversubscription is 10–20× slower).
    import torch
    torch.set_num_threads(max(1, cores // config.workers))
    began = time.monotonic()
    demand = warm_up(library.active, preset, stream_config, stepper=stepper, streams=min(max_sessions, BATCH_WARM_UP),
                     demand=params if capacity is not None else None)
    log.info("warmed up in %.1f s: a live stream ran at 48 kHz mono and 44.1 kHz stereo before the first /connect",
             time.monotonic() - began)
    log.info("latency setting %s: preset %s, %d frames a chunk, steps %s", opts["latency"], preset.name,
             stream_config.chunk_frames, "after each chunk's output" if stream_config.steps_after_output else "before it")
    if capacity is not None:
        log.info("--max-sessions auto: room for %d sessions like the warm-up's 48 kHz mono one on %d cores "
                 "(each needs %.2f cores for its steps and %.2f for the rest)", capacity.holds(demand), cores,
                 demand.steps, demand.other)
    log.info("live steps: %s", f"batched across sessions on {stepper.device}" if stepper is not None
             else "each session alone, on the CPU")
    return Server(config, params, library,
                  lambda params, style: StreamProcessor(params, style=style, preset=preset, config=stream_config,
                                                        stepper=stepper), stepper)


def parse_max_sessions(value: int | str, cores: int) -> tuple[int, Capacity | None]:
    """``--max-sessions``: a number, or ``auto`` (the cores' capacity decides, up to AUTO_MOST_SESSIONS)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AUTO_MOST_SESSIONS, Capacity(cores)
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"--max-sessions must be a number or auto, got {value!r}") from None
    if count < 1:
        raise ConfigError("--max-sessions must be at least 1")
    return count, None


def make_stepper(device: str, batch: str):
    """The batch stepper for ``--device`` and ``--batch`` (None: each session steps alone, on the CPU)."""
    import torch
    from ..engine.batch import BatchStepper

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device cuda: no CUDA device available to torch {torch.__version__}; use --device cpu or auto")
    if batch == "off":
        if device == "cuda":
            raise ConfigError("--batch off steps each session alone on the CPU: it needs --device cpu or auto")
        return None
    chosen = "cuda" if torch.cuda.is_available() and device != "cpu" else "cpu"
    cores = len(os.sched_getaffinity(0))
    # On the CPU the stepper's thread takes a core of its own: the sessions' other work gets the rest.
    return BatchStepper(chosen, slots=max(1, cores - 1) if chosen == "cpu" else cores)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` (graceful shutdown); a second one exits at once."""

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without finishing", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s received", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
