"""ASGI entry point: serves the UI, the APIs and the SDK's server-sent event stream."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = get_asgi_application()
