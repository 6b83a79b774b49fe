"""OSC encoding and decoding with python-osc: argument typing, audio as a blob or float list, SLIP."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from pythonosc import slip
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

Encoding = Literal["blob", "floats"]

#: The largest float list that fits one UDP datagram (65 500 bytes at 5 bytes a sample).
MAX_UDP_FLOATS = 13_000


def build(address: str, args: Sequence[Any] = ()) -> bytes:
    """One OSC message; ints go as ``i``, floats as ``f``, str as ``s``, bytes as ``b``."""
    builder = OscMessageBuilder(address)
    for arg in args:
        if isinstance(arg, (bool, np.bool_)):
            builder.add_arg(int(arg), "i")
        elif isinstance(arg, (int, np.integer)):
            builder.add_arg(int(arg), "i")
        elif isinstance(arg, (float, np.floating)):
            builder.add_arg(float(arg), "f")
        else:
            builder.add_arg(arg)
    return builder.build().dgram


def build_audio(address: str, seq: int, samples: np.ndarray, encoding: Encoding) -> bytes:
    """``address seq samples``: one little-endian float32 blob, or a flat list of floats."""
    flat = np.ascontiguousarray(samples, dtype="<f4").reshape(-1)
    builder = OscMessageBuilder(address)
    builder.add_arg(int(seq), "i")
    if encoding == "blob":
        builder.add_arg(flat.tobytes(), "b")
    else:
        for value in flat.tolist():
            builder.add_arg(value, "f")
    return builder.build().dgram


def audio_of(params: Sequence[Any]) -> np.ndarray:
    """The samples of an ``/audio seq samples`` reply, whichever encoding it came in."""
    if len(params) == 1 and isinstance(params[0], bytes):
        return np.frombuffer(params[0], dtype="<f4").astype(np.float32)
    return np.asarray(params, dtype=np.float32)


def messages(dgram: bytes) -> Iterator[OscMessage]:
    """Every message in a packet, bundles flattened (time tags are ignored: replies are immediate)."""
    if OscBundle.dgram_is_bundle(dgram):
        for item in OscBundle(dgram):
            yield from messages(item.dgram)
    else:
        yield OscMessage(dgram)


class SlipDecoder:
    """Splits a TCP byte stream into OSC packets framed by SLIP (OSC 1.1)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the packets they completed."""
        self._buffer += data
        *frames, self._buffer = self._buffer.split(slip.END)
        return [slip.decode(slip.END + frame + slip.END) for frame in frames if frame]
