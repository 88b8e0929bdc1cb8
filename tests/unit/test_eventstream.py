"""The gateway's eventstream decoder, checked against botocore's own parser on the same bytes.

Frames come from the simulator's encoder (written apart from the decoder) and from a small encoder here
for the header types Bedrock does not send; botocore's ``EventStreamBuffer`` must read each of them
the same way, which shows both sides speak the real format.
"""

from __future__ import annotations

import random
import struct
import uuid
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer

from llm_gateway.providers.eventstream import EventStreamDecoder, EventStreamError, EventStreamMessage
from local.simulator.bedrock_stream import converse_frames, fault_frame
from local.simulator.eventstream_wire import event_frame, exception_frame, frame, with_bad_checksum

ANSWER = {
    "output": {
        "message": {
            "role": "assistant",
            "content": [
                {"text": "Bonjour, ça va? Ünïcödé text 🚀 in a few pieces."},
                {"toolUse": {"toolUseId": "tooluse_abc", "name": "get_weather", "input": {"city": "Zürich"}}},
            ],
        }
    },
    "stopReason": "tool_use",
    "usage": {"inputTokens": 12, "outputTokens": 34, "totalTokens": 46},
    "metrics": {"latencyMs": 5},
}


def stream_bytes() -> bytes:
    return b"".join(converse_frames(ANSWER)) + exception_frame("throttlingException", "slow down")


def botocore_reads(data: bytes) -> list[tuple[dict[str, object], bytes]]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return [(dict(message.headers), message.payload) for message in buffer]


def ours(messages: list[EventStreamMessage]) -> list[tuple[dict[str, object], bytes]]:
    return [(dict(m.headers), m.payload) for m in messages]


def test_whole_stream_decodes_as_botocore_decodes_it():
    data = stream_bytes()
    decoded = EventStreamDecoder().feed(data)
    assert ours(decoded) == botocore_reads(data)
    assert [m.header(":event-type") for m in decoded[:2]] == ["messageStart", "contentBlockDelta"]
    assert decoded[-1].header(":message-type") == "exception"
    assert decoded[-1].header(":exception-type") == "throttlingException"


def test_every_split_point_gives_the_same_messages():
    data = stream_bytes()
    whole = ours(EventStreamDecoder().feed(data))
    for cut in range(1, len(data)):
        decoder = EventStreamDecoder()
        got = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert ours(got) == whole, cut
        assert not decoder.pending


def test_random_chunking_and_byte_by_byte():
    data = stream_bytes()
    whole = ours(EventStreamDecoder().feed(data))
    rng = random.Random(14)
    for _ in range(50):
        decoder = EventStreamDecoder()
        got: list[EventStreamMessage] = []
        position = 0
        while position < len(data):
            size = rng.randint(1, 40)
            got += decoder.feed(data[position : position + size])
            position += size
        assert ours(got) == whole
    decoder = EventStreamDecoder()
    one_by_one = [m for i in range(len(data)) for m in decoder.feed(data[i : i + 1])]
    assert ours(one_by_one) == whole


def test_a_partial_frame_is_pending_until_it_completes():
    data = event_frame("messageStop", {"stopReason": "end_turn"})
    decoder = EventStreamDecoder()
    assert decoder.feed(data[:-1]) == []
    assert decoder.pending
    (message,) = decoder.feed(data[-1:])
    assert message.payload == b'{"stopReason":"end_turn"}'
    assert not decoder.pending


def _typed_header(name: str, kind: int, value: bytes) -> bytes:
    return struct.pack("!B", len(name)) + name.encode() + struct.pack("!B", kind) + value


def _typed_frame(headers: bytes, payload: bytes) -> bytes:
    prelude = struct.pack("!II", 16 + len(headers) + len(payload), len(headers))
    head = prelude + struct.pack("!I", zlib.crc32(prelude)) + headers + payload
    return head + struct.pack("!I", zlib.crc32(head))


def test_every_header_type_reads_as_botocore_reads_it():
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = b"".join(
        [
            _typed_header("yes", 0, b""),
            _typed_header("no", 1, b""),
            _typed_header("i8", 2, struct.pack("!b", -5)),
            _typed_header("i16", 3, struct.pack("!h", -300)),
            _typed_header("i32", 4, struct.pack("!i", 70000)),
            _typed_header("i64", 5, struct.pack("!q", -(2**40))),
            _typed_header("bytes", 6, struct.pack("!H", 3) + b"\x00\x01\x02"),
            _typed_header("text", 7, struct.pack("!H", 5) + "héllo".encode()[:5]),
            _typed_header("when", 8, struct.pack("!q", 1_700_000_000_000)),
            _typed_header("id", 9, ident.bytes),
        ]
    )
    data = _typed_frame(headers, b"payload")
    (message,) = EventStreamDecoder().feed(data)
    ((theirs, payload),) = botocore_reads(data)
    assert message.payload == payload == b"payload"
    normalized = {k: v.bytes if isinstance(v, uuid.UUID) else v for k, v in message.headers.items()}
    assert normalized == theirs
    assert message.headers["yes"] is True and message.headers["no"] is False
    assert message.headers["i64"] == -(2**40) and message.headers["id"] == ident
    assert message.header("text") == "héll" and message.header("i8") == ""


def test_a_bad_message_checksum_is_refused():
    data = with_bad_checksum(event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "x"}}))
    with pytest.raises(EventStreamError, match="message checksum"):
        EventStreamDecoder().feed(data)
    with pytest.raises(EventStreamError, match="message checksum"):
        EventStreamDecoder().feed(fault_frame("stream_malformed"))


def test_a_bad_prelude_checksum_is_refused_before_waiting_for_the_body():
    data = bytearray(event_frame("messageStart", {"role": "assistant"}))
    data[3] ^= 0x01  # the total length no longer matches the prelude CRC
    decoder = EventStreamDecoder()
    with pytest.raises(EventStreamError, match="prelude checksum"):
        decoder.feed(bytes(data[:12]))  # the prelude alone is enough to know


@pytest.mark.parametrize(
    ("total", "headers_length"),
    [(15, 0), (20, 8), (16 + 200 * 1024, 200 * 1024), (16 + 25 * 1024 * 1024, 0)],
)
def test_impossible_lengths_are_refused(total, headers_length):
    prelude = struct.pack("!II", total, headers_length)
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(prelude + struct.pack("!I", zlib.crc32(prelude)))


@pytest.mark.parametrize(
    "headers",
    [
        _typed_header("odd", 10, b""),  # no such type
        _typed_header("text", 7, struct.pack("!H", 50) + b"short"),  # value cut short
        _typed_header("dup", 0, b"") + _typed_header("dup", 1, b""),  # a name twice
        _typed_header("bad", 7, struct.pack("!H", 2) + b"\xff\xfe"),  # not UTF-8
        b"\x05ab",  # a name cut short
    ],
)
def test_malformed_headers_are_refused(headers):
    with pytest.raises(EventStreamError):
        EventStreamDecoder().feed(_typed_frame(headers, b"{}"))


def test_simulator_frames_carry_string_headers_only():
    data = frame({":event-type": "metadata", ":message-type": "event"}, b"{}")
    (message,) = EventStreamDecoder().feed(data)
    assert message.headers == {":event-type": "metadata", ":message-type": "event"}
    assert botocore_reads(data) == [(message.headers, b"{}")]
