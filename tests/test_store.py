"""The store: partitions are replaced atomically, a crash leaves the old rows, the lock is waited for."""

import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from autointerp.errors import StoreError, ValidationError
from autointerp.store import Replacement, Store


def stats_rows(layer: int, n: int, value: float) -> pa.Table:
    return pa.table({"model": ["m"] * n, "revision": ["r"] * n, "layer": [layer] * n, "neuron": list(range(n)),
                     "mean": [value] * n})


def count(store: Store, where: str = "TRUE") -> int:
    return int(store.query(f"SELECT count(*) FROM neuron_stats WHERE {where}").iloc[0, 0])


def test_replacing_a_partition_twice_leaves_one_copy_and_other_partitions_alone(tmp_path):
    store = Store(tmp_path / "a.duckdb")
    for layer in (0, 1):
        store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [layer]}, stats_rows(layer, 5, 1.0))])
    store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]}, stats_rows(0, 5, 2.0))])
    assert count(store) == 10
    assert count(store, "layer = 0 AND mean = 2.0") == 5 and count(store, "layer = 1 AND mean = 1.0") == 5


def test_failed_validation_rolls_the_whole_write_back(tmp_path):
    store = Store(tmp_path / "a.duckdb")
    store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]}, stats_rows(0, 5, 1.0))])

    def reject(con):
        assert con.execute("SELECT count(*) FROM neuron_stats WHERE mean = 9").fetchone()[0] == 7  # sees new rows
        raise ValidationError("bad rows")

    with pytest.raises(ValidationError):
        store.replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]}, stats_rows(0, 7, 9.0))], reject)
    assert count(store) == 5 and count(store, "mean = 1.0") == 5


def test_a_process_killed_mid_write_leaves_the_old_partition(tmp_path):
    path = tmp_path / "a.duckdb"
    Store(path).replace([Replacement("neuron_stats", {"model": "m", "revision": "r", "layer": [0]}, stats_rows(0, 5, 1.0))])
    script = textwrap.dedent(f"""
        import os, pyarrow as pa
        from autointerp.store import Replacement, Store
        rows = pa.table({{"model": ["m"] * 9, "revision": ["r"] * 9, "layer": [0] * 9, "neuron": list(range(9)), "mean": [5.0] * 9}})
        # die after DELETE and INSERT, before COMMIT: as a power cut or OOM kill would
        Store({str(path)!r}).replace([Replacement("neuron_stats", {{"model": "m", "revision": "r", "layer": [0]}}, rows)],
                                     validate=lambda con: os._exit(9))
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
        with pytest.raises(StoreError, match="cannot open the DuckDB store .*a.duckdb.*lock"):
            Store(path, lock_timeout_s=1).execute("SELECT 1")
    finally:
        holder.kill()
