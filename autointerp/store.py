"""The DuckDB store: one file, plain tables other tools can query, partitions replaced atomically.

DuckDB allows one writing process per file, so connections are short-lived (opened per operation,
never held during model inference) and opening retries while another process holds the lock.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from autointerp.errors import StoreError

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model VARCHAR, revision VARCHAR, source VARCHAR, architecture VARCHAR,
    n_layers INTEGER, n_neurons INTEGER, dtype VARCHAR,
    corpus_fingerprint VARCHAR, n_excerpts INTEGER, registered_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS excerpts (
    model VARCHAR, revision VARCHAR, excerpt_id INTEGER, doc_id INTEGER, position INTEGER,
    token_ids INTEGER[], tokens VARCHAR[]
);
CREATE TABLE IF NOT EXISTS activation_records (
    model VARCHAR, revision VARCHAR, layer INTEGER, neuron INTEGER,
    kind VARCHAR, band SMALLINT, rank SMALLINT, excerpt_id INTEGER,
    max_activation FLOAT, activations FLOAT[]
);
CREATE TABLE IF NOT EXISTS neuron_stats (
    model VARCHAR, revision VARCHAR, layer INTEGER, neuron INTEGER,
    count BIGINT, mean DOUBLE, variance DOUBLE, skewness DOUBLE, kurtosis DOUBLE,
    max DOUBLE, frac_positive DOUBLE, quantile_boundaries FLOAT[]
);
CREATE TABLE IF NOT EXISTS explanations (
    model VARCHAR, revision VARCHAR, layer INTEGER, neuron INTEGER, explainer VARCHAR, sample SMALLINT,
    explanation VARCHAR, completion VARCHAR, created_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS simulations (
    model VARCHAR, revision VARCHAR, layer INTEGER, neuron INTEGER, explainer VARCHAR, simulator VARCHAR,
    sample SMALLINT, excerpt_id INTEGER, kind VARCHAR, simulated FLOAT[]
);
CREATE TABLE IF NOT EXISTS scores (
    model VARCHAR, revision VARCHAR, layer INTEGER, neuron INTEGER, explainer VARCHAR, simulator VARCHAR,
    sample SMALLINT, explanation VARCHAR, score_top_and_random DOUBLE, score_random_only DOUBLE,
    rsquared DOUBLE, absolute_dev_explained DOUBLE, n_tokens INTEGER, reason VARCHAR
);
"""


@dataclass(frozen=True)
class Replacement:
    """Rows of `table` matching `where` are deleted and `data` inserted in their place."""

    table: str
    where: Mapping[str, Any]  # column -> value, or a list of values
    data: pa.Table | pd.DataFrame | None = None  # None: only delete


def default_home() -> Path:
    return Path(os.environ.get("AUTOINTERP_HOME") or "data")


class Store:
    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self._schema_ready = False

    @classmethod
    def from_home(cls, home: str | Path | None = None) -> "Store":
        return cls(Path(home or default_home()) / "autointerp.duckdb")

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._open_with_retry()
        try:
            if not self._schema_ready:
                con.execute(SCHEMA)
                self._schema_ready = True
            yield con
        finally:
            con.close()

    def _open_with_retry(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise StoreError(f"cannot open the DuckDB store {self.path}: {exc}") from exc
            except duckdb.Error as exc:
                raise StoreError(f"cannot open the DuckDB store {self.path}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def replace(self, replacements: Sequence[Replacement], validate: Callable[[duckdb.DuckDBPyConnection], None] | None = None) -> None:
        """Swap partitions in ONE transaction; `validate` runs on the new rows before COMMIT.

        A crash or a failed validation rolls everything back: readers see all of it or none of it.
        """
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
                if validate is not None:
                    validate(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        with self.connect() as con:
            con.execute(sql, params or [])

    # --- what the recording stage reads -------------------------------------------------------

    def model_row(self, model: str, revision: str) -> dict[str, Any] | None:
        rows = self.query("SELECT * FROM models WHERE model = ? AND revision = ?", [model, revision])
        return rows.iloc[0].to_dict() if len(rows) else None

    def latest_revision(self, model: str) -> str | None:
        """The revision of `model` registered most recently (the one the pipeline works on)."""
        rows = self.query("SELECT revision FROM models WHERE model = ? ORDER BY registered_at DESC LIMIT 1", [model])
        return str(rows.iloc[0, 0]) if len(rows) else None

    def excerpt_count(self, model: str, revision: str) -> int:
        with self.connect() as con:
            row = con.execute("SELECT count(*) FROM excerpts WHERE model = ? AND revision = ?", [model, revision]).fetchone()
        return int(row[0]) if row else 0

    def iter_excerpt_batches(self, model: str, revision: str, batch_size: int, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (excerpt_ids (B,), token_ids (B, T)) in excerpt order, reading `chunk` rows per connection."""
        start = 0
        while True:
            with self.connect() as con:
                table = con.sql(
                    "SELECT excerpt_id, token_ids FROM excerpts WHERE model = ? AND revision = ? "
                    "AND excerpt_id >= ? ORDER BY excerpt_id LIMIT ?",
                    params=[model, revision, start, chunk],
                ).to_arrow_table()
            if table.num_rows == 0:
                return
            ids = table.column("excerpt_id").to_numpy()
            tokens = np.asarray(pa.concat_arrays(table.column("token_ids").chunks).flatten()).reshape(table.num_rows, -1)
            for lo in range(0, len(ids), batch_size):
                yield ids[lo:lo + batch_size], tokens[lo:lo + batch_size]
            start = int(ids[-1]) + 1


def where_clause(where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    parts, params = [], []
    for column, value in where.items():
        if isinstance(value, (list, tuple)):
            parts.append(f"{column} IN ({', '.join('?' for _ in value)})")
            params.extend(value)
        else:
            parts.append(f"{column} = ?")
            params.append(value)
    return " AND ".join(parts) or "TRUE", params
