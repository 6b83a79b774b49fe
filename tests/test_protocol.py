"""The torch-free protocol layer and TCP framing: decoding, validation, coercion, encoding."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from gramophone.osc.framing import FramingError, LengthDecoder, SlipDecoder, sniff
from gramophone.osc.protocol import (
    MAX_UDP_PAYLOAD,
    Command,
    ProtocolError,
    content_packet_size,
    decode,
    encode_audio,
    encode_message,
    fail,
    max_udp_samples,
    parse_message,
)


def build(address: str, *args, types: str | None = None) -> bytes:
    builder = OscMessageBuilder(address)
    for index, arg in enumerate(args):
        builder.add_arg(arg, types[index] if types else None)
    return builder.build().dgram


def one(data: bytes) -> Command | ProtocolError:
    (item,) = decode(data)
    return item


def raw_message(address: str, tags: str, payload: bytes) -> bytes:
    """A message with type tags python-osc's builder cannot write (``c``, ``S``)."""
    def pad(text: bytes) -> bytes:
        return text + b"\x00" * (4 - len(text) % 4)
    return pad(address.encode()) + pad(("," + tags).encode()) + payload


@pytest.mark.parametrize("tag,value", [("i", 48000), ("f", 48000.0), ("d", 48000.0), ("h", 48000)])
def test_numbers_are_coerced_from_every_numeric_type(tag, value):
    cmd = one(build("/connect", value, 2, 512, types=tag + "ii"))
    assert cmd.values == (48000, 2, 512) and all(type(v) is int for v in cmd.values)


def test_true_false_are_numbers():
    cmd = one(build("/param/bypass", True))
    assert cmd.values == (1.0,)
    assert one(build("/notify", False)).values == (0,)


def test_whole_number_required_for_integer_fields():
    error = one(build("/connect", 48000.5, 2, 512))
    assert isinstance(error, ProtocolError) and "whole number" in error.message


def test_string_where_number_expected_is_refused():
    error = one(build("/connect", "48000", 2, 512))
    assert isinstance(error, ProtocolError) and error.address == "/connect" and "number" in error.message


@pytest.mark.parametrize("args", [(), (48000, 2), (48000, 2, 512, 9000, 9600, 1)])
def test_argument_count_is_checked(args):
    error = one(build("/connect", *args))
    assert isinstance(error, ProtocolError) and "sample_rate channels block_size [reply_port] [max_latency]" in error.message


def test_optional_reply_port_and_max_latency():
    assert one(build("/connect", 48000, 1, 256, 9000)).values == (48000, 1, 256, 9000)
    assert one(build("/connect", 48000, 1, 256, 0, 9600)).values == (48000, 1, 256, 0, 9600)


def test_audio_as_float_list_and_as_blob():
    samples = np.linspace(-1, 1, 64, dtype=np.float32)
    floats = one(build("/content", 7, *map(float, samples)))
    blob = one(build("/content", 7, samples.astype("<f4").tobytes()))
    assert floats.encoding == "floats" and blob.encoding == "blob"
    np.testing.assert_array_equal(floats.values[1], samples)
    np.testing.assert_array_equal(blob.values[1], samples)
    assert blob.values[1].dtype == np.float32


def test_audio_numbers_may_be_ints():
    cmd = one(build("/content", 0, 0, 1, 0.5, types="iiif"))
    np.testing.assert_array_equal(cmd.values[1], [0, 1, 0.5])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_samples_are_refused(bad):
    error = one(build("/content", 0, 0.1, bad, types="iff"))
    assert isinstance(error, ProtocolError) and "NaN or Inf" in error.message


def test_blob_must_hold_whole_floats_and_lists_must_not_mix_strings():
    assert "float32" in one(build("/content", 0, b"\x00" * 6)).message
    assert "numbers or one blob" in one(build("/content", 0, 0.5, "x")).message
    assert "expects seq samples" in one(build("/content", 0)).message


@pytest.mark.parametrize("tags,payload", [("c", b"\x00\x00\x00a"), ("S", b"sym\x00"), ("ic", b"\x00" * 8),
                                          ("I", b""), ("[f]", b"\x00" * 4), ("r", b"\x00" * 4)])
def test_tags_python_osc_misreads_are_refused(tags, payload):
    error = one(raw_message("/ping", tags, payload))
    assert isinstance(error, ProtocolError) and error.address == "/ping" and "unsupported OSC type tag" in error.message


def test_unknown_address_and_parameter():
    assert "unknown address" in one(build("/nope")).message
    error = one(build("/param/volume", 1.0))
    assert "unknown parameter 'volume'" in error.message and "style_weight" in error.message


def test_param_get_and_set():
    assert one(build("/param/wet")).values == ()
    assert one(build("/param/wet", 0.5)).values == (0.5,)
    assert "finite" in one(build("/param/wet", float("nan"))).message


def test_style_mix_takes_pairs():
    assert one(build("/style/mix", "a", 1, "b", 0.5)).values == ("a", 1.0, "b", 0.5)
    assert "name weight" in one(build("/style/mix", "a", 1, "b")).message
    assert "must be a string" in one(build("/style/mix", 1, "a")).message


def test_ping_echoes_any_token_and_sync_needs_an_id():
    assert one(build("/ping")).values == ()
    assert one(build("/ping", "abc")).values == ("abc",)
    assert one(build("/ping", b"\x01")).values == (b"\x01",)
    assert "expects id" in one(build("/sync")).message


def test_bundles_run_each_message_and_fail_each_bad_one():
    bundle = OscBundleBuilder(IMMEDIATELY)
    bundle.add_content(OscMessage(build("/ping", 1)))
    bundle.add_content(OscMessage(build("/nope")))
    inner = OscBundleBuilder(IMMEDIATELY)
    inner.add_content(OscMessage(build("/status")))
    bundle.add_content(inner.build())
    items = decode(bundle.build().dgram)
    assert [type(i).__name__ for i in items] == ["Command", "ProtocolError", "Command"]
    assert items[2].address == "/status"


