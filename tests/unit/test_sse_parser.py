"""The incremental SSE parser: fields, comments, line ends, dispatch, and bytes split anywhere."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_gateway.providers.sse import ServerSentEvent, SSEParser

STREAM = (
    ": a comment the parser skips\n"
    "event: message_start\n"
    'data: {"type":"message_start"}\n'
    "\n"
    "data: first line\n"
    "data:second line without the space\n"
    "id: 7\n"
    "retry: 1000\n"
    "\n"
    "event: only-a-name\n"
    "\n"
    "data: café ☕ 😀\n"
    "\n"
    "data\n"
    "\n"
    "data: [DONE]\n"
    "\n"
)
EXPECTED = [
    ServerSentEvent("message_start", '{"type":"message_start"}'),
    ServerSentEvent("message", "first line\nsecond line without the space"),
    ServerSentEvent("message", "café ☕ 😀"),
    ServerSentEvent("message", ""),
    ServerSentEvent("message", "[DONE]"),
]


def parse_in_pieces(raw: bytes, cuts: list[int]) -> tuple[list[ServerSentEvent], SSEParser]:
    parser = SSEParser()
    events: list[ServerSentEvent] = []
    last = 0
    for cut in sorted(set(cuts)):
        events += parser.feed(raw[last:cut])
        last = cut
    events += parser.feed(raw[last:])
    return events, parser


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_every_line_end_gives_the_same_events(newline):
    raw = STREAM.replace("\n", newline).encode()
    events, parser = parse_in_pieces(raw, [])
    assert events == EXPECTED
    assert not parser.pending


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_one_byte_at_a_time(newline):
    raw = STREAM.replace("\n", newline).encode()
    events, _ = parse_in_pieces(raw, list(range(len(raw))))
    assert events == EXPECTED


@given(
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=len(STREAM.encode("utf-8")) * 2), max_size=40),
)
def test_any_split_of_the_bytes_gives_the_same_events(newline, cuts):
    raw = STREAM.replace("\n", newline).encode()
    events, _ = parse_in_pieces(raw, [c for c in cuts if c <= len(raw)])
    assert events == EXPECTED


def test_a_crlf_split_between_chunks_is_one_line_end():
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    # the LF completes the first CRLF, the CR is the blank line that dispatches...
    assert parser.feed(b"\n\r") == [ServerSentEvent("message", "a")]
    # ...and the LF after it completes that CRLF: no second blank line
    assert parser.feed(b"\ndata: b\r\n\r\n") == [ServerSentEvent("message", "b")]


def test_an_unfinished_event_is_pending_and_not_dispatched():
    parser = SSEParser()
    assert parser.feed(b'data: {"half": ') == []
    assert parser.pending
    assert parser.feed(b"1}\n") == []
    assert parser.pending  # the data line ended, the event did not
    assert parser.feed(b"\n") == [ServerSentEvent("message", '{"half": 1}')]
    assert not parser.pending


def test_a_byte_order_mark_opens_the_stream_and_bad_utf8_raises():
    assert SSEParser().feed("\ufeffdata: x\n\n".encode()) == [ServerSentEvent("message", "x")]
    with pytest.raises(UnicodeDecodeError):
        SSEParser().feed(b"data: \xff\xfe\n\n")
