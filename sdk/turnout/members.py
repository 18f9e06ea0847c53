"""Member lists of large cohorts: a compact array of member hashes (docs/sdk-protocol.md, "Member lists").

A cohort with more listed members than the server inlines (``MEMBER_LIST_INLINE_MAX``, 10,000 by
default) is carried in the ruleset of SDKs that ask (``?members=1``) as a reference,
``"members": {"version": 7, "count": 1000000}`` (schema 2), and its include / exclude lists travel in
a document of their own, with its own version and ETag, fetched by the sync thread
(``GET /api/v1/sdk/cohorts/<key>/members``). In memory a list costs 8 bytes per member plus a 4-byte
offset per index bucket (~8 members per bucket): a million members is ~8.5 MB, where the same list
inline is ~100 MB of Python strings.

**Hashes.** A member's hash is the first 10 bytes (80 bits) of ``sha256(f"{salt}/{value}")``, ``salt``
chosen by the server per list version. Exact for members: the server checks that no two listed values
share a hash (it changes the salt if two ever do), so every listed value is found in its own list and
no other. A value that is not listed is mistaken for a member only if its 80-bit hash equals one of the
n listed hashes: probability ``n / 2**80`` per distinct value (8.3e-19 for a million members) — a
service deciding for a billion distinct non-members a day would wait ~3 million years on average for
the first. Finding such a value on purpose takes ~``2**80 / n`` sha256 evaluations (~1.2e18 for a
million members), beyond an attacker's reach.

**Layout.** A hash ``h`` falls in bucket ``h >> (80 - bits)`` (``bits`` from 16 to 20, ~8 hashes per
bucket); the bucket is implied by where the hash is stored, so each member is its low ``80 - bits``
bits as one uint64, sorted within its bucket. A lookup hashes once and binary-searches one bucket.

**Wire format** (``application/vnd.turnout.members``): the line ``TMBR1``, a JSON header line, then the
sections. A full list has two, include then exclude; each is ``2**bits + 1`` little-endian uint32
offsets (``offsets[b]`` = hashes in buckets below ``b``) then ``count`` little-endian uint64 keys.
Loading is two array copies (no per-member Python work). Hashes do not compress, so gzip saves little
(the offsets); the server offers it, and the SDK does not ask for it (a gunzip would cost more load time
than the few percent it saves on the wire).

A delta (``?since=<version>``) carries the hashes added to and removed from each list since that
version as sorted 10-byte records; it applies on top of exactly that version and salt.
"""

from __future__ import annotations

import hashlib
import json
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import Any, Final

__all__ = [
    "HASH_BYTES",
    "MAGIC",
    "MEDIA_TYPE",
    "HashSet",
    "MemberDelta",
    "MemberList",
    "MemberListError",
    "decode",
    "diff",
    "encode",
    "encode_delta",
    "index_bits",
    "member_hash",
]

HASH_BYTES: Final = 10
HASH_NAME: Final = "sha256/80"
MAGIC: Final = b"TMBR1\n"
MEDIA_TYPE: Final = "application/vnd.turnout.members"
#: index bits: at least 16 (so the 80 - bits kept per hash fit in 64), at most 20 (a 4 MiB table)
MIN_BITS: Final = 16
MAX_BITS: Final = 20

_LITTLE = sys.byteorder == "little"
_from_bytes = int.from_bytes


class MemberListError(ValueError):
    """A member-list document that cannot be read (the caller keeps what it had)."""


def member_hash(salt: str, value: str) -> bytes:
    """The 10-byte hash of one listed value under the list's salt."""
    return hashlib.sha256(f"{salt}/{value}".encode()).digest()[:HASH_BYTES]


def index_bits(count: int) -> int:
    """Index bits for a list of ``count`` hashes: about 8 hashes per bucket, within MIN_BITS..MAX_BITS."""
    return max(MIN_BITS, min(MAX_BITS, count.bit_length() - 3))


def _native(values: array[int]) -> array[int]:
    """Little-endian wire order <-> this host's order (a no-op on little-endian hosts)."""
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        values.byteswap()
    return values


