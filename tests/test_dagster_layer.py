"""The Dagster layer says each thing once: the stage table the jobs and the CLI derive from, one selected-layer
filter, and the LLM as a resource that each run loads once and releases."""

from __future__ import annotations

import dagster as dg
import pytest

from autointerp.config import NeuronSelection
from autointerp.llm import LoadedLLMs
from autointerp.neurons import selected_layers
from orchestration.cli import _parser
from orchestration.definitions import ASSETS, CHECKS, RESOURCES
from orchestration.jobs import JOB_OF, JOBS
from orchestration.partitions import model_layer_key, register_model
from orchestration.stages import LLM_STAGES, STAGES
from resources import LLMResource
from tests.scripted_llm import ScriptedLLM
from tests.test_pipeline import run


def test_the_jobs_and_the_cli_derive_from_the_stage_table():
    selected = {job.name: {key.to_user_string() for key in job.selection.resolve(ASSETS)} for job in JOBS}
    assert selected["record_job"] == set(STAGES["record"])
    assert selected["explain_job"] == {key for stage in LLM_STAGES for key in STAGES[stage]}
    assert JOB_OF == {key: job for job, keys in selected.items() for key in keys}
    for stage in STAGES:  # the CLI's --from and --until take exactly the table's stages
        args = _parser().parse_args(["run", "--from", stage, "--until", stage])
        assert (args.start, args.until) == (stage, stage)
    with pytest.raises(SystemExit):
        _parser().parse_args(["run", "--from", "judge"])


def test_one_filter_picks_the_layers_to_explain():
    assert selected_layers(NeuronSelection(layers=()), [0, 1, 2]) == [0, 1, 2]  # empty: every layer
    assert selected_layers(NeuronSelection(layers=(2, 5)), [0, 1, 2]) == [2]


@pytest.fixture
def instance(home):
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


POOLS: list[LoadedLLMs] = []  # the LoadedLLMs each run's resource set up (a run builds its own resource copy)


class WatchedLLMResource(LLMResource):
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        super().setup_for_execution(context)
        POOLS.append(self.llms)


def test_a_run_asks_the_llm_its_resource_loaded_once_and_releases_it(project, instance, monkeypatch):
    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    assert run(instance, ["activation_records", "neuron_stats"], "tiny-gpt2", layers=[1, 2]).success
    loads, closed = [], []
    real_get = LoadedLLMs.get
    monkeypatch.setattr(LoadedLLMs, "get", lambda self, *a: loads.append(self) or real_get(self, *a))
    monkeypatch.setattr(ScriptedLLM, "close", lambda self: closed.append(self))
    POOLS.clear()
    ScriptedLLM.calls.clear()
    tags = {"dagster/asset_partition_range_start": str(model_layer_key("tiny-gpt2", 1)),
            "dagster/asset_partition_range_end": str(model_layer_key("tiny-gpt2", 2))}
    keys = [key for stage in LLM_STAGES for key in STAGES[stage]]
    result = dg.materialize([*ASSETS, *CHECKS], instance=instance, tags=tags, raise_on_error=False,
                            selection=dg.AssetSelection.assets(*keys) | dg.AssetSelection.checks_for_assets(*keys),
                            resources={**RESOURCES, "llm": WatchedLLMResource()})
    assert result.success
    assert ScriptedLLM.calls  # the stages asked the LLM...
    [pool] = POOLS  # ...through the one LoadedLLMs of the run's resource,
    assert loads and all(asked is pool for asked in loads)
    assert len(closed) == 1  # where explainer and simulator (one scripted model) shared one load, closed at the end


def test_one_command_loads_each_llm_once_for_all_its_runs(project, monkeypatch, capsys):
    """Layers 0 and 2 are two explain runs (not contiguous): the command's LLMs serve both, closed at its end."""
    from orchestration.cli import main

    made, closed = [], []
    real_init = ScriptedLLM.__init__
    monkeypatch.setattr(ScriptedLLM, "__init__", lambda self, *a, **k: made.append(self) or real_init(self, *a, **k))
    monkeypatch.setattr(ScriptedLLM, "close", lambda self: closed.append(self))
    assert main(["run", "--model", "tiny-gpt2", "--layers", "0,2"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("explain_job 0|tiny-gpt2") == 1 and out.count("explain_job 2|tiny-gpt2") == 1
    assert len(made) == 1 and closed == made
