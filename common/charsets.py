"""Charsets named by clients: only text encodings are ever used to decode what they send.

Python's codec registry also holds codecs that are not text encodings (``rot13`` turns str into
str, ``hex`` and ``bz2`` bytes into bytes). Django adopts any charset ``codecs.lookup`` knows
from a request's ``Content-Type``, so ``multipart/form-data; charset=rot13`` made every form
field decode with ``rot13``: reading the form failed, an HTML 500.
``common.middleware.UnsupportedCharsetMiddleware`` answers such a request with a JSON 400 before
anything reads its body; ``text_encoding`` is the check, also used by the JSON parser and for a
CSV body's or an uploaded file's declared charset. (No imports from ``common`` here: the DRF
settings import the JSON parser, which imports this module, while ``common.errors`` loads.)
"""

from __future__ import annotations

import codecs

__all__ = ["declared_charset", "refused_charset", "text_encoding"]


def text_encoding(name: str) -> str | None:
    """The codec's canonical name when ``name`` is a text encoding Python has, else None."""
    try:
        "".encode(name)  # LookupError for unknown names and for codecs that are not text encodings
        return codecs.lookup(name).name
    except (LookupError, ValueError, TypeError):
        return None


def declared_charset(upload: object) -> str | None:
    """The charset an uploaded file's multipart part declares (Django keeps it as bytes), if any."""
    charset = getattr(upload, "charset", None)
    if isinstance(charset, bytes):
        charset = charset.decode("latin-1")
    return charset if isinstance(charset, str) and charset else None


def refused_charset(content_params: object) -> str | None:
    """The charset a request's ``Content-Type`` names when Django would decode with it although it is
    not a text encoding (``codecs.lookup`` knows it); None when the request is fine."""
    name = content_params.get("charset") if isinstance(content_params, dict) else None
    if not isinstance(name, str) or not name:
        return None
    try:
        codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None  # a charset Python does not know: Django ignores it and reads the default
    return None if text_encoding(name) is not None else name
