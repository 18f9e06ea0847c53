from django.apps import AppConfig


class CommonConfig(AppConfig):
    name = "common"
    verbose_name = "Turnout common"

    def ready(self) -> None:
        from common import schema  # noqa: F401  (registers the OpenAPI auth extensions)
