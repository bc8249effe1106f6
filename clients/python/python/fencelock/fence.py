"""Fencing for SQL resources: the check and the write in one statement.

A resource that is a SQL table needs no fence service: keep a token column beside the
data and make the check and the write one statement, so the database does both
atomically (the form ``crates/fence``'s documentation gives for PostgreSQL and SQLite)::

    UPDATE t SET v = ?, fence_token = ? WHERE id = ? AND fence_token <= ?

With ``upsert=True`` the first write creates the row (PostgreSQL, SQLite 3.24 or
later)::

    INSERT INTO t (id, v, fence_token) VALUES (?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET v = excluded.v, fence_token = excluded.fence_token
    WHERE t.fence_token <= excluded.fence_token

Either way the affected row count says it: 1 admitted, 0 refused (a higher token was
seen, or, without upsert, no such row). :func:`fenced_update` checks it for you.
"""

from __future__ import annotations

from typing import Any, Mapping, Tuple

__all__ = ["fenced_update", "fenced_update_sql"]


def _ident(name: str) -> str:
    """`name` quoted as a SQL identifier (both PostgreSQL and SQLite take "...")."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}")
    return '"' + name.replace('"', '""') + '"'


def fenced_update_sql(
    table: str,
    key_column: str,
    columns: "list[str]",
    *,
    token_column: str = "fence_token",
    upsert: bool = False,
    paramstyle: str = "qmark",
) -> str:
    """The one-statement fenced write as SQL text. Parameters, in order: the values of
    `columns`, then the token, then the key (``upsert``: the key, the values, the
    token). `paramstyle` is the DB-API style: ``"qmark"`` (``?``: sqlite3) or
    ``"format"`` / ``"pyformat"`` (``%s``: psycopg)."""
    if paramstyle == "qmark":
        mark = "?"
    elif paramstyle in ("format", "pyformat"):
        mark = "%s"
    else:
        raise ValueError(f"unsupported paramstyle {paramstyle!r}")
    if not columns:
        raise ValueError("no columns to write")
    t, k, f = _ident(table), _ident(key_column), _ident(token_column)
    cols = [_ident(c) for c in columns]
    if upsert:
        names = ", ".join([k, *cols, f])
        marks = ", ".join([mark] * (len(cols) + 2))
        sets = ", ".join(f"{c} = excluded.{c}" for c in [*cols, f])
        return (
            f"INSERT INTO {t} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({k}) DO UPDATE SET {sets} "
            f"WHERE {t}.{f} <= excluded.{f}"
        )
    sets = ", ".join(f"{c} = {mark}" for c in [*cols, f])
    return f"UPDATE {t} SET {sets} WHERE {k} = {mark} AND {f} <= {mark}"


def fenced_update(
    cursor: Any,
    table: str,
    key_column: str,
    key: Any,
    values: Mapping[str, Any],
    token: int,
    *,
    token_column: str = "fence_token",
    upsert: bool = False,
    paramstyle: str = "qmark",
) -> bool:
    """Write `values` to the row of `table` whose `key_column` is `key`, only if `token`
    is at least the highest token that row has seen, and record `token`, in one
    statement. Returns whether the write was admitted (False: a newer holder wrote, so
    this holder's lock is gone). `cursor` is a DB-API cursor or connection (anything
    with ``execute`` returning or being a cursor with ``rowcount``); commit as usual.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:")
    >>> _ = db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT, fence_token INTEGER)")
    >>> fenced_update(db, "jobs", "id", "x", {"state": "done"}, 7, upsert=True)
    True
    >>> fenced_update(db, "jobs", "id", "x", {"state": "stale"}, 6)
    False
    """
    columns = list(values)
    sql = fenced_update_sql(
        table, key_column, columns, token_column=token_column, upsert=upsert, paramstyle=paramstyle
    )
    params: Tuple[Any, ...]
    if upsert:
        params = (key, *values.values(), token)
    else:
        params = (*values.values(), token, key, token)
    result = cursor.execute(sql, params)
    # sqlite3's Connection.execute returns a cursor; DB-API cursors return None or self.
    rowcount = getattr(result, "rowcount", None)
    if rowcount is None:
        rowcount = cursor.rowcount
    if rowcount not in (0, 1):
        raise ValueError(f"{key_column} is not a unique key of {table}: {rowcount} rows matched")
    return rowcount == 1
