"""Server-sent events, decoded incrementally as the HTML specification's event-stream interpretation says.

Lines end at CRLF, LF or CR (a CR at the end of one chunk may pair with an LF at the start of the next);
``data`` lines of one event are joined with ``\\n``; an empty line dispatches the event; a line starting
with ``:`` is a comment (keep-alive); an event with empty data is not dispatched. ``id`` and ``retry`` are
parsed but unused by the probe, which needs only ``event`` and ``data``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEEvent", "SSEParser"]


@dataclass(frozen=True)
class SSEEvent:
    data: str
    event: str = "message"
    id: str = ""


class SSEParser:
    """Feed text as it arrives; get back the events it completed."""

    def __init__(self) -> None:
        self._partial = ""  # text after the last line break
        self._pending_cr = False  # the last chunk ended in CR: a following LF belongs to it
        self._event = ""
        self._data: list[str] = []
        self._last_id = ""

    def feed(self, text: str) -> list[SSEEvent]:
        """The events completed by ``text``."""
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        return [event for line in lines if (event := self._line(line)) is not None]

    def close(self) -> list[SSEEvent]:
        """At the end of the stream: an unterminated last line is processed, an undispatched event dropped
        (the specification discards an event that no empty line ended)."""
        if self._partial:
            self._line(self._partial)
            self._partial = ""
        return []

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._last_id = value
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = "\n".join(self._data), self._event
        self._data, self._event = [], ""
        if not data:  # the specification dispatches nothing for an empty data buffer
            return None
        return SSEEvent(data, event or "message", self._last_id)
