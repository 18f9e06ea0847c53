from django.apps import AppConfig


class FeedbackConfig(AppConfig):
    name = "rollout.feedback"
    label = "feedback"
    verbose_name = "User feedback"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported for what importing it registers: the retention task (beat names it).
        from rollout.feedback import tasks  # noqa: F401
