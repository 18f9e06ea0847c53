"""Turnout settings: one module, driven by the environment (see docs/operations.md)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import dj_database_url

from config import env
from config.env import BASE_DIR, VAR_DIR, ImproperlyConfiguredEnv

TURNOUT_ENV = env.get("TURNOUT_ENV", "development")
PRODUCTION = TURNOUT_ENV == "production"

DEBUG = env.get_bool("DEBUG", default=not PRODUCTION)
SECRET_KEY = env.get("SECRET_KEY") or ("" if PRODUCTION else env.local_secret_key())
# Rotation: the new key in SECRET_KEY, the old one here until sessions signed with it have expired.
SECRET_KEY_FALLBACKS = env.get_list("SECRET_KEY_FALLBACKS", [])
# `make run`: HOST and PORT the development web process listens on (Makefile, Procfile.dev).
TURNOUT_DEV_HOST = env.get("HOST", "127.0.0.1") or "127.0.0.1"
TURNOUT_DEV_PORT = env.get_int("PORT", 8000)
_DEV_HOSTS = ["127.0.0.1", "localhost", "testserver"]
if TURNOUT_DEV_HOST not in {*_DEV_HOSTS, "0.0.0.0", "::"}:  # a name or address of this machine: served as such
    _DEV_HOSTS.append(TURNOUT_DEV_HOST)
ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS", [] if PRODUCTION else _DEV_HOSTS)
# The URL the demo prints and its traffic calls (the Makefile sets it: under honcho, PORT is per process).
TURNOUT_DEV_URL = env.get("TURNOUT_DEV_URL") or "http://{}:{}".format(
    "127.0.0.1" if TURNOUT_DEV_HOST in {"0.0.0.0", "::"} else TURNOUT_DEV_HOST, TURNOUT_DEV_PORT)
CSRF_TRUSTED_ORIGINS = env.get_list("CSRF_TRUSTED_ORIGINS", [])

if PRODUCTION:
    # Refuse to start insecurely: a production profile never runs with DEBUG or a weak secret.
    if DEBUG:
        raise ImproperlyConfiguredEnv("TURNOUT_ENV=production refuses to start with DEBUG on")
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure") or len(set(SECRET_KEY)) < 5:
        raise ImproperlyConfiguredEnv(
            "TURNOUT_ENV=production needs SECRET_KEY set to a random value of at least 50 characters"
        )
    if not ALLOWED_HOSTS:
        raise ImproperlyConfiguredEnv("TURNOUT_ENV=production needs ALLOWED_HOSTS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "csp",
    "template_partials",
    "common",
    "audit",
    "cohorts",
    "rollout",
    "notifications",
    "rollout.feedback",
]

MIDDLEWARE = [
    "common.health.HealthCheckMiddleware",  # first: probes skip host checks and the HTTPS redirect
    "django.middleware.security.SecurityMiddleware",
    "common.middleware.ContentSecurityPolicyMiddleware",  # django-csp's, async-capable
    "common.middleware.WhiteNoiseMiddleware",  # whitenoise's, async-capable (see there)
    "common.middleware.RequestIdMiddleware",
    "common.middleware.RequestLogMiddleware",
    "common.middleware.UnsupportedCharsetMiddleware",  # before anything reads a body (CSRF reads the form)
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "common.errors.ServiceUnavailableMiddleware",  # Redis away: 503 naming it, never a 500
]

# The SDK and OFREP routes (/api/v1/sdk/, /ofrep/v1/) under ASGI: only what their contract needs
# (header-authenticated JSON, no sessions, cookies or pages). See rollout/delivery/asgi.py.
SDK_MIDDLEWARE = [
    "rollout.delivery.middleware.SecurityMiddleware",  # Django's, its hooks on the event loop
    "common.middleware.RequestIdMiddleware",
    "common.middleware.RequestLogMiddleware",
    "common.middleware.UnsupportedCharsetMiddleware",
    "rollout.delivery.middleware.CommonMiddleware",  # Content-Length (clients check a body against it)
    "rollout.delivery.middleware.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "common.context_processors.shell",
                "rollout.context_processors.guardrail_watch",
                "rollout.switcher.shell",
            ],
        },
    }
]

DATABASES = {
    "default": dj_database_url.parse(
        env.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'turnout.sqlite3'}",
        conn_max_age=env.get_int("DATABASE_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.get_bool("DATABASE_POOL", True):
    # Under ASGI each request's synchronous part runs in a thread of its own, so per-thread persistent
    # connections pile up until PostgreSQL refuses more ("too many clients"); a pool per process
    # (psycopg_pool, built into Django) reuses a few instead. Pooling replaces persistent connections.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.get_int("DATABASE_POOL_MIN_SIZE", 1),
        "max_size": env.get_int("DATABASE_POOL_SIZE", 10),
        "timeout": env.get_float("DATABASE_POOL_TIMEOUT", 10.0),
    }
# Behind PgBouncer in transaction mode, server-side cursors (streamed reads) must be off.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env.get_bool("DATABASE_DISABLE_SERVER_SIDE_CURSORS", False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A file (not memory) for the test database, so a test's server and worker processes share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.get("REDIS_URL")
# Every Redis client connects and reads within this many seconds, then degrades or answers 503
# (common/redis.py); after a failure a process leaves Redis alone for TURNOUT_REDIS_RETRY_SECONDS.
TURNOUT_REDIS_TIMEOUT = env.get_float("TURNOUT_REDIS_TIMEOUT", 1.0)
TURNOUT_REDIS_RETRY_SECONDS = env.get_float("TURNOUT_REDIS_RETRY_SECONDS", 2.0)
if REDIS_URL:
    CACHES = {
        "default": {
            # Django's RedisCache on connections with TURNOUT_REDIS_TIMEOUT and the circuit breaker.
            "BACKEND": "common.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "turnout",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "turnout"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Single sign-on with OpenID Connect (mozilla-django-oidc), on when OIDC_RP_CLIENT_ID is set; the
# provider's endpoints by the library's own names. Roles come from a groups claim (docs/teams.md).
OIDC_RP_CLIENT_ID = env.get("OIDC_RP_CLIENT_ID", "") or ""
TURNOUT_SSO = bool(OIDC_RP_CLIENT_ID)
TURNOUT_PASSWORD_LOGIN = env.get_bool("TURNOUT_PASSWORD_LOGIN", True) or not TURNOUT_SSO
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"] if TURNOUT_PASSWORD_LOGIN else []
if TURNOUT_SSO:
    INSTALLED_APPS.append("mozilla_django_oidc")
    AUTHENTICATION_BACKENDS.insert(0, "rollout.access.oidc.TurnoutOIDCBackend")
    OIDC_RP_CLIENT_SECRET = env.get("OIDC_RP_CLIENT_SECRET", "") or ""
    # The provider's endpoints come from its discovery document (OIDC_OP_ISSUER); one set here wins.
    OIDC_OP_ISSUER = env.get("OIDC_OP_ISSUER", "") or ""
    OIDC_OP_AUTHORIZATION_ENDPOINT = env.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "") or ""
    OIDC_OP_TOKEN_ENDPOINT = env.get("OIDC_OP_TOKEN_ENDPOINT", "") or ""
    OIDC_OP_USER_ENDPOINT = env.get("OIDC_OP_USER_ENDPOINT", "") or ""
    OIDC_OP_JWKS_ENDPOINT = env.get("OIDC_OP_JWKS_ENDPOINT", "") or ""
    OIDC_OP_LOGOUT_ENDPOINT = env.get("OIDC_OP_LOGOUT_ENDPOINT", "") or ""
    if not OIDC_OP_ISSUER and not (OIDC_OP_AUTHORIZATION_ENDPOINT and OIDC_OP_TOKEN_ENDPOINT
                                   and OIDC_OP_JWKS_ENDPOINT):
        raise ImproperlyConfiguredEnv("single sign-on (OIDC_RP_CLIENT_ID) needs OIDC_OP_ISSUER, or the "
                                      "provider's authorization, token and JWKS endpoints")
    OIDC_AUTHENTICATE_CLASS = "rollout.access.oidc.TurnoutAuthenticateView"
    OIDC_CALLBACK_CLASS = "rollout.access.oidc.TurnoutCallbackView"
    # Sign-out ends the provider's session too (RP-initiated logout), which needs the ID token.
    OIDC_STORE_ID_TOKEN = True
    OIDC_OP_LOGOUT_URL_METHOD = "rollout.access.oidc.provider_logout_url"
    OIDC_RP_SIGN_ALGO = env.get("OIDC_RP_SIGN_ALGO", "RS256") or "RS256"
    OIDC_RP_SCOPES = env.get("OIDC_RP_SCOPES", "openid email profile") or "openid email profile"
    OIDC_PROVIDER_NAME = env.get("TURNOUT_OIDC_PROVIDER_NAME", "single sign-on") or "single sign-on"
    LOGIN_REDIRECT_URL_FAILURE = "/login/?sso=refused"
TURNOUT_OIDC_USERNAME_CLAIM = env.get("TURNOUT_OIDC_USERNAME_CLAIM", "preferred_username") or "preferred_username"
TURNOUT_OIDC_GROUPS_CLAIM = env.get("TURNOUT_OIDC_GROUPS_CLAIM", "groups") or "groups"
TURNOUT_OIDC_ROLE_MAP = env.get("TURNOUT_OIDC_ROLE_MAP", "") or ""
TURNOUT_OIDC_DISCOVERY_CACHE_SECONDS = env.get_float("TURNOUT_OIDC_DISCOVERY_CACHE_SECONDS", 3600.0)
TURNOUT_OIDC_DISCOVERY_TIMEOUT = env.get_float("TURNOUT_OIDC_DISCOVERY_TIMEOUT", 5.0)

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
MEDIA_ROOT = VAR_DIR / "media"
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Security headers: on everywhere, strict in production.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Content-Security-Policy on every response (django-csp 4): scripts, styles, fonts, images and requests
# from our own origin only; no inline script, no eval (htmx runs with allowEval off), no plugins, no
# framing. One allowance: style *attributes* (style="..."), which the templates and Chart.js use and
# which can neither run script nor load anything from elsewhere (img-src/font-src stay 'self'); inline
# <style> elements stay refused, so htmx is told not to inject its indicator styles (turnout.css has them).
# The Swagger UI page needs no more (drf-spectacular's split view serves its start-up script as a file).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
if TURNOUT_SSO:
    # Sign-out is a form post answered by a redirect to the identity provider's end-session endpoint
    # (rollout/access/oidc.py), and browsers hold redirects of a form post to form-action: allow its origin.
    CONTENT_SECURITY_POLICY["DIRECTIVES"]["form-action"] += sorted(
        {f"{p.scheme}://{p.netloc}" for p in map(urlsplit, (OIDC_OP_ISSUER, OIDC_OP_LOGOUT_ENDPOINT)) if p.netloc})

if PRODUCTION:
    SECURE_SSL_REDIRECT = env.get_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^metrics$"]  # scraped over plain HTTP inside the network
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env.get_int("SECURE_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# Reverse proxies in front of the web server that append to X-Forwarded-For; 0 (the default): none, the
# header is ignored and the client address is the connection's peer. The web servers trust forwarded
# headers only when this is set (config/gunicorn.py, Procfile.dev; docs/operations.md).
TURNOUT_TRUSTED_PROXIES = env.get_int("TURNOUT_TRUSTED_PROXIES", 0)
if TURNOUT_TRUSTED_PROXIES < 0:
    raise ImproperlyConfiguredEnv("TURNOUT_TRUSTED_PROXIES must be 0 or more")
# Failed sign-ins in the audit log: the first few per window individually, the rest as one counted event.
TURNOUT_LOGIN_AUDIT_WINDOW = env.get_int("TURNOUT_LOGIN_AUDIT_WINDOW", 300)
TURNOUT_LOGIN_AUDIT_INDIVIDUAL = env.get_int("TURNOUT_LOGIN_AUDIT_INDIVIDUAL", 5)
TURNOUT_LOGIN_AUDIT_INDIVIDUAL_MAX = env.get_int("TURNOUT_LOGIN_AUDIT_INDIVIDUAL_MAX", 50)

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rollout.access.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # DRF's, reading through common.jsonio: a body nested too deeply is a 400, not a RecursionError.
    "DEFAULT_PARSER_CLASSES": ["common.jsonio.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "common.pagination.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "sdk": env.get("TURNOUT_THROTTLE_SDK", "6000/min"),
        "auth": env.get("TURNOUT_THROTTLE_AUTH", "30/min"),
        # Failed sign-ins per attempted username, from any address (stops rotating client addresses).
        "auth_username": env.get("TURNOUT_THROTTLE_AUTH_USERNAME", "10/min"),
        "api": env.get("TURNOUT_THROTTLE_API", "3000/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Client addresses: the same count of trusted proxies as common.middleware.client_address.
    "NUM_PROXIES": TURNOUT_TRUSTED_PROXIES,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "Turnout API",
    "DESCRIPTION": ("Manage workloads, cohorts, flags and staged rollouts; evaluate decisions; read the audit log. "
                    "Configuration files (export, plan, apply) follow the JSON Schema served at "
                    "[/api/v1/config/schema](/api/v1/config/schema) (docs/config-as-code.md)."),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from our own static files (drf-spectacular-sidecar): /api/v1/docs/ works offline and
    # needs no third-party origin in a Content-Security-Policy.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        # The SDK decision's path and the OFREP variant are the same two values.
        "DecisionPathEnum": ["legacy", "parallel"],
        "BreachActionEnum": "rollout.models.BreachAction",
        "ChangeActionEnum": "actions.registry.ACTION_CHOICES",
        "FlagKindEnum": "rollout.models.FlagKind",
        "MemberKindEnum": "cohorts.models.MemberKind",
    },
}

# Celery: Redis when configured, otherwise a broker that needs no server (kombu's filesystem transport).
CELERY_TASK_ALWAYS_EAGER = env.get_bool("CELERY_TASK_ALWAYS_EAGER", False)
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = REDIS_URL
    # Redis away or hung: a web request that enqueues a task (an audit export, say; never a safety
    # action) waits at most two attempts of twice TURNOUT_REDIS_TIMEOUT, and a worker reconnects for
    # as long as it takes instead of exiting (docs/operations.md, "When Redis or a worker fails").
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        "socket_timeout": 2 * TURNOUT_REDIS_TIMEOUT,  # sync commands (publish, ack); BRPOP runs on the event loop
        "socket_connect_timeout": TURNOUT_REDIS_TIMEOUT,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 25,
        "max_retries": 1,  # publishing from a request: one retry, then the error
        "interval_start": 0,
        "interval_step": 0.2,
        "interval_max": 0.5,
    }
    CELERY_BROKER_CONNECTION_TIMEOUT = TURNOUT_REDIS_TIMEOUT
    CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                                        "interval_max": 0.5}
    CELERY_REDIS_SOCKET_TIMEOUT = 2 * TURNOUT_REDIS_TIMEOUT
    CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = TURNOUT_REDIS_TIMEOUT
    CELERY_REDIS_SOCKET_KEEPALIVE = True
    CELERY_REDIS_RETRY_ON_TIMEOUT = True
    CELERY_REDIS_BACKEND_HEALTH_CHECK_INTERVAL = 25
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"timeout": 5.0}}
else:
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("out", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        # The exchange-queue table too: without it kombu writes a control/ folder where the process starts.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    CELERY_RESULT_BACKEND = f"file://{VAR_DIR / 'results'}"
    (VAR_DIR / "results").mkdir(parents=True, exist_ok=True)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker that loses its broker reconnects forever (None: no limit) rather than exit; tasks it was
# running when the connection went are cancelled (acks_late: they are delivered again).
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
TURNOUT_GUARDRAIL_INTERVAL = env.get_float("TURNOUT_GUARDRAIL_INTERVAL", 10.0)
TURNOUT_GUARDRAIL_TRIGGER_DEBOUNCE = env.get_float("TURNOUT_GUARDRAIL_TRIGGER_DEBOUNCE", 2.0)
TURNOUT_OUTBOX_DRAIN_INTERVAL = env.get_float("TURNOUT_OUTBOX_DRAIN_INTERVAL", 5.0)
TURNOUT_HEARTBEAT_SECONDS = env.get_float("TURNOUT_HEARTBEAT_SECONDS", 10.0)
TURNOUT_HEARTBEAT_STALE_SECONDS = env.get_float("TURNOUT_HEARTBEAT_STALE_SECONDS", 45.0)
CELERY_BEAT_SCHEDULE = {
    # Metrics counted in Redis (or the database) become per-minute rows, minutes after they close.
    "rollup-metrics": {"task": "rollout.tasks.rollup_metrics", "schedule": 60.0},
    # Every active rollout's guardrails (a breach acts at once) and auto stages whose soak has passed.
    "check-guardrails": {"task": "rollout.tasks.check_guardrails", "schedule": TURNOUT_GUARDRAIL_INTERVAL},
    # Every data migration under way: inconsistency, parallel errors, divergences (rollout/datamigration).
    "check-migration-guardrails": {"task": "rollout.tasks.check_migration_guardrails",
                                   "schedule": TURNOUT_GUARDRAIL_INTERVAL},
    # Stages with a scheduled start.
    "start-scheduled-stages": {"task": "rollout.tasks.start_scheduled_stages", "schedule": 15.0},
    # Mismatch samples into their groups.
    "group-mismatches": {"task": "rollout.tasks.group_mismatches", "schedule": 60.0},
    # Metrics retention: minutes older than TURNOUT_METRICS_MINUTE_DAYS become hours.
    "metrics-retention": {"task": "rollout.tasks.metrics_retention", "schedule": 3600.0},
    # Feedback retention: entries older than TURNOUT_FEEDBACK_DAYS are deleted (rollout/feedback).
    "feedback-retention": {"task": "rollout.feedback.tasks.feedback_retention", "schedule": 3600.0},
    # Ruleset announcements Redis could not take when they were made (rollout/delivery/publish.py).
    "drain-outbox": {"task": "rollout.tasks.drain_outbox", "schedule": TURNOUT_OUTBOX_DRAIN_INTERVAL},
    # Proof that beat's schedule reaches a worker (what guardrail checks depend on): /readyz, the UI.
    "heartbeat": {"task": "rollout.tasks.heartbeat", "schedule": TURNOUT_HEARTBEAT_SECONDS},
    # Notifications the broker could not take when their change committed (notifications/outbox.py).
    "drain-notification-outbox": {"task": "notifications.tasks.drain_notification_outbox",
                                  "schedule": TURNOUT_OUTBOX_DRAIN_INTERVAL},
    # New divergences of data migrations, and newly stale flags, for their subscribers (notifications/watch.py).
    "watch-divergences": {"task": "notifications.tasks.watch_divergences", "schedule": 60.0},
    "watch-stale-flags": {"task": "notifications.tasks.watch_stale_flags", "schedule": 3600.0},
}

CELERY_WORKER_HIJACK_ROOT_LOGGER = False  # workers log through LOGGING below (JSON in production)

# Logs: one line per event on stderr; JSON (with the request id) in production, plain text otherwise.
LOG_FORMAT = env.get("LOG_FORMAT", "json" if PRODUCTION else "plain")
if LOG_FORMAT not in {"json", "plain"}:
    raise ImproperlyConfiguredEnv(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}")
LOG_LEVEL = env.get("LOG_LEVEL", "INFO")
LOG_REQUESTS = env.get_bool("LOG_REQUESTS", PRODUCTION)  # one http.request line per request
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "common.logging.JsonFormatter"},
        "plain": {"()": "common.logging.PlainFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.server": {"level": "WARNING"},
        # The ASGI server's own lines in the same format; its access log is replaced by http.request.
        "uvicorn": {"handlers": ["console"], "propagate": False},  # level: the server's --log-level
        "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        # The embedded file broker has no host name; kombu warns about it on every start.
        **({} if REDIS_URL else {"kombu.connection": {"level": "ERROR"}}),
    },
}

# Prometheus: with several processes per host, each writes its values to this directory and
# /metrics sums them (docs/operations.md). Unset: /metrics shows the answering process only.
PROMETHEUS_MULTIPROC_DIR = env.get("PROMETHEUS_MULTIPROC_DIR")

# Turnout's own settings (TURNOUT_*): defaults live in common/conf.py; override here from the environment.
TURNOUT_REQUIRE_SERVICES = env.get_bool("TURNOUT_REQUIRE_SERVICES", False)
TURNOUT_DEMO_TRAFFIC = env.get_bool("TURNOUT_DEMO_TRAFFIC", not PRODUCTION)
TURNOUT_DEMO_TRAFFIC_RATE = env.get_float("TURNOUT_DEMO_TRAFFIC_RATE", 12.0)
TURNOUT_FEEDBACK_DAYS = env.get_int("TURNOUT_FEEDBACK_DAYS", 90)
if env.get("TURNOUT_STREAM_HEARTBEAT_SECONDS"):
    TURNOUT_STREAM_HEARTBEAT_SECONDS = env.get_float("TURNOUT_STREAM_HEARTBEAT_SECONDS", 15.0)
if env.get("TURNOUT_STREAM_DB_POLL_SECONDS"):
    TURNOUT_STREAM_DB_POLL_SECONDS = env.get_float("TURNOUT_STREAM_DB_POLL_SECONDS", 0.5)
# Outgoing webhooks (guardrail breaches, automatic stage changes): URLs, and the HMAC-SHA256 secret.
TURNOUT_PROMETHEUS_URL = env.get("TURNOUT_PROMETHEUS_URL", "") or ""
TURNOUT_WEBHOOK_URLS = env.get_list("TURNOUT_WEBHOOK_URLS", [])
TURNOUT_WEBHOOK_SECRET = env.get("TURNOUT_WEBHOOK_SECRET", "") or ""
TURNOUT_NOTIFY_DIVERGENCE_INTERVAL = env.get_float("TURNOUT_NOTIFY_DIVERGENCE_INTERVAL", 900.0)
TURNOUT_PUBLIC_URL = env.get("TURNOUT_PUBLIC_URL", "") or ""
PASSWORD_RESET_TIMEOUT = env.get_int("PASSWORD_RESET_TIMEOUT", 3 * 24 * 3600)  # an invitation's link
# E-mail notifications go through Django's SMTP backend.
EMAIL_HOST = env.get("EMAIL_HOST", "localhost") or "localhost"
EMAIL_PORT = env.get_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env.get("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env.get("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env.get_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env.get_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env.get("DEFAULT_FROM_EMAIL", "turnout@localhost") or "turnout@localhost"
TURNOUT_AUDIT_SIGNING_KEY = env.get("TURNOUT_AUDIT_SIGNING_KEY")
TURNOUT_AUDIT_PREVIOUS_PUBLIC_KEYS = env.get_list("TURNOUT_AUDIT_PREVIOUS_PUBLIC_KEYS", [])
TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD = env.get_int("TURNOUT_AUDIT_EXPORT_ASYNC_THRESHOLD", 100_000)
TURNOUT_AUDIT_EXPORT_DIR = env.get("TURNOUT_AUDIT_EXPORT_DIR")
TURNOUT_AUDIT_VERIFY_SYNC_MAX = env.get_int("TURNOUT_AUDIT_VERIFY_SYNC_MAX", 10_000)
TURNOUT_METRICS_TOKEN = env.get("TURNOUT_METRICS_TOKEN")
TURNOUT_RULESET_CACHE_TIMEOUT = env.get_int("TURNOUT_RULESET_CACHE_TIMEOUT", 24 * 3600)
TURNOUT_WORKER_METRICS_PORT = env.get_int("TURNOUT_WORKER_METRICS_PORT", 0)
TURNOUT_WORKER_METRICS_ADDR = env.get("TURNOUT_WORKER_METRICS_ADDR", "127.0.0.1")
# Failed sign-ins counted for the audit log become their burst event within a minute of their window's end.
CELERY_BEAT_SCHEDULE["close-login-failure-bursts"] = {
    "task": "audit.tasks.close_login_failure_bursts", "schedule": 60.0}
