"""The DuckDB store: one file, plain tables other tools can query, partitions replaced atomically.

DuckDB allows one writing process per file, so connections are short-lived (opened per operation,
never held during model inference) and opening retries while another process holds the lock.
Every write runs the written tables' quality suites inside its transaction (`quality.py`): rows that
fail never land.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import duckdb
import pandas as pd
import pyarrow as pa

from autointerp.config.schema import StoreSpec
from autointerp.errors import StoreError
from autointerp.store.schema import TABLES, ddl

log = logging.getLogger("autointerp.store")
_NO_SPACE = "No space left"
_COMMIT_ATTEMPTS = 6


@dataclass(frozen=True)
class Replacement:
    """Rows of `table` matching `where` are deleted and `data` inserted in their place.

    `expect`: what the table's quality suite needs beyond the rows themselves (e.g. how many records of
    each kind every neuron must have), see `quality.SUITES`.
    """

    table: str
    where: Mapping[str, Any]  # column -> value, or a list of values
    data: pa.Table | pd.DataFrame | None = None  # None: only delete
    expect: Mapping[str, Any] = field(default_factory=dict)


def default_home() -> Path:
    return Path(os.environ.get("AUTOINTERP_HOME") or "data")


class Store:
    """`read_only`: for readers beside a running pipeline (the viewer): such a connection never writes, and is
    held only for one request, so the pipeline's writes get in between.

    This class is the embedded DuckDB file; `lake.LakeStore` keeps the same tables in a DuckLake. `from_home`
    picks the one the config's `store:` names.
    """

    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0, read_only: bool = False):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.read_only = read_only
        self._schema_ready = False

    @classmethod
    def from_home(cls, home: str | Path | None = None, lock_timeout_s: float = 120.0, read_only: bool = False,
                  spec: StoreSpec | None = None) -> "Store":
        """The configured store (`spec`, default: the config file's `store:` section); the DuckDB file lives in
        `home` (default $AUTOINTERP_HOME), where the viewer's pages are written whatever the store."""
        from autointerp.config import configured_store

        spec = spec or configured_store()
        home = Path(home or default_home())
        if spec.kind == "ducklake":
            from autointerp.store.lake import LakeStore

            return LakeStore(spec.catalog, spec.data_path, home, lock_timeout_s, read_only)
        return cls(home / "autointerp.duckdb", lock_timeout_s, read_only)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def home(self) -> Path:
        return self.path.parent

    @property
    def lock_path(self) -> Path:
        """Beside the data, for advisory locks every writer of this store sees (llm/cache.py)."""
        return self.path.with_name(self.path.name + ".llm-lock")

    def reader(self) -> "Store":
        """The same store, opened read-only for each request."""
        return Store(self.path, self.lock_timeout_s, read_only=True)

    def exists(self) -> bool:
        return self.path.exists()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self._open()
        try:
            if not self._schema_ready:
                self._ensure_schema(con)
            yield con
        except duckdb.Error as exc:
            if isinstance(exc, (duckdb.IOException, duckdb.FatalException)) or _NO_SPACE in str(exc):
                raise StoreError(describe_io_error(self, exc)) from exc
            raise
        finally:
            con.close()

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        """Refuse a foreign database; a writer creates what is missing (only that: on a lake every DDL statement
        is a commit, and two workers starting at once would otherwise race on them)."""
        found = check_schema(con, self, self.read_only)
        statements = ddl(found)
        if statements and not self.read_only:
            con.execute(statements)
        self._schema_ready = True

    def _open(self) -> duckdb.DuckDBPyConnection:
        if self.read_only and not self.path.exists():
            raise StoreError(f"no store at {self.path}: run `autointerp run` first")
        if not self.read_only:  # a reader needs nothing writable: the store may sit on read-only media
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the store's folder {self.path.parent}: {exc.strerror}") from exc
        started = time.monotonic()
        delay, said = 0.05, False
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=self.read_only)
            except duckdb.IOException as exc:
                holder = lock_holder(str(exc))
                if "lock" not in str(exc).lower():
                    raise StoreError(f"cannot open the DuckDB store {self.path}: {exc}") from exc
                if time.monotonic() - started > self.lock_timeout_s:
                    raise StoreError(f"the DuckDB store {self.path} stayed locked by {holder} for "
                                     f"{self.lock_timeout_s:.0f} s; close that connection (a notebook or the DuckDB "
                                     "CLI holds it even to read) and run again") from exc
                if not said:  # at once, not after the wait: what is waited on, who holds it, for how long
                    log.warning(f"waiting for the DuckDB store {self.path}: it is locked by {holder}; retrying for "
                                f"up to {self.lock_timeout_s:.0f} s (DuckDB allows one process at a time)")
                    said = True
            except duckdb.Error as exc:
                raise StoreError(f"cannot open the DuckDB store {self.path}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def replace(self, replacements: Sequence[Replacement],
                validate: Callable[[duckdb.DuckDBPyConnection], None] | None = None, checked: bool = True) -> None:
        """Swap partitions in ONE transaction. Before COMMIT, each written table's quality suite runs on its
        new rows (`checked=False` skips them: only for tests of the write mechanics), then `validate`.

        A crash or a failed check rolls everything back: readers see all of it or none of it.
        """
        for attempt in range(_COMMIT_ATTEMPTS):
            try:
                self._replace_once(replacements, validate, checked)
                return
            except duckdb.TransactionException as exc:
                # A lake lets writers commit side by side; two that touched the same table's rows at once
                # conflict, and the later one is rolled back whole: replacing is idempotent, so do it again.
                if "conflict" not in str(exc).lower() or attempt == _COMMIT_ATTEMPTS - 1:
                    raise StoreError(f"the store {self} refused the write: {str(exc).splitlines()[0]}") from exc
                log.info(f"write conflict on {self} (another writer committed first); retrying")
                time.sleep(0.1 * 2 ** attempt)

    def _replace_once(self, replacements: Sequence[Replacement],
                      validate: Callable[[duckdb.DuckDBPyConnection], None] | None, checked: bool) -> None:
        from autointerp.store.quality import check_replacement

        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for i, rep in enumerate(replacements):
                    clause, params = where_clause(rep.where)
                    con.execute(f"DELETE FROM {rep.table} WHERE {clause}", params)
                    if rep.data is None:
                        continue
                    view = f"_incoming_{i}"
                    con.register(view, rep.data)
                    con.execute(f"INSERT INTO {rep.table} BY NAME SELECT * FROM {view}")
                    con.unregister(view)
                if checked:
                    for rep in replacements:
                        if rep.data is not None:
                            check_replacement(con, rep)
                if validate is not None:
                    validate(con)
                con.execute("COMMIT")
            except BaseException:
                # a failed write (a full disk) may have ended the transaction already: the cause is what counts
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, params or [])