class HashSet:
    """One list of member hashes, searchable without a Python object per member (see "Layout")."""

    __slots__ = ("_bits", "_keys", "_mask", "_offsets", "_shift", "count")

    def __init__(self, keys: array[int], offsets: array[int], bits: int) -> None:
        """``keys``: native uint64 (``array("Q")``), ``offsets``: ``2**bits + 1`` uint32 (``array("I")``);
        use ``from_sorted`` or ``decode``."""
        if not MIN_BITS <= bits <= MAX_BITS:
            raise MemberListError(f"member list: index bits must be from {MIN_BITS} to {MAX_BITS}, got {bits}")
        self.count = len(keys)
        if len(offsets) != (1 << bits) + 1 or offsets[0] != 0 or offsets[-1] != self.count:
            raise MemberListError("member list: sections do not agree on the number of hashes")
        if max(offsets) != self.count:
            raise MemberListError("member list: an offset points past the end of its section")
        self._keys = keys
        self._offsets = offsets
        self._bits = bits
        self._shift = 8 * HASH_BYTES - bits
        self._mask = (1 << self._shift) - 1

    @classmethod
    def from_sorted(cls, hashes: Sequence[bytes], bits: int | None = None) -> HashSet:
        """From hashes already sorted (bytes order), each ``HASH_BYTES`` long."""
        return cls.from_ints([_from_bytes(h, "big") for h in hashes], bits)

    @classmethod
    def from_ints(cls, ints: list[int], bits: int | None = None) -> HashSet:
        """From sorted 80-bit hash values."""
        bits = index_bits(len(ints)) if bits is None else bits
        shift = 8 * HASH_BYTES - bits
        mask = (1 << shift) - 1
        keys = array("Q", [h & mask for h in ints])
        offsets = array("I", [0]) * ((1 << bits) + 1)
        count = len(ints)
        for b in range(1, 1 << bits):
            offsets[b] = bisect_left(ints, b << shift, offsets[b - 1], count)
        offsets[-1] = count
        return cls(keys, offsets, bits)

    @property
    def nbytes(self) -> int:
        return self._keys.itemsize * len(self._keys) + self._offsets.itemsize * len(self._offsets)

    def contains(self, h: int) -> bool:
        """Whether the 80-bit hash value ``h`` is in the set."""
        offsets = self._offsets
        b = h >> self._shift
        end = offsets[b + 1]
        r = h & self._mask
        i = bisect_left(self._keys, r, offsets[b], end)
        return i < end and self._keys[i] == r

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, bytes) or len(digest) != HASH_BYTES:
            return False
        return self.contains(_from_bytes(digest, "big"))

    def _bucket(self, b: int) -> set[int]:
        base = b << self._shift
        return {base | self._keys[i] for i in range(self._offsets[b], self._offsets[b + 1])}

    def changed(self, added: Iterable[bytes], removed: Iterable[bytes]) -> HashSet:
        """A new set: this one with ``removed`` taken out and ``added`` put in (10-byte hashes). Costs a copy
        of the arrays (C speed) and Python work per changed hash only."""
        keys, offsets, shift, mask = self._keys, self._offsets, self._shift, self._mask
        drops: list[int] = []
        for h in {_from_bytes(d, "big") for d in removed}:
            b, r = h >> shift, h & mask
            i = bisect_left(keys, r, offsets[b], offsets[b + 1])
            if i < offsets[b + 1] and keys[i] == r:
                drops.append(i)
        news = sorted(h for h in {_from_bytes(d, "big") for d in added} if not self.contains(h))
        inserts = [(bisect_left(keys, h & mask, offsets[h >> shift], offsets[(h >> shift) + 1]), h & mask)
                   for h in news]
        events = sorted([(i, 1, 0) for i in drops] + [(i, 0, r) for i, r in inserts])
        out = array("Q")
        start = 0
        for position, kind, r in events:
            out.extend(keys[start:position])
            if kind == 0:
                out.append(r)
                start = position
            else:
                start = position + 1
        out.extend(keys[start:])
        delta = [0] * len(offsets)
        for h in news:
            delta[(h >> shift) + 1] += 1
        for i in drops:
            delta[bisect_right(offsets, i)] -= 1
        moved = array("I", (o + d for o, d in zip(offsets, accumulate(delta), strict=True)))
        return HashSet(out, moved, self._bits)


def diff(old: MemberList, new: MemberList) -> MemberDelta | None:
    """The delta from ``old`` to ``new``; None when only the whole list will do (another salt or index
    size). Buckets whose bytes are equal are skipped at C speed; only the changed ones are compared."""
    if old.salt != new.salt or old.cohort != new.cohort:
        return None
    parts: list[list[bytes]] = []
    for a, b in ((old.include, new.include), (old.exclude, new.exclude)):
        if a._bits != b._bits and (a.count or b.count):
            return None
        added, removed = _set_diff(a, b) if a.count or b.count else ([], [])
        parts += [added, removed]
    return MemberDelta(new.cohort, old.version, new.version, new.salt, parts[0], parts[1], parts[2], parts[3])


