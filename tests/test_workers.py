"""Steps on Celery workers (orchestration/executors.py): Redis from Debian's `redis-server` and PostgreSQL (the
Dagster instance and the DuckLake catalog) on 127.0.0.1, started here; two `celery -A orchestration.worker worker`
processes writing to the lake at once; the `autointerp` CLI orchestrates. A six-layer model is recorded as six
runs that the two workers share.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from conftest import SCRIPTED_EXPLAINER, SCRIPTED_SIMULATOR, save_tiny_model, write_config, write_corpus
from postgres import PASSWORD, USER, Postgres
from redis_server import redis_server
from servers import LOOPBACK, start_process, stop_process_group, tail
from test_postgres_instance import DAGSTER_YAML

pytestmark = pytest.mark.slow  # real servers, worker processes and models

REPO = Path(__file__).resolve().parents[1]
MODEL, N_LAYERS = "tiny6", 6
VISIBILITY_S = 20  # a dead worker's step is handed on after this (longer than any step here)


@pytest.fixture(scope="module")
def redis() -> Iterator[str]:
    with redis_server() as url:
        yield url


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    db_name: str
    postgres: Postgres
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start_worker(self, name: str) -> None:
        # -c 1: one step at a time per worker, like one GPU per worker. Each in its own session: kill -9 of
        # the group is the whole worker gone (its main process and the pool child running the step).
        command = [sys.executable, "-m", "celery", "-A", "orchestration.worker", "worker", "-Q",
                   "record,explain,dagster", "-c", "1", "-n", f"{name}@%h", "--loglevel=INFO"]
        self.workers[name] = start_process(command, cwd=REPO, env=self.env, log_path=self.log(name))
        deadline = time.monotonic() + 120
        while " ready." not in self.log(name).read_text(errors="replace"):
            assert self.workers[name].poll() is None and time.monotonic() < deadline, tail(self.log(name))
            time.sleep(0.3)

    def run(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "orchestration.cli", "run", "--model", MODEL, *args],
                                cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def celery_steps(self) -> list[tuple[str, str, str, int]]:
        """(run id, step key, worker name, event id) of every step a worker started."""
        rows = self.postgres.query(self.db_name, "SELECT run_id, step_key, event, id FROM event_logs WHERE "
                                   "dagster_event_type = 'ENGINE_EVENT' AND event LIKE '%%in celery worker%%' ORDER BY id")
        found = []
        for run_id, step_key, event, event_id in rows:
            worker = re.search(r'"text": "(w\d@[^"]+)"', event)
            found.append((run_id, step_key, worker.group(1).split("@")[0] if worker else "?", event_id))
        return found


@pytest.fixture
def cluster(postgres, redis, tmp_path) -> Iterator[Cluster]:
    yield from make_cluster(postgres, redis, tmp_path)


def make_cluster(postgres: Postgres, broker: str, tmp_path: Path, **env_extra: str) -> Iterator[Cluster]:
    import dagster as dg

    db_name = postgres.create_database(f"dagster_{uuid.uuid4().hex[:8]}")
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML.format(host=LOOPBACK, port=postgres.port, user=USER,
                                                                 db_name=db_name))
    # The store: a DuckLake, its catalog in the same PostgreSQL server, its Parquet files under tmp_path: the
    # workers commit side by side, with no file lock between them.
    catalog = postgres.create_database(f"lake_{uuid.uuid4().hex[:8]}")
    store = {"kind": "ducklake", "catalog": f"postgres:dbname={catalog} host={LOOPBACK} port={postgres.port} user={USER}",
             "data_path": str(tmp_path / "lake")}
    model = save_tiny_model("gpt2", tmp_path / "model", n_layers=N_LAYERS)
    config = write_config(tmp_path, {MODEL: str(model)}, write_corpus(tmp_path / "corpus.jsonl", n_docs=60),
                          max_tokens=64 * 120, neurons={"select": "first", "count": 2}, store=store,
                          explainer=SCRIPTED_EXPLAINER, simulator=SCRIPTED_SIMULATOR,
                          executor={"kind": "celery", "broker": broker, "visibility_timeout_s": VISIBILITY_S,
                                    "record_layers_per_run": 1})  # six record runs, shared by the workers
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "AUTOINTERP_HOME": str(tmp_path / "data"),
           "AUTOINTERP_CONFIG": str(config), "DAGSTER_PG_PASSWORD": PASSWORD, "PGPASSWORD": PASSWORD,
           "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env_extra}
    # The instance's schema exists before the workers and the CLI connect (see test_postgres_instance.py).
    with _env(env), dg.DagsterInstance.get():
        pass
    result = Cluster(tmp_path, env, db_name, postgres)
    try:
        yield result
    finally:
        for name, process in result.workers.items():
            report = stop_process_group(process, timeout=20)
            assert not report.group_left, f"worker {name} left processes behind"


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _per_layer(env: dict[str, str]) -> dict[str, dict[int, int]]:
    """Rows per layer of the two record tables, and distinct record keys (a duplicated row shows as fewer)."""
    code = ("import json; from autointerp.store import Store; s = Store.from_home(read_only=True); "
            "q = lambda sql: {int(r[0]): int(r[1]) for r in s.query(sql).itertuples(index=False)}; "
            "print(json.dumps({'stats': q('SELECT layer, count(*) FROM neuron_stats GROUP BY layer'), "
            "'records': q('SELECT layer, count(*) FROM activation_records GROUP BY layer'), "
            "'distinct': q('SELECT layer, count(DISTINCT (neuron, kind, band, rank)) FROM activation_records GROUP BY layer')}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return {k: {int(layer): n for layer, n in v.items()} for k, v in json.loads(out.stdout).items()}


def _assert_each_layer_once(env: dict[str, str]) -> None:
    counts = _per_layer(env)
    layers = list(range(N_LAYERS))
    assert sorted(counts["stats"]) == layers and sorted(counts["records"]) == layers, counts
    assert len(set(counts["stats"].values())) == 1, counts  # every layer: one row per neuron
    assert len(set(counts["records"].values())) == 1, counts  # the same record plan for every layer
    assert counts["distinct"] == counts["records"], counts  # no row twice


# A reader beside the writers: it queries per-layer row counts of both record tables in one statement (one
# snapshot), as fast as it can, and logs how long each query took and what it saw.
READER = """
import json, sys, time
from pathlib import Path
from autointerp.store import Store
stop, log = Path(sys.argv[1]), open(sys.argv[2], "a")
sql = ("SELECT 'stats' AS t, layer, count(*) AS n FROM neuron_stats GROUP BY layer UNION ALL "
       "SELECT 'records', layer, count(*) FROM activation_records GROUP BY layer")
