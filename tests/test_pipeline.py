"""The record stage as Dagster assets on a real instance and a real DuckDB file."""

from __future__ import annotations

import shutil

import dagster as dg
import pytest
import torch

from autointerp.config import load_config
from autointerp.record.recorder import expected_counts
from autointerp.store import Store, queries
from orchestration.definitions import ASSETS, CHECKS, RESOURCES, model_revisions
from orchestration.partitions import model_layer_key, register_model

RECORDS = ["activation_records", "neuron_stats"]


@pytest.fixture
def instance(home):
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


def run(instance, keys, model, layers=None, checks_only=False):
    selection = dg.AssetSelection.checks_for_assets(*keys)
    if not checks_only:
        selection = dg.AssetSelection.assets(*keys) | selection
    if layers is None:
        return dg.materialize([*ASSETS, *CHECKS], selection=selection, instance=instance, resources=RESOURCES,
                              partition_key=model, raise_on_error=False)
    if layers[0] == layers[-1] and not checks_only:  # one partition, as the CLI does (a checks-only run
        # cannot take a partition key in Dagster 1.13: it has no asset to take the partitioning from)
        return dg.materialize([*ASSETS, *CHECKS], selection=selection, instance=instance, resources=RESOURCES,
                              partition_key=str(model_layer_key(model, layers[0])), raise_on_error=False)
    tags = {"dagster/asset_partition_range_start": str(model_layer_key(model, layers[0])),
            "dagster/asset_partition_range_end": str(model_layer_key(model, layers[-1]))}
    return dg.materialize([*ASSETS, *CHECKS], selection=selection, instance=instance, resources=RESOURCES,
                          tags=tags, raise_on_error=False)


def steps_started(result) -> list[str]:
    return [e.step_key for e in result.all_events if e.event_type_value == "STEP_START"]


def check_results(result) -> dict[str, bool]:
    return {e.event_specific_data.check_name: e.event_specific_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def layer_counts(store: Store, model: str) -> dict[int, int]:
    frame = store.query("SELECT layer, count(*) AS n FROM activation_records WHERE model = ? GROUP BY layer", [model])
    return dict(zip(frame.layer, frame.n))


@pytest.mark.parametrize("model, n_neurons", [("tiny-gpt2", 128), ("tiny-llama", 48)])
def test_a_range_of_layers_is_recorded_in_one_run_and_rerunning_changes_nothing(project, instance, model, n_neurons):
    register_model(instance, model, 3)
    assert run(instance, ["excerpts"], model).success
    result = run(instance, RECORDS, model, layers=[0, 2])  # the box 0..2: layers 0, 1, 2
    assert result.success
    assert steps_started(result).count("record") == 1  # one step, so one forward pass for three layers
    assert check_results(result) == {"activation_records_are_valid": True, "neuron_stats_are_valid": True}
    materialized = instance.get_materialized_partitions(dg.AssetKey("activation_records"))
    assert {str(model_layer_key(model, layer)) for layer in range(3)} <= materialized

    store = Store.from_home()
    config = load_config()
    n_excerpts = queries.excerpt_count(store, model, queries.latest_revision(store, model))
    per_neuron = sum(expected_counts(config.records, n_excerpts).values())
    assert layer_counts(store, model) == {layer: n_neurons * per_neuron for layer in range(3)}
    before = store.query("SELECT * FROM activation_records ORDER BY layer, neuron, kind, band, rank")

    assert run(instance, RECORDS, model, layers=[1, 1]).success  # re-run one layer
    assert run(instance, ["excerpts"], model).success  # and the excerpts (same corpus: records are kept)
    after = store.query("SELECT * FROM activation_records ORDER BY layer, neuron, kind, band, rank")
    assert len(after) == len(before)
    assert (after.drop(columns="activations").equals(before.drop(columns="activations")))
    assert int(store.query("SELECT count(*) FROM neuron_stats").iloc[0, 0]) == 3 * n_neurons


def test_a_corrupted_excerpts_table_fails_its_check_and_stops_recording(project, instance):
    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    store = Store.from_home()
    store.execute("UPDATE excerpts SET token_ids = token_ids[2:] WHERE excerpt_id = 3")
    check = dg.materialize([*ASSETS, *CHECKS], selection=dg.AssetSelection.checks_for_assets("excerpts"),
                           instance=instance, resources=RESOURCES, tags={"dagster/partition": "tiny-gpt2"},
                           raise_on_error=False)
    assert check_results(check) == {"excerpts_are_well_formed": False}
    result = run(instance, RECORDS, "tiny-gpt2", layers=[0, 1])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "upstream excerpts of 'tiny-gpt2' fail their check" in str(failure.step_failure_data.error)
    assert layer_counts(store, "tiny-gpt2") == {}  # nothing recorded from bad excerpts


def test_corrupted_activation_records_fail_their_check(project, instance):
    register_model(instance, "tiny-llama", 3)
    assert run(instance, ["excerpts"], "tiny-llama").success
    assert run(instance, RECORDS, "tiny-llama", layers=[0, 0]).success
    store = Store.from_home()
    store.execute("UPDATE activation_records SET activations = list_transform(activations, lambda x: x / 0.0) "
                  "WHERE neuron = 5 AND kind = 'top' AND rank = 1")
    selection = dg.AssetSelection.checks_for_assets("activation_records")
    result = dg.materialize([*ASSETS, *CHECKS], selection=selection, instance=instance, resources=RESOURCES,
                            tags={"dagster/asset_partition_range_start": str(model_layer_key("tiny-llama", 0)),
                                  "dagster/asset_partition_range_end": str(model_layer_key("tiny-llama", 0))},
                            raise_on_error=False)
    assert check_results(result) == {"activation_records_are_valid": False}
    evaluation = next(e for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert "all_finite" in evaluation.event_specific_data.metadata["result"].value


def test_bad_activations_are_rejected_before_they_land(project, instance, tiny_gpt2, home, monkeypatch):
    from transformers import AutoModelForCausalLM

    broken = shutil.copytree(tiny_gpt2, home / "broken")
    model = AutoModelForCausalLM.from_pretrained(broken)
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.bias[7] = float("nan")  # neuron 7 of layer 1 reads NaN
    model.save_pretrained(broken)
    text = project.read_text().replace(str(tiny_gpt2), str(broken))
    project.write_text(text)
    register_model(instance, "tiny-gpt2", 3)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    result = run(instance, RECORDS, "tiny-gpt2", layers=[0, 1])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "all_finite" in str(failure.step_failure_data.error)
    assert layer_counts(Store.from_home(), "tiny-gpt2") == {}  # not even the good layer 0: one transaction


def test_the_sensor_turns_configured_models_into_partitions(project, instance):
    def sense():
        with dg.build_sensor_context(instance=instance, resources=RESOURCES) as context:
            return model_revisions(context)

    result = sense()
    requests = {r.partitions_def_name: list(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert sorted(requests["models"]) == ["tiny-gpt2", "tiny-llama"]
    assert requests["layers"] == ["0", "1", "2"]
    register_model(instance, "tiny-gpt2", 3)
    register_model(instance, "tiny-llama", 3)
    assert not sense().dynamic_partitions_requests  # registered: nothing more to add
