from django.apps import AppConfig


class RolloutConfig(AppConfig):
    name = "rollout"

    def ready(self) -> None:
        from rollout import evidence  # noqa: F401  (registers the evidence-pack sections)
