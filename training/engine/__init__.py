"""PriceLoop training engine: pure ML, no Django or Celery (DESIGN.md §2).

Run: ``python -m training.engine --help``. Modules: ``prompts`` (formats), ``config`` (recipes),
``bootstrap`` (offline base), ``model_io`` (loading), ``datasets``, ``trainer``, ``predictor``,
``evaluator``, ``baselines``, ``charts``, ``artifacts`` (version folders), ``synthetic`` (a generated
catalogue), ``cli``. Heavy libraries (torch, transformers, trl) are imported inside functions so that
importing the package stays cheap.
"""
