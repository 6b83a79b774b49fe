"""The OSC protocol: decode packets, validate and coerce arguments, encode flat replies.

Torch-free on purpose (see docs/architecture.md); the table of addresses lives in
docs/protocol.md and in ``SIGNATURES`` below.  python-osc parses messages; this module
adds what it lacks: refusing type tags it would misread, walking bundles message by
message so one bad element fails alone, reading audio sent as a float list in one numpy
call, and building large audio replies in linear time.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from pythonosc.osc_message import OscMessage, ParseError
from pythonosc.parsing import osc_types

from ..params import PARAMETERS

# Type tags python-osc 1.10 parses correctly and that carry a scalar; it skips `c`, `S`, `I`
# and other tags without consuming their bytes, so every later argument would be misread.
SCALAR_TAGS = frozenset("ifdhsbTFN")
NUMBER_TAGS = frozenset("ifdhTF")
FIXED_SIZES = {"i": 4, "f": 4, "h": 8, "d": 8, "T": 0, "F": 0, "N": 0}  # bytes each argument takes
BUNDLE_PREFIX = b"#bundle\x00"
MAX_BUNDLE_DEPTH = 8
# Addresses only the server sends. One arriving is another program's reply (a second server's,
# scsynth's) or a forgery: answering it with /fail could start an endless exchange.
REPLY_ADDRESSES = frozenset({"/fail", "/done", "/pong", "/synced", "/audio", "/connected", "/status/reply",
                             "/params/reply", "/style/list/reply", "/version/reply"})
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Largest UDP payload over IPv4: 65 535 - 8 (UDP header) - 20 (IP header).
MAX_UDP_PAYLOAD = 65_507


class ProtocolError(Exception):
    """A message the server refuses; becomes ``/fail address message``."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address
        self.message = message


@dataclass(frozen=True)
class Message:
    """One decoded OSC message: its address, type tags (no comma) and arguments."""

    address: str
    tags: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Field:
    """One argument of a command: a name for messages and a kind for coercion."""

    name: str
    kind: str  # "int", "number", "string", "any" (echoed back), "audio" (the rest)


@dataclass(frozen=True)
class Signature:
    """Required fields, then optional ones, then a group that may repeat (``/style/mix``)."""

    required: tuple[Field, ...] = ()
    optional: tuple[Field, ...] = ()
    repeat: tuple[Field, ...] = ()

    def usage(self) -> str:
        parts = [f.name for f in self.required] + [f"[{f.name}]" for f in self.optional]
        if self.repeat:
            parts.append("[" + " ".join(f.name for f in self.repeat) + " …]")
        return " ".join(parts) or "no arguments"


@dataclass(frozen=True)
class Command:
    """A validated request: positional values coerced to Python types.

    ``encoding`` is ``"floats"`` or ``"blob"`` for commands carrying audio (``values[-1]`` is
    then a float32 array), else ``None``.
    """

    address: str
    values: tuple[Any, ...]
    encoding: str | None = None


def _f(name: str, kind: str) -> Field:
    return Field(name, kind)


SIGNATURES: dict[str, Signature] = {
    "/connect": Signature(
        (_f("sample_rate", "int"), _f("channels", "int"), _f("block_size", "int")),
        (_f("reply_port", "int"), _f("max_latency", "int")),
    ),
    "/disconnect": Signature(),
    "/mode": Signature((_f("mode", "string"),)),
    "/content": Signature((_f("seq", "int"), _f("samples", "audio"))),
    "/flush": Signature(),
    "/reset": Signature(),
    "/params": Signature(),
    "/style/load": Signature((_f("name", "string"), _f("file", "string"))),
    "/style/record/start": Signature((_f("name", "string"),)),
    "/style/audio": Signature((_f("seq", "int"), _f("samples", "audio"))),
    "/style/record/stop": Signature(),
    "/style/select": Signature((_f("name", "string"),)),
    "/style/mix": Signature(
        (_f("name", "string"), _f("weight", "number")),
        repeat=(_f("name", "string"), _f("weight", "number")),
    ),
    "/style/list": Signature(),
    "/style/delete": Signature((_f("name", "string"),)),
    "/status": Signature(),
    "/ping": Signature(optional=(_f("token", "any"),)),
    "/sync": Signature((_f("id", "any"),)),
    "/notify": Signature((_f("on", "int"),)),
    "/version": Signature(),
    "/log": Signature((_f("level", "string"), _f("message", "string"))),
}
PARAM_PREFIX = "/param/"
PARAM_SIGNATURE = Signature(optional=(_f("value", "number"),))


