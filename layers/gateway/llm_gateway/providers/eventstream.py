"""An incremental decoder for ``application/vnd.amazon.eventstream`` (what Bedrock's ConverseStream answers).

A message is a 12-byte prelude (total length, headers length, both big-endian uint32, then the CRC32 of
those 8 bytes), the headers, the payload, and the CRC32 of everything before it. Each header is a
1-byte name length, the name, a 1-byte value type and the value. Bytes go in as they arrive, split
anywhere; whole messages come out once both checksums match. Anything that does not add up raises
``EventStreamError``: the stream cannot be trusted past a bad frame, so there is no resynchronising.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

CONTENT_TYPE = "application/vnd.amazon.eventstream"
PRELUDE_LENGTH = 12
MESSAGE_CRC_LENGTH = 4
MIN_MESSAGE_LENGTH = PRELUDE_LENGTH + MESSAGE_CRC_LENGTH
# The same ceilings as the AWS SDKs: a prelude beyond them is corruption, not a big event.
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024

HeaderValue = bool | int | bytes | str | uuid.UUID


class EventStreamError(ValueError):
    """A frame that is not valid eventstream (bad checksum, impossible length, unknown header type)."""


@dataclass(frozen=True, slots=True)
class EventStreamMessage:
    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str:
        """A string header's value, or "" when it is absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else ""


class EventStreamDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[EventStreamMessage]:
        """The messages completed by ``chunk`` (possibly none, possibly several)."""
        self._buffer += chunk
        messages: list[EventStreamMessage] = []
        while len(self._buffer) >= PRELUDE_LENGTH:
            total, headers_length = _prelude(self._buffer)
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            messages.append(_message(frame, headers_length))
        return messages

    @property
    def pending(self) -> bool:
        """Part of a message was received but not all of it (what an end of stream would cut off)."""
        return bool(self._buffer)


def _prelude(buffer: bytearray) -> tuple[int, int]:
    total, headers_length, crc = struct.unpack_from("!III", buffer, 0)
    if zlib.crc32(buffer[:8]) != crc:
        raise EventStreamError("eventstream prelude checksum mismatch")
    if headers_length > MAX_HEADERS_LENGTH:
        raise EventStreamError(f"eventstream headers length {headers_length} is over the maximum")
    payload_length = total - headers_length - MIN_MESSAGE_LENGTH
    if payload_length < 0 or payload_length > MAX_PAYLOAD_LENGTH:
        raise EventStreamError(f"eventstream lengths do not add up (total {total}, headers {headers_length})")
    return total, headers_length


def _message(frame: bytes, headers_length: int) -> EventStreamMessage:
    (crc,) = struct.unpack_from("!I", frame, len(frame) - MESSAGE_CRC_LENGTH)
    if zlib.crc32(frame[:-MESSAGE_CRC_LENGTH]) != crc:
        raise EventStreamError("eventstream message checksum mismatch")
    headers_end = PRELUDE_LENGTH + headers_length
    headers = _headers(frame[PRELUDE_LENGTH:headers_end])
    return EventStreamMessage(headers, frame[headers_end:-MESSAGE_CRC_LENGTH])


# value type -> fixed width of the value, for the fixed-width types
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
_INTS = {2: "!b", 3: "!h", 4: "!i", 5: "!q", 8: "!q"}  # 8 is a timestamp: epoch milliseconds


def _headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    position = 0
    try:
        while position < len(data):
            name_length = data[position]
            name = data[position + 1 : position + 1 + name_length].decode("utf-8")
            position += 1 + name_length
            kind = data[position]
            position += 1
            value: HeaderValue
            if kind in _FIXED:
                width = _FIXED[kind]
                raw = data[position : position + width]
                if len(raw) != width:
                    raise EventStreamError("eventstream header value is cut short")
                value = kind == 0 if kind in (0, 1) else uuid.UUID(bytes=raw) if kind == 9 else _int(kind, raw)
            elif kind in (6, 7):  # byte array, string: 2-byte length first
                (width,) = struct.unpack_from("!H", data, position)
                position += 2
                raw = data[position : position + width]
                if len(raw) != width:
                    raise EventStreamError("eventstream header value is cut short")
                value = raw if kind == 6 else raw.decode("utf-8")
            else:
                raise EventStreamError(f"eventstream header type {kind} is unknown")
            position += width
            if not name or name in headers:
                raise EventStreamError("eventstream header names must be present and unique")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"eventstream headers are malformed: {type(exc).__name__}") from exc
    return headers


def _int(kind: int, raw: bytes) -> int:
    (value,) = struct.unpack(_INTS[kind], raw)
    return int(value)
