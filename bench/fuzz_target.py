"""The atheris target of ``python -m bench.fuzz``: ``decode`` and the TCP framings, in-process.

Run by bench/fuzz.py in a subprocess (``atheris.Fuzz`` ends the process), with libFuzzer's own
flags, e.g. ``python -m bench.fuzz_target -runs=100000 -timeout=10 CORPUS_DIR``.  The property
checked for every input: nothing but the documented errors escapes (``decode`` returns
``ProtocolError`` items, the framings raise ``FramingError``), a packet that is not a bundle
decodes to exactly one item, every error makes a ``/fail`` on one line, a ``/ping`` or ``/sync``
token can be echoed, and a byte stream splits into the same packets however it is cut.
Anything else is a crash: libFuzzer prints the traceback and writes the input to
``-artifact_prefix``; ``-timeout`` catches a hang.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["gramophone", "pythonosc"]):
    from gramophone.osc.framing import FramingError, LengthDecoder, SlipDecoder, feed_all, sniff
    from gramophone.osc.protocol import BUNDLE_PREFIX, Command, ProtocolError, decode, encode_message, fail


def check_packet(data: bytes) -> None:
    """``decode`` as the receiving thread runs it, and the replies it must be able to build:
    the /fail of each error, and the echo of a /ping or /sync token."""
    items = decode(data)
    if not data.startswith(BUNDLE_PREFIX) and len(items) != 1:
        raise AssertionError(f"{len(items)} items from one message")
    for item in items:
        if isinstance(item, ProtocolError):
            if "\n" in item.message:
                raise AssertionError(f"a /fail on more than one line: {item.message!r}")
            fail(item.address, item.message)
        elif not isinstance(item, Command):
            raise AssertionError(f"decode returned {item!r}")
        elif item.address in ("/ping", "/sync"):
            encode_message("/pong", *item.values)


def check_stream(data: bytes, cut_every: int) -> None:
    """Both framings, whole and cut every ``cut_every`` bytes, agree; what ``sniff`` picks decodes."""
    for framing in (SlipDecoder, LengthDecoder):
        whole = feed_all(framing(), [data])
        pieces = feed_all(framing(), [data[i : i + cut_every] for i in range(0, len(data), cut_every)])
        if whole != pieces:
            raise AssertionError(f"{framing.__name__}: {whole} whole, {pieces} cut every {cut_every}")
    if data:
        try:
            decoder = sniff(data[0])
        except FramingError:
            return
        for packet in feed_all(decoder, [data])[0]:
            check_packet(packet)


def test_one_input(data: bytes) -> None:
    """The first byte picks the cut of the stream; the rest is the packet and the stream."""
    if not data:
        return
    check_packet(data[1:])
    check_stream(data[1:], 1 + data[0] % 64)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
