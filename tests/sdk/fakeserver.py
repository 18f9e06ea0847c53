"""A small threaded Turnout server for SDK tests (stdlib only, no Django).

It serves a ruleset with ETag/304, streams server-sent events, accepts metrics batches, and
can be told to misbehave: answer 500, send malformed or truncated JSON, hang, reject the key,
drop the stream, or be stopped and restarted on the same port.

A hung request is *held*: the server has it and answers nothing until the test calls ``unhang()``
or stops the server (``held`` counts them by kind). Tests use this instead of timing: a call that
returned while the server still holds the request it would have waited for cannot have waited.
``HOLD_GUARD`` only keeps a broken test from hanging forever; a hold it ends is counted in
``expired``, which a test expects to stay 0.

Also the shared fixtures of the SDK client tests (import them into a test module to use them).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from turnout import Turnout
from turnout.wire import SCHEMA, FlagRow, FlagRule, MetricsBatch, RulesetDocument

SDK_KEY = "test-key"

#: a held request is let go after this long even if nobody releases it (a guard, never reached
#: by a passing test; see ``FakeServer.expired``)
HOLD_GUARD = 30.0

#: short timings so that the whole suite stays fast
FAST: dict[str, Any] = {
    "poll_interval": 0.2,
    "timeout": 0.5,
    "stream_read_timeout": 1.0,
    "backoff_base": 0.05,
    "backoff_max": 0.2,
    "flush_interval": 0.1,
}


def make_doc(version: int = 1, environment: str = "test", **flags: dict[str, Any]) -> RulesetDocument:
    """A ruleset document (``turnout.wire``); each keyword is a flag (salt defaults to its key)."""
    if not flags:
        flags = {"checkout": {"percentage": 50.0}}
    out: dict[str, FlagRule] = {}
    for key, f in flags.items():
        out[key] = cast(FlagRule, {
            "enabled": True,
            "retired": False,
            "salt": key,
            "bucket_by": None,
            "overrides": {},
            "exclude_cohorts": [],
            "include_cohorts": [],
            "percentage": 0.0,
            "compare_percentage": 0.0,
            "stage": 1,
            **f,
        })
    return {"schema": SCHEMA, "environment": environment, "version": version, "cohorts": {}, "flags": out}


def wait_for(predicate: Callable[[], object], timeout: float = 3.0, interval: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.fake._sockets.add(request)
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeServer:
        return self.server.fake

    def _hold(self, kind: str) -> None:
        """Answer nothing until the test releases the request (or the server stops)."""
        fake = self.fake
        with fake._lock:
            fake.held[kind] += 1
        try:
            if not fake._release.wait(HOLD_GUARD):
                with fake._lock:
                    fake.expired += 1
        finally:
            with fake._lock:
                fake.held[kind] -= 1
            self.close_connection = True  # never answered: hang up rather than read on

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        self.fake.auth_headers.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") == f"Bearer {self.fake.sdk_key}":
            return True
        self._json(401, {"error": {"code": "unauthorized", "message": "bad SDK key"}})
        return False

    def do_GET(self) -> None:
        fake = self.fake
        route, _, query = self.path.partition("?")
        if route.startswith("/api/v1/sdk/cohorts/") and route.endswith("/members"):
            self._members(route[len("/api/v1/sdk/cohorts/"):-len("/members")], query)
            return
        if route == "/api/v1/sdk/ruleset":
            fake.ruleset_queries.append(query)
            fake.counts["ruleset"] += 1
            if fake.mode == "hang":
                self._hold("ruleset")
                return
            if not self._authorized():
                return
            if fake.mode == "500":
                self._json(500, {"error": {"code": "server_error", "message": "boom"}})
                return
            with fake._lock:
                doc, etag = fake.doc, fake.etag
            if fake.body is not None:
                etag = '"raw-' + hashlib.sha256(fake.body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag and fake.mode == "ok":
                fake.counts["ruleset_304"] += 1
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            body = json.dumps(doc).encode() if fake.body is None else fake.body
            if fake.mode == "malformed":
                body = b'{"schema": 1, "version": oops'
            elif fake.mode == "invalid":
                body = json.dumps({"schema": 1, "flags": "not a mapping"}).encode()
            fake.counts["ruleset_200"] += 1
            fake.accept_encodings.append(self.headers.get("Accept-Encoding"))
            encoding = None
            if fake.gzip is not None and "gzip" in (self.headers.get("Accept-Encoding") or ""):
                body = fake.gzip(body)
                encoding = "gzip"
            self.send_response(200)
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Type", "application/json")
            self.send_header("ETag", etag if fake.mode == "ok" else '"bad"')
            self.send_header("Cache-Control", "no-cache")
            if fake.mode == "truncated":
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.split("?")[0] == "/api/v1/sdk/stream":
            self._stream()
        else:
            self._json(404, {"error": {"code": "not_found", "message": self.path}})

    def _members(self, cohort: str, query: str) -> None:
        """A member-list document (``turnout.members``) from ``fake.member_lists``; ``members_mode``
        "500" fails every list request; ``since=`` gets a delta when ``member_deltas`` has one."""
        fake = self.fake
        fake.counts["members"] += 1
        fake.member_queries.append((cohort, query))
        if not self._authorized():
            return
        if fake.members_mode == "500":
            self._json(500, {"error": {"code": "server_error", "message": "boom"}})
            return
        with fake._lock:
            body = fake.member_lists.get(cohort)
        if body is None:
            self._json(404, {"error": {"code": "not_found", "message": cohort}})
            return
        etag = '"m-' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        since = query.partition("since=")[2]
        delta = fake.member_deltas.get((cohort, int(since))) if since.isdigit() else None
        if delta is not None:
            body = delta
            fake.counts["members_delta"] += 1
        gzipped = fake.gzip is not None and "gzip" in (self.headers.get("Accept-Encoding") or "")
        if gzipped and fake.gzip is not None:
            body = fake.gzip(body)
            fake.counts["members_gzip"] += 1
        self.send_response(200)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Type", "application/vnd.turnout.members")
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        fake = self.fake
        fake.counts["stream_connects"] += 1
        fake.last_event_ids.append(self.headers.get("Last-Event-ID"))
        if fake.stream_mode == "404":
            self._json(404, {"error": {"code": "not_found", "message": "no stream"}})
            return
        if fake.mode == "hang" or fake.stream_mode == "hang":
            self._hold("stream")
            return
        if not self._authorized():
            return
        if fake.stream_mode == "500":
            self._json(500, {"error": {"code": "server_error", "message": "boom"}})
            return
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = -1
        try:
            while not fake._stopping.is_set():
                with fake._lock:
                    version = fake.doc["version"] if isinstance(fake.doc, dict) else 0
                    gen = fake._gen
                if gen != sent:
                    sent = gen
                    if fake.stream_mode != "silent":
                        self.wfile.write(
                            f"event: ruleset\nid: {version}\n"
                            f'data: {{"environment": "test", "version": {version}}}\n\n'.encode()
                        )
                        self.wfile.flush()
                with fake._lock:
                    if fake._gen == sent:
                        fake._lock.wait(fake.heartbeat)
                    if fake._gen == sent and fake.stream_mode == "ok":
                        self.wfile.write(b": keep-alive\n\n")
                        self.wfile.flush()
                if fake.stream_mode == "drop":
                    return
        except OSError:
            return

    def do_POST(self) -> None:
        fake = self.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/api/v1/sdk/feedback":
            self._feedback(raw)
            return
        if self.path != "/api/v1/sdk/metrics":
            self._json(404, {"error": {"code": "not_found", "message": self.path}})
            return
        fake.counts["metrics_posts"] += 1
        if fake.metrics_mode == "hang":
            self._hold("metrics")
            return
        if not self._authorized():
            return
        if fake.metrics_mode == "500":
            self._json(500, {"error": {"code": "server_error", "message": "boom"}})
            return
        if fake.metrics_mode == "400":
            self._json(400, {"error": {"code": "invalid", "message": "bad batch"}})
            return
        with fake._lock:
            fake.metrics.append(json.loads(raw))
        self._json(202, {"accepted": True})


    def _feedback(self, raw: bytes) -> None:
        fake = self.fake
        fake.counts["feedback_posts"] += 1
        if fake.feedback_mode == "hang":
            self._hold("feedback")
            return
        if not self._authorized():
            return
        if fake.feedback_mode in ("500", "400"):
            self._json(int(fake.feedback_mode), {"error": {"code": "refused", "message": "no"}})
            return
        with fake._lock:
            fake.feedback.append(json.loads(raw))
        self._json(202, {"accepted": len(fake.feedback[-1]["feedback"]), "unknown_flags": []})


class FakeServer:
    def __init__(self, doc: RulesetDocument | None = None, *, heartbeat: float = 0.2) -> None:
        self.sdk_key = SDK_KEY
        self.heartbeat = heartbeat
        self.mode = "ok"  # ok | 500 | malformed | invalid | truncated | hang
        self.stream_mode = "ok"  # ok | 404 | 500 | silent | hang | drop
        self.metrics_mode = "ok"  # ok | 500 | 400 | hang
        self.feedback_mode = "ok"  # ok | 500 | 400 | hang
        #: the feedback batches received (POST /api/v1/sdk/feedback)
        self.feedback: list[dict[str, Any]] = []
        #: when set, the ruleset answer's body as it is (any bytes), in place of ``doc``
        self.body: bytes | None = None
        #: when set, how the ruleset body is encoded for a client that accepts gzip (the encoder)
        self.gzip: Callable[[bytes], bytes] | None = None
        #: the Accept-Encoding header of every 200 ruleset answer, in order
        self.accept_encodings: list[str | None] = []
        self.metrics: list[MetricsBatch] = []
        #: member-list documents by cohort (``turnout.members.encode``), deltas by (cohort, since)
        self.member_lists: dict[str, bytes] = {}
        self.member_deltas: dict[tuple[str, int], bytes] = {}
        self.members_mode = "ok"  # ok | 500
        self.member_queries: list[tuple[str, str]] = []
        #: the query string of every ruleset request, in order
        self.ruleset_queries: list[str] = []
        self.counts: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.last_event_ids: list[str | None] = []
        #: requests the server is holding unanswered right now, by kind (ruleset, stream, metrics)
        self.held: Counter[str] = Counter()
        #: holds that ended because HOLD_GUARD ran out, not because the test let go
        self.expired = 0
        self._lock = threading.Condition()
        self._gen = 0
        self.doc: RulesetDocument = doc if doc is not None else make_doc()
        self.etag = self._etag(self.doc)
        self._stopping = threading.Event()
        self._release = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @staticmethod
    def _etag(doc: RulesetDocument) -> str:
        return '"' + hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16] + '"'

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        self._stopping.clear()
        self._release.clear()
        httpd = _Server(("127.0.0.1", self.port), _Handler)
        httpd.fake = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop like a killed process: close the listener and every open connection."""
        self._stopping.set()
        self._release.set()
        with self._lock:
            self._lock.notify_all()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        for s in list(self._sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self._sockets.clear()

    def restart(self) -> None:
        self.stop()
        self.start()

    def set_ruleset(self, doc: RulesetDocument) -> None:
        """Publish a new ruleset: new ETag, and an event on every open stream."""
        with self._lock:
            self.doc = copy.deepcopy(doc)
            self.etag = self._etag(self.doc)
            self._gen += 1
            self._lock.notify_all()

    def unhang(self) -> None:
        """Let go of every held request (each is hung up unanswered)."""
        self._release.set()

    def all_rows(self) -> list[FlagRow]:
        with self._lock:
            return [row for batch in self.metrics for row in batch["flags"]]


@pytest.fixture
def server() -> Iterator[FakeServer]:
    s = FakeServer().start()
    yield s
    s.stop()


MakeClient = Callable[..., Turnout]


@pytest.fixture
def make_client() -> Iterator[MakeClient]:
    made: list[Turnout] = []

    def make(url: str | None, sdk_key: str | None = SDK_KEY, **options: Any) -> Turnout:
        c = Turnout(url, sdk_key, **{**FAST, **options})
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def warnings_matching(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "turnout" and r.levelno == logging.WARNING and text in r.getMessage()
    ]
