"""Turnout SDK: decide locally, in microseconds, whether a call takes the legacy or the
parallel path; optionally run both and compare.

    from turnout import Turnout

    client = Turnout("https://turnout.example.com", sdk_key="...")
    total = client.run("invoice-engine", tenant.id, {"country": tenant.country},
                       legacy=lambda: old_total(invoice), parallel=lambda: new_total(invoice))
"""

from __future__ import annotations

from ._breaker import Breaker
from ._options import Options
from .client import Turnout, TurnoutError, __version__
from .migration import Migration
from .types import Decision, ErrorCode, Path, Reason, Stage, StageDecision

__all__ = [
    "Breaker",
    "Decision",
    "ErrorCode",
    "Migration",
    "Options",
    "Path",
    "Reason",
    "Stage",
    "StageDecision",
    "Turnout",
    "TurnoutError",
    "__version__",
]
