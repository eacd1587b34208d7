"""Retraining: batches, datasets, runs, model versions, evaluations, the registry API and pages.

``training.engine`` is the pure-ML library (no Django); the rest of this package is the Django side.
"""
