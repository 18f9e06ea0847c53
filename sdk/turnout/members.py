"""Member lists of large cohorts: a compact, sorted array of member hashes (docs/sdk-protocol.md,
"Member lists").

A cohort with more listed members than the server inlines (``MEMBER_LIST_INLINE_MAX``, 10,000 by
default) is carried in the ruleset as a reference, ``"members": {"version": 7, "count": 1000000}``,
and its include / exclude lists travel in a document of their own, with its own version and ETag,
fetched by the sync thread (``GET /api/v1/sdk/cohorts/<key>/members``). In memory a list costs 10
bytes per member plus a 4-byte offset per index bucket (~8 members per bucket): a million members is
~10.5 MB, where the same list inline is ~115 MB of Python strings.

**Hashes.** A member's hash is the first 10 bytes (80 bits) of ``sha256(f"{salt}/{value}")``,
``salt`` chosen by the server per list version. Exact for members: the server checks that no two
listed values share a hash (it changes the salt if two ever do), so every listed value is found
with its own list. A value that is not listed is mistaken for a member only if its 80-bit hash
equals one of the n listed hashes: probability ``n / 2**80`` per distinct value (8.3e-19 for a
million members) — a service deciding for a billion distinct non-members a day would wait on
average ~3 million years for the first. Finding such a value on purpose means ~2**80 / n
sha256 evaluations (~1.2e18 for a million members), far beyond an attacker's reach.

**Wire format** (``application/vnd.turnout.members``, served gzip-compressed): the line
``TMBR1``, a JSON header line, then the sections. A full list has two sections, include then
exclude; each is ``2**bits + 1`` little-endian uint32 offsets (``offsets[b]`` = number of hashes
whose top ``bits`` bits are below ``b``) followed by the sorted hashes stored as 10 byte planes
(plane ``j`` holds byte ``j`` of every hash, most significant first). The planes make the sorted
hashes compress (~8.1 MB for a million). Loading is a few slice copies (no per-member Python work),
and a lookup hashes once and binary-searches one bucket of ~8.

A delta (``?since=<version>``) carries the hashes added to and removed from each list since that
version, as plain sorted 10-byte records; it is applied on top of exactly that version.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from array import array
from bisect import bisect_left
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
#: the most index bits a list uses (a 4 MiB offset table), whatever its size
MAX_BITS: Final = 20

_split = struct.Struct(">QH").unpack_from  # a hash: its high 64 bits and low 16 bits
_LITTLE = sys.byteorder == "little"


class MemberListError(ValueError):
    """A member-list document that cannot be read (the caller keeps what it had)."""


def member_hash(salt: str, value: str) -> bytes:
    """The 10-byte hash of one listed value under the list's salt."""
    return hashlib.sha256(f"{salt}/{value}".encode()).digest()[:HASH_BYTES]


def index_bits(count: int) -> int:
    """Index bits for a list of ``count`` hashes: about 8 hashes per bucket, at most ``MAX_BITS``."""
    return max(0, min(MAX_BITS, count.bit_length() - 3))


