"""Turnout's own settings, with their defaults in one place (read through ``get_setting``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Seconds a built ruleset stays cached (it is keyed by version, so this only bounds memory).
    "RULESET_CACHE_TIMEOUT": 24 * 3600,
    # Seconds an SDK key lookup is cached (revocation clears it at once on commit).
    "SDK_KEY_CACHE_TIMEOUT": 60,
    # Seconds a process keeps an SDK key lookup to itself (0: always ask the shared cache). A key
    # revoked in another process stops working here within this time.
    "SDK_KEY_LOCAL_SECONDS": 5,
    # Minimum seconds between "last used" writes for one key or token.
    "KEY_LAST_USED_RESOLUTION": 60,
    # Seconds between ``: keep-alive`` comments on an idle SDK stream (proxies close silent connections).
    "STREAM_HEARTBEAT_SECONDS": 15.0,
    # Embedded mode (no Redis): seconds between reads of the ruleset versions by each web process's
    # stream listener, which is how changes committed by other processes reach its streams.
    "STREAM_DB_POLL_SECONDS": 0.5,
    # Seconds the current ruleset version may be served from Redis before the database is asked again
    # (it is rewritten on every commit that raises it; this only bounds a lost write).
    "VERSION_CACHE_SECONDS": 5,
    # Seconds a web process answers SDK requests from its own copy of an environment's current ruleset
    # version before asking Redis again. Changes committed anywhere reach the copy at once through the
    # process's ruleset listener (pub/sub); this bounds how late it can be if a message is lost.
    "SDK_VERSION_LOCAL_SECONDS": 1.0,
    # Seconds a web process counts SDK requests in memory before adding them to the key's shared
    # counter in Redis (the request that would cross the limit always asks Redis first).
    "SDK_THROTTLE_SYNC_SECONDS": 1.0,
    # Ruleset versions compiled for evaluation kept per process (a few per environment is plenty).
    "COMPILED_RULESETS": 32,
    # Ruleset versions (ETag, bytes, gzip bytes) the ruleset endpoint keeps per process, all environments.
    "RULESET_SERVED_LOCAL": 8,
    # Cohorts with more listed members than this reach SDKs that ask for references (``?members=1``) as a
    # member-list document of their own (rollout/delivery/members.py); smaller ones stay inline.
    "MEMBER_LIST_INLINE_MAX": 10_000,
    # Largest request body the SDK evaluate / OFREP endpoints accept, in bytes.
    "EVALUATE_MAX_BODY": 64 * 1024,
    # Largest metrics batch accepted, in bytes, and its row / sample limits.
    "METRICS_MAX_BODY": 1024 * 1024,
    "METRICS_MAX_ROWS": 2000,
    "METRICS_MAX_SAMPLES": 100,
    # Mismatch samples kept per environment and minute (the rest are counted, not stored).
    "METRICS_SAMPLES_PER_MINUTE": 50,
    # Seconds after a minute ends before the roll-up takes it (batches in flight land first).
    "METRICS_ROLLUP_GRACE_SECONDS": 10,
    # Seconds a claimed-but-unfinished roll-up waits before another run finishes it.
    "METRICS_ROLLUP_RECOVER_SECONDS": 300,
    # Seconds a batch's ``batch_id`` is remembered with Redis: a retry of an accepted batch within it is
    # answered 202 and not counted again (rollout/telemetry/ingest.py).
    "METRICS_BATCH_ID_SECONDS": 300,
    # Batches that may wait for the roll-up in Redis; past it the metrics endpoint answers 503 (the SDK
    # retries), so a stopped worker cannot fill Redis's memory.
    "METRICS_BACKLOG_MAX": 100_000,
    # Batches one roll-up transaction applies, and seconds one roll-up task runs before it hands the rest
    # to the next one.
    "METRICS_DRAIN_CHUNK": 500,
    "METRICS_DRAIN_BUDGET_SECONDS": 30.0,
    # Seconds between guardrail checks of every active rollout (Celery beat).
    "GUARDRAIL_INTERVAL": 10.0,
    # A metrics batch that breaches a guardrail enqueues a check of its flag state at most this often (s).
    "GUARDRAIL_TRIGGER_DEBOUNCE": 2.0,
    # Prometheus server guardrail queries read (``http://prometheus:9090``; unset: such checks are not judged),
    # and the seconds one query may take.
    "PROMETHEUS_URL": "",
    "PROMETHEUS_TIMEOUT": 3.0,
    # Outgoing webhooks: where to POST, the HMAC-SHA256 secret, attempts and per-attempt timeout.
    "WEBHOOK_URLS": [],
    "WEBHOOK_SECRET": "",
    "WEBHOOK_MAX_RETRIES": 6,
    "WEBHOOK_TIMEOUT": 5.0,
    # Single sign-on (rollout/access/oidc.py): the claims naming a person and their groups, and which
    # groups give which roles ("group=role,group=role").
    "OIDC_USERNAME_CLAIM": "preferred_username",
    "OIDC_GROUPS_CLAIM": "groups",
    "OIDC_ROLE_MAP": "",
    # The provider's discovery document: seconds it is kept, and seconds a fetch may take.
    "OIDC_DISCOVERY_CACHE_SECONDS": 3600.0,
    "OIDC_DISCOVERY_TIMEOUT": 5.0,
    # False: the password form is off (single sign-on only); API tokens are unaffected.
    "PASSWORD_LOGIN": True,
    "SSO": False,
    # Days without a change after which a flag is reported stale (rollout/stale.py); archiving is refused
    # while any SDK evaluated the flag within as many days.
    "STALE_FLAG_DAYS": 30,
    # Notifications (notifications/): retries of one delivery, and the first retry's delay in seconds
    # (doubling after each: 2, 4, 8 ... s by default).
    "NOTIFY_MAX_RETRIES": 6,
    "NOTIFY_RETRY_BASE_SECONDS": 2.0,
    # Seconds a flag state's divergence notices are quiet after one (a burst is one notice; what comes
    # meanwhile is counted into the next).
    "NOTIFY_DIVERGENCE_INTERVAL": 900.0,
    # The address people reach Turnout at, for links in e-mails (invitations); empty: the inviting request's.
    "PUBLIC_URL": "",
    # Metrics kept at minute resolution for this many days, then as hourly totals.
    "METRICS_MINUTE_DAYS": 30,
    # User feedback (rollout/feedback): entries kept this many days, then deleted (hourly beat task); the
    # largest feedback batch accepted, in bytes.
    "FEEDBACK_DAYS": 90,
    "FEEDBACK_MAX_BODY": 512 * 1024,
    # Data-migration telemetry (MigrationMinute counts, ConsistencySample samples) kept this many days,
    # then deleted by the same hourly retention run (rollout/telemetry/retention.py).
    "MIGRATION_MINUTE_DAYS": 30,
    # Bearer token /metrics requires when set (unset: /metrics is open; keep it off the public network).
    "METRICS_TOKEN": None,
    # A Celery worker serves its own /metrics (task durations) on this port when set (0: off).
    "WORKER_METRICS_PORT": 0,
    "WORKER_METRICS_ADDR": "127.0.0.1",
    # Seconds any Redis call may take to connect or answer (cache, pub/sub, counters, Celery's broker
    # and results); past it the caller degrades or answers 503 redis_unavailable (common/redis.py).
    "REDIS_TIMEOUT": 1.0,
    # Seconds a process stops asking Redis after a failure before one call probes it again.
    "REDIS_RETRY_SECONDS": 2.0,
    # Seconds between outbox drains by Celery beat (announcements Redis could not take when made).
    "OUTBOX_DRAIN_INTERVAL": 5.0,
    # Seconds between heartbeats of Celery worker and beat processes (written to the database).
    "HEARTBEAT_SECONDS": 10.0,
    # A worker or beat whose newest heartbeat is older than this is reported missing (/readyz,
    # /metrics, the UI banner).
    "HEARTBEAT_STALE_SECONDS": 45.0,
    # Reverse proxies in front of the web server that append to X-Forwarded-For (0: none; the header
    # is ignored). Read by ``common.middleware.client_address``; DRF's NUM_PROXIES is set from it.
    "TRUSTED_PROXIES": 0,
    # Failed sign-ins in the audit log: per window of this many seconds, the first LOGIN_AUDIT_INDIVIDUAL
    # failures per username and per address (at most LOGIN_AUDIT_INDIVIDUAL_MAX in all) get an event of
    # their own; the rest are counted into one ``auth.login_failed_burst`` event when the window closes.
    "LOGIN_AUDIT_WINDOW": 300,
    "LOGIN_AUDIT_INDIVIDUAL": 5,
    "LOGIN_AUDIT_INDIVIDUAL_MAX": 50,
    # Fail instead of skipping tests that need PostgreSQL / Redis / a Celery worker.
    "REQUIRE_SERVICES": False,
    # Ed25519 key that signs audit export manifests: PEM, or base64 of the raw 32-byte private key.
    # Unset: generated once into var/ in development; required in production.
    "AUDIT_SIGNING_KEY": None,
    # Public keys (PEM or base64 raw) of earlier signing keys, still published so old manifests verify.
    "AUDIT_PREVIOUS_PUBLIC_KEYS": [],
    # Exports with more events than this run as a Celery task (with progress) instead of streaming.
    "AUDIT_EXPORT_ASYNC_THRESHOLD": 100_000,
    # The web UI verifies a chain of at most this many events at once; a longer one in the background
    # (a Celery task, with progress). The API's GET verify is always synchronous, its POST never.
    "AUDIT_VERIFY_SYNC_MAX": 10_000,
    # Where export files and evidence packs are written (None: var/audit-exports).
    "AUDIT_EXPORT_DIR": None,
    # `make run` (development): the address the web process listens on (HOST, PORT), and whether the
    # demo traffic drives the demo workloads through the SDK (TURNOUT_DEMO_TRAFFIC=0 turns it off).
    "DEV_HOST": "127.0.0.1",
    "DEV_PORT": 8000,
    "DEV_URL": "http://127.0.0.1:8000",
    "DEMO_TRAFFIC": True,
    # Calls a second the demo traffic makes, over all the demo workloads.
    "DEMO_TRAFFIC_RATE": 12.0,
}


def get_setting(name: str) -> Any:
    return getattr(settings, f"TURNOUT_{name}", DEFAULTS[name])
