"""User feedback as readiness evidence: ``client.feedback(flag, key, score=..., comment=...)``.

A subject (a user, a tenant) tells how the service felt; the client records which path it was on —
decided locally at feedback time (the same answer ``decide()`` gives, not counted as a decision) or
given by the host — and the server shows the scores and comments per path in the readiness report,
where an optional rule compares them (docs/feedback.md).

What leaves the process, and how it is bounded (as for mismatch samples):

* the key only as its SHA-256 (``wire.key_hash``), never in clear;
* the comment and the attributes through the host's ``redact`` hook (per call, else the client's
  option; a hook that raises drops the feedback: fail closed), then scrubbed here — e-mail addresses,
  long digit runs (phone, card, account numbers) and token-like strings become placeholders,
  attributes whose names look like secrets or personal data are masked — and capped: the comment at
  ``MAX_COMMENT_CHARS``, at most ``MAX_ATTRIBUTES`` scalar attributes of ``MAX_ATTRIBUTE_CHARS`` each
  (``truncated`` says when anything was cut);
* at most ``MAX_PENDING`` entries wait in memory (more are dropped and counted); a background thread,
  started on the first feedback, posts them in batches of ``MAX_BATCH`` to ``FEEDBACK_PATH`` a moment
  after they arrive (retried a few times, then dropped). ``feedback()`` itself only appends to a list.

Nothing here raises into the host: bad input is reported once through ``on_error``/the log and the
call returns False.

This module is also the wire contract of ``POST /api/v1/sdk/feedback`` (``FeedbackEntry``,
``FeedbackBatch``); the server parses it with the same limits and scrubs again with ``scrub_text``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

from .wire import SDK_NAME, PathName, key_hash

if TYPE_CHECKING:
    from ._problems import Problems
    from ._transport import Transport
    from .types import Decision

__all__ = [
    "BATCH_DELAY",
    "FEEDBACK_PATH",
    "MAX_ATTRIBUTES",
    "MAX_ATTRIBUTE_CHARS",
    "MAX_BATCH",
    "MAX_COMMENT_CHARS",
    "MAX_PENDING",
    "SCORE_MAX",
    "SCORE_MIN",
    "SENSITIVE_NAME",
    "FeedbackBatch",
    "FeedbackEntry",
    "scrub_attributes",
    "scrub_text",
]

FEEDBACK_PATH: Final = "/api/v1/sdk/feedback"
SCORE_MIN: Final = 1
SCORE_MAX: Final = 5
MAX_COMMENT_CHARS: Final = 1000
MAX_ATTRIBUTES: Final = 20
MAX_ATTRIBUTE_CHARS: Final = 200
MAX_NAME: Final = 100
MAX_PENDING: Final = 1000
MAX_BATCH: Final = 100
#: seconds the sender waits after the first feedback of a batch for more to join it (at most; the
#: client's ``flush_interval`` when shorter)
BATCH_DELAY: Final = 0.5
#: tries of one batch (a 4xx refusal is never retried)
MAX_TRIES: Final = 3

#: attribute names whose values never leave the process (the server masks the same names)
SENSITIVE_NAME: Final = re.compile(
    r"pass(word)?|secret|token|api[_-]?key|auth|e-?mail|phone|ssn|iban|card|address|name$", re.I)
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_NUMBER = re.compile(r"(?<![\w])\+?\d(?:[\d ().-]{5,}\d)(?![\w])")
_WORD = re.compile(r"[A-Za-z0-9_-]{24,}")  # a token candidate: long, no spaces
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[A-Za-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # in text: tabs and line breaks stay
_NAME_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in names: none at all (the server refuses them)

Scalar = str | int | float | bool | None
PathSource = Literal["decided", "given"]


class FeedbackEntry(TypedDict):
    """One subject's feedback on one flag, as the SDK sends it."""

    flag: str
    key_hash: str
    path: PathName
    #: ``decided``: the client decided the path at feedback time; ``given``: the host named it
    path_source: PathSource
    version: int | None
    score: int | None
    comment: str | None
    attributes: dict[str, Scalar]
    truncated: bool
    at: str


class FeedbackBatch(TypedDict):
    sdk: dict[str, str | None]
    feedback: list[FeedbackEntry]


def scrub_text(text: str) -> str:
    """``text`` with e-mail addresses, long digit runs and token-like strings replaced by placeholders
    (and control characters removed)."""
    text = _CONTROL.sub("", text)
    if "@" in text:  # the patterns only where they can match: most comments skip them all
        text = _EMAIL.sub("[email]", text)
    if _DIGIT.search(text):  # tokens and numbers both hold a digit
        text = _WORD.sub(_token, text)
        text = _NUMBER.sub("[number]", text)
    return text


def _token(match: re.Match[str]) -> str:
    """A long run of letters and digits mixed (an API key, a session id) becomes ``[token]``."""
    word = match.group()
    return "[token]" if _DIGIT.search(word) and _LETTER.search(word) else word