class HashSet:
    """One sorted list of member hashes, searchable without a Python object per member."""

    __slots__ = ("_bits", "_hi", "_hi_bytes", "_lo", "_lo_bytes", "_offsets", "_shift", "count")

    def __init__(self, hi: bytearray, lo: bytearray, offsets: array[int], bits: int) -> None:
        """``hi``: native uint64 (the high 64 bits of each hash, sorted), ``lo``: native uint16, ``offsets``:
        ``2**bits + 1`` bucket starts (use ``from_sorted`` or ``decode``)."""
        self.count = len(lo) // 2
        if len(hi) != 8 * self.count or len(offsets) != (1 << bits) + 1 or offsets[-1] != self.count:
            raise MemberListError("member list: sections do not agree on the number of hashes")
        self._hi_bytes, self._lo_bytes = hi, lo
        self._hi = memoryview(hi).cast("Q")
        self._lo = memoryview(lo).cast("H")
        if max(offsets) != self.count:
            raise MemberListError("member list: an offset points past the end of its section")
        self._offsets = offsets
        self._bits = bits
        self._shift = 64 - bits

    @classmethod
    def from_sorted(cls, hashes: Sequence[bytes], bits: int | None = None) -> HashSet:
        """From hashes already sorted (bytes order), each ``HASH_BYTES`` long."""
        raw = b"".join(hashes)
        return cls.from_records(raw, len(hashes), index_bits(len(hashes)) if bits is None else bits)

    @classmethod
    def from_records(cls, raw: bytes, count: int, bits: int) -> HashSet:
        """From ``count`` sorted 10-byte records concatenated."""
        planes = memoryview(b"".join(raw[j::HASH_BYTES] for j in range(HASH_BYTES)))
        hi, lo = _columns(planes, count)
        return cls(hi, lo, _offsets_of(memoryview(hi).cast("Q"), bits), bits)

    @classmethod
    def from_planes(cls, planes: memoryview, count: int, bits: int, offsets: array[int]) -> HashSet:
        hi, lo = _columns(planes, count)
        return cls(hi, lo, offsets, bits)

    @property
    def nbytes(self) -> int:
        return len(self._hi_bytes) + len(self._lo_bytes) + self._offsets.itemsize * len(self._offsets)

    def contains(self, hi: int, lo: int) -> bool:
        b = hi >> self._shift if self._bits else 0
        end = self._offsets[b + 1]
        keys = self._hi
        i = bisect_left(keys, hi, self._offsets[b], end)
        while i < end and keys[i] == hi:
            if self._lo[i] == lo:
                return True
            i += 1
        return False

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, bytes) or len(digest) != HASH_BYTES:
            return False
        return self.contains(*_split(digest))

    def records(self) -> bytes:
        """The sorted hashes as concatenated 10-byte records (tests, deltas)."""
        hi, lo = self._hi, self._lo
        return b"".join(struct.pack(">QH", hi[i], lo[i]) for i in range(self.count))

    def changed(self, added: Sequence[bytes], removed: Sequence[bytes]) -> HashSet:
        """A new set: this one with ``removed`` taken out and ``added`` put in (each sorted, 10-byte)."""
        drop = sorted({self._position(*_split(d)) for d in removed if d in self})
        adds = sorted(d for d in set(added) if d not in self)
        inserts = [(self._insert_at(*_split(d)), d) for d in adds]
        hi_parts: list[bytes | memoryview] = []
        lo_parts: list[bytes | memoryview] = []
        hi_view, lo_view = memoryview(self._hi_bytes), memoryview(self._lo_bytes)
        events = sorted([(p, 1, b"") for p in drop] + [(p, 0, d) for p, d in inserts])
        start = 0
        for position, kind, digest in events:
            hi_parts.append(hi_view[8 * start:8 * position])
            lo_parts.append(lo_view[2 * start:2 * position])
            if kind == 0:
                high, low = _split(digest)
                hi_parts.append(array("Q", [high]).tobytes())
                lo_parts.append(array("H", [low]).tobytes())
                start = position
            else:
                start = position + 1
        hi_parts.append(hi_view[8 * start:])
        lo_parts.append(lo_view[2 * start:])
        delta = [0] * (len(self._offsets))
        for digest in adds:
            delta[_bucket(digest, self._bits) + 1] += 1
        for position in drop:
            delta[_bucket_of_hi(self._hi[position], self._bits) + 1] -= 1
        offsets = array("I", (o + d for o, d in zip(self._offsets, accumulate(delta), strict=True)))
        return HashSet(bytearray(b"".join(hi_parts)), bytearray(b"".join(lo_parts)), offsets, self._bits)

    def _position(self, hi: int, lo: int) -> int:
        b = hi >> self._shift if self._bits else 0
        i = bisect_left(self._hi, hi, self._offsets[b], self._offsets[b + 1])
        while self._lo[i] != lo:
            i += 1
        return i

    def _insert_at(self, hi: int, lo: int) -> int:
        b = hi >> self._shift if self._bits else 0
        end = self._offsets[b + 1]
        i = bisect_left(self._hi, hi, self._offsets[b], end)
        while i < end and self._hi[i] == hi and self._lo[i] < lo:
            i += 1
        return i


def _bucket(digest: bytes, bits: int) -> int:
    return int.from_bytes(digest[:8], "big") >> (64 - bits) if bits else 0


def _bucket_of_hi(hi: int, bits: int) -> int:
    return hi >> (64 - bits) if bits else 0


def _columns(planes: memoryview, count: int) -> tuple[bytearray, bytearray]:
    """Byte planes → native uint64 high parts and uint16 low parts (slice copies, no per-hash work)."""
    hi, lo = bytearray(8 * count), bytearray(2 * count)
    for j in range(8):
        hi[(7 - j if _LITTLE else j)::8] = planes[j * count:(j + 1) * count]
    lo[(1 if _LITTLE else 0)::2] = planes[8 * count:9 * count]
    lo[(0 if _LITTLE else 1)::2] = planes[9 * count:10 * count]
    return hi, lo


def _offsets_of(keys: Sequence[int], bits: int) -> array[int]:
    """Bucket starts of sorted high parts: one C-level bisect per bucket boundary."""
    count = len(keys)
    offsets = array("I", [0]) * ((1 << bits) + 1)
    shift = 64 - bits
    for b in range(1, 1 << bits):
        offsets[b] = bisect_left(keys, b << shift, offsets[b - 1], count)
    offsets[-1] = count
    return offsets


