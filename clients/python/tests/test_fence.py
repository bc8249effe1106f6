"""The one-statement SQL fence, on SQLite."""

from __future__ import annotations

import sqlite3

import pytest

from fencelock.fence import fenced_update, fenced_update_sql


@pytest.fixture
def db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute('CREATE TABLE "jobs" (id TEXT PRIMARY KEY, state TEXT, n INTEGER, fence_token INTEGER NOT NULL)')
    return db


def row(db: sqlite3.Connection, key: str):
    return db.execute("SELECT state, n, fence_token FROM jobs WHERE id = ?", (key,)).fetchone()


def test_newer_and_equal_tokens_are_admitted_older_refused(db: sqlite3.Connection) -> None:
    assert fenced_update(db, "jobs", "id", "a", {"state": "one", "n": 1}, 5, upsert=True)
    assert row(db, "a") == ("one", 1, 5)
    # The same holder writes again with its token.
    assert fenced_update(db, "jobs", "id", "a", {"state": "two", "n": 2}, 5)
    assert fenced_update(db, "jobs", "id", "a", {"state": "three", "n": 3}, 9)
    # A stale holder is refused and changes nothing.
    assert not fenced_update(db, "jobs", "id", "a", {"state": "stale", "n": 0}, 8)
    assert not fenced_update(db, "jobs", "id", "a", {"state": "stale", "n": 0}, 4, upsert=True)
    assert row(db, "a") == ("three", 3, 9)


def test_update_without_row_is_refused_upsert_creates_it(db: sqlite3.Connection) -> None:
    assert not fenced_update(db, "jobs", "id", "b", {"state": "x", "n": 0}, 1)
    assert row(db, "b") is None
    assert fenced_update(db, "jobs", "id", "b", {"state": "x", "n": 0}, 1, upsert=True)
    assert row(db, "b") == ("x", 0, 1)


def test_cursor_and_identifiers_are_quoted(db: sqlite3.Connection) -> None:
    db.execute('CREATE TABLE "odd ""t""" ("k ey" TEXT PRIMARY KEY, "v" TEXT, tok INTEGER)')
    cursor = db.cursor()
    assert fenced_update(cursor, 'odd "t"', "k ey", "1", {"v": "a"}, 3, token_column="tok", upsert=True)
    assert not fenced_update(cursor, 'odd "t"', "k ey", "1", {"v": "b"}, 2, token_column="tok")
    assert db.execute('SELECT "v", tok FROM "odd ""t"""').fetchone() == ("a", 3)


def test_sql_text_for_postgres_placeholders() -> None:
    sql = fenced_update_sql("t", "id", ["v"], paramstyle="format")
    assert sql == 'UPDATE "t" SET "v" = %s, "fence_token" = %s WHERE "id" = %s AND "fence_token" <= %s'
    with pytest.raises(ValueError):
        fenced_update_sql("t", "id", ["v"], paramstyle="named")


def test_docstring_example() -> None:
    import doctest

    import fencelock.fence

    assert doctest.testmod(fencelock.fence).failed == 0
