"""Run: ``python -m training.engine <command> --help`` (see ``training/engine/cli.py``)."""

import sys

from training.engine.cli import main

sys.exit(main())
