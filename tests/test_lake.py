"""The store on DuckLake: the catalog in a real PostgreSQL on 127.0.0.1 (`postgres.py`), the Parquet files under
a temporary directory. The same pipeline lands the same rows as in the DuckDB file; many processes replace
partitions at once while a reader never waits and never sees a partition half written; `store copy` moves a
DuckDB store over with equal row counts and checksums."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from autointerp.config import StoreSpec, configured_store
from autointerp.errors import ConfigError, StoreError
from autointerp.store import Replacement, Store
from autointerp.store.lake import LakeStore
from autointerp.store.schema import TABLES
from conftest import SCRIPTED_EXPLAINER, SCRIPTED_SIMULATOR, write_config, write_corpus
from orchestration.cli import main
from postgres import PASSWORD, USER
from servers import LOOPBACK

pytestmark = pytest.mark.slow  # a real PostgreSQL server and pipeline runs

MODEL = "tiny-gpt2"
# Columns that differ between two runs of the same data: when a row was written.
_WHEN = {"created_at", "registered_at"}


@pytest.fixture
def lake(postgres, tmp_path, monkeypatch) -> StoreSpec:
    """An empty lake: a fresh catalog database, the password in the environment only."""
    db_name = postgres.create_database(f"lake_{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return StoreSpec("ducklake", f"postgres:dbname={db_name} host={LOOPBACK} port={postgres.port} user={USER}",
                     str(tmp_path / "lake"))


def _project(root: Path, tiny_gpt2: Path, monkeypatch, store: StoreSpec | None) -> Path:
    """A tiny-GPT-2 project with the scripted LLMs under `root`, its store the lake or (None) the DuckDB file."""
    (root / "dagster").mkdir(parents=True)
    sections = {"store": {"kind": store.kind, "catalog": store.catalog, "data_path": store.data_path}} if store else {}
    config = write_config(root, {MODEL: tiny_gpt2}, write_corpus(root / "corpus.jsonl"), explainer=SCRIPTED_EXPLAINER,
                          simulator=SCRIPTED_SIMULATOR, neurons={"select": "first", "count": 2}, **sections)
    for name, value in {"AUTOINTERP_HOME": root / "data", "DAGSTER_HOME": root / "dagster",
                        "AUTOINTERP_CONFIG": config}.items():
        monkeypatch.setenv(name, str(value))
    return config


def _tables(store: Store) -> dict[str, pd.DataFrame]:
    """Every table, sorted on all its columns, without the write timestamps."""
    frames = {}
    for name, schema in TABLES.items():
        columns = [c for c in schema.names if c not in _WHEN]
        frame = store.query(f"SELECT {', '.join(columns)} FROM {name}")
        key = [c for c in columns if frame[c].map(lambda v: isinstance(v, (str, int, float, bool)) or v is None).all()]
        frames[name] = frame.sort_values(key).reset_index(drop=True) if len(frame) else frame
    return frames


def test_the_pipeline_lands_the_same_rows_in_the_lake_as_in_the_duckdb_file(lake, tiny_gpt2, tmp_path, monkeypatch,
                                                                              capsys):
    _project(tmp_path / "file", tiny_gpt2, monkeypatch, store=None)
    assert main(["run", "--model", MODEL, "--layers", "0-1"]) == 0, capsys.readouterr().err
    in_file = _tables(Store.from_home())

    _project(tmp_path / "lake-project", tiny_gpt2, monkeypatch, store=lake)
    assert isinstance(Store.from_home(), LakeStore)
    assert main(["run", "--model", MODEL, "--layers", "0-1"]) == 0, capsys.readouterr().err
    assert not (tmp_path / "lake-project" / "data" / "autointerp.duckdb").exists()  # nothing went to a file
    assert list(Path(lake.data_path).rglob("*.parquet"))  # the rows are Parquet files under data_path
    in_lake = _tables(Store.from_home())
    for name in TABLES:
        if name == "llm_calls":  # the answers, keyed alike; latency differs
            assert sorted(in_lake[name].key) == sorted(in_file[name].key) and len(in_lake[name])
            continue
        pd.testing.assert_frame_equal(in_lake[name].drop(columns=["latency_s"], errors="ignore"),
                                      in_file[name].drop(columns=["latency_s"], errors="ignore"), obj=name)
    assert len(in_lake["scores"]) == 4 and len(in_lake["judge_scores"])  # 2 layers x 2 neurons, judged too

    # A second run finds everything done, and the read commands work on the lake; no password is printed.
    capsys.readouterr()
    assert main(["run", "--model", MODEL, "--layers", "0-1", "--from", "explain"]) == 0
    assert len(Store.from_home().query("SELECT * FROM scores")) == 4
    assert main(["status", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"store": "ducklake:postgres:dbname=' in out and PASSWORD not in out


def _replay(spec: StoreSpec, home: str, layer: int, rows: dict[str, pd.DataFrame], rounds: int) -> None:
    """A writer process: replace one layer's partition `rounds` times with the same (checked) rows."""
    store = LakeStore(spec.catalog, spec.data_path, home)
    where = {"model": MODEL, "layer": layer}
    for _ in range(rounds):
        store.replace([Replacement(name, where, frame) for name, frame in rows.items()])


