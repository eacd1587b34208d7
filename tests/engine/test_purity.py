"""The engine stays pure (DESIGN.md §2): nothing under training/engine imports Django, Celery or our apps.

The source is scanned, not imported: the engine defers heavy imports into functions, so an import
that only runs inside ``main()`` or a ``TYPE_CHECKING`` block would escape a look at ``sys.modules``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "training" / "engine"
# Our Django apps and projects, and the frameworks the engine must run without.
FORBIDDEN = {"annotation", "webapp", "workers", "django", "rest_framework", "celery", "kombu"}


def _imported_names(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, at any depth, relative ones resolved."""
    package = module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{source}" if source else base
            # Each imported name may itself be a module ("from training import models").
            found += [(node.lineno, f"{source}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name | ast.Attribute)
            and (node.func.id if isinstance(node.func, ast.Name) else node.func.attr)
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _offences(path: Path) -> list[str]:
    module = ".".join(path.relative_to(ENGINE.parents[1]).with_suffix("").parts)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = []
    for line, name in _imported_names(tree, module):
        top = name.split(".")[0]
        # training.* outside the engine is the Django side of the same package.
        outside_engine = top == "training" and not (
            name == "training.engine" or name.startswith("training.engine.")
        )
        if top in FORBIDDEN or outside_engine:
            bad.append(f"{path.relative_to(ENGINE.parents[1])}:{line} imports {name}")
    return bad


def test_the_engine_imports_nothing_from_django_celery_or_our_apps() -> None:
    sources = sorted(ENGINE.rglob("*.py"))
    assert ENGINE / "cli.py" in sources
    assert len(sources) >= 10
    offences = [o for path in sources for o in _offences(path)]
    assert offences == [], "the engine must stay usable without Django:\n" + "\n".join(offences)


def test_the_scan_sees_deferred_relative_and_dynamic_imports(tmp_path: Path) -> None:
    source = (
        "import importlib\n"
        "def main():\n"
        "    from annotation.catalogue.synthetic import generate_products\n"
        "    from .. import models\n"
        "    importlib.import_module('django.conf')\n"
        "    from . import prompts\n"
    )
    names = sorted(name for _, name in _imported_names(ast.parse(source), "training.engine.cli"))
    assert names == [
        "annotation.catalogue.synthetic.generate_products",
        "django.conf",
        "importlib",
        "training.engine.prompts",
        "training.models",
    ]
