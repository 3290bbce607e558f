"""Several runs at once, each under Dagster's default multiprocess executor, on one DuckDB file.

Each run is a separate `dagster job execute` process (as a run launcher starts them), and each of those runs
its steps in subprocesses. DuckDB allows one writing process per file: the store's short connections
with lock retry must make every run succeed and every row land.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from autointerp.config import load_config
from autointerp.record.recorder import expected_counts
from autointerp.store import Store, queries
from orchestration.partitions import model_layer_key, register_model
from tests.test_pipeline import layer_counts, run

REPO = Path(__file__).resolve().parents[1]


def launch(job: str, model: str, first: int, last: int) -> subprocess.Popen:
    tags = {"dagster/asset_partition_range_start": str(model_layer_key(model, first)),
            "dagster/asset_partition_range_end": str(model_layer_key(model, last))}
    dagster = Path(sys.executable).parent / "dagster"
    return subprocess.Popen([str(dagster), "job", "execute", "-m", "orchestration.definitions", "-j", job,
                             "--tags", json.dumps(tags)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        output, _ = process.communicate(timeout=900)
        assert process.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_parallel_runs_of_different_layers_all_land(project, home):
    config = load_config()
    with dg.DagsterInstance.get() as instance:
        for model in ("tiny-gpt2", "tiny-llama"):
            register_model(instance, model, 3)
            assert run(instance, ["excerpts"], model).success

        # Three record runs at once: a layer and a range of one model, a range of the other.
        finish([launch("record_job", "tiny-gpt2", 0, 0), launch("record_job", "tiny-gpt2", 1, 2),
                launch("record_job", "tiny-llama", 0, 2)])
        # Then the LLM stages of two layers at once: both write explanations and the llm_calls cache.
        finish([launch("explain_job", "tiny-gpt2", layer, layer) for layer in (1, 2)])

        runs = instance.get_runs()
        assert len(runs) == 2 + 5 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        parallel = [r for r in runs if r.job_name in ("record_job", "explain_job")]
        for dagster_run in parallel:
            messages = [e.message or "" for e in instance.all_logs(dagster_run.run_id)]
            assert any("multiprocess" in m for m in messages), dagster_run.job_name

    store = Store.from_home()
    for model, n_neurons in (("tiny-gpt2", 128), ("tiny-llama", 48)):
        per_neuron = sum(expected_counts(config.records, queries.excerpt_count(store, model, queries.latest_revision(store, model))).values())
        assert layer_counts(store, model) == {layer: n_neurons * per_neuron for layer in range(3)}
        stats = store.query("SELECT layer, count(*) AS n FROM neuron_stats WHERE model = ? GROUP BY layer", [model])
        assert dict(zip(stats.layer, stats.n)) == {0: n_neurons, 1: n_neurons, 2: n_neurons}
    scores = store.query("SELECT layer, count(*) AS n FROM scores WHERE model = 'tiny-gpt2' GROUP BY layer")
    assert dict(zip(scores.layer, scores.n)) == {1: 2, 2: 2}  # neurons: first 2 of each layer
    calls = store.query("SELECT count(*) AS n, count(DISTINCT key) AS keys FROM llm_calls")
    assert calls["n"][0] == calls["keys"][0] > 0  # every answer cached once, none lost or doubled