def test_writers_replace_partitions_side_by_side_while_a_reader_never_waits_or_sees_half(lake, tiny_gpt2, tmp_path,
                                                                                       monkeypatch, capsys):
    _project(tmp_path, tiny_gpt2, monkeypatch, store=lake)
    assert main(["run", "--model", MODEL, "--until", "record"]) == 0, capsys.readouterr().err  # layers 0-2
    store = Store.from_home()
    count = "SELECT layer, count(*) AS n FROM {} GROUP BY layer ORDER BY layer"
    expected = {name: store.query(count.format(name)).set_index("layer").n.to_dict()
                for name in ("activation_records", "neuron_stats")}
    rows = {layer: {name: store.query(f"SELECT * FROM {name} WHERE layer = {layer}")
                    for name in ("activation_records", "neuron_stats")} for layer in (0, 1, 2)}

    # Four writers at once: one per layer, and a second on layer 0 (the same rows: those two conflict and retry).
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_replay, args=(lake, str(tmp_path / "data"), layer, rows[layer], 4))
               for layer in (0, 1, 2, 0)]
    for writer in writers:
        writer.start()
    reader = store.reader()
    reads, slowest = 0, 0.0
    while any(writer.is_alive() for writer in writers):
        started = time.monotonic()
        seen = {name: reader.query(count.format(name)).set_index("layer").n.to_dict() for name in expected}
        slowest = max(slowest, time.monotonic() - started)
        reads += 1
        assert seen == expected, f"read {reads} saw a partition half written or doubled: {seen}"
    for writer in writers:
        writer.join()
    assert [writer.exitcode for writer in writers] == [0, 0, 0, 0]
    assert reads >= 3 and slowest < 10, (reads, slowest)  # reading went on during the writes
    for name in expected:  # each partition exactly once, its rows as recorded
        assert store.query(count.format(name)).set_index("layer").n.to_dict() == expected[name]
        for layer in (0, 1, 2):
            landed = store.query(f"SELECT * FROM {name} WHERE layer = {layer}")
            key = ["neuron", "kind", "rank"] if name == "activation_records" else ["neuron"]
            pd.testing.assert_frame_equal(landed.sort_values(key).reset_index(drop=True),
                                          rows[layer][name].sort_values(key).reset_index(drop=True))


def test_a_write_that_fails_its_check_leaves_the_lake_as_it_was(lake, tiny_gpt2, tmp_path, monkeypatch, capsys):
    _project(tmp_path, tiny_gpt2, monkeypatch, store=lake)
    assert main(["run", "--model", MODEL, "--layers", "1", "--until", "record"]) == 0, capsys.readouterr().err
    store = Store.from_home()
    before = store.query("SELECT * FROM neuron_stats ORDER BY neuron")
    broken = before.copy()
    broken["frac_positive"] = 2.0  # a fraction above 1: the suite refuses it before COMMIT
    with pytest.raises(Exception, match="frac_positive"):
        store.replace([Replacement("neuron_stats", {"model": MODEL, "layer": 1}, broken)])
    pd.testing.assert_frame_equal(store.query("SELECT * FROM neuron_stats ORDER BY neuron"), before)


def test_store_copy_moves_a_duckdb_store_to_the_lake_whole(lake, tiny_gpt2, tmp_path, monkeypatch, capsys):
    _project(tmp_path, tiny_gpt2, monkeypatch, store=None)
    assert main(["run", "--model", MODEL, "--layers", "1"]) == 0, capsys.readouterr().err
    source = Store.from_home()
    capsys.readouterr()
    target = ["store", "copy", "--to", f"ducklake:{lake.catalog}", "--data-path", lake.data_path]
    assert main(target) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    copied = LakeStore(lake.catalog, lake.data_path, tmp_path)
    # Compared here with pandas, independently of the checksums the command compared.
    for name, frame in _tables(copied).items():
        pd.testing.assert_frame_equal(frame, _tables(source)[name], obj=name)
        assert f"{name:<20} {len(frame):>10,} rows" in out
    assert len(_tables(copied)["activation_records"]) > 0

    # Copying again is refused: the lake holds rows (nothing is merged or doubled).
    assert main(target) == 2
    assert "already holds rows" in capsys.readouterr().err
    assert len(copied.query("SELECT * FROM neuron_stats")) == len(source.query("SELECT * FROM neuron_stats"))


def test_a_lake_config_is_checked_and_an_unreachable_catalog_is_one_clear_error(postgres, tmp_path, monkeypatch,
                                                                                capsys):
    config = tmp_path / "autointerp.yaml"
    config.write_text("store: {kind: ducklake, catalog: 'postgres:dbname=x password=hunter2', data_path: lake}\n")
    with pytest.raises(ConfigError, match="PGPASSWORD"):
        configured_store(config)
    config.write_text("store: {kind: ducklake, catalog: 'postgres:dbname=x'}\n")
    with pytest.raises(ConfigError, match="data_path"):
        configured_store(config)
    config.write_text("store: {kind: lake}\n")
    with pytest.raises(ConfigError, match="duckdb or ducklake"):
        configured_store(config)
    config.write_text("store: {kind: ducklake, catalog: 'postgres:dbname=x', data_path: lake}\n")
    assert configured_store(config).data_path == str(tmp_path / "lake")  # relative to the config file

    monkeypatch.setenv("PGPASSWORD", "wrong-password")
    unreachable = LakeStore(f"postgres:dbname=postgres host={LOOPBACK} port={postgres.port} user={USER}",
                            tmp_path / "lake", tmp_path)
    with pytest.raises(StoreError, match="cannot open the DuckLake store .*password authentication failed"):
        unreachable.query("SELECT 1")
