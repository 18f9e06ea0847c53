"""The demo's data migration: an ``accounts-store`` migration flag in ``shadow`` in staging (writes to both
stores, reads compared), with guardrails on inconsistency and divergences. ``seed_migration_demo()`` is
separate from ``rollout.demo.seed_demo`` so either can be run alone; both create only what is missing."""

from __future__ import annotations

from actions.submit import submit_state
from common.actors import Actor
from rollout.models import Environment, Flag, MigrationStage, MigrationState, Workload
from rollout.plans.guardrails import guardrail_set
from rollout.services.flags import flag_create
from rollout.services.workloads import workload_create

SEED = Actor.system("seed_demo")
FLAG = "accounts-store"


def seed_migration_demo(*, environment: str = "staging") -> bool:
    """Create the demo migration (in ``environment``, which must exist); False when it was already there."""
    if not Environment.objects.filter(key=environment).exists():
        return False
    created = False
    if not Workload.objects.filter(key="accounts").exists():
        workload_create(actor=SEED, key="accounts", name="Accounts store", risk="medium", phase="validation",
                        reversibility="dual_write", owner="ledger-team", legacy_system="Oracle ACCT schema",
                        parallel_system="accounts-service (PostgreSQL)",
                        description="Customer accounts moving to their own database, tenant by tenant.")
        created = True
    if not Flag.objects.filter(key=FLAG).exists():
        flag_create(actor=SEED, key=FLAG, workload="accounts", bucket_by="tenant_id", kind="migration",
                    description="Reads and writes of customer accounts: legacy schema -> accounts-service.")
        created = True
    m = MigrationState.objects.filter(flag_state__flag__key=FLAG, flag_state__environment__key=environment).first()
    stage = m.stage if m is not None else MigrationStage.OFF
    for step in (MigrationStage.DUAL_WRITE, MigrationStage.SHADOW):
        if list(MigrationStage.values).index(stage) < list(MigrationStage.values).index(step):
            submit_state(actor=SEED, flag=FLAG, environment=environment, action="migration.stage_set",
                         params={"stage": step, "max_divergences": 50},
                         reason="demo: the accounts store is validated in shadow")
            stage = step
            created = True
    if created:
        guardrail_set(actor=SEED, flag=FLAG, environment=environment, version=None, max_mismatch_rate=2,
                      max_error_rate=5, min_sample_size=50, window_seconds=300, action="rollback")
    return created
