from django.apps import AppConfig


class WebappConfig(AppConfig):
    name = "webapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out
        from django.core import checks

        from webapp.checks import throttle_cache_shared
        from webapp.lockout import log_lockout

        checks.register(throttle_cache_shared, deploy=True)

        user_locked_out.connect(log_lockout, dispatch_uid="priceloop-log-lockout")
