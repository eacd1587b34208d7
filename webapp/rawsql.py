"""Written-out SQL on hot paths: the column list of a model, and model instances from raw rows.

For the few statements that run on every request (the annotator queue, token look-ups), where building
the equivalent queryset cost more CPU than running it (docs/perf-queue.md). Only table and column names
from the models are formatted into SQL; every value is a query parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from django.db import connection
from django.db.models import Model

_M = TypeVar("_M", bound=Model)


def from_row(model: type[_M], values: Iterator[Any], *, skip: tuple[str, ...] = ()) -> _M:
    """An instance of ``model`` from the next columns of a raw row (``columns(model, …, skip=skip)``),
    with the database's converters applied as the ORM would (SQLite dates and decimals, JSON); the
    ``skip``ped fields are deferred (they load if touched)."""
    fields = [f for f in model._meta.concrete_fields if f.name not in skip]
    converted = []
    for field in fields:
        value = next(values)
        col = field.get_col(model._meta.db_table)
        if value is not None:
            for convert in connection.ops.get_db_converters(col) + field.get_db_converters(connection):
                value = convert(value, col, connection)
        converted.append(value)
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def columns(model: type[Model], alias: str, *, skip: tuple[str, ...] = ()) -> str:
    """``alias."col", …`` for the concrete fields of ``model`` less ``skip``, in ``from_row``'s order."""
    quote = connection.ops.quote_name
    return ", ".join(
        f"{alias}.{quote(str(f.column))}" for f in model._meta.concrete_fields if f.name not in skip
    )
