"""The product catalogue: synthetic generator, curation rules and import (file → ``Product`` rows).

``synthetic`` and ``curation`` are pure Python (no Django) so that the training engine and its tests can
use them too; ``reader`` turns a file into numbered rows; ``services`` writes them to the database.
"""
