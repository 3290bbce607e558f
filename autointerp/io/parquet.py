"""Copy every table of the store to Parquet, from one consistent snapshot."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from autointerp.errors import AutointerpError
from autointerp.store import Store

_SECRET_COLUMN = re.compile(r"api_?key|secret|password|credential|authorization", re.IGNORECASE)


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export_parquet(store: Store, out_dir: str | Path) -> dict[str, int]:
    """One `<table>.parquet` per table of the store (DuckDB's COPY ... (FORMAT parquet)), all read from one
    snapshot; returns table -> rows. No table holds secrets (llm_calls keys its cache by a hash of backend,
    model, kind and request; API keys are read from the environment only); a column named like one refuses."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with store.connect() as con:
        con.execute("BEGIN TRANSACTION")  # one consistent snapshot of every table; nothing is written
        try:
            for table in table_names(con):
                columns = column_names(con, table)
                secret = [c for c in columns if _SECRET_COLUMN.search(c)]
                if secret:
                    raise AutointerpError(f"table {table} has a column that may hold a secret ({secret[0]}): "
                                          "not exporting it")
                partial = out / f"{table}.parquet.partial"
                con.execute(f'COPY (SELECT * FROM "{table}") TO {_sql_string(str(partial))} (FORMAT parquet)')
                counts[table] = int(con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        except BaseException:
            for partial in out.glob("*.parquet.partial"):
                partial.unlink()
            raise
        finally:
            con.execute("ROLLBACK")
    for table in counts:  # only a complete export replaces earlier files
        (out / f"{table}.parquet.partial").replace(out / f"{table}.parquet")
    return counts


def table_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The store's tables (in the current database's main schema)."""
    return [row[0] for row in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT temporary ORDER BY table_name").fetchall()]


def column_names(con: duckdb.DuckDBPyConnection, table_name: str) -> list[str]:
    return [row[0] for row in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?", [table_name]).fetchall()]
