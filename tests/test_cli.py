"""The `autointerp` console script materializes through Dagster into the instance at DAGSTER_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

import pytest

from autointerp.errors import AutointerpError
from autointerp.store import Store
from tests.conftest import write_corpus
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
        # named runs, tagged with the command that started them
        assert sorted(r.job_name for r in runs) == ["excerpts_job", "record_job", "record_job"]
        assert {r.tags["autointerp/command"] for r in runs} == {
            "autointerp run --model tiny-gpt2 --layers 0,2 --until record"}
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
    started = time.monotonic()  # rejected before 30M layers are built
    with pytest.raises(AutointerpError, match="the model has layers 0-5; no layer 30000000"):
        parse_layers("0-30000000", 6)
    with pytest.raises(AutointerpError, match="is not a layer number"):
        parse_layers("-1", 6)
    assert time.monotonic() - started < 0.5


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


def test_a_run_killed_with_kill_9_is_marked_failed_by_the_next_run(project, home):
    """A killed process leaves its run STARTED forever (and automation waits on it); the next `run` reaps it."""
    import signal

    write_corpus(home / "corpus.jsonl", n_docs=2000)  # a run long enough to be killed in the middle
    project.write_text(project.read_text().replace("max_tokens: 2560", "max_tokens: 64000"))
    victim = subprocess.Popen([AUTOINTERP, "run", "--model", "tiny-gpt2", "--until", "record"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 120
    with dg.DagsterInstance.get() as instance:
        while not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            assert time.monotonic() < deadline and victim.poll() is None, "the run never started"
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        [dead] = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    done = cli("run", "--model", "tiny-gpt2", "--layers", "0", "--until", "record")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"marked run {dead.run_id} failed" in done.stdout
    with dg.DagsterInstance.get() as instance:
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))


def test_the_terminal_gets_progress_and_stage_lines_not_dagsters_event_stream(project, home):
    done = cli("run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record")
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "DEBUG" not in output and "STEP_START" not in output and "\x1b[" not in output  # no colour when piped
    assert "recording layers 1: 2,560 tokens in" in done.stdout  # the finished step, as one plain line
    assert "excerpts_job tiny-gpt2: excerpts done in" in done.stdout
    assert "record_job 1|tiny-gpt2: activation_records, neuron_stats, unit_logits done in" in done.stdout
    loud = cli("run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record", "--verbose")
    assert loud.returncode == 0 and "STEP_START" in loud.stdout + loud.stderr


def test_a_whole_layer_killed_half_way_resumes_without_asking_the_llm_again(project, home):
    """`neurons: {select: all}`: every neuron of the layer, with progress and ETA. A run killed with kill -9 in
    the middle of the explain stage loses nothing: the next run re-asks none of the answers the LLM cache holds
    and lands every neuron exactly once."""
    import signal

    import yaml

    log = home / "chat.log"
    config = yaml.safe_load(project.read_text())
    config["neurons"] = {"select": "all"}
    config["explainer"] = {"kind": "llm", "llm": {"backend": "scripted", "delay_s": 0.05, "log": str(log)}}
    project.write_text(yaml.safe_dump(config))
    assert cli("run", "--model", "tiny-gpt2", "--layers", "1", "--until", "record").returncode == 0
    width = 4 * 32  # tiny GPT-2: n_inner = 4 * n_embd
    victim = subprocess.Popen([AUTOINTERP, "run", "--model", "tiny-gpt2", "--layers", "1", "--from", "explain"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not log.exists() or len(log.read_text().splitlines()) < width // 3:
        assert time.monotonic() < deadline and victim.poll() is None, victim.stdout.read().decode()[-3000:]
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    asked_first = len(log.read_text().splitlines())
    assert asked_first < width  # killed in the middle
    store = Store.from_home()
    assert store.query("SELECT count(*) AS n FROM explanations").n[0] == 0  # the partition landed not at all

    done = cli("run", "--model", "tiny-gpt2", "--layers", "1", "--from", "explain")
    assert done.returncode == 0, done.stderr[-3000:]
    asked_again = len(log.read_text().splitlines()) - asked_first
    # The cache holds every answer but possibly the one in flight when the process died.
    assert width - asked_first <= asked_again <= width - asked_first + 1
    assert f"explaining tiny-gpt2 layer 1: {width} neurons in" in done.stdout
    counts = store.query("SELECT count(*) AS n, count(DISTINCT neuron) AS neurons FROM explanations "
                         "WHERE model = 'tiny-gpt2' AND layer = 1 AND chosen")
    assert counts.n[0] == counts.neurons[0] == width
    scored = store.query("SELECT count(DISTINCT neuron) AS n FROM scores WHERE model = 'tiny-gpt2' AND layer = 1")
    assert scored.n[0] == width


def test_piped_output_gets_a_progress_line_with_eta_now_and_then(capsys):
    """Not a terminal (a long run under nohup, to a file): no bars, a plain line with the ETA every `every_s`."""
    from autointerp.progress import Progress
    from orchestration.cli.terminal import TerminalProgress

    display = TerminalProgress(interactive=False, every_s=0.0)
    try:
        progress = Progress("explaining m layer 7", 1536, "neurons", lambda line: None)
        time.sleep(0.01)
        progress.advance(512)
        progress.advance(1024)
    finally:
        display.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  explaining m layer 7: 512/1,536 neurons (33%),") and "ETA " in lines[0]
    assert lines[-1].startswith("  explaining m layer 7: 1,536 neurons in")
    assert len(lines) == 2
