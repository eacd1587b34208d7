"""Import every task module so that ``autodiscover_tasks(["workers"])`` registers them all."""

from workers import annotation, pipeline, system, training  # noqa: F401
