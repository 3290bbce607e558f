"""The Dagster instance on PostgreSQL: a real server on 127.0.0.1 (`postgres.py`) holds the runs, events, checks
and partitions."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from autointerp.store import Store
from conftest import write_config, write_corpus
from orchestration.cli import main
from postgres import PASSWORD, USER, Postgres
from servers import LOOPBACK

pytestmark = pytest.mark.slow  # real servers and models: left out of the quick loop

MODEL = "tiny-gpt2"
# The README's dagster.yaml. `scheme`: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the
# installed driver is psycopg2 (psycopg2-binary).
DAGSTER_YAML = """\
storage:
  postgres:
    postgres_db:
      hostname: {host}
      port: {port}
      username: {user}
      password:
        env: DAGSTER_PG_PASSWORD
      db_name: {db_name}
      scheme: postgresql+psycopg2
telemetry:
  enabled: false
"""


@dataclass
class Project:
    db_name: str
    dagster_home: Path
    store: Store


@pytest.fixture
def project(postgres, tiny_gpt2, tmp_path, monkeypatch) -> Project:
    """A fresh database, a DAGSTER_HOME whose dagster.yaml points at it, and a tiny-GPT-2 config."""
    db_name = postgres.create_database(f"dagster_{uuid.uuid4().hex[:8]}")
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(host=LOOPBACK, port=postgres.port, user=USER,
                                                          db_name=db_name))
    config = write_config(tmp_path, {MODEL: tiny_gpt2}, write_corpus(tmp_path / "corpus.jsonl"),
                          neurons={"select": "first", "count": 2})
    for name, value in {"DAGSTER_HOME": home, "AUTOINTERP_HOME": tmp_path / "data", "AUTOINTERP_CONFIG": config,
                        "DAGSTER_PG_PASSWORD": PASSWORD}.items():
        monkeypatch.setenv(name, str(value))
    return Project(db_name, home, Store.from_home(tmp_path / "data"))


def _events(postgres: Postgres, db_name: str, event_type: str) -> list[tuple[str, str | None, Any]]:
    """(asset, partition, deserialized EventLogEntry) of every event of this type in the database."""
    rows = postgres.query(db_name, "SELECT asset_key, partition, event FROM event_logs WHERE dagster_event_type = %s "
                          "ORDER BY id", (event_type,))
    return [(dg.AssetKey.from_db_string(key).to_user_string() if key else None, partition,
             dg.deserialize_value(event, dg.EventLogEntry)) for key, partition, event in rows]


def _count(store: Store, sql: str) -> int:
    return int(store.query(sql).iloc[0, 0])


def test_a_run_is_stored_in_postgres(postgres, project):
    assert main(["run", "--model", MODEL, "--layers", "0-1", "--until", "record"]) == 0

    with dg.DagsterInstance.get() as instance:  # the instance DAGSTER_HOME describes is PostgreSQL-backed
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert not list(project.dagster_home.rglob("*.db")), "a SQLite file was written next to dagster.yaml"

    runs = postgres.query(project.db_name, "SELECT run_id, status FROM runs")
    assert len(runs) == 2 and {status for _, status in runs} == {"SUCCESS"}  # excerpts, then layers 0-1
    tags = dict(postgres.query(project.db_name, "SELECT key, value FROM run_tags WHERE key LIKE "
                               "'dagster/asset_partition_range_%'"))
    assert tags == {"dagster/asset_partition_range_start": f"0|{MODEL}",
                    "dagster/asset_partition_range_end": f"1|{MODEL}"}

    materialized = _events(postgres, project.db_name, "ASSET_MATERIALIZATION")
    record_keys = {(a, p) for a, p, _ in materialized if a in ("activation_records", "neuron_stats")}
    assert record_keys == {(a, f"{layer}|{MODEL}") for a in ("activation_records", "neuron_stats") for layer in (0, 1)}
    assert ("excerpts", MODEL) in {(a, p) for a, p, _ in materialized}
    # The metadata stored in postgres is what landed in DuckDB.
    rows = {a: entry.asset_materialization.metadata["rows"].value for a, _, entry in materialized
            if a in ("activation_records", "neuron_stats")}
    assert rows == {"activation_records": _count(project.store, "SELECT count(*) FROM activation_records"),
                    "neuron_stats": _count(project.store, "SELECT count(*) FROM neuron_stats")}
    [excerpts] = [entry for a, _, entry in materialized if a == "excerpts"]
    assert excerpts.asset_materialization.metadata["excerpts"].value == _count(project.store, "SELECT count(*) FROM excerpts")

    evaluations = {entry.dagster_event.event_specific_data.check_name: entry.dagster_event.event_specific_data
                   for _, _, entry in _events(postgres, project.db_name, "ASSET_CHECK_EVALUATION")}
    assert set(evaluations) >= {"excerpts_are_well_formed", "activation_records_are_valid", "neuron_stats_are_valid"}
    assert all(evaluation.passed for evaluation in evaluations.values()), evaluations
    executions = postgres.query(project.db_name, "SELECT check_name, execution_status FROM asset_check_executions "
                                "WHERE execution_status <> 'PLANNED'")
    assert {name: status for name, status in executions} == {name: "SUCCEEDED" for name in evaluations}

    partitions = postgres.query(project.db_name, "SELECT partitions_def_name, partition FROM dynamic_partitions "
                                "ORDER BY partitions_def_name, id")
    assert partitions == [("layers", "0"), ("layers", "1"), ("layers", "2"), ("models", MODEL)]


def test_two_runs_at_once_on_one_postgres_instance_both_succeed(postgres, project):
    """Two workers (processes) record different layers at the same time into the same instance and DuckDB file."""
    # Workers join an instance whose schema exists (created once, as a deployment's daemon or first run does):
    # two processes creating Dagster's PostgreSQL schema at the same moment race on CREATE TYPE, which is not
    # what this test is about.
    with dg.DagsterInstance.get():
        pass
    autointerp = str(Path(sys.executable).parent / "autointerp")
    workers = [subprocess.Popen([autointerp, "run", "--model", MODEL, "--layers", layer, "--until", "record"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
               for layer in ("0", "2")]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    for worker, output in zip(workers, outputs):
        assert worker.returncode == 0, output[-3000:]

    runs = postgres.query(project.db_name, "SELECT status, start_time, end_time FROM runs ORDER BY start_time")
    assert [status for status, _, _ in runs] == ["SUCCESS"] * 4  # per worker: excerpts, then its layer
    # They really ran at the same time: some run started before the one before it had ended.
    assert any(start < previous_end for (_, _, previous_end), (_, start, _) in zip(runs, runs[1:])), runs
    materialized = {(a, p) for a, p, _ in _events(postgres, project.db_name, "ASSET_MATERIALIZATION")
                    if a == "activation_records"}
    assert materialized == {("activation_records", f"0|{MODEL}"), ("activation_records", f"2|{MODEL}")}
    # Both registered the model's partitions; each key is stored once.
    partitions = postgres.query(project.db_name, "SELECT partitions_def_name, partition FROM dynamic_partitions "
                                "ORDER BY partitions_def_name, partition")
    assert partitions == [("layers", "0"), ("layers", "1"), ("layers", "2"), ("models", MODEL)]
    per_layer = project.store.query("SELECT layer, count(*) AS n FROM neuron_stats GROUP BY layer ORDER BY layer")
    n_neurons = int(project.store.query("SELECT n_neurons FROM models").n_neurons[0])
    assert per_layer.layer.tolist() == [0, 2] and per_layer.n.tolist() == [n_neurons, n_neurons]
