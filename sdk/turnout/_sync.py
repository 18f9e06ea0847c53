"""Background work that talks to the server: the ruleset (fetch with ETag, follow the stream,
fall back to polling, back off on failure) and the metrics (batched, flushed, retried).

Threads: ``turnout-sync`` runs ``RulesetSync.loop``, ``turnout-metrics`` runs
``MetricsShipper.loop``. Neither raises: every failure becomes a problem report and a retry.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import quote

from . import engine as _engine
from ._metrics import Recorder, Sender
from ._options import Options
from ._problems import Problems
from ._stream import Stream, StreamUnsupported
from ._transport import HTTPStatusError, Transport, TransportError
from .members import MemberDelta, MemberList, MemberListError
from .members import decode as decode_members
from .wire import MEMBERS_PATH, METRICS_PATH, RULESET_MEMBERS_QUERY, RULESET_PATH, apply_patch

__all__ = ["MetricsShipper", "RulesetSync", "jitter"]

log = logging.getLogger("turnout")

_HEALTHY_STREAM: Final = 5.0  # seconds a stream must last to count as healthy
#: errors on the parallel path: flush this long after the first one (so a burst rides one batch) ...
URGENT_FLUSH_DELAY: Final = 0.5
#: ... and never more often than this (seconds between two early flushes)
URGENT_FLUSH_GAP: Final = 2.0


def jitter(delay: float) -> float:
    return delay * random.uniform(0.5, 1.0)


class BodyTooLarge(ValueError):
    pass


def decoded_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The response body with its content coding undone: gzip (the server compresses the ruleset
    once per version) or none. Never more than ``limit`` bytes after decoding (BodyTooLarge); a
    corrupt stream or an unknown coding raises ``ValueError`` (the caller keeps its ruleset)."""
    coding = (content_encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding not in ("gzip", "x-gzip"):
        raise ValueError(f"unsupported Content-Encoding {coding!r}")
    try:
        inflater = zlib.decompressobj(wbits=31)  # gzip framing
        data = inflater.decompress(body, limit + 1)
        if len(data) > limit:
            raise BodyTooLarge(f"decompressed ruleset larger than {limit} bytes")
        if not inflater.eof:
            raise ValueError("truncated gzip body")
    except zlib.error as exc:
        raise ValueError(f"corrupt gzip body: {exc}") from None
    return data


class RulesetSync:
    """Keeps the client's ruleset current. ``install(ruleset, etag)`` puts a new one in use;
    ``version()`` is the version in use (None before the first)."""

    def __init__(
        self,
        transport: Transport,
        options: Options,
        problems: Problems,
        stop: threading.Event,
        *,
        install: Callable[[_engine.Ruleset, str | None], None],
        version: Callable[[], int | None],
        current: Callable[[], _engine.Ruleset | None] | None = None,
    ) -> None:
        self.transport = transport
        self.options = options
        self.problems = problems
        self.stop = stop
        self.install = install
        self.version = version
        self.current = current if current is not None else (lambda: None)
        self.use_stream = options.stream
        self.etag: str | None = None
        self.stream: Stream | None = None
        self.last_event_id: str | None = None
        #: member lists of the cohorts the ruleset references (``turnout.members``), the last good of each,
        #: and the ETag each came with
        self.members: dict[str, MemberList] = {}
        self.member_etags: dict[str, str] = {}
        #: set once the first fetch has an outcome (a ruleset in use, or a failure): what the
        #: client's ``start_wait`` waits for
        self.attempted = threading.Event()

    def after_fork_in_child(self, stop: threading.Event) -> None:
        stream = self.stream
        if stream is not None:
            stream.abandon()
        self.stream = None
        self.stop = stop

    def close(self) -> None:
        stream = self.stream
        if stream is not None:
            stream.close()

    def keeping(self) -> str:
        v = self.version()
        return "no ruleset yet: deciding legacy" if v is None else f"keeping version {v}"

    def refresh(self) -> bool:
        """Fetch the ruleset once (conditional on the ETag). True when the server answered
        with a usable ruleset or 304."""
        # gzip: the server compresses each version once; a 1,000-flag ruleset shrinks ~16×.
        headers = {"Accept": "application/json", "Accept-Encoding": "gzip"}
        if self.etag and self.version() is not None:
            headers["If-None-Match"] = self.etag
        problem = self.problems.report
        try:
            resp = self.transport.request("GET", f"{RULESET_PATH}?{RULESET_MEMBERS_QUERY}", headers=headers)
        except TransportError as exc:
            if self.stop.is_set():
                return False  # close() cut the request short: not the server's failure
            problem(f"fetch:{exc.kind}", f"cannot fetch the ruleset ({exc}); {self.keeping()}", "fetch", exc,
                    event="ruleset.fetch_failed")
            return False
        if resp.status == 304:
            self.problems.resolved("fetch:")
            current = self.current()
            return True if current is None else self.complete(current)
        if resp.status in (401, 403):
            problem("fetch:unauthorized",
                    f"the server rejected the SDK key (HTTP {resp.status}); {self.keeping()}", "fetch",
                    event="ruleset.fetch_failed")
            return False
        if resp.status != 200:
            problem(f"fetch:http-{resp.status}",
                    f"the server answered HTTP {resp.status} for the ruleset; {self.keeping()}", "fetch",
                    event="ruleset.fetch_failed")
            return False
        self.problems.resolved("fetch:")
        try:
            body = decoded_body(resp.body, resp.headers.get("Content-Encoding"), self.transport.max_body)
            doc = json.loads(body)
            lists_ok = self.fetch_members(doc)
            ruleset = _engine.compile_ruleset(doc, self.members)
        except Exception as exc:  # any document at all, any depth: "unusable", never a crash
            problem("ruleset:invalid",
                    f"the server sent an unusable ruleset ({type(exc).__name__}: {_short(exc)}); "
                    f"{self.keeping()}", "ruleset", exc, event="ruleset.rejected")
            return False
        self.problems.resolved("ruleset:")
        previous = self.version()
        etag = resp.headers.get("ETag")
        self.etag = etag
        self.install(ruleset, etag)
        if previous != ruleset.version:
            log.debug("turnout.ruleset.installed: version %s", ruleset.version)
        return lists_ok

    # -- member lists of large cohorts (turnout.members) ----------------------------------------

    def complete(self, current: _engine.Ruleset) -> bool:
        """The ruleset in use is unchanged (304): fetch the member lists it still lacks or holds at an
        older version, and put them in use (recompiled, one swap). True when none is missing."""
        refs = current.member_refs
        if all(c in current.member_lists and current.member_lists[c].version >= v for c, v in refs.items()):
            return True
        ok = self.fetch_members(current.doc)
        if any(self.members.get(c) is not current.member_lists.get(c) for c in refs):
            try:
                self.install(_engine.compile_ruleset(current.doc, self.members), self.etag)
            except Exception as exc:  # pragma: no cover - the same document compiled before
                log.debug("turnout.members.recompile_failed: %s", _short(exc))
                return False
        return ok

    def fetch_members(self, doc: Any) -> bool:
        """Bring ``self.members`` up to the member-list versions ``doc`` references (a delta from the
        version held when the server has one). A list that cannot be fetched keeps the last good one
        (its cohort then decides as of that version) or, with none, makes the flags that use it decide
        legacy until it arrives: reported, retried by the loop with backoff. True when all are current."""
        refs = _member_refs(doc)
        for gone in set(self.members) - set(refs):
            self.members.pop(gone, None)
            self.member_etags.pop(gone, None)
        ok = True
        for cohort, version in refs.items():
            held = self.members.get(cohort)
            if held is not None and held.version >= version:
                continue
            if self.stop.is_set():
                return False
            ok = self.fetch_member_list(cohort, held) and ok
        return ok

    def fetch_member_list(self, cohort: str, held: MemberList | None) -> bool:
        problem = self.problems.report
        keeping = (f"keeping version {held.version} of its list" if held is not None
                   else "its flags decide legacy until it arrives")
        path = MEMBERS_PATH.format(key=quote(cohort, safe=""))
        # Hashes do not compress (gzip saves ~7%, the offsets): a gunzip would cost more load time than it saves.
        headers = {"Accept-Encoding": "identity"}
        if held is not None:
            path += f"?since={held.version}"
            etag = self.member_etags.get(cohort)
            if etag:
                headers["If-None-Match"] = etag
        try:
            resp = self.transport.request("GET", path, headers=headers)
        except TransportError as exc:
            if not self.stop.is_set():
                problem(f"members:{cohort}:{exc.kind}", f"cannot fetch the member list of cohort {cohort!r} ({exc}); "
                        f"{keeping}", "fetch", exc, event="members.fetch_failed")
            return False
        if resp.status == 304:
            return held is not None
        if resp.status != 200:
            problem(f"members:{cohort}:http-{resp.status}", f"the server answered HTTP {resp.status} for the member "
                    f"list of cohort {cohort!r}; {keeping}", "fetch", event="members.fetch_failed")
            return False
        try:
            body = decoded_body(resp.body, resp.headers.get("Content-Encoding"), self.transport.max_body)
            found = decode_members(body)
            if isinstance(found, MemberDelta):
                if held is None:
                    raise MemberListError("a delta without a list to apply it to")
                found = held.patched(found)
            if found.cohort != cohort:
                raise MemberListError(f"the document is the list of cohort {found.cohort!r}")
        except Exception as exc:  # any body at all: "unusable", never a crash
            problem(f"members:{cohort}:invalid", f"the server sent an unusable member list for cohort {cohort!r} "
                    f"({type(exc).__name__}: {_short(exc)}); {keeping}", "ruleset", exc, event="members.rejected")
            self.member_etags.pop(cohort, None)  # the next attempt fetches the whole list
            return False
        self.problems.resolved(f"members:{cohort}:")
        self.members[cohort] = found
        etag = resp.headers.get("ETag")
        if etag:
            self.member_etags[cohort] = etag
        log.debug("turnout.members.installed: cohort %s version %s", cohort, found.version)
        return True

    def backoff(self, failures: int) -> float:
        o = self.options
        return jitter(min(o.backoff_max, o.backoff_base * 2 ** min(failures - 1, 30)))

    def loop(self) -> None:
        stop = self.stop
        o = self.options
        fetch_failures = stream_failures = 0
        while not stop.is_set():
            try:
                refreshed = self.refresh()
                self.attempted.set()
                if not refreshed:
                    fetch_failures += 1
                    delay = self.backoff(fetch_failures)
                else:
                    fetch_failures = 0
                    if self.use_stream and not stop.is_set():
                        if self.stream_session():
                            stream_failures = 0
                            delay = jitter(o.backoff_base)
                        else:
                            stream_failures += 1
                            delay = min(self.backoff(stream_failures), o.poll_interval)
                    else:
                        delay = jitter(o.poll_interval)
            except Exception as exc:  # pragma: no cover - a bug here must not kill the thread
                self.problems.report("internal:sync", f"sync loop error: {exc!r}", "internal", exc)
                delay = o.backoff_max
            stop.wait(delay)

    def stream_session(self) -> bool:
        """Follow the stream until it ends. True when it was healthy (connected and lasted),
        so the caller reconnects promptly; False to back off (and poll meanwhile)."""
        o = self.options
        stream = Stream(self.transport, read_timeout=o.stream_read_timeout, connect_timeout=o.timeout)
        self.stream = stream
        started = time.monotonic()
        healthy = min(_HEALTHY_STREAM, o.stream_read_timeout)
        try:
            try:
                stream.connect(self.last_event_id)
            except StreamUnsupported as exc:
                self.use_stream = False
                self.problems.report("stream:unsupported", f"{exc}; polling every {o.poll_interval:g}s instead",
                                     "stream", exc, event="stream.unavailable")
                return False
            except HTTPStatusError as exc:
                kind = "unauthorized" if exc.status in (401, 403) else f"http-{exc.status}"
                self.problems.report(f"stream:{kind}", f"the stream answered HTTP {exc.status}; polling meanwhile",
                                     "stream", exc, event="stream.failed")
                return False
            if self.stop.is_set():
                return False
            self.problems.resolved("stream:")
            for ev in stream.events():
                if self.stop.is_set():
                    return False
                if stream.parser.last_id:
                    self.last_event_id = stream.parser.last_id
                if ev.event == "patch" and not self.on_patch_event(ev.data):
                    return False  # as for a ruleset event whose fetch failed
                if ev.event == "ruleset" and not self.on_ruleset_event(ev.data):
                    # the announced ruleset could not be fetched: leave the stream so the
                    # loop retries the fetch with backoff instead of waiting for next event
                    return False
            return time.monotonic() - started >= healthy
        except TransportError as exc:
            if not self.stop.is_set():
                self.problems.report(f"stream:{exc.kind}", f"stream lost ({exc}); reconnecting", "stream", exc,
                                     event="stream.failed")
            return time.monotonic() - started >= healthy
        finally:
            stream.close()
            if self.stream is stream:
                self.stream = None

    def on_ruleset_event(self, data: str) -> bool:
        try:
            announced = json.loads(data).get("version")
        except Exception:
            announced = None
        current = self.version()
        if not isinstance(announced, int) or current is None or announced > current:
            return self.refresh()
        return True


    def on_patch_event(self, data: str) -> bool:
        """A small update: the changed flags and cohorts on top of the version in use, compiled and
        put in use at once (one swap, as a fetched ruleset). A patch whose base is not the version in
        use (a gap: an event missed, or none in use yet), or that does not apply, means the whole
        document is fetched instead."""
        current = self.current()
        try:
            patch = json.loads(data)
            announced = patch.get("version")
        except Exception:
            return self.refresh()
        if current is None or not isinstance(announced, int):
            return self.refresh()
        if announced <= current.version:
            return True  # already in use (or older)
        if patch.get("base") != current.version:
            return self.refresh()  # a gap
        try:
            doc = apply_patch(current.doc, patch)  # type: ignore[arg-type]  # a compiled doc
            lists_ok = self.fetch_members(doc)
            ruleset = _engine.compile_ruleset(doc, self.members)
        except Exception as exc:  # never raised into the host: fetch the whole document instead
            log.debug("turnout.ruleset.patch_unusable: %s", _short(exc))
            return self.refresh()
        etag = patch.get("etag")
        self.etag = etag if isinstance(etag, str) else None
        self.install(ruleset, self.etag)
        log.debug("turnout.ruleset.patched: version %s", ruleset.version)
        return lists_ok  # a list that could not be fetched: leave the stream, the loop retries it with backoff


class MetricsShipper:
    """Drains the recorder into batches and sends them (bounded retries, bounded backlog)."""

    def __init__(
        self,
        transport: Transport | None,
        recorder: Recorder,
        options: Options,
        problems: Problems,
        stop: threading.Event,
        *,
        sdk_version: str,
    ) -> None:
        self.transport = transport
        self.recorder = recorder
        self.options = options
        self.problems = problems
        self.stop = stop
        self.sdk_version = sdk_version
        self.send = options.send_metrics and transport is not None
        self.sender = Sender(retries=options.flush_retries, max_pending=options.max_pending_batches)
        self._lock = threading.Lock()

    def after_fork_in_child(self, stop: threading.Event) -> None:
        self.stop = stop
        self._lock = threading.Lock()
        self.sender = Sender(retries=self.sender.retries, max_pending=self.sender.max_pending)

    def loop(self) -> None:
        """Flush every ``flush_interval`` (with jitter); early when the recorder marks a batch
        urgent (a parallel run raised): ``URGENT_FLUSH_DELAY`` after it, at most once every
        ``URGENT_FLUSH_GAP`` seconds. Decisions never wait for any of this."""
        stop = self.stop
        last = time.monotonic()
        while not stop.is_set():
            deadline = time.monotonic() + jitter(self.options.flush_interval)
            while not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                urgent = self.recorder.urgent  # read each time: a fork gives the recorder a new one
                if urgent.wait(remaining) and not stop.is_set():
                    early = max(URGENT_FLUSH_DELAY, last + URGENT_FLUSH_GAP - time.monotonic())
                    stop.wait(min(early, max(deadline - time.monotonic(), 0.0)))
                    break
            if stop.is_set():
                return
            try:
                self.recorder.urgent.clear()
                self.flush_once(background=True)
            except Exception as exc:  # pragma: no cover
                self.problems.report("internal:metrics", f"metrics loop error: {exc!r}", "internal", exc)
            last = time.monotonic()

    def post(self, body: bytes) -> None:
        transport = self.transport
        if transport is None:  # pragma: no cover
            return
        resp = transport.request("POST", METRICS_PATH, body=body)
        if 200 <= resp.status < 300:
            return
        if 400 <= resp.status < 500 and resp.status not in (401, 403, 408, 429):
            raise ValueError(f"the server refused a metrics batch (HTTP {resp.status})")
        raise HTTPStatusError(resp.status)

    def flush_once(self, *, final: bool = False, background: bool = False) -> bool:
        with self._lock:
            batch = self.recorder.drain(sdk_version=self.sdk_version, code_version=self.options.code_version)
            if batch is not None:
                self.sender.add(batch)
            if not self.send:
                return True
            sender = self.sender
            before = sender.dropped_batches
            err = sender.send(self.post, give_up=final)
            if err is None:
                self.problems.resolved("metrics:")
            elif background and self.stop.is_set():
                pass  # close() cut the post short; its final flush sends the batch and reports
            else:
                kind = (
                    f"http-{err.status}" if isinstance(err, HTTPStatusError)
                    else getattr(err, "kind", "refused")
                )
                self.problems.report(
                    f"metrics:{kind}",
                    f"cannot send metrics ({err}); retrying {sender.retries} times at most, then dropping",
                    "metrics",
                    err,
                    event="metrics.send_failed",
                )
            if sender.dropped_batches > before:
                self.problems.report("metrics:dropped", "metrics batches dropped after failed sends", "metrics",
                                     notify=False, event="metrics.dropped")
            return err is None


def _member_refs(doc: Any) -> dict[str, int]:
    """cohort -> referenced member-list version, from a ruleset document (malformed parts skipped:
    compiling the document reports them)."""
    cohorts = doc.get("cohorts") if isinstance(doc, Mapping) else None
    if not isinstance(cohorts, Mapping):
        return {}
    refs: dict[str, int] = {}
    for key, cohort in cohorts.items():
        ref = cohort.get("members") if isinstance(cohort, Mapping) else None
        version = ref.get("version") if isinstance(ref, Mapping) else None
        if isinstance(key, str) and type(version) is int:
            refs[key] = version
    return refs


def _short(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # pragma: no cover
        return "?"
    return text if len(text) <= 300 else text[:300] + "…"
