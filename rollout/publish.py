"""Announcing new ruleset versions to streaming SDKs (called after commit only)."""

from __future__ import annotations

import logging

from rollout.broadcast import publish
from rollout.evaluation import remember_version

logger = logging.getLogger("turnout.ruleset")


def announce_ruleset(environment: str, version: int) -> None:
    """Every stream of the environment, in every web process (through Redis pub/sub when configured,
    else this process's only — see rollout/broadcast.py), hears about the new version."""
    logger.info("ruleset.changed", extra={"environment": environment, "version": version})
    remember_version(environment, version)
    publish(environment, version)
