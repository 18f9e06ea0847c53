"""ASGI entry point of the baseline project (served by the same gunicorn + uvicorn workers as Turnout)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.edge.bare.settings")
application = get_asgi_application()
