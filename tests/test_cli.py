"""The `autointerp` console script materializes through Dagster into the instance at DAGSTER_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

import pytest

from autointerp.errors import AutointerpError
from autointerp.store import Store
from orchestration.cli import parse_layers

AUTOINTERP = str(Path(sys.executable).parent / "autointerp")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([AUTOINTERP, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=600)


def test_run_records_the_chosen_layers_and_the_runs_show_in_the_instance(project, home):
    done = cli("run", "--model", "tiny-gpt2", "--layers", "0,2", "--until", "record")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tiny-gpt2 @ sha256:" in done.stdout
    store = Store.from_home()
    layers = store.query("SELECT DISTINCT layer FROM activation_records WHERE model = 'tiny-gpt2' ORDER BY layer")
    assert layers.layer.tolist() == [0, 2]
    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME points at this test's instance
        runs = instance.get_runs()
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)  # excerpts, 0, 2
        assert {"0|tiny-gpt2", "2|tiny-gpt2"} <= instance.get_materialized_partitions(dg.AssetKey("neuron_stats"))


def test_bad_input_gets_one_clear_line_and_no_run(project, home):
    for args, message in [
        (("run", "--model", "gpt9"), "error: unknown model 'gpt9'"),
        (("run", "--model", "tiny-gpt2", "--layers", "1,7"), "error: --layers '1,7': the model has layers 0-2; no layer 7"),
        (("run", "--model", "tiny-gpt2", "--layers", "x"), "is not a layer number"),
    ]:
        done = cli(*args)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    assert not (home / "data" / "autointerp.duckdb").exists()


@pytest.mark.parametrize("edit, message", [
    # a source that does not load
    (lambda text, home: text.replace("tiny-gpt2\n  source: ", f"tiny-gpt2\n  source: {home}/gone-"),
     "gone-"),
    # a revision that cannot be read: a Hub model, and this machine cannot reach the Hub
    (lambda text, home: text.replace("name: tiny-gpt2\n  source: ", "name: tiny-gpt2\n  source: hf:nobody/missing #"),
     "nobody/missing"),
    # a config edited into nonsense
    (lambda text, home: text + "\nrecords: [1, 2\n", "not valid YAML"),
    (lambda text, home: text.replace("seed:", "sede:"), "unknown key(s) 'sede'"),
])
def test_bad_models_and_configs_get_one_clear_line_and_no_rows(project, home, edit, message):
    project.write_text(edit(project.read_text(), home))
    done = cli("run", "--model", "tiny-gpt2", "--until", "record")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith("error: ") and message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line
    store = home / "data" / "autointerp.duckdb"
    assert not store.exists() or Store(store).query("SELECT count(*) AS n FROM activation_records")["n"][0] == 0


def test_layer_specs():
    assert parse_layers("all", 4) == [0, 1, 2, 3]
    assert parse_layers("0,2-4", 6) == [0, 2, 3, 4]
    assert parse_layers(" 3 , 1 ", 6) == [1, 3]
    with pytest.raises(AutointerpError, match="runs backwards"):
        parse_layers("4-2", 6)


def test_the_config_passed_with_dash_dash_config_is_the_one_the_assets_run_with(project, home):
    """AUTOINTERP_CONFIG names the project's config (5 top records); --config names another (3): the runs use it."""
    other = home / "other.yaml"
    other.write_text(project.read_text().replace("top: 5", "top: 3"))
    done = cli("--config", str(other), "run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record")
    assert done.returncode == 0, done.stderr[-3000:]
    counts = Store.from_home().query("SELECT neuron, count(*) AS n FROM activation_records WHERE kind = 'top' "
                                     "GROUP BY neuron")
    assert set(counts.n) == {3}


@pytest.mark.parametrize("name", ["../../victim", "/tmp/abs", ".", "..", "a/b"])
def test_a_model_name_that_is_a_path_is_refused_at_every_entry_point(project, home, name):
    victim = home / "victim"
    victim.write_text("precious")
    for args in (("import", "--format", "neuron-records", str(home), "--model", name),
                 ("import", "--format", "explanations", str(home), "--model", name),
                 ("models", "add", name, str(home)),
                 ("view", "--model", name, "--no-serve")):
        done = cli(*args)
        assert done.returncode == 2 and "is not a valid model name" in done.stderr, (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    assert victim.read_text() == "precious"
    assert not (home / "data" / "autointerp.duckdb").exists() or \
        Store.from_home().query("SELECT count(*) AS n FROM models").n[0] == 0