def test_malformed_packets_fail_with_one_line():
    for data in (b"", b"hello", b"#bundle\x00\x00", b"/ping\x00\x00\x00,i\x00\x00\x00",
                 b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 400) + b"/x\x00\x00", b"/\xff\xfe\x00,\x00\x00\x00"):
        items = decode(data)
        assert items and all(isinstance(i, ProtocolError) and "\n" not in i.message for i in items), data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_decode_never_raises(data):
    for item in decode(data):
        assert isinstance(item, (Command, ProtocolError))


def _python_osc_reading(data: bytes) -> tuple | str:
    """What python-osc itself reads from ``data``: its arguments as bytes-exact tokens, or "refused"."""
    try:
        params = OscMessage(data).params
    except Exception:
        return "refused"
    return tuple(struct.pack(">f", p) if isinstance(p, float) else p for p in params)


@settings(max_examples=400, deadline=None)
@given(st.text("iiiffffTs", max_size=40), st.binary(max_size=200), st.sampled_from([b"", b"\x00\x00"]))
def test_number_lists_read_as_python_osc_reads_them(tags, payload, tail):
    """The fast path for ints-then-floats (``/content`` as Max and Pd send it) reads every value
    python-osc would, NaN bit patterns and truncated data included, and refuses what it refuses."""
    data = raw_message("/content", tags, payload) + tail
    expected = _python_osc_reading(data)
    try:
        message = parse_message(data)
    except ProtocolError:
        assert expected == "refused"
        return
    got = tuple(struct.pack(">f", a) if isinstance(a, float) else a for a in message.args)
    assert got == expected


def test_a_float_list_block_reads_its_samples_exactly():
    samples = np.random.default_rng(3).standard_normal(512).astype(np.float32)
    command = one(encode_audio("/content", 41, samples, "floats"))
    assert command.values[0] == 41 and command.encoding == "floats"
    assert command.values[1].tobytes() == samples.tobytes()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(-2**31, 2**31 - 1), st.floats(width=32, allow_nan=False),
                          # OSC strings end at NUL and are UTF-8, which has no lone surrogates
                          st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=8),
                          st.binary(min_size=1, max_size=8), st.booleans()), max_size=6),
       st.sampled_from(["/connect", "/content", "/param/wet", "/style/mix", "/ping", "/mode", "/style/audio"]))
def test_validate_random_arguments_never_raises(args, address):
    for item in decode(build(address, *args)):
        assert isinstance(item, (Command, ProtocolError))


def test_encode_message_is_flat_and_typed():
    msg = OscMessage(encode_message("/status/reply", 2, 0.5, np.float32(1.5), np.int64(3), "x", True))
    assert msg.params == [2, 0.5, 1.5, 3, "x", True]
    assert OscMessage(fail("/content", "bad block")).params == ["/content", "bad block"]


@pytest.mark.parametrize("encoding", ["floats", "blob"])
def test_encode_audio_round_trips(encoding):
    samples = np.random.default_rng(0).standard_normal(1001).astype(np.float32)
    msg = OscMessage(encode_audio("/audio", 42, samples, encoding))
    assert msg.address == "/audio" and msg.params[0] == 42
    got = np.frombuffer(msg.params[1], "<f4") if encoding == "blob" else np.array(msg.params[1:], np.float32)
    np.testing.assert_array_equal(got, samples)


def test_udp_limit():
    n = max_udp_samples()
    assert content_packet_size(n) <= MAX_UDP_PAYLOAD < content_packet_size(n + 1)
    samples = np.zeros(n, np.float32)
    assert len(encode_audio("/content", 2**31 - 1, samples, "floats")) == content_packet_size(n)
    assert 8192 < n < 16384


def test_slip_stream_decoding_handles_split_and_escaped_frames():
    packets = [build("/ping", 1), build("/content", 0, b"\xc0\xdb\xc0\xdb")]
    stream = b"".join(SlipDecoder.encode(p) for p in packets)
    decoder = sniff(stream[0])
    assert isinstance(decoder, SlipDecoder)
    got = []
    for i in range(0, len(stream), 3):
        got += decoder.feed(stream[i:i + 3])
    assert got == packets


def test_slip_without_leading_end_and_length_prefix():
    packet = build("/ping")
    assert isinstance(sniff(packet[0]), SlipDecoder)
    assert sniff(packet[0]).feed(packet + b"\xc0") == [packet]
    decoder = sniff(0)
    assert isinstance(decoder, LengthDecoder)
    stream = LengthDecoder.encode(packet) * 2
    assert decoder.feed(stream[:5]) == [] and decoder.feed(stream[5:]) == [packet, packet]


def test_bad_streams_raise_framing_errors():
    with pytest.raises(FramingError):
        sniff(0x41)
    with pytest.raises(FramingError):
        LengthDecoder().feed(struct.pack(">I", 1 << 30))
    with pytest.raises(FramingError):
        SlipDecoder().feed(b"\xc0/a\xdbx\xc0")


def test_protocol_doc_lists_every_parameter_with_its_range_and_default():
    """docs/protocol.md is the contract: its parameter table must match params.py."""
    from pathlib import Path

    from gramophone.params import PARAMETERS

    text = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("`") and cells[0].strip("`") in PARAMETERS:
            low, high = cells[1].split(" (")[0].split(" – ")
            rows[cells[0].strip("`")] = (float(low), float(high), float(cells[2]))
    assert rows == {name: (s.minimum, s.maximum, s.default) for name, s in PARAMETERS.items()}
