"""What a pmd memory store may hold: only the schema objects `records.SCHEMA` creates, and rows of the types pmd
writes. `dbfile.validate` asks both questions of every existing file before pmd reads or copies it.

Why: a store is not only data. A file given as `memory.load_from` is copied whole (SQLite's online backup), so a
trigger in it would be copied too and then run inside this run's writes (one that rewrote every attempt as passed
with reward 1.0 made reflection build strategies from failures); a view or an extra table or index would ride
along unseen. And SQLite's column types are only affinities: a hand-edited row can hold text in `reward` or a
non-JSON `item_refs`, which surfaced as a traceback in `pmd memory show`/`stats` or deep inside training. So:

- `schema_problem`: any trigger or view, any table or index SCHEMA does not create, and any table whose columns
  differ from SCHEMA's (name, declared type, NOT NULL, default, key) is refused, naming the object.
- `content_problem`: every row's every column is checked against what pmd writes there (an integer, a finite
  number, text, 0/1, one of a fixed set, a JSON list of integers or strings), one scan per table; the first bad
  value is named with its table, column and row id. Meta values must be JSON, and the steps pmd keeps in meta
  integers.

Both only read. The expected schema is read off an in-memory database built from SCHEMA itself, so it cannot
drift from what `MemoryStore` creates.
"""

from __future__ import annotations

import functools
import sqlite3

from pmd.memory.records import FAILURE_KINDS, KINDS, SCHEMA, STATUSES

# Meta keys pmd reads as steps (memory/loop.py's LAST_REFLECTED); their values must be JSON integers.
META_STEP_KEYS: tuple[str, ...] = ("last_reflected_step",)

# Columns whose values come from a fixed set (besides their declared type).
_CHOICES: dict[tuple[str, str], tuple[object, ...]] = {
    ("experiences", "passed"): (0, 1), ("experiences", "failure_kind"): FAILURE_KINDS,
    ("insights", "kind"): KINDS, ("insights", "status"): STATUSES,
    ("patterns", "kind"): KINDS, ("patterns", "status"): STATUSES,
}
# Columns holding a JSON list, and the JSON type of its items.
_JSON_LISTS: dict[tuple[str, str], str] = {
    ("insights", "experience_ids"): "integer", ("patterns", "insight_ids"): "integer",
    ("retrievals", "item_refs"): "text",
}


@functools.cache
def _expected() -> tuple[dict[str, tuple[tuple, ...]], dict[str, tuple[str, tuple[str, ...]]]]:
    """({table: its PRAGMA table_xinfo rows}, {index: (its table, its columns)}) of a database built from SCHEMA."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(SCHEMA)
        return _tables(conn), _indexes(conn)
    finally:
        conn.close()


def _tables(conn: sqlite3.Connection) -> dict[str, tuple[tuple, ...]]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {n: tuple(tuple(r) for r in conn.execute("SELECT * FROM pragma_table_xinfo(?)", (n,))) for n in names}


def _indexes(conn: sqlite3.Connection) -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' ORDER BY name").fetchall()
    return {name: (table, tuple(str(r[2]) for r in conn.execute("SELECT * FROM pragma_index_info(?)", (name,))))
            for name, table in rows}


def schema_problem(conn: sqlite3.Connection) -> str | None:
    """What in the file's schema pmd did not create (first found), or None. Reads sqlite_master only."""
    tables, indexes = _expected()
    for kind, name in conn.execute("SELECT type, name FROM sqlite_master WHERE type NOT IN ('table', 'index') "
                                   "ORDER BY name"):
        return f"holds a {kind} {name!r}, which pmd never creates"
    found = _tables(conn)
    for name in found:
        if name not in tables:
            return f"holds a table {name!r}, which pmd never creates"
    for name, columns in found.items():
        if columns != tables[name]:
            return (f"table {name!r} has columns ({', '.join(c[1] for c in columns)}) unlike pmd's "
                    f"({', '.join(c[1] for c in tables[name])}) or of other types")
    for name, shape in _indexes(conn).items():
        if indexes.get(name) != shape:
            return f"holds an index {name!r}, which pmd never creates"
    return None


def _type_rule(column: tuple) -> tuple[str, str]:
    """(SQL predicate true for a bad value of `column` (a table_xinfo row), what a good value is)."""
    name, declared, notnull = column[1], column[2].upper(), column[3]
    q = f'"{name}"'
    if declared == "INTEGER":
        bad, what = f"typeof({q}) != 'integer'", "an integer"
    elif declared == "REAL":
        bad, what = f"(typeof({q}) NOT IN ('integer', 'real') OR abs({q}) > 1.7976931348623157e308)", "a finite number"
    else:
        bad, what = f"typeof({q}) != 'text'", "text"
    if not notnull:
        bad, what = f"({q} IS NOT NULL AND {bad})", f"{what} or NULL"
    return bad, what


def _rules(table: str) -> list[tuple[str, str, str]]:
    """(column, SQL predicate true for a bad value, what a good value is) for each column of `table`."""
    rules = []
    for column in _expected()[0][table]:
        name = column[1]
        bad, what = _type_rule(column)
        rules.append((name, bad, what))
        if (table, name) in _CHOICES:
            choices = _CHOICES[(table, name)]
            listed = ", ".join(repr(c) for c in choices)
            rules.append((name, f'"{name}" NOT IN ({listed})', f"one of {listed}"))
        if (table, name) in _JSON_LISTS:
            item = _JSON_LISTS[(table, name)]
            # CASE: json_type and json_each raise on malformed JSON, so they run only on valid JSON
            rules.append((name, f"(CASE WHEN json_valid(\"{name}\") THEN json_type(\"{name}\") != 'array' OR EXISTS "
                                f"(SELECT 1 FROM json_each(\"{name}\") WHERE type != '{item}') ELSE 1 END)",
                          f"a JSON list of {'integers' if item == 'integer' else 'strings'}"))
    if table == "meta":
        steps = ", ".join(f"'{k}'" for k in META_STEP_KEYS)
        rules.append(("value", "NOT json_valid(value)", "JSON text"))
        not_integer = "CASE WHEN json_valid(value) THEN json_type(value) != 'integer' ELSE 1 END"
        rules.append(("value", f"(key IN ({steps}) AND {not_integer})", "a JSON integer (a step)"))
    return rules


def _shown(value: object) -> str:
    kind = "bytes" if isinstance(value, bytes) else type(value).__name__
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else f"{text} ({kind})" if kind != "str" else text


def content_problem(conn: sqlite3.Connection) -> str | None:
    """The first value pmd would not have written (table, column, row), or None. One scan per table."""
    for table in sorted(_expected()[0]):
        rules = _rules(table)
        key = "key" if table == "meta" else "id"
        any_bad = " OR ".join(bad for _, bad, _ in rules)
        row = conn.execute(f"SELECT * FROM {table} WHERE {any_bad} LIMIT 1").fetchone()  # noqa: S608
        if row is None:
            continue
        names = [d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description]  # noqa: S608
        for column, bad, what in rules:  # which rule the row broke, asked of that row alone
            if conn.execute(f"SELECT 1 FROM {table} WHERE {key} IS ? AND {bad}",  # noqa: S608
                            (row[names.index(key)],)).fetchone():
                where = f"key {row[names.index(key)]!r}" if key == "key" else f"row id {row[names.index(key)]}"
                return f"{table}.{column} of {where} is {_shown(row[names.index(column)])}, expected {what}"
    return None
