"""An incremental Server-Sent Events parser (the WHATWG event-stream format).

Bytes go in as they arrive, split anywhere (inside a line, a CRLF pair or a UTF-8 character); complete
events come out. Lines end with CRLF, LF or CR; a line starting with ":" is a comment; ``event`` and
``data`` are the fields kept (``data`` lines of one event are joined with "\\n"); a blank line dispatches
the event, and an event without data is not dispatched. ``id`` and ``retry`` are read and ignored: the
gateway never reconnects a provider stream.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str  # "message" when the stream named none
    data: str


class SSEParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self._line = ""  # the current, unfinished line
        self._after_cr = False  # the last character was CR: a following LF belongs to the same line end
        self._event = ""
        self._data: list[str] = []
        self._first = True  # a UTF-8 byte order mark may open the stream

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """The events completed by ``chunk``. Raises ``UnicodeDecodeError`` on bytes that are not UTF-8."""
        text = self._decoder.decode(chunk)
        if self._first and text:
            text = text.removeprefix("\ufeff")
            self._first = False
        events: list[ServerSentEvent] = []
        start = 0
        for position, char in enumerate(text):
            if char not in "\r\n":
                continue
            if char == "\n" and self._after_cr and position == start:
                # the LF of a CRLF whose CR ended the previous line
                self._after_cr = False
                start = position + 1
                continue
            self._after_cr = char == "\r"
            line, self._line = self._line + text[start:position], ""
            start = position + 1
            if (event := self._line_done(line)) is not None:
                events.append(event)
        if start < len(text):
            self._after_cr = False
            self._line += text[start:]
        return events

    @property
    def pending(self) -> bool:
        """Part of an event was received but not its closing blank line (what EOF would discard)."""
        return bool(self._line or self._data or self._event)

    def _line_done(self, line: str) -> ServerSentEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        event, data = self._event, self._data
        self._event, self._data = "", []
        if not data:
            return None
        return ServerSentEvent(event or "message", "\n".join(data))
