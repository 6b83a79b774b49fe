"""Bad input, property-based: mutated and nested packets through ``decode``, byte streams
through the TCP framings, and a few hundred mutated packets against a real server.

tests/test_protocol.py already feeds random bytes and random arguments to ``decode``; here the
inputs start from a valid message for every address and are damaged (bit flips, truncations,
splices, lying sizes), which reaches deeper than random bytes do.  ``python -m bench.fuzz`` is
the same at scale (10^5 packets, atheris).
"""

from __future__ import annotations

import math
import queue
import random
import socket
import struct
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from serverutil import OscClient, running_server

from gramophone.osc.framing import MAX_TCP_PACKET, FramingError, LengthDecoder, SlipDecoder, feed_all, sniff
from gramophone.osc.protocol import (
    BUNDLE_PREFIX,
    FLOAT32_MAX,
    MAX_BUNDLE_DEPTH,
    PARAM_PREFIX,
    SIGNATURES,
    Command,
    ProtocolError,
    decode,
    encode_message,
    fail,
)
from gramophone.osc.transport import UdpTransport

# One valid message per address of docs/protocol.md (and a parameter set and get).
VALID = {
    "/connect": (48000, 1, 256), "/disconnect": (), "/mode": ("live",), "/content": (3, *[0.25] * 16),
    "/flush": (), "/reset": (), "/params": (), "/style/load": ("x", "x.wav"), "/style/record/start": ("x",),
    "/style/audio": (0, b"\x00" * 64), "/style/record/stop": (), "/style/select": ("voice",),
    "/style/mix": ("voice", 1.0, "whisper", 0.5), "/style/list": (), "/style/delete": ("no-such-style",),
    "/status": (), "/ping": ("token",), "/sync": (7,), "/notify": (0,), "/version": (), "/log": ("info", "hello"),
    "/param/wet": (0.5,), "/param/iterations": (),
}
OPS = ("flip", "truncate", "insert", "delete", "splice", "word")
WORDS = (0, 1, 3, 4, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFC, 0xFFFFFFFF, 0x00800001)  # sizes that lie


def build(address: str, *args) -> bytes:
    builder = OscMessageBuilder(address)
    for arg in args:
        builder.add_arg(arg)
    return builder.build().dgram


CORPUS = [build(address, *args) for address, args in VALID.items()]


def mutate(packet: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    """Apply ``(op, position, value)`` edits; ``splice`` joins the tail of another valid message."""
    data = bytearray(packet)
    for op, position, value in ops:
        at = position % (len(data) + 1)
        if op == "flip" and data:
            data[at % len(data)] ^= 1 << (value % 8)
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = bytes([value % 256])
        elif op == "delete":
            del data[at : at + 1 + value % 4]
        elif op == "splice":
            other = CORPUS[value % len(CORPUS)]
            data[at:] = other[position % len(other) :]
        elif op == "word":
            data[at & ~3 : (at & ~3) + 4] = struct.pack(">I", WORDS[value % len(WORDS)])
    return bytes(data)


def bundle(*elements: bytes) -> bytes:
    return BUNDLE_PREFIX + b"\x00" * 7 + b"\x01" + b"".join(struct.pack(">i", len(e)) + e for e in elements)


mutations = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 4095), st.integers(0, 2**32 - 1)),
                     min_size=1, max_size=4)
mutated_packets = st.builds(mutate, st.sampled_from(CORPUS), mutations)


def check_item(item: Command | ProtocolError) -> None:
    """What the server does with an item must work: a /fail that encodes, on one line."""
    assert isinstance(item, (Command, ProtocolError))
    if isinstance(item, ProtocolError):
        assert "\n" not in item.message
        fail(item.address, item.message)


def test_the_corpus_covers_every_address():
    assert {a for a in VALID if not a.startswith(PARAM_PREFIX)} == set(SIGNATURES)
    assert all(isinstance(item, Command) for packet in CORPUS for item in decode(packet))


@settings(max_examples=300, deadline=None)
@given(mutated_packets)
def test_a_mutated_message_decodes_to_exactly_one_item(data):
    items = decode(data)
    for item in items:
        check_item(item)
    if not data.startswith(BUNDLE_PREFIX):
        assert len(items) == 1


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["/ping", "/sync"]), st.one_of(
    st.binary(max_size=9), st.integers(-(2**63), 2**63 - 1), st.floats(width=64), st.booleans(), st.none(),
    st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=9)))
def test_every_token_is_echoed_in_kind(address, token):
    """/ping and /sync echo any token: the reply must encode, e.g. an empty blob or 1e300."""
    (cmd,) = decode(encode_message(address, token))
    (echo,) = OscMessage(encode_message("/pong", *cmd.values)).params
    if isinstance(token, float) and abs(token) <= FLOAT32_MAX:
        assert echo == float(np.float32(token))
    elif isinstance(token, float) and math.isnan(token):
        assert math.isnan(echo)
    else:
        assert echo == token and type(echo) is type(token)