def diff(old: MemberList, new: MemberList) -> MemberDelta | None:
    """The delta from ``old`` to ``new`` (None when their salts differ: only the whole list will do).
    Buckets whose bytes are equal are skipped at C speed; only the changed ones are compared."""
    if old.salt != new.salt or old.cohort != new.cohort:
        return None
    parts: list[list[bytes]] = []
    for a, b in ((old.include, new.include), (old.exclude, new.exclude)):
        added, removed = _set_diff(a, b)
        parts += [added, removed]
    return MemberDelta(new.cohort, old.version, new.version, new.salt, parts[0], parts[1], parts[2], parts[3])


def _set_diff(a: HashSet, b: HashSet) -> tuple[list[bytes], list[bytes]]:
    bits = max(a._bits, b._bits)
    oa = a._offsets if a._bits == bits else _offsets_of(a._hi, bits)
    ob = b._offsets if b._bits == bits else _offsets_of(b._hi, bits)
    ha, la, hb, lb = memoryview(a._hi_bytes), memoryview(a._lo_bytes), memoryview(b._hi_bytes), memoryview(b._lo_bytes)
    added: list[bytes] = []
    removed: list[bytes] = []
    for k in range(1 << bits):
        s1, e1, s2, e2 = oa[k], oa[k + 1], ob[k], ob[k + 1]
        if e1 - s1 == e2 - s2 and ha[8 * s1:8 * e1] == hb[8 * s2:8 * e2] and la[2 * s1:2 * e1] == lb[2 * s2:2 * e2]:
            continue
        before = {struct.pack(">QH", a._hi[i], a._lo[i]) for i in range(s1, e1)}
        after = {struct.pack(">QH", b._hi[i], b._lo[i]) for i in range(s2, e2)}
        added += after - before
        removed += before - after
    return sorted(added), sorted(removed)


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
            if salt is not None or len(set(hashes_in).union(hashes_ex)) == len(inc) + len(exc):
                return cls(cohort, version, chosen, HashSet.from_sorted(hashes_in), HashSet.from_sorted(hashes_ex))
            attempt += 1

    @property
    def nbytes(self) -> int:
        """Bytes held by the hash arrays (the Python objects around them are a few hundred more)."""
        return self.include.nbytes + self.exclude.nbytes

    def lookup(self, value: str) -> int:
        """0: not listed, 1: included, 2: excluded."""
        hi, lo = _split(hashlib.sha256(f"{self.salt}/{value}".encode()).digest())
        if self.exclude.count and self.exclude.contains(hi, lo):
            return 2
        if self.include.count and self.include.contains(hi, lo):
            return 1
        return 0

    def probe(self) -> Any:
        """``(value) -> 0/1/2`` as ``lookup``, with the salted hasher prepared once (the engine's hot path)."""
        prefix = hashlib.sha256(f"{self.salt}/".encode())
        include, exclude = self.include, self.exclude
        inc = include.contains if include.count else None
        exc = exclude.contains if exclude.count else None
        split = _split

        def probe(value: str) -> int:
            h = prefix.copy()
            h.update(value.encode())
            hi, lo = split(h.digest())
            if exc is not None and exc(hi, lo):
                return 2
            if inc is not None and inc(hi, lo):
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
    offsets = array("I", hashes._offsets)
    if not _LITTLE:  # pragma: no cover - big-endian hosts
        offsets.byteswap()
    count = hashes.count
    hi, lo = hashes._hi_bytes, hashes._lo_bytes
    planes = [bytes(hi[(7 - j if _LITTLE else j)::8]) for j in range(8)]
    planes.append(bytes(lo[(1 if _LITTLE else 0)::2]))
    planes.append(bytes(lo[(0 if _LITTLE else 1)::2]))
    assert all(len(p) == count for p in planes)
    return offsets.tobytes() + b"".join(planes)


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
        count = _count(header, name, len(data) // HASH_BYTES)
        bits = _count(header, f"{name}_bits", MAX_BITS)
        size = 4 * ((1 << bits) + 1)
        if at + size + count * HASH_BYTES > len(data):
            raise MemberListError(f"member list: the {name} section is truncated")
        offsets = array("I")
        offsets.frombytes(data[at:at + size])
        if not _LITTLE:  # pragma: no cover - big-endian hosts
            offsets.byteswap()
        at += size
        sets.append(HashSet.from_planes(data[at:at + count * HASH_BYTES], count, bits, offsets))
        at += count * HASH_BYTES
    if at != len(data):
        raise MemberListError("member list: trailing bytes after the exclude section")
    return MemberList(cohort, version, salt, sets[0], sets[1])
