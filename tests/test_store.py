"""The store: partitions are replaced atomically, a crash leaves the old rows, the lock is waited for, every write
runs its table's quality suite, and the tables come from one schema.

The write-mechanics tests write partial rows (`checked=False`): they test transactions, not the suites."""

import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from autointerp.errors import StoreError, ValidationError
import pandas as pd

from autointerp.store import Replacement, Store
from autointerp.store.schema import TABLES, table


def stats_rows(layer: int, n: int, value: float) -> pa.Table:
    return pa.table({"model": ["m"] * n, "revision": ["r"] * n, "layer": [layer] * n, "neuron": list(range(n)),
                     "mean": [value] * n})


def count(store: Store, where: str = "TRUE") -> int:
    return int(store.query(f"SELECT count(*) FROM neuron_stats WHERE {where}").iloc[0, 0])


def test_replacing_a_partition_twice_leaves_one_copy_and_other_partitions_alone(tmp_path):
    store = Store(tmp_path / "a.duckdb")
    for layer in (0, 1):
        store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [layer]},
                                   stats_rows(layer, 5, 1.0))], checked=False)
    store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]}, stats_rows(0, 5, 2.0))],
                  checked=False)
    assert count(store) == 10
    assert count(store, "layer = 0 AND mean = 2.0") == 5 and count(store, "layer = 1 AND mean = 1.0") == 5


def test_failed_validation_rolls_the_whole_write_back(tmp_path):
    store = Store(tmp_path / "a.duckdb")
    store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]}, stats_rows(0, 5, 1.0))],
                  checked=False)

    def reject(con):
        assert con.execute("SELECT count(*) FROM neuron_stats WHERE mean = 9").fetchone()[0] == 7  # sees new rows
        raise ValidationError("bad rows")

    with pytest.raises(ValidationError):
        store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]}, stats_rows(0, 7, 9.0))],
                      reject, checked=False)
    assert count(store) == 5 and count(store, "mean = 1.0") == 5


def test_a_process_killed_mid_write_leaves_the_old_partition(tmp_path):
    path = tmp_path / "a.duckdb"
    Store(path).replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]},
                                     stats_rows(0, 5, 1.0))], checked=False)
    script = textwrap.dedent(f"""
        import os, pyarrow as pa
        from autointerp.store import Replacement, Store
        rows = pa.table({{"model": ["m"] * 9, "revision": ["r"] * 9, "layer": [0] * 9, "neuron": list(range(9)), "mean": [5.0] * 9}})
        # die after DELETE and INSERT, before COMMIT: as a power cut or OOM kill would
        Store({str(path)!r}).replace([Replacement("neuron_stats", {{"model": "m", "revision": "r", "layer": [0]}}, rows)],
                                     validate=lambda con: os._exit(9), checked=False)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    store = Store(path)
    assert count(store) == 5 and count(store, "mean = 1.0") == 5


def test_a_locked_file_is_waited_for_then_reported(tmp_path):
    path = tmp_path / "a.duckdb"
    Store(path).execute("SELECT 1")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, sys, time
        con = duckdb.connect({str(path)!r}); print("locked", flush=True); time.sleep(float(sys.argv[1]))
    """), "1.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    started = time.monotonic()
    Store(path, lock_timeout_s=30).execute("SELECT 1")  # waits for the other process to let go
    assert time.monotonic() - started > 0.5
    holder.wait()

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(path)!r}); print("locked", flush=True); time.sleep(20)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=rf"a.duckdb stayed locked by PID {holder.pid} \(.*python.*\) for 1 s"):
            Store(path, lock_timeout_s=1).execute("SELECT 1")
    finally:
        holder.kill()


def test_a_reader_holding_the_file_is_named_at_once_not_after_the_wait(tmp_path, caplog):
    """A read-only connection in another process (a notebook, the DuckDB CLI) blocks writers: say so at once."""
    path = tmp_path / "a.duckdb"
    Store(path).execute("SELECT 1")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import duckdb, time
        con = duckdb.connect({str(path)!r}, read_only=True); print("reading", flush=True); time.sleep(3)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "reading"
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="autointerp.store"):
            Store(path, lock_timeout_s=30).execute("SELECT 1")  # gets in once the reader is gone
        [message] = [r.getMessage() for r in caplog.records]
        assert f"locked by PID {holder.pid}" in message and "retrying for up to 30 s" in message
        assert time.monotonic() - started > 1
    finally:
        holder.kill()


def test_every_write_runs_its_tables_quality_suite_and_bad_rows_never_land(tmp_path):
    store = Store(tmp_path / "a.duckdb")
    key = {"model": "m", "revision": "r"}
    good = table("models", rows=[{**key, "n_layers": 2, "n_neurons": 3}])
    store.replace([Replacement("models", key, good)])
    for name in ("../victim", "."):  # one name rule, enforced by the store too
        with pytest.raises(ValidationError, match="models: .*expect_column_values_to_match_regex"):
            store.replace([Replacement("models", {**key, "model": name}, table("models", rows=[{**key, "model": name,
                                                                                           "n_layers": 1, "n_neurons": 1}]))])
    bad = table("neuron_stats", rows=[{**key, "layer": 0, "neuron": n, "count": 10, "mean": 0.0, "variance": -1.0,
                                       "skewness": 0.0, "kurtosis": 0.0, "max": 1.0, "frac_positive": 0.5}
                                      for n in range(3)])
    with pytest.raises(ValidationError, match="neuron_stats: .*variance"):
        store.replace([Replacement("neuron_stats", {**key, "layer": [0]}, bad)])
    assert store.query("SELECT count(*) AS n FROM neuron_stats").n[0] == 0
    assert store.query("SELECT model FROM models").model.tolist() == ["m"]


def test_the_tables_are_created_from_the_arrow_schemas_and_an_old_store_gains_new_columns(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:  # a store written before `explanations` had best-of-n columns
        con.execute("CREATE TABLE explanations (model VARCHAR, revision VARCHAR, layer INTEGER, neuron INTEGER, "
                    "explainer VARCHAR, sample SMALLINT, explanation VARCHAR, completion VARCHAR, created_at TIMESTAMP)")
        con.execute("INSERT INTO explanations VALUES ('m', 'r', 0, 1, 'e', 0, 'cats', 'cats', NULL)")
    store = Store(path)
    for name, schema in TABLES.items():
        columns = store.query(f"DESCRIBE {name}")
        assert set(columns.column_name) == set(schema.names), name
    row = store.query("SELECT explanation, chosen, valid_score FROM explanations").iloc[0]
    assert row.explanation == "cats"
    assert pd.isna(row.chosen) and pd.isna(row.valid_score)  # new columns come in empty