def _set_diff(a: HashSet, b: HashSet) -> tuple[list[bytes], list[bytes]]:
    oa, ob = a._offsets, b._offsets
    ka, kb = memoryview(a._keys).cast("B"), memoryview(b._keys).cast("B")
    added: list[int] = []
    removed: list[int] = []
    for k in range(len(oa) - 1):
        s1, e1, s2, e2 = oa[k], oa[k + 1], ob[k], ob[k + 1]
        if e1 - s1 == e2 - s2 and ka[8 * s1:8 * e1] == kb[8 * s2:8 * e2]:
            continue
        before, after = a._bucket(k), b._bucket(k)
        added += after - before
        removed += before - after
    return ([h.to_bytes(HASH_BYTES, "big") for h in sorted(added)],
            [h.to_bytes(HASH_BYTES, "big") for h in sorted(removed)])


class MemberList:
    """A cohort's include and exclude lists at one version. Immutable; safe to share across threads."""

    __slots__ = ("cohort", "exclude", "include", "salt", "version")

    def __init__(self, cohort: str, version: int, salt: str, include: HashSet, exclude: HashSet) -> None:
        self.cohort, self.version, self.salt = cohort, version, salt
        self.include, self.exclude = include, exclude

    def __repr__(self) -> str:
        return (f"<MemberList {self.cohort!r} v{self.version} ({self.include.count} included, "
                f"{self.exclude.count} excluded)>")

    @classmethod
    def from_values(cls, cohort: str, version: int, include: Iterable[str] = (), exclude: Iterable[str] = (),
                    salt: str | None = None) -> MemberList:
        """A list built from the values themselves (the server's builder; tests). The salt is changed
        until no two listed values share a hash (exactness for members)."""
        inc, exc = set(include), set(exclude)
        attempt = 0
        while True:
            chosen = salt if salt is not None else (cohort if attempt == 0 else f"{cohort}#{attempt}")
            prefix = hashlib.sha256(f"{chosen}/".encode())

            def digest(value: str, prefix: Any = prefix) -> bytes:
                h = prefix.copy()
                h.update(value.encode())
                return h.digest()[:HASH_BYTES]  # type: ignore[no-any-return]  # hashlib's digest is bytes

            hashes_in = sorted(map(digest, inc))
            hashes_ex = sorted(map(digest, exc))
            # (a value in both lists has one hash in both: exclude wins at lookup, as for inline lists)
            if salt is not None or len(set(hashes_in).union(hashes_ex)) == len(inc | exc):
                return cls(cohort, version, chosen, HashSet.from_sorted(hashes_in), HashSet.from_sorted(hashes_ex))
            attempt += 1
            if attempt > 64:  # pragma: no cover - 80-bit hashes of distinct values do not collide 64 times
                raise MemberListError(f"member list of {cohort!r}: no collision-free salt found")

    @property
    def nbytes(self) -> int:
        """Bytes held by the hash arrays (the Python objects around them are a few hundred more)."""
        return self.include.nbytes + self.exclude.nbytes

    def lookup(self, value: str) -> int:
        """0: not listed, 1: included, 2: excluded."""
        h = _from_bytes(hashlib.sha256(f"{self.salt}/{value}".encode()).digest()[:HASH_BYTES], "big")
        if self.exclude.count and self.exclude.contains(h):
            return 2
        if self.include.count and self.include.contains(h):
            return 1
        return 0

    def probe(self) -> Any:
        """``(value) -> 0/1/2`` as ``lookup``, with the salted hasher prepared once (the engine's hot path)."""
        prefix = hashlib.sha256(f"{self.salt}/".encode())
        include, exclude = self.include, self.exclude
        inc = include.contains if include.count else None
        exc = exclude.contains if exclude.count else None
        from_bytes = _from_bytes

        def probe(value: str) -> int:
            d = prefix.copy()
            d.update(value.encode())
            h = from_bytes(d.digest()[:10], "big")
            if exc is not None and exc(h):
                return 2
            if inc is not None and inc(h):
                return 1
            return 0

        return probe

    def patched(self, delta: MemberDelta) -> MemberList:
        """The list at ``delta.version`` (``delta`` must start from this version and salt)."""
        if delta.cohort != self.cohort or delta.base != self.version or delta.salt != self.salt:
            raise MemberListError(f"member list delta from version {delta.base} does not apply to version "
                                  f"{self.version}")
        return MemberList(self.cohort, delta.version, self.salt,
                          self.include.changed(delta.add_include, delta.remove_include),
                          self.exclude.changed(delta.add_exclude, delta.remove_exclude))


