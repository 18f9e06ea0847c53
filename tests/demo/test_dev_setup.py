"""`make run`'s setup: the demo with its people, keys and story, and the block the run ends with."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.core.management import call_command

from actions.submit import change_request_approve
from audit.models import AuditEvent
from common.actors import Actor
from common.permissions import can_decide, roles_of
from rollout.access.auth import sdk_principal
from rollout.devsetup import PEOPLE, dev_setup, welcome
from rollout.models import ChangeRequest, FlagState, Guardrail
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def _lines(block: str, start: str) -> list[str]:
    return [line for line in block.splitlines() if line.strip().startswith(start)]


def test_dev_setup__fresh__block_names_url_every_role_with_a_working_password_and_the_keys(
        tmp_path: Path, settings: Any) -> None:
    settings.TURNOUT_DEV_URL = "http://127.0.0.1:8123"
    out = io.StringIO()

    call_command("dev_setup", var=tmp_path, stdout=out)

    block = out.getvalue()
    assert "Turnout is running:  http://127.0.0.1:8123" in block
    for person in PEOPLE:
        [row] = [line for line in block.splitlines() if line.strip().startswith(person["role"] + " ")]
        username, _, password = row.split()[1:4]
        user = authenticate(username=username, password=password)
        assert user is not None, person
        assert person["role"] in roles_of(user)
    staging_key = (tmp_path / "dev-sdk-key").read_text().strip()
    assert f"Demo SDK key (staging):     {staging_key}" in block
    principal = sdk_principal(staging_key)
    assert principal is not None and principal.environment == "staging"
    for name in ("dev-logins", "dev-sdk-key", "dev-sdk-key-production", "dev-api-token-eddie", "demo.env"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    env = (tmp_path / "demo.env").read_text()
    assert f"export TURNOUT_SDK_KEY={staging_key}" in env and "export TURNOUT_URL=http://127.0.0.1:8123" in env
    assert block.rstrip().endswith("=" * 96)  # one block, and nothing after it


def test_dev_setup__run_twice__same_sign_ins_and_keys_and_no_new_events(tmp_path: Path) -> None:
    first = dev_setup(var=tmp_path)
    count = AuditEvent.objects.count()

    second = dev_setup(var=tmp_path)

    assert (second.logins, second.sdk_keys, second.tokens) == (first.logins, first.sdk_keys, first.tokens)
    assert AuditEvent.objects.count() == count


def test_dev_setup__fresh__invoice_engine_mid_rollout_request_for_april_and_a_data_migration_in_shadow(
        tmp_path: Path, django_user_model: Any) -> None:
    access = dev_setup(var=tmp_path)

    # the data migration: accounts-store in shadow in staging, one stage at a time through the action layer
    moving = FlagState.objects.select_related("flag__workload", "migration").get(flag__key="accounts-store",
                                                                                  environment__key="staging")
    assert (moving.flag.kind, moving.migration.stage, moving.enabled) == ("migration", "shadow", True)
    assert (moving.flag.bucket_by, moving.flag.workload.key, moving.migration.max_divergences) == (
        "tenant_id", "accounts", 50)
    assert float(Guardrail.objects.get(flag_state=moving).max_mismatch_rate or 0) == 2.0
    assert list(AuditEvent.objects.filter(action="migration.stage_set", actor="system:seed_demo")
                .order_by("sequence").values_list("after__migration__stage", flat=True)) == ["dual_write", "shadow"]
    assert "Data migration: accounts-store in shadow in staging" in welcome(access, traffic=True)

    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="production")
    names = list(state.stages.order_by("position").values_list("name", flat=True))
    assert names[state.stage - 1] == "25%" and state.stage < len(names) and state.paused_at is None
    assert Guardrail.objects.get(flag_state=state).max_error_rate is not None
    assert Guardrail.objects.filter(flag_state__flag__key="payment-routing").exists()
    # every step went through the action layer: one audited event each, by the seed or the editor
    assert AuditEvent.objects.filter(action="flag_state.plan_set", actor="system:seed_demo").count() == 1
    assert AuditEvent.objects.filter(action="flag_state.advanced", actor="system:seed_demo").count() == 5
    request = ChangeRequest.objects.get(status="pending")
    assert (request.requested_by_label, request.action) == ("eddie", "flag_state.advanced")
    april = django_user_model.objects.get(username="april")
    assert can_decide(april, request)

    change_request_approve(actor=Actor.for_user(april), change_request=request.pk)

    state.refresh_from_db()
    assert names[state.stage - 1] == "50%"


def _settings_of(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"HOST", "PORT", "TURNOUT_DEV_URL", "ALLOWED_HOSTS"}}
    code = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'config.settings'); django.setup();"
            "from django.conf import settings as s; print(s.TURNOUT_DEV_URL); print(','.join(s.ALLOWED_HOSTS))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, **env}, capture_output=True,
                          text=True, timeout=60, check=True)
    return done.stdout.split()


def test_settings__port_and_host__url_and_allowed_hosts_follow() -> None:
    assert _settings_of() == ["http://127.0.0.1:8000", "127.0.0.1,localhost,testserver"]
    assert _settings_of(PORT="8123", HOST="turnout.local") == [
        "http://turnout.local:8123", "127.0.0.1,localhost,testserver,turnout.local"]
    assert _settings_of(PORT="8123", HOST="0.0.0.0")[0] == "http://127.0.0.1:8123"


def test_makefile__port_and_host__honcho_and_the_demo_get_them() -> None:
    done = subprocess.run(["make", "-n", "run", "PORT=8123", "HOST=0.0.0.0", "STAMP="], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert "honcho -f Procfile.dev start --port 8123" in done.stdout
    printed = subprocess.run(["make", "-s", "--eval", "show: ; @echo $$TURNOUT_DEV_URL $$PORT $$HOST", "show",
                              "PORT=8123", "HOST=0.0.0.0"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                             check=True)
    assert printed.stdout.split() == ["http://127.0.0.1:8123", "8123", "0.0.0.0"]


def test_dev_setup__rerun_after_people_moved_the_rollout__leaves_it_and_asks_nothing_new(
        tmp_path: Path, django_user_model: Any) -> None:
    dev_setup(var=tmp_path)
    request = ChangeRequest.objects.get(status="pending")
    change_request_approve(actor=Actor.for_user(django_user_model.objects.get(username="april")),
                           change_request=request.pk)
    state = FlagState.objects.get(flag__key="invoice-engine", environment__key="production")
    count = AuditEvent.objects.count()

    dev_setup(var=tmp_path)

    state.refresh_from_db()
    assert state.stage == 6
    assert not ChangeRequest.objects.filter(status="pending").exists()
    assert AuditEvent.objects.count() == count