def _cap(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[: limit - 1] + "…", True


def scrub_attributes(attributes: Mapping[Any, Any]) -> tuple[dict[str, Scalar], bool]:
    """Scalar attributes only, sensitive names masked, strings scrubbed and capped, at most
    ``MAX_ATTRIBUTES`` (by name); the second value says whether anything was cut."""
    out: dict[str, Scalar] = {}
    cut = False
    names = sorted((k for k in attributes if isinstance(k, str)), key=str)
    if len(names) != len(attributes):
        cut = True
    for name in names:
        if len(out) >= MAX_ATTRIBUTES:
            cut = True
            break
        value = attributes[name]
        short, clipped = _cap(_NAME_CONTROL.sub("", name), MAX_NAME)
        cut = cut or clipped
        if not short:
            continue
        if SENSITIVE_NAME.search(short):
            out[short] = "[redacted]"
        elif value is None or isinstance(value, bool | int):
            out[short] = value
        elif isinstance(value, float):
            out[short] = value if value == value and abs(value) != float("inf") else None
        elif isinstance(value, str):
            text, clipped = _cap(scrub_text(value), MAX_ATTRIBUTE_CHARS)
            cut = cut or clipped
            out[short] = text
        else:  # lists, objects, anything else: not sent
            cut = True
    return out, cut


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FeedbackSender:
    """The pending feedback of one client and the thread that posts it.

    ``record()`` runs on the host's thread: it builds the entry and appends it under a short lock.
    The ``turnout-feedback`` thread (started on the first feedback of an online client) waits for
    entries, lets a batch gather for ``BATCH_DELAY`` and posts it; ``flush()`` and ``close()`` post
    what is pending at once. An offline client keeps its entries (``pending()``) and sends nothing.
    """

    def __init__(
        self,
        transport: Transport | None,
        problems: Problems,
        *,
        sdk_version: str,
        code_version: str | None,
        redact: Callable[[str, Any], Any] | None,
        gather: float = BATCH_DELAY,
        backoff: tuple[float, float] = (1.0, 30.0),
    ) -> None:
        self.transport = transport
        #: seconds a batch gathers before it is posted; the retry delays (base, doubling up to max)
        self.gather = gather
        self.backoff = backoff
        self.problems = problems
        self.sdk_version = sdk_version
        self.code_version = code_version
        self.redact = redact
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: deque[FeedbackEntry] = deque()
        self._tries = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.dropped = 0

    def after_fork_in_child(self) -> None:
        # The parent sends what it recorded; the child starts empty, its thread starts on first use.
        self._reset()

    # -- the host's thread -----------------------------------------------------------------

    def record(
        self,
        decide: Callable[[str, str, Mapping[str, Any] | None], Decision],
        flag: object,
        key: object,
        *,
        score: object,
        comment: object,
        attributes: object,
        path: object,
        redact: Callable[[str, Any], Any] | None,
    ) -> bool:
        entry = self._entry(decide, flag, key, score=score, comment=comment, attributes=attributes, path=path,
                            redact=redact)
        if entry is None:
            return False
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                full = True
            else:
                self._pending.append(entry)
                full = False
        if full:
            self.problems.report("feedback:dropped", f"more than {MAX_PENDING} feedback entries waiting to be "
                                 "sent: dropping new ones", "feedback", notify=False, event="feedback.dropped")
            return False
        if self.transport is not None and not self._closed:
            if self._thread is None:
                self._start()
            self._wake.set()
        return True

    def _bad(self, problem: str, message: str) -> None:
        self.problems.report(f"feedback:{problem}", f"feedback {message}: not recorded", "feedback")

    def _entry(
        self,
        decide: Callable[[str, str, Mapping[str, Any] | None], Decision],
        flag: object,
        key: object,
        *,
        score: object,
        comment: object,
        attributes: object,
        path: object,
        redact: Callable[[str, Any], Any] | None,
    ) -> FeedbackEntry | None:
        if not isinstance(flag, str) or not 0 < len(flag) <= MAX_NAME or _NAME_CONTROL.search(flag):
            self._bad("flag", "needs a flag key (1 to 100 printable characters)")
            return None
        flag = str.__str__(flag)
        if key is None or (isinstance(key, str) and not key):
            self._bad("key", f"for {flag!r} needs the subject's key")
            return None
        if score is not None and (not isinstance(score, int) or isinstance(score, bool)
                                  or not SCORE_MIN <= score <= SCORE_MAX):
            self._bad("score", f"score must be a whole number from {SCORE_MIN} to {SCORE_MAX} or None")
            return None
        if comment is not None and not isinstance(comment, str):
            self._bad("comment", "comment must be a string or None")
            return None
        if score is None and not (comment or "").strip():
            self._bad("empty", "needs a score or a comment")
            return None
        if attributes is not None and not isinstance(attributes, Mapping):
            self._bad("attributes", "attributes must be a mapping or None")
            return None
        if path is not None and path not in ("legacy", "parallel"):
            self._bad("path", "path must be 'legacy', 'parallel' or None (decided now)")
            return None
        key_text = key if isinstance(key, str) else str(key)
        if path is None:
            d = decide(flag, key_text, attributes)
            chosen: PathName = "parallel" if d.path == "parallel" else "legacy"
            source: PathSource = "decided"
            version = d.version
        else:
            chosen = "parallel" if path == "parallel" else "legacy"
            source = "given"
            version = None
        hook = redact if redact is not None else self.redact
        text: Any = comment
        attrs: Any = dict(attributes) if attributes is not None else {}
        if hook is not None:
            try:
                if text is not None:
                    text = hook(flag, text)
                if attrs:
                    attrs = hook(flag, attrs)
            except Exception as exc:
                self.problems.report(f"redact:{flag}", f"the redact hook raised {type(exc).__name__} for flag "
                                     f"{flag!r}: feedback dropped", "redact", exc)
                return None
            if (text is not None and not isinstance(text, str)) or not isinstance(attrs, Mapping | None):
                self._bad("redact", f"for {flag!r}: the redact hook must return a string for the comment and "
                          "a mapping for the attributes")
                return None
        truncated = False
        clean: str | None = None
        if text is not None and text.strip():
            clean, truncated = _cap(scrub_text(text.strip()), MAX_COMMENT_CHARS)
        clean_attrs, cut = scrub_attributes(attrs or {})
        return {
            "flag": flag,
            "key_hash": key_hash(key_text),
            "path": chosen,
            "path_source": source,
            "version": version,
            "score": score if isinstance(score, int) else None,
            "comment": clean,
            "attributes": clean_attrs,
            "truncated": truncated or cut,
            "at": _iso(time.time()),
        }

    # -- sending ---------------------------------------------------------------------------

    def pending(self) -> list[FeedbackEntry]:
        """The entries waiting to be sent (a copy)."""
        with self._lock:
            return list(self._pending)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._closed:
                return
            self._thread = threading.Thread(target=self._loop, name="turnout-feedback", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            self._wake.wait()
            if stop.is_set():
                return
            stop.wait(self.gather)  # let a burst gather into one batch
            self._wake.clear()
            try:
                while self.send() and self._pending and not stop.is_set():
                    pass
                if self._pending and not stop.is_set():  # it failed: try again later
                    base, most = self.backoff
                    stop.wait(min(most, base * 2.0 ** max(self._tries - 1, 0)))
                    self._wake.set()
            except Exception as exc:  # pragma: no cover - a bug here must not kill the thread
                self.problems.report("internal:feedback", f"feedback loop error: {exc!r}", "internal", exc)

    def send(self, *, final: bool = False) -> bool:
        """Post one batch of pending entries. True when nothing is pending or the batch was taken."""
        transport = self.transport
        if transport is None:
            return True
        with self._send_lock:
            with self._lock:
                batch = [self._pending[i] for i in range(min(MAX_BATCH, len(self._pending)))]
            if not batch:
                return True
            body: FeedbackBatch = {
                "sdk": {"name": SDK_NAME, "version": self.sdk_version, "code_version": self.code_version},
                "feedback": batch,
            }
            data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            problem: str | None = None
            permanent = False
            try:
                resp = transport.request("POST", FEEDBACK_PATH, body=data)
                if 200 <= resp.status < 300:
                    status = None
                else:
                    status = resp.status
            except Exception as exc:  # TransportError, and anything else: never the host's problem
                status = None
                problem = f"cannot send feedback ({exc})"
            if status is not None:
                problem = f"the server answered HTTP {status} for feedback"
                permanent = 400 <= status < 500 and status not in (401, 403, 408, 429)
            if problem is None:
                self._forget(len(batch))
                self.problems.resolved("feedback:send")
                return True
            self._tries += 1
            give_up = permanent or final or self._tries >= MAX_TRIES
            if give_up:
                self.dropped += len(batch)  # counted before the entries leave the list (readers wait on it)
                self._forget(len(batch))
            self.problems.report("feedback:send", f"{problem}; " + ("dropped" if give_up else "retrying"),
                                 "feedback", event="feedback.send_failed")
            return False

    def _forget(self, n: int) -> None:
        with self._lock:
            for _ in range(min(n, len(self._pending))):
                self._pending.popleft()
        self._tries = 0

    def flush(self) -> bool:
        """Post everything pending now (bounded by the transport's timeout per batch)."""
        if self.transport is None:
            return True
        while True:
            with self._lock:
                left = len(self._pending)
            if not left:
                return True
            if not self.send():
                return False

    def close(self) -> None:
        """Stop the thread and post what is pending once (a failure drops it)."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        if self.transport is not None:
            for _ in range(MAX_PENDING // MAX_BATCH + 1):
                if not self._pending or not self.send(final=True):
                    break
