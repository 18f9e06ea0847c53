"""The bench's web process: Turnout's settings, plus the bench-only bare JSON view (never in
production urls)."""

from config.settings import *  # noqa: F403

ROOT_URLCONF = "bench.evaluate.urls"
DEBUG = False
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
