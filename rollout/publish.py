"""Announcing new ruleset versions to streaming SDKs (called after commit only)."""

from __future__ import annotations

import logging

logger = logging.getLogger("turnout.ruleset")


def announce_ruleset(environment: str, version: int) -> None:
    logger.info("ruleset.changed", extra={"environment": environment, "version": version})
