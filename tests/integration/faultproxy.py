"""A fault-injecting HTTP/1.1 proxy, put between the SDK and a real Turnout server.

It relays each request to the server and the server's response back, one exchange at a time per
connection (kept-alive connections, ``Content-Length`` bodies and chunked streams such as the SDK
stream), and can be switched at any moment to misbehave:

- ``hold()``: stop forwarding in both directions and answer nothing, keeping every connection open
  — a hung server, or a stream gone silent without a FIN. ``release()`` resumes forwarding.
- ``tamper(path, fault)``: the responses to requests for ``path`` are replaced or damaged (see
  ``Fault``); every other request passes through. ``pass_through()`` stops it.

It counts what it sees (requests and response statuses per path, tampered responses, requests
held, held requests whose client hung up). Standard library only; ``close()`` shuts every socket
and joins every thread it started.
"""

from __future__ import annotations

import select
import socket
import threading
from collections import Counter
from collections.abc import Callable, Hashable
from enum import StrEnum
from types import TracebackType
from typing import Any, BinaryIO

__all__ = ["Fault", "FaultProxy"]

_MAX_LINE = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


class Fault(StrEnum):
    #: the proxy answers ``500 Internal Server Error`` itself (a JSON error body)
    ERROR_500 = "500"
    #: the server's ``200``, headers intact, its body garbled (same length, no longer JSON)
    MALFORMED = "malformed"
    #: the server's ``200`` cut to half its body, ``Content-Length`` saying so: only the JSON is broken
    TRUNCATED = "truncated"
    #: the server's ``200`` with its full ``Content-Length``, half the body, then the connection closed
    TRUNCATED_CLOSE = "truncated-close"


class _Gone(Exception):
    """The client or the server went away, or the proxy is closing: drop this connection."""


class _Message:
    """The head of an HTTP message: the start line and the header lines, kept as received."""

    def __init__(self, start: bytes, lines: list[bytes]) -> None:
        self.start = start
        self.lines = lines

    @classmethod
    def read(cls, reader: BinaryIO) -> _Message | None:
        """The next head from ``reader``, or None at a clean end of the connection."""
        start = reader.readline(_MAX_LINE)
        if not start:
            return None
        if not start.endswith(b"\n"):
            raise _Gone("cut in the start line")
        lines: list[bytes] = []
        while True:
            line = reader.readline(_MAX_LINE)
            if not line.endswith(b"\n"):
                raise _Gone("cut in the headers")
            if line in (b"\r\n", b"\n"):
                return cls(start, lines)
            lines.append(line)

    def header(self, name: str) -> str | None:
        wanted = name.lower().encode()
        for line in self.lines:
            key, _, value = line.partition(b":")
            if key.strip().lower() == wanted:
                return value.strip().decode("latin-1")
        return None

    def with_header(self, name: str, value: str) -> _Message:
        wanted = name.lower().encode()
        lines = [line for line in self.lines if line.partition(b":")[0].strip().lower() != wanted]
        lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        return _Message(self.start, lines)

    def encode(self) -> bytes:
        return self.start + b"".join(self.lines) + b"\r\n"

    @property
    def method(self) -> str:
        return self.start.split(b" ", 1)[0].decode("latin-1")

    @property
    def path(self) -> str:
        target = self.start.split(b" ")[1].decode("latin-1")
        return target.split("?", 1)[0]

    @property
    def status(self) -> int:
        return int(self.start.split(b" ")[1])

    @property
    def content_length(self) -> int | None:
        value = self.header("Content-Length")
        return int(value) if value is not None else None

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("Transfer-Encoding") or "").lower()

    @property
    def closes(self) -> bool:
        return (self.header("Connection") or "").lower() == "close"


