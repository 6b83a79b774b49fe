"""OSC for the client: requests encoded as the server's protocol module encodes (torch-free, shared),
replies decoded with python-osc, audio as a blob or a float list."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from gramophone.osc.protocol import encode_audio, encode_message, max_udp_samples
from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage

Encoding = Literal["blob", "floats"]

#: The largest float list that fits one UDP datagram: the server's own limit.
MAX_UDP_FLOATS = max_udp_samples()


def build(address: str, args: Sequence[Any] = ()) -> bytes:
    """One OSC message, encoded as the server encodes its own (``gramophone.osc.protocol``)."""
    return encode_message(address, *args)


def build_audio(address: str, seq: int, samples: np.ndarray, encoding: Encoding) -> bytes:
    """``address seq samples``: one little-endian float32 blob, or a flat list of floats."""
    return encode_audio(address, seq, np.ascontiguousarray(samples, dtype=np.float32).reshape(-1), encoding)


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
