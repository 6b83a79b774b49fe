"""TCP framing for OSC: 1.1 SLIP and 1.0 length prefix, told apart by the first byte.

One port serves both.  A length-prefixed stream starts with the high byte of a 32-bit
big-endian size, which is 0 for any packet under 16 MiB; a SLIP stream starts with END
(0xC0) or, when the sender omits the leading END, with the packet itself ('/' or '#').
python-osc has ``slip.encode``/``slip.decode`` for single frames but no incremental
stream decoder, so the buffering is written here.
"""

from __future__ import annotations

import struct

from pythonosc import slip

MAX_TCP_PACKET = 8 * 1024 * 1024


class FramingError(ValueError):
    """The byte stream cannot be split into packets; the connection must close.

    ``packets`` are the whole packets that came before the fault in the same ``feed``: the
    client sent them first, so they are handled however TCP happened to cut the stream.
    """

    def __init__(self, message: str, packets: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.packets = packets or []


class SlipDecoder:
    """OSC 1.1: packets between END bytes, with ESC sequences."""

    name = "slip"

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets: list[bytes] = []
        if slip.END in data:  # else mid-frame: skip re-splitting the whole buffer
            *frames, rest = bytes(self._buffer).split(slip.END)
            self._buffer = bytearray(rest)
            for frame in frames:
                if frame:
                    packets.append(_slip_frame(frame, packets))
        if len(self._buffer) > MAX_TCP_PACKET:
            raise FramingError(f"SLIP frame larger than {MAX_TCP_PACKET} bytes", packets)
        return packets

    @staticmethod
    def encode(packet: bytes) -> bytes:
        return slip.encode(packet)


def _slip_frame(frame: bytes, before: list[bytes]) -> bytes:
    """One SLIP frame decoded; ``before`` are the packets to hand on with an error."""
    if len(frame) > MAX_TCP_PACKET:
        raise FramingError(f"SLIP frame larger than {MAX_TCP_PACKET} bytes", before)
    try:
        return slip.decode(frame)
    except slip.ProtocolError:
        raise FramingError("invalid SLIP escape sequence", before) from None


class LengthDecoder:
    """OSC 1.0: each packet preceded by its size as a big-endian int32 (liblo, scsynth)."""

    name = "length"

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        packets = []
        while len(self._buffer) >= 4:
            (size,) = struct.unpack_from(">I", self._buffer)
            if size > MAX_TCP_PACKET:
                raise FramingError(f"length prefix {size} exceeds {MAX_TCP_PACKET} bytes", packets)
            if len(self._buffer) < 4 + size:
                break
            packets.append(bytes(self._buffer[4 : 4 + size]))
            del self._buffer[: 4 + size]
        return packets

    @staticmethod
    def encode(packet: bytes) -> bytes:
        return struct.pack(">I", len(packet)) + packet


def sniff(first_byte: int) -> SlipDecoder | LengthDecoder:
    """The decoder for a stream whose first byte is ``first_byte``."""
    if first_byte == 0:
        return LengthDecoder()
    if first_byte in (slip.END[0], ord("/"), ord("#")):
        return SlipDecoder()
    raise FramingError(f"stream starts with byte 0x{first_byte:02x}: neither SLIP nor a length prefix")


def feed_all(decoder: SlipDecoder | LengthDecoder, pieces: list[bytes]) -> tuple[list[bytes], str | None]:
    """Every packet out of ``pieces`` fed in order, and the framing fault that ended the stream, if any.

    The packets before a fault are kept: the client sent them first.
    """
    packets: list[bytes] = []
    for piece in pieces:
        try:
            packets += decoder.feed(piece)
        except FramingError as error:
            return packets + error.packets, str(error)
    return packets, None
