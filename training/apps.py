from typing import Any

from django.apps import AppConfig
from django.core import checks


def langsmith_installed(app_configs: Any, **kwargs: Any) -> list[checks.CheckMessage]:
    """Configured tracing without its optional package fails every sync: say so at startup."""
    from training.langsmith_sync import missing_package

    problem = missing_package()
    return [checks.Error(problem, id="training.E001")] if problem else []


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        checks.register(langsmith_installed)