def test_a_negative_blob_size_is_malformed_not_an_empty_blob():
    # python-osc reads size -4 as an empty blob and steps back over it: /ping echoed b"" before
    data = build("/ping", b"abcd")
    data = data[:12] + struct.pack(">i", -4) + data[16:]
    (item,) = decode(data)
    assert isinstance(item, ProtocolError) and item.address == "/ping" and "blob size -4" in item.message


def test_a_double_beyond_float32_in_audio_is_refused_without_a_warning():
    data = encode_message("/content", 0, 0.5, 1e300)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's overflow warning would land in the server's log
        (item,) = decode(data)
    assert isinstance(item, ProtocolError) and "NaN or Inf" in item.message


@st.composite
def bundle_trees(draw, depth: int = 0) -> tuple[list[bytes], list[int]]:
    """A bundle's elements (messages, valid or mutated, and nested bundles) and the messages in each."""
    elements, counts = [], []
    for _ in range(draw(st.integers(0, 4))):
        if depth < 3 and draw(st.booleans()):
            inner, inner_counts = draw(bundle_trees(depth + 1))
            elements.append(bundle(*inner))
            counts.append(sum(inner_counts))
        else:
            elements.append(draw(st.one_of(st.sampled_from(CORPUS), mutated_packets.filter(lambda p: p[:1] == b"/"))))
            counts.append(1)
    return elements, counts


@settings(max_examples=100, deadline=None)
@given(bundle_trees())
def test_a_bundle_yields_one_item_per_message(tree):
    elements, counts = tree
    items = decode(bundle(*elements))
    assert len(items) == sum(counts)
    for item in items:
        check_item(item)


@settings(max_examples=100, deadline=None)
@given(bundle_trees().filter(lambda tree: tree[0]), st.integers(0, 15), st.sampled_from([-4, -1, 1, 2**31 - 1]))
def test_an_element_size_that_overruns_fails_once_and_ends_the_bundle(tree, index, lie):
    """Elements before the lying one still run; the lie is one error; nothing after it is read."""
    elements, counts = tree
    index %= len(elements)
    data = bundle(*elements)
    at = 16 + sum(4 + len(e) for e in elements[:index])
    size = lie if lie < 0 or lie > 1 else len(data) - at - 4 + lie  # one byte past the packet
    items = decode(data[:at] + struct.pack(">i", size) + data[at + 4 :])
    assert len(items) == sum(counts[:index]) + 1
    assert isinstance(items[-1], ProtocolError) and "overruns" in items[-1].message


@settings(max_examples=150, deadline=None)
@given(bundle_trees(), st.integers(0, 2**16), st.sampled_from(WORDS))
def test_a_lie_anywhere_in_a_bundle_yields_at_most_one_item_per_four_bytes(tree, position, word):
    """Each element, even an empty one, costs its 4-byte size (a truncated size ends the bundle), so
    the replies to a packet stay bounded by its length."""
    data = bundle(*tree[0])
    at = (16 + position % max(1, len(data) - 16)) & ~3
    items = decode(data[:at] + struct.pack(">I", word) + data[at + 4 :])
    assert len(items) <= max(1, -(-(len(data) - 16) // 4))
    for item in items:
        check_item(item)


@pytest.mark.parametrize("depth", [1, MAX_BUNDLE_DEPTH, MAX_BUNDLE_DEPTH + 1, 200])
def test_bundles_nest_up_to_the_limit_and_fail_once_beyond(depth):
    data = build("/status")
    for _ in range(depth):
        data = bundle(data)
    (item,) = decode(data)
    if depth <= MAX_BUNDLE_DEPTH:
        assert isinstance(item, Command) and item.address == "/status"
    else:
        assert isinstance(item, ProtocolError) and "nested deeper" in item.message


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in zip(edges, edges[1:])]


streams = st.lists(st.one_of(st.binary(max_size=40), mutated_packets, st.sampled_from(
    [b"\xc0", b"\xdb", b"\xdb\xdc", b"\xdb\xdd", b"\xdb\x00", b"\x00\x00\x00\x08", b"\xff\xff\xff\xff"]))).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(streams, st.lists(st.integers(0, 2**16), max_size=8), st.sampled_from([SlipDecoder, LengthDecoder]))
def test_framing_is_the_same_however_tcp_cuts_the_stream(data, points, decoder):
    """Only FramingError escapes, and the packets before it do not depend on the cut."""
    assert feed_all(decoder(), cut(data, points)) == feed_all(decoder(), [data])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=64), mutated_packets), max_size=8),
       st.lists(st.integers(0, 2**16), max_size=8), st.sampled_from([SlipDecoder, LengthDecoder]))
def test_framed_packets_come_back_whole_however_cut(packets, points, decoder):
    stream = b"".join(decoder.encode(p) for p in packets)
    expected = [p for p in packets if p or decoder is LengthDecoder]  # SLIP has no empty frame
    assert feed_all(sniff(stream[0]) if stream else decoder(), cut(stream, points)) == (expected, None)


