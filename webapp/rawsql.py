"""Written-out SQL on hot paths: the column list of a model, and model instances from raw rows.

For the few statements that run on every request (the annotator queue, token look-ups), where building
the equivalent queryset cost more CPU than running it (docs/perf-queue.md). Only table and column names
from the models are formatted into SQL; every value is a query parameter.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, TypeVar

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.models import Model

_M = TypeVar("_M", bound=Model)


def from_row(model: type[_M], values: Iterator[Any], *, skip: tuple[str, ...] = ()) -> _M:
    """An instance of ``model`` from the next columns of a raw row (``columns(model, …, skip=skip)``),
    with the database's converters applied as the ORM would (SQLite dates and decimals, JSON); the
    ``skip``ped fields are deferred (they load if touched)."""
    conn = connections[DEFAULT_DB_ALIAS]  # the proxy ``connection`` costs a look-up per attribute
    # Which converters each column needs is worked out once per connection: building the column
    # expressions and asking for their converters cost more than the rest of this function.
    plans = conn.__dict__.setdefault("_rawsql_row_plans", {})
    plan = plans.get((model, skip))
    if plan is None:
        fields = [f for f in model._meta.concrete_fields if f.name not in skip]
        converters = []
        for field in fields:
            col = field.get_col(model._meta.db_table)
            converters.append((col, conn.ops.get_db_converters(col) + field.get_db_converters(conn)))
        plan = plans[(model, skip)] = ([f.attname for f in fields], converters)
    names, converters = plan
    converted = []
    for col, convert_all in converters:
        value = next(values)
        if value is not None:
            for convert in convert_all:
                value = convert(value, col, conn)
        converted.append(value)
    return model.from_db(conn.alias, names, converted)


def columns(model: type[Model], alias: str, *, skip: tuple[str, ...] = ()) -> str:
    """``alias."col", …`` for the concrete fields of ``model`` less ``skip``, in ``from_row``'s order."""
    quote = connection.ops.quote_name
    return ", ".join(
        f"{alias}.{quote(str(f.column))}" for f in model._meta.concrete_fields if f.name not in skip
    )


@contextmanager
def hot_cursor() -> Iterator[Any]:
    """A cursor for a statement that runs on every request: on PostgreSQL (unless
    ``DATABASE_PREPARED_STATEMENTS=0``) it is prepared once per connection, so that PostgreSQL parses
    and plans it once instead of on every call (about 1.2 ms of PostgreSQL CPU per queue request,
    docs/perf-queue.md). Elsewhere, Django's usual cursor.

    The cursor is Django's wrapper (query logging, ``execute_wrapper``, errors as ``django.db``
    exceptions) around a psycopg cursor that binds its parameters on the server, which prepared
    statements need; Django's own cursors bind them on the client.
    """
    if connection.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            yield cursor
        return
    # As BaseDatabaseWrapper._cursor(), with the cursor class swapped.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    psycopg_connection = connection.connection
    if psycopg_connection.prepare_threshold is None:
        # Django sets None (automatic preparation off), which also ignores prepare=True. A threshold
        # that no statement reaches keeps automatic preparation off and lets prepare=True through;
        # Django's own cursors bind on the client and are never prepared either way.
        psycopg_connection.prepare_threshold = 2**31 - 1
    with connection.wrap_database_errors:
        prepared = _prepared_cursor_class()(psycopg_connection)
        prepared.log_queries = connection.queries_logged
        cursor = connection._prepare_cursor(prepared)  # type: ignore[attr-defined]
    with cursor:
        yield cursor


@functools.cache
def _prepared_cursor_class() -> type:
    import psycopg  # only on PostgreSQL

    class PreparedCursor(psycopg.Cursor):  # type: ignore[type-arg]
        log_queries = False

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            # psycopg keeps each connection's prepared statements (an LRU of prepared_max, 100).
            result = super().execute(query, params, prepare=True)
            if self.log_queries:
                # Django's query log (DEBUG, CaptureQueriesContext) reads the statement back from
                # ``_query``, which only client-side binding fills: give it the statement with its values.
                text = psycopg.ClientCursor(self.connection).mogrify(query, params)
                self._query = SimpleNamespace(query=text.encode())  # type: ignore[assignment]
            return result

    return PreparedCursor


def fetch_one(sql: str, params: Any) -> tuple[Any, ...] | None:
    """The first row of one hot statement (``hot_cursor``), or None."""
    with hot_cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
    return row
