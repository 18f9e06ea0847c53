"""HTTP for the SDK: stdlib ``http.client`` with one kept-alive connection per thread.

Only the client's own background threads use this (the sync thread and the metrics thread),
so "one connection per thread" means at most two idle sockets per client. Nothing here is on
the decision path.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import Message
from typing import Final
from urllib.parse import urlsplit

__all__ = ["HTTPStatusError", "Response", "Transport", "TransportError"]

_STALE: Final = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class TransportError(Exception):
    """The request did not produce a usable response (network, timeout, truncated body)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        #: a short stable name for the problem: ``"timeout"``, ``"network"``,
        #: ``"truncated"``, ``"too-large"``
        self.kind = kind


class HTTPStatusError(Exception):
    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or f"HTTP {status}")
        self.status = status


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Message
    body: bytes


class Transport:
    def __init__(
        self,
        url: str,
        sdk_key: str,
        *,
        timeout: float,
        user_agent: str,
        ssl_context: ssl.SSLContext | None = None,
        max_body: int = 32 * 1024 * 1024,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Turnout url must be http(s)://host[:port][/prefix], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._ssl = ssl_context
        self.timeout = timeout
        self.max_body = max_body
        self._headers = {
            "Authorization": f"Bearer {sdk_key}",
            "User-Agent": user_agent,
        }
        self._reset()

    def _reset(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: set[http.client.HTTPConnection] = set()
        self._closes = 0  # close() calls so far: a connection it cut is not a stale one to retry

    def after_fork_in_child(self) -> None:
        # The inherited sockets belong to the parent: drop them without a shutdown (which
        # would cut the parent's connections too) and start afresh.
        self._reset()

    def new_connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            ctx = self._ssl or ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def path(self, path: str) -> str:
        return self._prefix + path

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(self._headers)
        if extra:
            h.update(extra)
        return h

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """One request on this thread's kept-alive connection; raises ``TransportError``."""
        timeout = self.timeout if timeout is None else timeout
        hdrs = self.headers(headers)
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        closes = self._closes
        for attempt in (1, 2):
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            reused = conn is not None and conn.sock is not None
            if conn is None:
                conn = self.new_connection(timeout)
                self._local.conn = conn
                with self._lock:
                    self._conns.add(conn)
            try:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                conn.request(method, self.path(path), body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read(self.max_body + 1)
                if len(data) > self.max_body:
                    self._drop(conn)
                    raise TransportError("too-large", f"response larger than {self.max_body} bytes")
                declared = resp.getheader("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) != len(data):
                    self._drop(conn)
                    raise TransportError(
                        "truncated", f"response body truncated ({len(data)} of {declared} bytes)"
                    )
                if resp.will_close:
                    self._drop(conn)
                return Response(resp.status, resp.headers, data)
            except TransportError:
                raise
            except _STALE as exc:
                self._drop(conn)
                if reused and attempt == 1 and closes == self._closes:
                    continue  # the server closed an idle kept-alive connection: retry once
                raise TransportError("network", f"connection closed: {exc!r}") from exc
            except http.client.IncompleteRead as exc:
                self._drop(conn)
                raise TransportError("truncated", "response body truncated") from exc
            except TimeoutError as exc:
                self._drop(conn)
                raise TransportError("timeout", f"no response within {timeout:g}s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                raise TransportError("network", f"{type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None
        with self._lock:
            self._conns.discard(conn)
        try:
            conn.close()
        except Exception:  # pragma: no cover - closing never matters
            pass

    def track(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conns.add(conn)

    def untrack(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def close(self) -> None:
        """Close every connection this transport opened, waking any thread blocked on one (its
        request fails; it is not retried). The transport stays usable for new requests."""
        with self._lock:
            self._closes += 1
            conns = list(self._conns)
            self._conns.clear()
        for conn in conns:
            sock = conn.sock
            try:
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                conn.close()
            except Exception:  # pragma: no cover
                pass
