from django.apps import AppConfig


class WebappConfig(AppConfig):
    name = "webapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from axes.signals import user_locked_out

        from webapp.lockout import log_lockout

        user_locked_out.connect(log_lockout, dispatch_uid="priceloop-log-lockout")
