from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"

    def ready(self) -> None:
        # Imported for what importing them registers: the sign-in event receivers, and the Celery tasks
        # (services queue them by name, common.jobs.enqueue).
        from audit import signals, tasks  # noqa: F401