def check_schema(con: duckdb.DuckDBPyConnection, path: Any, read_only: bool) -> dict[str, set[str]]:
    """A file whose tables are not this project's is refused before anything touches it (a writer would
    otherwise add our columns to someone else's table). A writer upgrades a store of an older version (missing
    columns and tables are added); a reader cannot, so it needs them all."""
    found: dict[str, set[str]] = {}
    for name, column in con.execute("SELECT table_name, column_name FROM information_schema.columns "
                                    "WHERE table_schema = 'main' AND table_catalog = current_database()").fetchall():
        found.setdefault(name, set()).add(column)
    for name, schema in TABLES.items():
        if name not in found:
            if read_only:
                raise StoreError(f"{path} is not an autointerp store of this version: it has no table {name} "
                                 "(a store of an older version is upgraded by any writing command, e.g. `autointerp run`)")
            continue
        foreign = sorted(found[name] - set(schema.names))
        missing = sorted(set(schema.names) - found[name])
        if foreign:
            raise StoreError(f"{path}: table {name} is not autointerp's (it has column(s) {', '.join(foreign)}, "
                             f"which autointerp's {name} lacks); point AUTOINTERP_HOME elsewhere")
        if missing and read_only:
            raise StoreError(f"{path}: table {name} lacks column(s) {', '.join(missing)}: a store of an older "
                             "version, which any writing command (e.g. `autointerp run`) upgrades")
    return found


def describe_io_error(path: Any, exc: Exception) -> str:
    """DuckDB's I/O failures in one line naming the file; a full disk said as such (nothing landed: the
    transaction was rolled back)."""
    text = str(exc)
    if _NO_SPACE in text or "disk I/O error" in text or "ENOSPC" in text:
        return f"the DuckDB store {path} ran out of disk space; nothing of the failed write landed: {text.splitlines()[0]}"
    return f"the DuckDB store {path}: {text.splitlines()[0] if text else type(exc).__name__}"


def lock_holder(message: str) -> str:
    """'PID 1234 (/usr/bin/duckdb)' from DuckDB's lock error, or 'another process'."""
    match = re.search(r"held in (.+?) \(PID (\d+)\)", message)
    return f"PID {match.group(2)} ({match.group(1)})" if match else "another process"


def where_clause(where: Mapping[str, Any], alias: str = "") -> tuple[str, dict[str, Any]]:
    """The one WHERE builder (writes, quality suites, reads): column -> value, or a list of values (IN; empty:
    nothing), with named parameters ($column, $column_0, ...) so a query can add its own; `alias` qualifies."""
    a = f"{alias}." if alias else ""
    parts, params = [], {}
    for column, value in where.items():
        if isinstance(value, (list, tuple)):
            names = [f"{column}_{i}" for i in range(len(value))]
            parts.append(f"{a}{column} IN ({', '.join('$' + n for n in names)})" if value else "FALSE")
            params.update(zip(names, value))
        else:
            parts.append(f"{a}{column} = ${column}")
            params[column] = value
    return " AND ".join(parts) or "TRUE", params
