"""The production layout's files agree with each other and with the documentation.

(Docker cannot run in CI, so compose.yaml is checked as data here; it was also validated with
``docker-compose config``.)
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from typing import Any

import yaml

from tests.conftest import ROOT

APP_SERVICES = {"release", "web", "worker", "beat"}


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _procfile() -> dict[str, str]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name.strip()] = command.strip()
    return entries


def _gunicorn_config() -> Any:
    spec = importlib.util.spec_from_file_location("gunicorn_conf", ROOT / "config" / "gunicorn.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_procfile__production_layout__release_web_worker_and_one_beat() -> None:
    procfile = _procfile()
    assert set(procfile) == {"release", "web", "worker", "beat"}
    assert "migrate" in procfile["release"]
    assert shlex.split(procfile["web"]) == ["gunicorn", "-c", "config/gunicorn.py", "config.asgi:application"]
    assert "celery -A config worker" in procfile["worker"]
    assert "celery -A config beat" in procfile["beat"]
    # Prometheus's multiprocess directory belongs to the web process only.
    assert "env -u PROMETHEUS_MULTIPROC_DIR" in procfile["worker"]
    assert "env -u PROMETHEUS_MULTIPROC_DIR" in procfile["beat"]


def test_gunicorn_config__loaded__asgi_workers_and_multiprocess_hooks() -> None:
    conf = _gunicorn_config()
    assert conf.worker_class == "uvicorn_worker.UvicornWorker"
    assert importlib.util.find_spec("uvicorn_worker") is not None
    assert conf.bind == ["127.0.0.1:8000"]
    assert conf.workers >= 1
    assert callable(conf.on_starting) and callable(conf.child_exit)
    assert conf.accesslog is None


def test_compose__services__database_redis_release_web_worker_and_exactly_one_beat() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "redis", *APP_SERVICES}
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["release"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in APP_SERVICES - {"release"}:
        assert services[name]["depends_on"]["release"] == {"condition": "service_completed_successfully"}
    assert services["release"]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_compose__web__same_command_as_procfile_and_dockerfile_ready_check() -> None:
    web = _compose()["services"]["web"]
    assert web["command"] == shlex.split(_procfile()["web"])
    cmd = re.search(r"^CMD (\[.*\])$", (ROOT / "Dockerfile").read_text(), re.M)
    assert cmd and yaml.safe_load(cmd.group(1)) == web["command"]
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    assert web["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert all(port.startswith("127.0.0.1:") for port in web["ports"])


def test_compose__worker_and_beat__no_prometheus_multiprocess_dir() -> None:
    services = _compose()["services"]
    for name in ("worker", "beat", "release"):
        assert "PROMETHEUS_MULTIPROC_DIR" not in (services[name].get("environment") or {})
    assert "PROMETHEUS_MULTIPROC_DIR" not in (ROOT / "Dockerfile").read_text()


def test_compose__secrets__come_from_the_environment_never_literal() -> None:
    env = _compose()["x-turnout-env"]
    assert env["TURNOUT_ENV"] == "production"
    for name in ("SECRET_KEY", "TURNOUT_AUDIT_SIGNING_KEY", "TURNOUT_METRICS_TOKEN"):
        assert str(env[name]).startswith("${"), name
    assert "${POSTGRES_PASSWORD" in env["DATABASE_URL"]


def test_operations_doc__every_environment_variable_read__documented() -> None:
    names: set[str] = set()
    for path in [*(ROOT / "config").glob("*.py")]:
        names |= set(re.findall(r"""env\.get\w*\(\s*["']([A-Z][A-Z0-9_]+)["']""", path.read_text()))
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert len(names) > 20
    missing = sorted(name for name in names if f"`{name}`" not in doc)
    assert missing == []


def test_operations_doc__sections__cover_the_runbook() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    for heading in ("## The process layout", "## Configuration", "## Migrations", "## Backups and restore",
                    "## Key rotation", "## Upgrades", "## Health checks", "## Metrics", "## Logs", "## Scaling"):
        assert heading in doc
    assert not re.search(r"/work/|/home/|/root/", doc)
