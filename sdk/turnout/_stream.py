"""A minimal server-sent events client: connect, then read line by line with a read timeout.

The server writes a ``: keep-alive`` comment every 15 s, so a read that waits longer than the
read timeout (45 s by default) means the connection is dead even if TCP has not noticed: the
caller drops it and reconnects.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from ._transport import HTTPStatusError, Transport, TransportError
from .wire import RULESET_MEMBERS_QUERY, STREAM_PATCHES_QUERY, STREAM_PATH

__all__ = ["Event", "SSEParser", "Stream", "StreamUnsupported"]

MAX_LINE = 256 * 1024


class StreamUnsupported(Exception):
    """The server has no stream endpoint (or a proxy mangles it): poll instead."""


@dataclass(frozen=True, slots=True)
class Event:
    event: str
    data: str
    id: str | None


class SSEParser:
    """The parsing half of the EventSource algorithm (WHATWG HTML, "server-sent events")."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, line: str) -> Event | None:
        """Feed one line (without its end of line); return an event when one is complete."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            ev = Event(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data = "", []
            return ev
        if line.startswith(":"):
            return None  # a comment: the heartbeat
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


class Stream:
    """One connection to the stream endpoint. ``close()`` may be called from any thread."""

    def __init__(self, transport: Transport, *, read_timeout: float, connect_timeout: float) -> None:
        self._transport = transport
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._conn: http.client.HTTPConnection | None = None
        self._resp: http.client.HTTPResponse | None = None
        self._sock: socket.socket | None = None
        self.parser = SSEParser()

    def connect(self, last_event_id: str | None = None) -> None:
        extra = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_event_id:
            extra["Last-Event-ID"] = last_event_id
        conn = self._transport.new_connection(self._connect_timeout)
        self._conn = conn
        self._transport.track(conn)
        try:
            # Asks for patch events (small updates); a server that does not know them ignores the query.
            conn.request("GET", self._transport.path(f"{STREAM_PATH}?{STREAM_PATCHES_QUERY}&{RULESET_MEMBERS_QUERY}"),
                         headers=self._transport.headers(extra))
            # keep the socket: http.client hands it to the response (conn.sock becomes None)
            # when the server answers "Connection: close", as a stream does
            self._sock = conn.sock
            resp = conn.getresponse()
        except TimeoutError as exc:
            self.close()
            raise TransportError("timeout", "stream: no response") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransportError("network", f"stream: {type(exc).__name__}: {exc}") from exc
        if resp.status != 200:
            status = resp.status
            self.close()
            if status in (404, 405, 501):
                raise StreamUnsupported(f"stream endpoint answered HTTP {status}")
            raise HTTPStatusError(status)
        ctype = resp.getheader("Content-Type", "") or ""
        if not ctype.startswith("text/event-stream"):
            self.close()
            raise StreamUnsupported(f"stream endpoint answered {ctype or 'no content type'}")
        if self._sock is not None:
            self._sock.settimeout(self._read_timeout)
        self._resp = resp

    def events(self) -> Iterator[Event]:
        """Yield events until the server closes the stream; raise ``TransportError`` when
        the stream goes silent for longer than the read timeout or breaks."""
        resp = self._resp
        if resp is None:
            return
        while True:
            try:
                raw = resp.readline(MAX_LINE + 1)
            except TimeoutError as exc:
                raise TransportError(
                    "timeout", f"stream silent for {self._read_timeout:g}s"
                ) from exc
            except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
                # ValueError/AttributeError: the response was closed under us by close().
                raise TransportError("network", f"stream: {type(exc).__name__}: {exc}") from exc
            if not raw:
                return  # the server ended the stream
            if len(raw) > MAX_LINE:
                raise TransportError("too-large", "stream line too long")
            ev = self.parser.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
            if ev is not None:
                yield ev

    def close(self) -> None:
        conn, resp, sock = self._conn, self._resp, self._sock
        self._conn, self._resp, self._sock = None, None, None
        if conn is None:
            return
        self._transport.untrack(conn)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in readline()
        except OSError:
            pass
        del resp  # not closed here: a reader may be inside it; it sees EOF or an error
        for closeable in (conn, sock):
            try:
                if closeable is not None:
                    closeable.close()
            except Exception:  # pragma: no cover
                pass

    def abandon(self) -> None:
        """After a fork: forget the parent's socket without shutting it down."""
        self._conn, self._resp, self._sock = None, None, None
