from django.apps import AppConfig


class RolloutConfig(AppConfig):
    name = "rollout"

    def ready(self) -> None:
        # Imported for what importing them registers: the evidence-pack sections, and the Celery tasks
        # (services queue them by name, common.jobs.enqueue).
        from rollout import evidence, tasks  # noqa: F401
