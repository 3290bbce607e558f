"""Copy every table of one store into another (`autointerp store copy`): a DuckDB file onto a DuckLake when a
project outgrows one machine, or back. One transaction on the target, and it commits only when each table's
row count and checksum there equal the source's: a copy lands whole or not at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from autointerp.errors import StoreError
from autointerp.store.database import Store
from autointerp.store.schema import TABLES

_BATCH_ROWS = 50_000  # Arrow batches streamed from source to target: a store never sits in memory whole


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    checksum: int  # the sum of the rows' hashes over every column, in the schema's order


def target_store(target: str, data_path: str | None, home: Path) -> Store:
    """'ducklake:CATALOG' (with `data_path`) or 'duckdb:FILE'."""
    from autointerp.store.lake import LakeStore

    kind, _, where = target.partition(":")
    if kind == "ducklake" and where:
        if not data_path:
            raise StoreError("--to ducklake:... needs --data-path (the directory its Parquet files go to)")
        if "password" in where.lower():
            raise StoreError("--to: no password on the command line; set PGPASSWORD in the environment")
        return LakeStore(where, Path(data_path).resolve(), home)
    if kind == "duckdb" and where:
        return Store(Path(where).resolve())
    raise StoreError(f"--to '{target}': expected ducklake:CATALOG (e.g. ducklake:postgres:dbname=autointerp "
                     "host=10.0.0.5 user=autointerp) or duckdb:FILE")


def copy_store(source: Store, target: Store) -> list[TableCopy]:
    """Copy every table; refuses a target that already holds rows (copying is for moving, not merging)."""
    if str(source) == str(target):
        raise StoreError(f"source and target are the same store ({source})")
    if not source.exists():
        raise StoreError(f"no store at {source}: nothing to copy")
    with source.reader().connect() as read, target.connect() as write:
        filled = [name for name in TABLES if write.execute(f"SELECT count(*) FROM {name}").fetchone()[0]]
        if filled:
            raise StoreError(f"{target} already holds rows in {', '.join(filled)}: copy into an empty store")
        copied = [_summary(read, name) for name in TABLES]
        write.execute("BEGIN TRANSACTION")
        try:
            for name in TABLES:
                batches = read.execute(f"SELECT {_columns(name)} FROM {name}").fetch_record_batch(_BATCH_ROWS)
                write.register("_copied", pa.RecordBatchReader.from_batches(batches.schema, batches))
                write.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _copied")
                write.unregister("_copied")
            landed = [_summary(write, name) for name in TABLES]
            if landed != copied:
                wrong = [f"{a.table} ({a.rows} rows, checksum {a.checksum} vs {b.rows}, {b.checksum})"
                         for a, b in zip(landed, copied) if a != b]
                raise StoreError(f"the copy into {target} differs from {source} in {', '.join(wrong)}; nothing landed")
            write.execute("COMMIT")
        except BaseException:
            write.execute("ROLLBACK")
            raise
    return copied


def _summary(con: duckdb.DuckDBPyConnection, name: str) -> TableCopy:
    # hash() of the columns together, summed as HUGEINT: order-free, and equal only when every value is
    rows, checksum = con.execute(f"SELECT count(*), coalesce(sum(hash({_columns(name)})::HUGEINT), 0) "
                                 f"FROM {name}").fetchone()
    return TableCopy(name, int(rows), int(checksum))


def _columns(name: str) -> str:
    return ", ".join(f'"{column}"' for column in TABLES[name].names)
