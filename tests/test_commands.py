from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import call_command

from audit.models import AuditEvent
from rollout.models import ApiToken, Environment, Flag, SdkKey, Workload
from tests.conftest import ROOT

pytestmark = pytest.mark.django_db


def test_seed_demo__fresh__loads_environments_workloads_cohorts_flags():
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "loaded" in out.getvalue()
    assert set(Environment.objects.values_list("key", flat=True)) == {"staging", "production"}
    assert Workload.objects.count() >= 4
    assert len(set(Workload.objects.values_list("risk", flat=True))) >= 3
    assert len(set(Workload.objects.values_list("phase", flat=True))) >= 4
    assert Flag.objects.count() >= 4
    from cohorts.models import Cohort

    assert Cohort.objects.filter(rules__isnull=False).exists() and Cohort.objects.filter(members__isnull=False).exists()
    assert AuditEvent.objects.filter(actor="system:seed_demo").exists()


def test_seed_demo__twice__second_run_changes_nothing():
    call_command("seed_demo", stdout=io.StringIO())
    count = AuditEvent.objects.count()
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "already present" in out.getvalue()
    assert AuditEvent.objects.count() == count


def test_create_sdk_key__env__prints_key_once_and_stores_only_its_hash(envs):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_sdk_key", "staging", "--name", "billing-svc", stdout=out, stderr=err)
    secret = out.getvalue().strip()
    assert secret.startswith("sdk_") and len(secret) > 40
    key = SdkKey.objects.get()
    assert secret not in {key.secret_hash, key.prefix} and secret.startswith(key.prefix)
    assert AuditEvent.objects.filter(action="sdk_key.created", object_key=key.prefix).count() == 1


def test_create_sdk_key__unknown_env__error(envs):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="does not exist"):
        call_command("create_sdk_key", "moon", "--name", "x", stdout=io.StringIO(), stderr=io.StringIO())


def test_create_api_token__user__prints_token_once(django_user_model):
    django_user_model.objects.create_user("ci-bot")
    out = io.StringIO()
    call_command("create_api_token", "ci-bot", "--name", "deploy", stdout=out, stderr=io.StringIO())
    secret = out.getvalue().strip()
    assert secret.startswith("tok_")
    assert ApiToken.objects.get().user.username == "ci-bot"


def test_createsuperuser__noinput_with_env__works(django_user_model, monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-enough-password-42")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "root@example.com")
    call_command("createsuperuser", "--noinput", stdout=io.StringIO())
    assert django_user_model.objects.get(username="root").check_password("a-long-enough-password-42")


def _settings_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "TURNOUT_ENV", "ALLOWED_HOSTS"}}
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("env", "message"), [
    ({}, "SECRET_KEY"),
    ({"SECRET_KEY": "short"}, "SECRET_KEY"),
    ({"SECRET_KEY": "x" * 60, "DEBUG": "1"}, "DEBUG"),
])
def test_production_profile__insecure__refuses_to_start(env, message):
    result = _settings_check({"TURNOUT_ENV": "production", "ALLOWED_HOSTS": "turnout.example.com", **env})
    assert result.returncode != 0
    assert message in result.stderr


def test_production_profile__secure__check_deploy_clean():
    import secrets

    result = _settings_check({"TURNOUT_ENV": "production", "ALLOWED_HOSTS": "turnout.example.com",
                              "SECRET_KEY": secrets.token_urlsafe(60)})
    assert result.returncode == 0, result.stdout + result.stderr
