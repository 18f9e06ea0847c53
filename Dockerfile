# One image for every Turnout process (web, worker, beat, release); compose.yaml picks the command.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TURNOUT_VAR_DIR=/app/var

WORKDIR /app
RUN useradd --create-home --uid 10001 turnout

# Dependencies first (cached while only the code changes): the SDK, then the server's requirements.
COPY sdk ./sdk
RUN pip install ./sdk
COPY pyproject.toml ./
RUN pip install .

COPY . .
# Static files with their hashed names, built once into the image (a throwaway key: nothing is signed).
RUN SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(60))')" \
    TURNOUT_ENV=production ALLOWED_HOSTS=build \
    python manage.py collectstatic --noinput \
 && mkdir -p /app/var && chown -R turnout:turnout /app/var

USER turnout
EXPOSE 8000
ENV BIND=0.0.0.0:8000
# Health checks are per service in compose.yaml (/readyz for web; worker and beat have no port).
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.asgi:application"]
