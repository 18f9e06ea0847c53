"""What ``GET /api/v1/sdk/ruleset`` answers from: each version's ETag and bytes, kept in the process.

A poll costs what the lean guard costs (the key from the process-local copy, one Redis round trip
for the throttle count and the environment's current version, ``rollout/delivery/lean.py``) plus a
dict lookup: the answer to a matching ``If-None-Match`` needs only the version's ETag, which is
computed once when the version is built (``rollout/delivery/ruleset.py``). A 304 therefore costs the
same for a 20 KB document as for a 15 MB one. The first request of a process for a version reads
the ETag from the shared cache (a few bytes), and only a request that needs the document reads its
bytes — the plain ones or, when the client accepts gzip, the ones compressed once per version.

Only a few versions are kept per process (``RULESET_SERVED_LOCAL``): the newest is the one asked
for; an older one serves SDKs that have not yet heard of the change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from common.conf import get_setting
from rollout.delivery.evaluation import remember_version
from rollout.delivery.ruleset import (
    BuiltRuleset,
    cached_etag,
    cached_gzip,
    current_version,
    get_ruleset,
    gzip_etag,
)

Need = Literal["etag", "plain", "gzip"]


@dataclass(slots=True)
class Served:
    """One version of one environment's ruleset as this process serves it; the bytes are filled in
    when a request first needs them."""

    environment: str
    version: int
    etag: str
    body: bytes | None = None
    gzipped: bytes | None = None
    refs: bool = False  # the form with member-list references (``?members=1``)

    @property
    def gzip_etag(self) -> str:
        return gzip_etag(self.etag)

    def has(self, need: Need) -> bool:
        return need == "etag" or (self.body if need == "plain" else self.gzipped) is not None


_lock = threading.Lock()
_served: OrderedDict[tuple[int, int, bool], Served] = OrderedDict()


def served_local(environment_id: int, environment: str, version: int | None, refs: bool = False) -> Served | None:
    """The version as this process already holds it (no I/O); None when only ``served`` can answer."""
    if version is None:
        return None
    found = _served.get((environment_id, version, refs))
    return found if found is not None and found.environment == environment else None


def _keep(environment_id: int, entry: Served) -> Served:
    with _lock:
        key = (environment_id, entry.version, entry.refs)
        found = _served.get(key)
        if found is not None and found.etag == entry.etag:
            # Another request got here first: fill in what it lacks, keep one object.
            found.body = found.body or entry.body
            found.gzipped = found.gzipped or entry.gzipped
            return found
        _served[key] = entry
        _served.move_to_end(key)
        while len(_served) > max(1, int(get_setting("RULESET_SERVED_LOCAL"))):
            _served.popitem(last=False)
    return entry


def _from_built(built: BuiltRuleset, need: Need) -> Served:
    entry = Served(built.environment, built.version, built.etag, built.body, refs=built.refs)
    if need == "gzip":
        entry.gzipped = cached_gzip(built)
    return entry


def served(environment_id: int, environment: str, version: int | None, need: Need, refs: bool = False,
           ) -> Served | None:
    """The current version of the environment's ruleset with at least what ``need`` asks for (the
    ETag, the plain bytes or the gzip bytes); None when the environment is gone.

    ``version`` is the current version as Redis has it (read in the throttle's round trip), or None:
    then the database says. Touches the cache (and, on a miss, the database): run it in a thread."""
    if version is None:
        current = current_version(environment_id)
        if current is None:
            return None
        environment, version = current
        remember_version(environment, version)
    entry = served_local(environment_id, environment, version, refs)
    if entry is not None and entry.has(need):
        return entry
    if entry is None and need == "etag":
        etag = cached_etag(environment, version, refs)
        if etag is not None:
            return _keep(environment_id, Served(environment, version, etag, refs=refs))
    if entry is not None and need == "gzip" and entry.body is not None:
        entry.gzipped = cached_gzip(BuiltRuleset(entry.environment, entry.version, entry.body, entry.etag, refs))
        return entry
    # The bytes are needed (or the version is not built yet): the cache, else one build. What comes
    # back is the database's current version, never older than the one asked for.
    built = get_ruleset(environment_id, refs)
    if built is None:
        return None
    return _keep(environment_id, _from_built(built, need))


def clear_served() -> None:
    with _lock:
        _served.clear()


def etag_matches(header: str, *etags: str) -> bool:
    """Whether an ``If-None-Match`` header names one of ``etags`` (weak comparison, as RFC 9110 asks
    for If-None-Match). A malformed header matches nothing: the client gets the document."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    for part in header.split(","):
        candidate = part.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate in etags:
            return True
    return False


def accepts_gzip(header: str) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``gzip``, ``x-gzip`` or ``*`` with q > 0,
    gzip not refused by name)."""
    if not header:
        return False
    star = named = None
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        coding = coding.strip()
        if coding in ("gzip", "x-gzip"):
            named = q > 0 if named is None else named or q > 0
        elif coding == "*":
            star = q > 0
    return named if named is not None else bool(star)