class MemberDelta:
    """What changed in a member list from version ``base`` to ``version``."""

    __slots__ = ("add_exclude", "add_include", "base", "cohort", "remove_exclude", "remove_include", "salt",
                 "version")

    def __init__(self, cohort: str, base: int, version: int, salt: str, add_include: list[bytes],
                 remove_include: list[bytes], add_exclude: list[bytes], remove_exclude: list[bytes]) -> None:
        self.cohort, self.base, self.version, self.salt = cohort, base, version, salt
        self.add_include, self.remove_include = add_include, remove_include
        self.add_exclude, self.remove_exclude = add_exclude, remove_exclude


# -- the wire format ----------------------------------------------------------------------------


def _header(fields: dict[str, Any]) -> bytes:
    return MAGIC + json.dumps(fields, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def _section(hashes: HashSet) -> bytes:
    return _native(array("I", hashes._offsets)).tobytes() + _native(array("Q", hashes._keys)).tobytes()


def encode(members: MemberList) -> bytes:
    """The member-list document (uncompressed)."""
    header = {"cohort": members.cohort, "version": members.version, "salt": members.salt, "hash": HASH_NAME,
              "include": members.include.count, "include_bits": members.include._bits,
              "exclude": members.exclude.count, "exclude_bits": members.exclude._bits}
    return _header(header) + _section(members.include) + _section(members.exclude)


def encode_delta(delta: MemberDelta) -> bytes:
    """A delta document: added and removed hashes of each list, sorted 10-byte records."""
    parts = (delta.add_include, delta.remove_include, delta.add_exclude, delta.remove_exclude)
    header = {"cohort": delta.cohort, "version": delta.version, "base": delta.base, "salt": delta.salt,
              "hash": HASH_NAME, "add_include": len(parts[0]), "remove_include": len(parts[1]),
              "add_exclude": len(parts[2]), "remove_exclude": len(parts[3])}
    return _header(header) + b"".join(b"".join(sorted(p)) for p in parts)


def _count(header: dict[str, Any], name: str, limit: int) -> int:
    value = header.get(name)
    if type(value) is not int or not 0 <= value <= limit:
        raise MemberListError(f"member list header: {name} must be an integer from 0 to {limit}, got {value!r}")
    return value


def decode(body: bytes) -> MemberList | MemberDelta:
    """A member-list or delta document (uncompressed) → ``MemberList`` / ``MemberDelta``.
    ``MemberListError`` naming the problem when the document is not one."""
    if not body.startswith(MAGIC):
        raise MemberListError("member list: not a TMBR1 document")
    end = body.find(b"\n", len(MAGIC))
    if end < 0:
        raise MemberListError("member list: no header line")
    try:
        header = json.loads(body[len(MAGIC):end])
    except ValueError as exc:
        raise MemberListError(f"member list header: not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise MemberListError("member list header: must be an object")
    if header.get("hash") != HASH_NAME:
        raise MemberListError(f"member list header: unsupported hash {header.get('hash')!r}")
    cohort, salt = header.get("cohort"), header.get("salt")
    if not isinstance(cohort, str) or not isinstance(salt, str):
        raise MemberListError("member list header: cohort and salt must be strings")
    version = _count(header, "version", 2**63)
    data = memoryview(body)[end + 1:]
    if "base" in header:
        base = _count(header, "base", version)
        names = ("add_include", "remove_include", "add_exclude", "remove_exclude")
        counts = [_count(header, n, len(data) // HASH_BYTES) for n in names]
        if sum(counts) * HASH_BYTES != len(data):
            raise MemberListError("member list delta: body length does not match its header")
        lists: list[list[bytes]] = []
        at = 0
        for n in counts:
            lists.append([bytes(data[i:i + HASH_BYTES]) for i in range(at, at + n * HASH_BYTES, HASH_BYTES)])
            at += n * HASH_BYTES
        return MemberDelta(cohort, base, version, salt, *lists)
    sets: list[HashSet] = []
    at = 0
    for name in ("include", "exclude"):
        count = _count(header, name, len(data) // 8)
        bits = _count(header, f"{name}_bits", MAX_BITS)
        size = 4 * ((1 << bits) + 1)
        if at + size + count * 8 > len(data):
            raise MemberListError(f"member list: the {name} section is truncated")
        offsets, keys = array("I"), array("Q")
        offsets.frombytes(data[at:at + size])
        at += size
        keys.frombytes(data[at:at + count * 8])
        at += count * 8
        sets.append(HashSet(_native(keys), _native(offsets), bits))
    if at != len(data):
        raise MemberListError("member list: trailing bytes after the exclude section")
    return MemberList(cohort, version, salt, sets[0], sets[1])