while not stop.exists():
    started = time.monotonic()
    try:
        rows = Store.from_home(read_only=True).query(sql)
        seen = {f"{t}/{layer}": int(n) for t, layer, n in rows.itertuples(index=False)}
        error = ""
    except Exception as exc:  # a store not created yet, or a reader shut out: logged, judged by the test
        seen, error = {}, f"{type(exc).__name__}: {exc}"[:300]
    log.write(json.dumps({"s": time.monotonic() - started, "seen": seen, "error": error}) + "\\n")
    log.flush()
    time.sleep(0.05)
"""


def test_a_layer_range_is_shared_by_two_workers(cluster):
    for name in ("w1", "w2"):
        cluster.start_worker(name)
    stop, reads = cluster.root / "stop-reader", cluster.root / "reads.jsonl"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(stop), str(reads)], cwd=REPO, env=cluster.env)
    run = cluster.run("--layers", f"0-{N_LAYERS - 1}", "--until", "record")
    output = run.communicate(timeout=900)[0]
    stop.touch()
    assert reader.wait(timeout=60) == 0, "the reader process failed"
    assert run.returncode == 0, output[-4000:]
    assert "Celery workers: w1@" in output and "w2@" in output

    steps = cluster.celery_steps()
    record_steps = [(run_id, worker) for run_id, step, worker, _ in steps if step == "record"]
    assert len(record_steps) == N_LAYERS, steps  # one record run per layer, each step taken once
    assert {worker for _, worker in record_steps} == {"w1", "w2"}, record_steps  # both workers recorded
    statuses = cluster.postgres.query(cluster.db_name, "SELECT status, count(*) FROM runs GROUP BY status")
    assert statuses == [("SUCCESS", N_LAYERS + 1)], statuses  # excerpts, then one run per layer
    _assert_each_layer_once(cluster.env)

    # The reader was never held up by the writers, and never saw a layer half-written: per layer, both tables
    # are there with all their rows, or neither is.
    final = _per_layer(cluster.env)
    observations = [json.loads(line) for line in reads.read_text().splitlines()]
    answered = [o for o in observations if not o["error"]]
    assert len(answered) > 20, observations[-5:]
    assert max(o["s"] for o in answered) < 2.0, sorted(o["s"] for o in answered)[-5:]
    for o in answered:
        for layer in range(N_LAYERS):
            got = (o["seen"].get(f"stats/{layer}", 0), o["seen"].get(f"records/{layer}", 0))
            assert got in ((0, 0), (final["stats"][layer], final["records"][layer])), (layer, got)
    # Errors only before the store existed (the first excerpts run creates it).
    first_answer = observations.index(answered[0])
    assert not [o for o in observations[first_answer:] if o["error"]], [o["error"] for o in observations if o["error"]][:3]

    # The LLM stages on the workers too, for the layers asked (the --layers override travels in the run config).
    run = cluster.run("--layers", "1-3", "--from", "explain", "--until", "score")
    output = run.communicate(timeout=900)[0]
    assert run.returncode == 0, output[-4000:]
    explain_steps = [worker for _, step, worker, _ in cluster.celery_steps() if step == "explanations"]
    assert len(explain_steps) == 3, explain_steps  # one run per layer
    code = ("from autointerp.store import Store; print(Store.from_home(read_only=True).query('SELECT layer, count(*) "
            "FROM explanations WHERE chosen GROUP BY layer ORDER BY layer').values.tolist())")
    chosen = subprocess.run([sys.executable, "-c", code], env=cluster.env, cwd=REPO, capture_output=True, text=True)
    assert chosen.stdout.strip() == "[[1, 2], [2, 2], [3, 2]]", chosen.stdout + chosen.stderr[-2000:]


def test_a_worker_killed_mid_step_is_replaced_by_the_other(cluster):
    for name in ("w1", "w2"):
        cluster.start_worker(name)
    run = cluster.run("--layers", f"0-{N_LAYERS - 1}", "--until", "record")
    # Kill -9 the first worker seen starting a record step, while that step runs (no STEP_SUCCESS yet).
    victim = killed_at = None
    deadline = time.monotonic() + 600
    while victim is None:
        assert run.poll() is None and time.monotonic() < deadline, (run.communicate()[0] or "")[-3000:]
        for run_id, step, worker, _ in cluster.celery_steps():
            if step == "record" and not _step_succeeded(cluster, run_id, step):
                os.killpg(cluster.workers[worker].pid, signal.SIGKILL)
                victim, victim_run, killed_at = worker, run_id, time.monotonic()
                break
        time.sleep(0.1)
    cluster.workers[victim].wait(timeout=30)
    output = run.communicate(timeout=900)[0]
    assert run.returncode == 0, output[-4000:]

    # The killed step was started again, by the other worker, after the broker handed its message on.
    attempts = [worker for run_id, step, worker, _ in cluster.celery_steps() if run_id == victim_run and step == "record"]
    survivor = ({"w1", "w2"} - {victim}).pop()
    assert attempts == [victim, survivor], attempts
    assert _step_succeeded(cluster, victim_run, "record")
    assert time.monotonic() - killed_at >= VISIBILITY_S * 0.5  # not before the broker could know it was lost
    statuses = cluster.postgres.query(cluster.db_name, "SELECT status, count(*) FROM runs GROUP BY status")
    assert statuses == [("SUCCESS", N_LAYERS + 1)], statuses
    _assert_each_layer_once(cluster.env)


def _step_succeeded(cluster: Cluster, run_id: str, step: str) -> bool:
    return bool(cluster.postgres.query(cluster.db_name, "SELECT 1 FROM event_logs WHERE run_id = %s AND step_key = %s "
                                       "AND dagster_event_type = 'STEP_SUCCESS'", (run_id, step)))


def test_no_worker_listening_is_one_clear_message(cluster):
    run = cluster.run("--layers", "0", "--until", "record")
    output = run.communicate(timeout=300)[0]
    assert run.returncode != 0
    assert "no Celery worker answers on redis://127.0.0.1:" in output, output[-2000:]
    assert "Traceback" not in output


def test_a_broker_password_comes_from_the_environment_and_is_stored_nowhere(postgres, tmp_path):
    secret = f"broker-{uuid.uuid4().hex}"
    with redis_server(password=secret) as broker:
        for cluster in make_cluster(postgres, broker, tmp_path, AUTOINTERP_BROKER_PASSWORD=secret):
            cluster.start_worker("w1")
            without = {k: v for k, v in cluster.env.items() if k != "AUTOINTERP_BROKER_PASSWORD"}
            refused = subprocess.run([sys.executable, "-m", "orchestration.cli", "run", "--model", MODEL, "--layers",
                                      "0", "--until", "record"], cwd=REPO, env=without, capture_output=True, text=True)
            assert refused.returncode != 0 and f"the Celery broker {broker} (executor.broker) refused" in refused.stderr, \
                refused.stderr[-2000:]
            run = cluster.run("--layers", "0", "--until", "record")
            output = run.communicate(timeout=600)[0]
            assert run.returncode == 0, output[-4000:]
            stored = cluster.postgres.query(cluster.db_name, "SELECT run_body FROM runs UNION ALL SELECT event FROM "
                                            "event_logs UNION ALL SELECT value FROM run_tags")
            assert stored and not [text for (text,) in stored if secret in (text or "")]
            assert secret not in output and secret not in cluster.log("w1").read_text(errors="replace")
            assert secret not in (cluster.root / "autointerp.yaml").read_text()

            # A step that fails on a worker fails the run with the step's own error, in one line.
            (cluster.root / "corpus.jsonl").rename(cluster.root / "moved.jsonl")
            failed = subprocess.run([sys.executable, "-m", "orchestration.cli", "run", "--model", MODEL, "--layers", "0",
                                     "--until", "record"], cwd=REPO, env=cluster.env, capture_output=True, text=True)
            assert failed.returncode != 0, failed.stdout[-2000:]
            [error] = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
            assert error.startswith("error: excerpts failed:") and "corpus.jsonl" in error, failed.stderr[-2000:]
            assert "Traceback" not in failed.stderr
