"""Celery tasks: thin wrappers (ids in, one service call) with their failure policy written down."""
