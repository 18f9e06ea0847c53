"""ASGI entry point: serves the UI, the APIs and the SDK's server-sent event stream.

The SDK and OFREP routes run through a shorter middleware chain (``rollout/delivery/asgi.py``)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_application = get_asgi_application()

from rollout.delivery.asgi import sdk_asgi_application  # noqa: E402  (needs the apps loaded)

application = sdk_asgi_application(django_application)
