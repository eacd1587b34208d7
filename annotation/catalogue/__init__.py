"""The product catalogue: curation rules and import (file → ``Product`` rows).

``curation`` is pure Python (no Django); ``reader`` turns a file into numbered rows; ``services`` writes
them to the database. The synthetic catalogue the demo and the tests import lives with the engine
(``training.engine.synthetic``), which must not depend on this Django app.
"""
