"""The Celery app: Redis when REDIS_URL is set, kombu's filesystem broker otherwise."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("turnout")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _connect_signals() -> None:
    from common import celery_signals, heartbeats

    celery_signals.connect()
    heartbeats.connect()  # worker and beat heartbeats in the database (/readyz, the UI banner)


_connect_signals()