def decode_packet(data: bytes) -> list[Message | ProtocolError]:
    """Every message in a datagram or TCP frame, in order; bad ones as ``ProtocolError``.

    Bundles are unpacked recursively and run at once, in order: time tags are ignored
    (python-osc's own dispatcher would sleep until them, stalling the receiver).
    """
    out: list[Message | ProtocolError] = []
    _walk(bytes(data), 0, out)
    return out


def _walk(data: bytes, depth: int, out: list[Message | ProtocolError]) -> None:
    if data.startswith(BUNDLE_PREFIX):
        if depth >= MAX_BUNDLE_DEPTH:
            out.append(ProtocolError("#bundle", f"bundles nested deeper than {MAX_BUNDLE_DEPTH}"))
            return
        index = len(BUNDLE_PREFIX) + 8  # skip the time tag
        if len(data) < index:
            out.append(ProtocolError("#bundle", "bundle too short for its time tag"))
            return
        while index < len(data):
            if index + 4 > len(data):
                out.append(ProtocolError("#bundle", "truncated bundle element size"))
                return
            (size,) = struct.unpack_from(">i", data, index)
            index += 4
            if size < 0 or index + size > len(data):
                out.append(ProtocolError("#bundle", f"bundle element of {size} bytes overruns the packet"))
                return
            _walk(data[index : index + size], depth + 1, out)
            index += size
    elif data.startswith(b"/"):
        try:
            out.append(parse_message(data))
        except ProtocolError as error:
            out.append(error)
    else:
        out.append(ProtocolError("?", "not an OSC message or bundle (must start with '/' or '#bundle')"))


def parse_message(dgram: bytes) -> Message:
    """Parse one OSC message with python-osc after checking its type tags are safe to parse."""
    address = "?"
    try:
        address, index = _get_string(dgram, 0)
        tags = ""
        if index < len(dgram):
            tag_string, index = _get_string(dgram, index)
            if not tag_string.startswith(","):
                raise ProtocolError(address, "type tag string must start with ','")
            tags = tag_string[1:]
        unsupported = sorted(set(tags) - SCALAR_TAGS)
        if unsupported:
            raise ProtocolError(
                address,
                f"unsupported OSC type tag {''.join(unsupported)!r}: use i h f d s b T F N (no arrays)",
            )
        if "b" in tags:
            _check_blob_sizes(address, dgram, index, tags)
        args = _words(dgram, index, tags)
        if args is None:
            args = tuple(OscMessage(dgram).params)
    except (ParseError, osc_types.ParseError, UnicodeDecodeError) as error:
        raise ProtocolError(address, f"malformed OSC message ({_first_line(error)})") from None
    if len(args) != len(tags):
        raise ProtocolError(address, "malformed OSC message (arguments do not match type tags)")
    return Message(address, tags, args)


def _get_string(dgram: bytes, index: int) -> tuple[str, int]:
    """An OSC string at ``index`` and the index after its padding, as python-osc's ``get_string``
    reads it, found with ``bytes.find``: python-osc steps byte by byte in Python, about 45 µs for the
    type tags of a 512-float block."""
    end = dgram.find(b"\x00", index)
    if end < 0:
        raise osc_types.ParseError("Could not parse datagram: string without a terminating null")
    after = index + (end - index + 4) // 4 * 4
    if after > len(dgram):
        raise osc_types.ParseError("Datagram is too short")
    return dgram[index:end].decode("utf-8"), after


def _words(dgram: bytes, index: int, tags: str) -> tuple[Any, ...] | None:
    """The arguments of a message tagged ints then floats (``/content``'s ``i f f f …``), read by
    numpy in two calls; None for any other message.

    python-osc unpacks each argument with ``struct`` in Python: for the 512-float ``/content``
    blocks Max and Pd send, that is about 0.6 ms a block with the interpreter lock held, time the
    watchdog and the workers wait for.  Messages whose data stops short go to python-osc, which
    reads a truncated last float as zero-padded (a Reaktor quirk) and refuses a truncated int.
    """
    ints = len(tags) - len(tags.lstrip("i"))
    if not tags or tags[ints:].strip("f") or index + 4 * len(tags) > len(dgram):
        return None
    words = np.frombuffer(dgram, dtype=">i4", count=len(tags), offset=index)
    return tuple(words[:ints].tolist() + words[ints:].view(">f4").tolist())