class FaultProxy:
    """Listens on 127.0.0.1 (a free port unless ``port`` is given) and relays to ``upstream_port``."""

    def __init__(self, upstream_port: int, *, port: int = 0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", port))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closing = threading.Event()
        self._tamper: dict[str, Fault] = {}
        self._sockets: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self.requests: Counter[str] = Counter()  # path -> requests received
        self.statuses: Counter[tuple[str, int]] = Counter()  # (path, status) -> responses sent
        self.tampered: Counter[str] = Counter()  # path -> responses replaced or damaged
        #: forward request targets without their query (as a server that ignores it: no stream patches)
        self.strip_queries = False
        self.held = 0  # requests waiting, unanswered, for release()
        self.abandoned = 0  # held requests whose client hung up
        self._acceptor = self._start(self._accept_loop, "faultproxy-accept")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- switches ---------------------------------------------------------------------------------

    def hold(self) -> None:
        """Stop forwarding: requests get no answer, responses in progress stop mid-way."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def tamper(self, path: str, fault: Fault) -> None:
        with self._lock:
            self._tamper[path] = fault

    def pass_through(self) -> None:
        with self._lock:
            self._tamper.clear()

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Shut every connection, stop every thread; raise if one of them does not stop."""
        self._closing.set()
        self._flowing.set()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)
        self._acceptor.join(5)
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(5)
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"fault proxy threads still running after close(): {alive}")

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _start(self, target: Callable[..., None], name: str, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = {t for t in self._threads if t.is_alive()}
            self._threads.add(thread)
        thread.start()
        return thread

    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        if self._closing.is_set():  # close() may have run its sweep already
            _shut(sock)
        return sock

    def _forget(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)
        _shut(sock)
        sock.close()

    def _count(self, counter: Counter[Any], key: Hashable) -> None:
        with self._lock:
            counter[key] += 1

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._start(self._serve, f"faultproxy-conn-{client.fileno()}", self._track(client))

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            from_client = client.makefile("rb")
            to_upstream: BinaryIO | None = None
            while not self._closing.is_set():
                request = _Message.read(from_client)
                if request is None:
                    return
                body = _read_exactly(from_client, request.content_length or 0)
                if self.strip_queries and b"?" in request.start.split(b" ")[1]:
                    method, target, version = request.start.split(b" ", 2)
                    request.start = b" ".join((method, target.split(b"?", 1)[0], version))
                path = request.path
                self._count(self.requests, path)
                self._wait_for_flow(client)
                with self._lock:
                    fault = self._tamper.get(path)
                if fault is Fault.ERROR_500:
                    self._count(self.tampered, path)
                    self._send(client, path, _error_500())
                    continue
                if upstream is None:
                    try:
                        upstream = self._track(socket.create_connection(self.upstream, timeout=5))
                    except OSError:
                        return  # nothing listens upstream: the client sees the connection drop
                    upstream.settimeout(None)
                    to_upstream = upstream.makefile("rb")
                assert to_upstream is not None
                upstream.sendall(request.encode() + body)
                response = _Message.read(to_upstream)
                if response is None:
                    return
                if fault is not None and response.status == 200 and response.content_length is not None:
                    real = _read_exactly(to_upstream, response.content_length)
                    self._count(self.tampered, path)
                    if not self._send_damaged(client, path, response, real, fault):
                        return
                    continue
                self._wait_for_flow(client)
                self._send(client, path, response.encode(), status=response.status)
                if not self._relay_body(request, response, to_upstream, client) or response.closes:
                    return
        except (_Gone, OSError, ValueError, IndexError):
            return
        finally:
            self._forget(upstream)
            self._forget(client)

    def _send(self, client: socket.socket, path: str, data: bytes, *, status: int | None = None) -> None:
        client.sendall(data)
        self._count(self.statuses, (path, status if status is not None else int(data.split(b" ")[1])))

    def _send_damaged(self, client: socket.socket, path: str, head: _Message, body: bytes, fault: Fault) -> bool:
        """Send a damaged copy of a 200; False when the connection must be closed afterwards."""
        half = body[: len(body) // 2]
        if fault is Fault.MALFORMED:
            self._send(client, path, head.encode() + body.replace(b":", b"=").replace(b",", b";"), status=200)
            return not head.closes
        if fault is Fault.TRUNCATED:
            self._send(client, path, head.with_header("Content-Length", str(len(half))).encode() + half, status=200)
            return not head.closes
        self._send(client, path, head.encode() + half, status=200)  # TRUNCATED_CLOSE
        return False

    def _relay_body(self, request: _Message, response: _Message, source: BinaryIO, client: socket.socket) -> bool:
        """Relay the response body as it arrives; False when the connection ends with it."""
        if request.method == "HEAD" or response.status in _NO_BODY_STATUSES or 100 <= response.status < 200:
            return True
        if response.chunked:
            while True:
                size_line = source.readline(_MAX_LINE)
                if not size_line.endswith(b"\n"):
                    raise _Gone("stream cut")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                piece = size_line + (_read_exactly(source, size + 2) if size else _read_trailers(source))
                self._wait_for_flow(client)
                client.sendall(piece)
                if size == 0:
                    return True
        if response.content_length is not None:
            remaining = response.content_length
            while remaining:
                piece = source.read1(min(remaining, 65536))  # type: ignore[attr-defined]
                if not piece:
                    raise _Gone("body cut")
                remaining -= len(piece)
                self._wait_for_flow(client)
                client.sendall(piece)
            return True
        while piece := source.read1(65536):  # type: ignore[attr-defined]
            self._wait_for_flow(client)
            client.sendall(piece)
        return False  # delimited by the end of the connection

    def _wait_for_flow(self, client: socket.socket) -> None:
        """Return when forwarding is on; while held, notice a client that hangs up."""
        if self._flowing.is_set():
            return
        with self._lock:
            self.held += 1
        try:
            while not self._flowing.wait(0.02):
                if self._closing.is_set():
                    raise _Gone("closing")
                if _hung_up(client):
                    with self._lock:
                        self.abandoned += 1
                    raise _Gone("the client hung up while held")
            if self._closing.is_set():
                raise _Gone("closing")
        finally:
            with self._lock:
                self.held -= 1


def _read_exactly(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size) if size else b""
    if len(data) != size:
        raise _Gone("cut short")
    return data


def _read_trailers(reader: BinaryIO) -> bytes:
    out = b""
    while True:
        line = reader.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise _Gone("cut in the trailers")
        out += line
        if line in (b"\r\n", b"\n"):
            return out


def _error_500() -> bytes:
    body = b'{"error": {"code": "internal", "message": "injected by the fault proxy", "fields": {}}}'
    return (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _hung_up(sock: socket.socket) -> bool:
    """True when the peer closed its end (readable, and a peek reads nothing)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