@pytest.mark.parametrize("fault", [b"\xc0/a\xdbx\xc0", b"\x00\xff\xff\xff"])
def test_packets_before_a_fault_in_the_same_read_are_kept(fault):
    decoder = SlipDecoder if fault[:1] == b"\xc0" else LengthDecoder
    ping = build("/ping", 1)
    with pytest.raises(FramingError) as caught:
        decoder().feed(decoder.encode(ping) * 2 + fault)
    assert caught.value.packets == [ping, ping]


def test_a_slip_frame_over_the_limit_is_refused_even_when_it_ends_in_the_same_read():
    decoder = SlipDecoder()
    decoder.feed(b"\xc0" + b"a" * MAX_TCP_PACKET)
    with pytest.raises(FramingError, match="larger than"):
        decoder.feed(b"aaaa\xc0")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_udp_transport_drops_datagrams_from_its_own_socket(host):
    """Else a reply aimed at the server's own port is answered to itself, for ever."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    got: queue.Queue[bytes] = queue.Queue()
    transport = UdpTransport(sock, lambda addr, data, arrival: got.put(data))
    transport.start()
    try:
        target = ("127.0.0.1", sock.getsockname()[1])
        sock.sendto(b"/self", target)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.sendto(b"/other", target)
        assert got.get(timeout=5) == b"/other"
    finally:
        transport.stop_receiving()
        transport.close()


def fails_until_synced(osc: OscClient) -> int:
    """/fail replies before our /synced (a mutated packet may have been a /sync of its own)."""
    osc.send("/sync", "end of the batch")
    fails = 0
    while (msg := osc.receive(10)) is not None and (msg.address, msg.params) != ("/synced", ["end of the batch"]):
        fails += msg.address == "/fail"
    assert msg is not None, "no /synced"
    return fails


def tcp_garbage(srv, framing: str, frames: list[bytes], fault: bytes) -> tuple[int, list[str]]:
    """Frames then a framing fault in one write: the /fail count, and the messages of `/fail ?`."""
    with OscClient(srv.host, srv.tcp_port, transport="tcp", framing=framing) as osc:
        osc.sock.sendall(b"".join(osc.framer.encode(f) for f in frames) + fault)
        replies = []
        while (msg := osc.receive(10)) is not None:
            replies.append(msg)
        assert osc.sock.recv(1) == b""  # closed by the server
    closing = [m.params[1] for m in replies if m.address == "/fail" and "closing the connection" in m.params[1]]
    return sum(m.address == "/fail" for m in replies) - len(closing), closing


def is_redirect(packet: bytes) -> bool:
    """A /connect with a reply_port would aim replies at some other process on this machine."""
    return any(isinstance(i, Command) and i.address == "/connect" and len(i.values) >= 4 and i.values[3] != 0
               for i in decode(packet))


def test_mutated_packets_leave_a_real_server_answering(tmp_path):
    rng = random.Random(6)

    def packets(count: int) -> list[bytes]:
        out = []
        while len(out) < count:
            ops = [(rng.choice(OPS), rng.randrange(4096), rng.randrange(2**32)) for _ in range(rng.randint(1, 4))]
            packet = mutate(rng.choice(CORPUS), ops)
            if not is_redirect(packet):
                out.append(packet)
        return out

    with running_server(tmp_path) as srv:
        with OscClient(srv.host, srv.port) as pinger:
            for _ in range(2):  # UDP senders: every packet rejected on decoding gets one /fail, none more
                with OscClient(srv.host, srv.port) as osc:
                    batch = packets(150)
                    for index, packet in enumerate(batch):
                        osc.send_raw(packet)
                        if index % 50 == 0:
                            assert pinger.request("/ping", index, reply="/pong").params == [index]
                    refused = sum(isinstance(i, ProtocolError) for p in batch for i in decode(p))
                    assert refused <= fails_until_synced(osc) <= len(batch)
            for framing, fault in (("slip", b"\xc0/x\xdb\x01\xc0"), ("length", b"\x00\xff\xff\xff")):
                batch = packets(40)
                refused = sum(isinstance(i, ProtocolError) for p in batch for i in decode(p))
                fails, closing = tcp_garbage(srv, framing, batch, fault)
                assert refused <= fails <= len(batch) and len(closing) == 1
            with OscClient(srv.host, srv.port) as osc:  # replies aimed at the server's own port
                osc.send("/connect", 48000, 1, 256, srv.port)
                time.sleep(0.5)
            assert pinger.request("/ping", "end", reply="/pong").params == ["end"]
        assert srv.proc.poll() is None
        assert f"fail udp 127.0.0.1:{srv.port} " not in srv.log_text()  # never a sender to itself
        assert "internal error" not in srv.log_text()
        assert srv.stop() == 0