def _check_blob_sizes(address: str, dgram: bytes, index: int, tags: str) -> None:
    """Refuse a negative blob size: python-osc reads it as an empty blob and steps back over it.

    ``index`` is where the arguments start.
    """
    for tag in tags:
        if tag == "s":
            _, index = _get_string(dgram, index)
        elif tag == "b":
            size, index = osc_types.get_int(dgram, index)
            if size < 0:
                raise ProtocolError(address, f"malformed OSC message (blob size {size})")
            index += size + -size % 4
        else:
            index += FIXED_SIZES[tag]


def _first_line(error: Exception) -> str:
    """The innermost reason: python-osc wraps its ParseError in another as ``(text, cause)``."""
    while len(error.args) > 1 and isinstance(error.args[-1], Exception):
        error = error.args[-1]
    return (str(error).splitlines() or [type(error).__name__])[0][:120]


def signature_for(address: str) -> Signature:
    """The signature of ``address``, or a ProtocolError naming what is wrong with it."""
    if address.startswith(PARAM_PREFIX):
        name = address[len(PARAM_PREFIX) :]
        if name not in PARAMETERS:
            raise ProtocolError(address, f"unknown parameter {name!r}; known: {', '.join(PARAMETERS)}")
        return PARAM_SIGNATURE
    try:
        return SIGNATURES[address]
    except KeyError:
        raise ProtocolError(address, "unknown address (see docs/protocol.md)") from None


