"""Per-worker services when the suite runs under pytest-xdist (``-n N``).

Loaded with ``-p tests.worker_env`` (``addopts``), before Django reads its settings: each worker gets
its own Redis database and var directory, as pytest-django gives it its own test database
(``test_<name>_gw<N>``). Without xdist it changes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_REDIS_DATABASES = 16


def _worker_index() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def redis_url_for_worker(url: str, index: int) -> str:
    """The same server, database ``base + 1 + index`` (mod 16): never the base database itself."""
    parts = urlsplit(url)
    path = parts.path.strip("/")
    base = int(path) if path.isdigit() else 0
    return urlunsplit(parts._replace(path=f"/{(base + 1 + index) % _REDIS_DATABASES}"))


def _apply() -> None:
    index = _worker_index()
    if index is None:
        return
    if os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = redis_url_for_worker(os.environ["REDIS_URL"], index)
    # the var directory holds the SQLite test database, the embedded broker and the secret key
    base = os.environ.get("TURNOUT_VAR_DIR") or str(Path(__file__).resolve().parents[1] / "var")
    os.environ["TURNOUT_VAR_DIR"] = os.path.join(base, f"test-gw{index}")


_apply()
