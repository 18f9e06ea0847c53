"""A migration state as the ruleset's ``migration`` field, and the checks on a new configuration.

The engine (``turnout.engine``) decides each subject's stage from the field; this module only turns rows
into it and says whether a change moves anyone backward or skips a stage (docs/migrations.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from turnout.engine import RulesetError, validate_migration
from turnout.wire import MigrationRule, MigrationSplit, StageCohort

from common.errors import ValidationFailed
from rollout.models import FlagKind, FlagState, MigrationStage, MigrationState

STAGES: tuple[str, ...] = tuple(MigrationStage.values)
PARALLEL_AUTHORITATIVE = frozenset({MigrationStage.LIVE, MigrationStage.RAMPDOWN, MigrationStage.COMPLETE})

#: one line per stage, for people (the stage card, the API's ``stages``)
MEANING: dict[str, str] = {
    MigrationStage.OFF: "legacy only",
    MigrationStage.DUAL_WRITE: "write both (legacy authoritative), read legacy",
    MigrationStage.SHADOW: "write both, read both and compare, return legacy",
    MigrationStage.LIVE: "write both (parallel authoritative), read both and compare, return parallel",
    MigrationStage.RAMPDOWN: "write both (parallel authoritative), read parallel",
    MigrationStage.COMPLETE: "parallel only; legacy is no longer written (irreversible)",
}


def position(stage: str) -> int:
    return STAGES.index(stage)


@dataclass(frozen=True)
class Config:
    """A migration's stages: the base, the splits ahead, the cohorts placed."""

    stage: str
    splits: tuple[MigrationSplit, ...] = ()
    cohorts: tuple[StageCohort, ...] = ()

    @classmethod
    def of(cls, m: MigrationState | None) -> Config:
        if m is None:
            return cls(MigrationStage.OFF)
        return cls(m.stage, tuple(m.splits or ()), tuple(m.cohort_stages or ()))

    def reach(self, stage: str) -> float:
        """The share (0-100) of bucketed subjects at ``stage`` or beyond (cohorts aside)."""
        if position(self.stage) >= position(stage):
            return 100.0
        shares = [float(s["percentage"]) for s in self.splits if position(s["stage"]) >= position(stage)]
        return max(shares, default=0.0)

    @property
    def furthest(self) -> str:
        stages = [self.stage, *(s["stage"] for s in self.splits if s["percentage"] > 0),
                  *(c["stage"] for c in self.cohorts)]
        return max(stages, key=position)

    @property
    def parallel_authoritative(self) -> bool:
        """Is parallel authoritative for anyone?"""
        return self.furthest in PARALLEL_AUTHORITATIVE

    def rule(self) -> MigrationRule:
        return {"stage": self.stage, "splits": list(self.splits), "cohorts": list(self.cohorts)}


def state_of(state: FlagState) -> MigrationState | None:
    try:
        return state.migration
    except ObjectDoesNotExist:
        return None


def migration_rule(state: FlagState) -> MigrationRule | None:
    """The ruleset's ``migration`` field of a flag state (None for a release flag)."""
    if state.flag.kind != FlagKind.MIGRATION:
        return None
    return Config.of(state_of(state)).rule()


def _percentage(value: Any, field: str) -> float:
    if isinstance(value, bool):
        raise ValidationFailed.field(field, "must be a number from 0 to 100")
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValidationFailed.field(field, "must be a number from 0 to 100") from None
    if not number.is_finite() or not 0 <= number <= 100:
        raise ValidationFailed.field(field, "must be a number from 0 to 100")
    return float(round(number, 4))


def clean_config(*, stage: Any, splits: Any, cohorts: Any, known_cohorts: Iterable[str]) -> Config:
    """A configuration from input, checked by the engine's own rules; errors name the field
    (``splits.1.percentage``)."""
    if stage not in STAGES or not isinstance(stage, str):
        raise ValidationFailed.field("stage", f"must be one of {', '.join(STAGES)}")
    if not isinstance(splits, list):
        raise ValidationFailed.field("splits", "must be a list of {stage, percentage}")
    if not isinstance(cohorts, list):
        raise ValidationFailed.field("cohorts", "must be a list of {cohort, stage}")
    clean_splits: list[MigrationSplit] = []
    for i, split in enumerate(splits):
        if not isinstance(split, Mapping) or set(split) != {"stage", "percentage"}:
            raise ValidationFailed.field(f"splits.{i}", "must be an object with exactly 'stage' and 'percentage'")
        clean_splits.append({"stage": split["stage"], "percentage": _percentage(split["percentage"],
                                                                                f"splits.{i}.percentage")})
    clean_cohorts: list[StageCohort] = []
    for i, entry in enumerate(cohorts):
        if not isinstance(entry, Mapping) or set(entry) != {"cohort", "stage"}:
            raise ValidationFailed.field(f"cohorts.{i}", "must be an object with exactly 'cohort' and 'stage'")
        clean_cohorts.append({"cohort": entry["cohort"], "stage": entry["stage"]})
    keys = [c["cohort"] for c in clean_cohorts]
    if len(set(keys)) != len(keys):
        raise ValidationFailed.field("cohorts", "lists a cohort twice")
    try:
        validate_migration({"stage": stage, "splits": clean_splits, "cohorts": clean_cohorts}, "migration",
                           dict.fromkeys(known_cohorts))
    except RulesetError as exc:
        where, _, message = str(exc).partition(": ")
        field = where.removeprefix("migration.").replace("[", ".").replace("]", "")
        raise ValidationFailed.field(field, message) from None
    return Config(stage, tuple(clean_splits), tuple(clean_cohorts))


def backward_moves(old: Config, new: Config) -> list[str]:
    """What in ``new`` moves subjects to an earlier stage than ``old`` put them (a rollback's job)."""
    problems = []
    for stage in STAGES[1:]:
        if new.reach(stage) < old.reach(stage):
            problems.append(f"fewer subjects would be at '{stage}' or beyond ({new.reach(stage):g}% < "
                            f"{old.reach(stage):g}%)")
    new_cohorts = {c["cohort"]: c["stage"] for c in new.cohorts}
    for entry in old.cohorts:
        now = new_cohorts.get(entry["cohort"])
        if now is None and position(entry["stage"]) > position(new.stage):
            problems.append(f"cohort '{entry['cohort']}' would leave '{entry['stage']}' for the base stage")
        elif now is not None and position(now) < position(entry["stage"]):
            problems.append(f"cohort '{entry['cohort']}' would move back from '{entry['stage']}' to '{now}'")
    return problems


def skipped_stages(old: Config, new: Config) -> list[str]:
    """What in ``new`` goes more than one stage beyond where anyone stands in ``old``."""
    limit = position(old.furthest) + 1
    problems = []
    if position(new.stage) > position(old.stage) + 1:
        problems.append(f"the base stage can move one stage at a time ('{old.stage}' -> "
                        f"'{STAGES[position(old.stage) + 1]}')")
    for stage in (*(s["stage"] for s in new.splits if s["percentage"] > 0), *(c["stage"] for c in new.cohorts)):
        if position(stage) > limit:
            problems.append(f"'{stage}' skips a stage: nobody is at '{STAGES[position(stage) - 1]}' yet")
    return problems