def validate(message: Message) -> Command:
    """Check the argument count and types of ``message`` and coerce its values."""
    sig = signature_for(message.address)
    address, args, tags = message.address, message.args, message.tags
    fields = list(sig.required)
    audio_at = next((i for i, f in enumerate(fields) if f.kind == "audio"), None)
    if audio_at is not None:
        if len(args) <= audio_at:
            raise ProtocolError(address, f"expects {sig.usage()}")
        values = [_coerce(address, f, args[i], tags[i]) for i, f in enumerate(fields[:audio_at])]
        samples, encoding = _audio(address, args[audio_at:], tags[audio_at:])
        return Command(address, tuple(values) + (samples,), encoding)
    n_required = len(fields)
    if sig.repeat:
        extra = len(args) - n_required
        if extra < 0 or extra % len(sig.repeat):
            raise ProtocolError(address, f"expects {sig.usage()}")
        fields += list(sig.repeat) * (extra // len(sig.repeat))
    elif not n_required <= len(args) <= n_required + len(sig.optional):
        raise ProtocolError(address, f"expects {sig.usage()}, got {len(args)} argument(s)")
    else:
        fields += list(sig.optional[: len(args) - n_required])
    values = [_coerce(address, f, a, t) for f, a, t in zip(fields, args, tags)]
    return Command(address, tuple(values))


def _coerce(address: str, field: Field, value: Any, tag: str) -> Any:
    if field.kind == "any":
        return value
    if field.kind == "string":
        if tag != "s":
            raise ProtocolError(address, f"{field.name} must be a string, got type {tag!r}")
        return value
    if tag not in NUMBER_TAGS:
        raise ProtocolError(address, f"{field.name} must be a number, got type {tag!r}")
    number = float(value) if tag in "fd" else int(value)
    if not math.isfinite(number):
        raise ProtocolError(address, f"{field.name} must be a finite number")
    if field.kind == "int":
        if number != int(number):
            raise ProtocolError(address, f"{field.name} must be a whole number, got {number}")
        return int(number)
    return float(number)


def _audio(address: str, args: tuple[Any, ...], tags: str) -> tuple[np.ndarray, str]:
    """Samples as one float32-LE blob or a list of numbers; finite values only."""
    if tags == "b":
        blob = args[0]
        if len(blob) == 0 or len(blob) % 4:
            raise ProtocolError(address, f"audio blob of {len(blob)} bytes is not a whole number of float32 samples")
        samples, encoding = np.frombuffer(blob, dtype="<f4").astype(np.float32), "blob"
    elif set(tags) <= NUMBER_TAGS:
        with np.errstate(over="ignore"):  # a double beyond float32 becomes inf, refused below, not a warning
            samples, encoding = np.asarray(args, dtype=np.float32), "floats"
    else:
        raise ProtocolError(address, "samples must be numbers or one blob of float32 (little-endian)")
    if not np.isfinite(samples).all():
        raise ProtocolError(address, "samples contain NaN or Inf")
    return samples, encoding


def decode(data: bytes) -> list[Command | ProtocolError]:
    """Decode and validate every message of a packet."""
    out: list[Command | ProtocolError] = []
    for item in decode_packet(data):
        if isinstance(item, ProtocolError):
            out.append(item)
            continue
        try:
            out.append(validate(item))
        except ProtocolError as error:
            out.append(error)
    return out


def encode_message(address: str, *args: Any) -> bytes:
    """A flat OSC message: int → i (h when large), float → f (d beyond float32), str → s, bytes → b,
    bool → T/F, None → N.

    Built here, not with python-osc's builder: that refuses an empty blob and a double beyond
    float32, which ``/ping`` and ``/sync`` must echo back like any other token.
    """
    try:
        encoded = [_encode_arg(arg.item() if isinstance(arg, np.generic) else arg) for arg in args]
        head = _osc_string(address) + _osc_string("," + "".join(tag for tag, _ in encoded))
    except ValueError as error:  # UnicodeEncodeError included
        raise ValueError(f"cannot encode {address}: {error}") from None
    return head + b"".join(data for _, data in encoded)


def _encode_arg(arg: Any) -> tuple[str, bytes]:
    """One argument's type tag and bytes."""
    if arg is None or isinstance(arg, bool):
        return {None: "N", True: "T", False: "F"}[arg], b""
    if isinstance(arg, str):
        return "s", _osc_string(arg)
    if isinstance(arg, bytes):
        return "b", struct.pack(">i", len(arg)) + arg + b"\x00" * (-len(arg) % 4)
    if isinstance(arg, int) and -(2**63) <= arg < 2**63:
        return ("i", struct.pack(">i", arg)) if -(2**31) <= arg < 2**31 else ("h", struct.pack(">q", arg))
    if isinstance(arg, float):
        if abs(arg) <= FLOAT32_MAX or not math.isfinite(arg):
            return "f", struct.pack(">f", arg)
        return "d", struct.pack(">d", arg)
    raise ValueError(f"{arg!r} is not an OSC argument")


def fail(address: str, message: str) -> bytes:
    """``/fail address message``, the answer to anything rejected."""
    return encode_message("/fail", address, message)


def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return raw + b"\x00" * (4 - len(raw) % 4)


def encode_audio(address: str, seq: int, samples: np.ndarray, encoding: str) -> bytes:
    """``address seq samples`` as a float list or one float32-LE blob.

    Built by hand: OscMessageBuilder concatenates bytes argument by argument, which takes
    ~17 ms for 8192 floats; numpy does it in microseconds.
    """
    data = np.ascontiguousarray(samples, dtype=np.float32)
    head = _osc_string(address)
    if encoding == "blob":
        payload = data.astype("<f4").tobytes()
        pad = b"\x00" * (-len(payload) % 4)
        return head + _osc_string(",ib") + struct.pack(">ii", seq, len(payload)) + payload + pad
    return head + _osc_string(",i" + "f" * data.size) + struct.pack(">i", seq) + data.astype(">f4").tobytes()


def content_packet_size(samples: int, address: str = "/content") -> int:
    """Bytes of ``address seq f f f …`` carrying ``samples`` floats (the largest encoding)."""
    return len(_osc_string(address)) + len(_osc_string(",i" + "f" * samples)) + 4 + 4 * samples


def max_udp_samples() -> int:
    """The most samples a ``/content`` float list can carry in one UDP datagram (13 097)."""
    n = (MAX_UDP_PAYLOAD - 24) // 5
    while content_packet_size(n + 1) <= MAX_UDP_PAYLOAD:
        n += 1
    while content_packet_size(n) > MAX_UDP_PAYLOAD:
        n -= 1
    return n
