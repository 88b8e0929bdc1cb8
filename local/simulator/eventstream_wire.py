"""The ``application/vnd.amazon.eventstream`` encoding, written independently of the gateway's decoder.

A frame: total length and headers length (big-endian uint32 each), the CRC32 of those 8 bytes, the
headers (1-byte name length, name, type 7 = string, 2-byte value length, value), the payload, and the
CRC32 of everything before it. Only string headers: Bedrock sends no other kind.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING = 7


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    encoded = b"".join(_header(name, value) for name, value in headers.items())
    total = 12 + len(encoded) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return head + struct.pack(">I", zlib.crc32(head))


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return struct.pack(">B", len(raw_name)) + raw_name + struct.pack(">BH", _STRING, len(raw_value)) + raw_value


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, body)


def exception_frame(exception_type: str, message: str) -> bytes:
    body = json.dumps({"message": message}).encode()
    headers = {":exception-type": exception_type, ":content-type": "application/json", ":message-type": "exception"}
    return frame(headers, body)


def with_bad_checksum(data: bytes) -> bytes:
    """The frame with one payload byte changed and its checksums left as they were."""
    position = len(data) - 5  # the payload's last byte, just before the message CRC
    return data[:position] + bytes([data[position] ^ 0x20]) + data[position + 1 :]
