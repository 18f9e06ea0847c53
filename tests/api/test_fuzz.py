"""Schemathesis against the live OpenAPI schema, in process (WSGI), authenticated as an admin token.

Every operation gets a fixed number of generated requests; each response must not be a 5xx and must match
the schema (status code, content type, headers, body). Bad input must get a documented 4xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.serializers import register

MAX_EXAMPLES = 12


@register("text/csv")
class CsvSerializer:
    """Lets schemathesis send generated strings as CSV bodies to the members upload."""

    def as_requests(self, context: Any, value: Any) -> dict[str, Any]:
        return {"data": value if isinstance(value, bytes) else str(value).encode("utf8")}

    def as_werkzeug(self, context: Any, value: Any) -> dict[str, Any]:
        return {"data": value if isinstance(value, bytes) else str(value)}


@pytest.fixture
def admin_secret(world: dict[str, Any], settings: Any, actor: Any) -> str:
    from cohorts.services import cohort_create
    from rollout.access.keys import sdk_key_create
    from tests.api.conftest import make_user

    rest = dict(settings.REST_FRAMEWORK)
    rest["DEFAULT_THROTTLE_RATES"] = {**rest["DEFAULT_THROTTLE_RATES"], "api": "100000/min", "auth": "100000/min"}
    settings.REST_FRAMEWORK = rest
    from rollout.access.keys import api_token_create
    from rollout.services.workloads import workload_create

    cohort_create(actor=actor, key="regulated", name="Regulated")
    workload_create(actor=actor, key="spare", name="Spare")
    sdk, _ = sdk_key_create(actor=actor, environment="staging", name="svc")
    make_user("viewer", ["viewer"])
    make_user("editor", ["editor"])
    token, _ = api_token_create(actor=actor, username="viewer", name="spare")
    SPARE.update(sdk=sdk.prefix, token=token.prefix)
    from rollout.services.flags import flag_state_update

    flag_state_update(actor=actor, flag="invoice-engine", environment="staging", version=1, enabled=True,
                      percentage_value=100)
    return make_user("fuzz-admin", ["admin"])[1]


@pytest.fixture
def api_schema(admin_secret: str) -> Iterator[Any]:
    from django.core import signals
    from django.db import close_old_connections

    from config.wsgi import application

    # As Django's test client does: requests must not close the connection holding the test's transaction.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.from_wsgi("/api/v1/schema/?format=json", application)
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


schema = schemathesis.from_pytest_fixture("api_schema")

# Real objects for path parameters, so generated requests reach past the 404 into the handlers.
KNOWN = {
    "/api/v1/environments/": {"key": ["staging", "production"]},
    "/api/v1/workloads/": {"key": ["billing", "spare"]},
    "/api/v1/flags/": {"key": ["invoice-engine"], "env": ["staging", "production"]},
    "/api/v1/cohorts/": {"key": ["pilot", "regulated"]},
    "/api/v1/users/": {"username": ["viewer", "editor"]},
    "/api/v1/sdk-keys/": {"prefix": ["{sdk}"]},
    "/api/v1/tokens/": {"prefix": ["{token}"]},
    "/api/v1/gates/": {"flag": ["invoice-engine"], "env": ["staging", "production"]},
}
SPARE: dict[str, str] = {}


@schema.hook
def flatmap_path_parameters(context: Any, parameters: dict[str, Any]) -> Any:
    path = context.operation.path
    known = next((values for prefix, values in KNOWN.items() if path.startswith(prefix)), {})
    if not parameters or not known:
        return st.just(parameters)
    real = {name: st.sampled_from([v.format(**SPARE) for v in known[name]]) if name in known else st.just(value)
            for name, value in parameters.items()}
    return st.one_of(st.just(parameters), st.fixed_dictionaries(real))


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@pytest.mark.django_db
def test_api__generated_requests__no_5xx_and_responses_match_schema(case: Any, admin_secret: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_secret}"})
