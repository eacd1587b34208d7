"""PriceLoop's Django project: settings, URLs, the Celery app, roles and the dashboard shell."""

from webapp.celery import app as celery_app

__all__ = ["celery_app"]
