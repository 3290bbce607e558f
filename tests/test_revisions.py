"""Models that change: registration at run time, revision detection, re-recording, history across revisions."""

from __future__ import annotations

import json
import shutil
import time

import dagster as dg
import pytest

from autointerp.config import load_config
from autointerp.subject.added import read_registry
from autointerp.store import Store, queries
from orchestration import cli
from orchestration.definitions import ASSETS, RESOURCES, defs, model_revision_check, model_revisions
from tests.test_explain_pipeline import STAGES, metadata
from tests.test_pipeline import check_results, run


@pytest.fixture
def instance(home):
    with dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
        yield instance


def sense(instance) -> dg.SensorResult | dg.SkipReason:
    with dg.build_sensor_context(instance=instance, resources=RESOURCES) as context:
        return model_revisions(context)


def apply(instance, result: dg.SensorResult) -> None:
    """What the sensor daemon does with a result: add the partitions and store the observations."""
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)


def requested(result) -> list[tuple[str, str]]:
    """(job, partition or layer range) of each run request."""
    out = []
    for r in result.run_requests:
        if r.partition_key:
            out.append((r.job_name, r.partition_key))
        else:
            out.append((r.job_name, f"{r.tags['dagster/asset_partition_range_start']}..{r.tags['dagster/asset_partition_range_end']}"))
    return sorted(out)


def test_models_add_registers_a_model_without_code_change(project, home, tiny_llama, capsys):
    assert cli.main(["models", "add", "extra-llama", str(tiny_llama)]) == 0
    assert [e["name"] for e in read_registry()] == ["extra-llama"]
    assert "extra-llama" in [m.name for m in load_config().models]
    with dg.DagsterInstance.get() as instance:
        assert instance.has_dynamic_partition("models", "extra-llama")
        assert set(instance.get_dynamic_partitions("layers")) >= {"0", "1", "2"}
    capsys.readouterr()

    # Bad input: one clear message, and the registry does not change.
    assert cli.main(["models", "add", "broken", str(home / "no-such-dir")]) == 2
    assert "no-such-dir" in capsys.readouterr().err
    assert cli.main(["models", "add", "tiny-gpt2", str(tiny_llama)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["models", "add", "bad name!", str(tiny_llama)]) == 2
    assert "is not a valid model name" in capsys.readouterr().err
    assert [e["name"] for e in read_registry()] == ["extra-llama"]

    assert cli.main(["models", "remove", "extra-llama"]) == 0
    assert read_registry() == [] and "extra-llama" not in [m.name for m in load_config().models]
    assert cli.main(["models", "remove", "tiny-gpt2"]) == 2  # configured in the file, not registered


def test_a_source_that_does_not_load_is_one_clear_error(project, home, capsys):
    (home / "empty-model").mkdir()
    assert cli.main(["models", "add", "empty", str(home / "empty-model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "empty-model" in err
    assert read_registry() == []


def test_new_and_changed_revisions_are_detected_re_recorded_and_compared(project, home, instance, tiny_gpt2,
                                                                          monkeypatch):
    # A copy of the checkpoint the test can change.
    checkpoint = shutil.copytree(tiny_gpt2, home / "gpt2-checkpoint")
    config_path = project
    text = config_path.read_text().replace(str(tiny_gpt2), str(checkpoint))
    config_path.write_text(text.replace("count: 2", "count: 1"))

    # 1. New models: partitions are registered, the revision is observed, excerpts are requested.
    first = sense(instance)
    assert requested(first) == [("excerpts_job", "tiny-gpt2"), ("excerpts_job", "tiny-llama")]
    assert {e.partition for e in first.asset_events} == {"tiny-gpt2", "tiny-llama"}
    apply(instance, first)
    assert run(instance, ["excerpts"], "tiny-gpt2").success
    store = Store.from_home()
    revision_a = queries.latest_revision(store, "tiny-gpt2")
    observed = {e.partition: e.tags["dagster/data_version"] for e in first.asset_events}
    assert observed["tiny-gpt2"] == revision_a  # the revision observed is the one the excerpts registered

    # 2. With excerpts in place, a new model's layers are all requested, as one ranged run (one pass).
    second = sense(instance)
    assert ("record_job", "0|tiny-gpt2..2|tiny-gpt2") in requested(second)
    # The user records and explains layer 1 only (as through the UI); the explain stages follow.
    assert run(instance, ["activation_records", "neuron_stats"], "tiny-gpt2", layers=[1, 1]).success
    started = time.perf_counter()
    assert run(instance, STAGES, "tiny-gpt2", layers=[1, 1]).success
    llm_stages_a = time.perf_counter() - started
    calls_a = int(store.query("SELECT count(*) AS n FROM llm_calls").n[0])

    # 3. A new checkpoint whose weights are unchanged (a config note added): a new revision.
    settings = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**settings, "note": "re-exported"}))
    changed = sense(instance)
    revision_b = next(e.tags["dagster/data_version"] for e in changed.asset_events if e.partition == "tiny-gpt2")
    assert revision_b != revision_a
    assert ("excerpts_job", "tiny-gpt2") in requested(changed)
    apply(instance, changed)

    # The UI marks what depends on the model stale.
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver  # Dagster's own test helper

    resolver = get_stale_status_resolver(instance, ASSETS)
    assert resolver.get_status(dg.AssetKey("excerpts"), "tiny-gpt2") == StaleStatus.STALE

    assert run(instance, ["excerpts"], "tiny-gpt2").success
    # Only the layer recorded before is re-recorded.
    assert [r for r in requested(sense(instance)) if r[0] == "record_job"] == [("record_job", "1|tiny-gpt2..1|tiny-gpt2")]
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # the automation's starting point
    assert run(instance, ["activation_records", "neuron_stats"], "tiny-gpt2", layers=[1, 1]).success

    # 4. Declarative automation requests the explain stage for the re-recorded layer: checks passed.
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert "1|tiny-gpt2" in {str(k) for k in evaluation.get_requested_partitions(dg.AssetKey("explanations"))}
    started = time.perf_counter()
    rerun = run(instance, STAGES, "tiny-gpt2", layers=[1, 1])
    assert rerun.success
    print(f"\nexplain+simulate+score of layer 1: revision A {llm_stages_a:.1f}s, revision B (identical "
          f"activations, all LLM answers cached) {time.perf_counter() - started:.1f}s")
    # Identical activations -> identical prompts -> every LLM answer comes from the cache.
    assert metadata(rerun, "explanations")["llm_calls_made"] == 0
    assert metadata(rerun, "simulations")["llm_calls_made"] == 0
    assert int(store.query("SELECT count(*) AS n FROM llm_calls").n[0]) == calls_a

    # 5. History: both revisions' rows are kept, and compare shows nothing changed.
    kept = store.query("SELECT revision, count(*) AS n FROM scores WHERE model = 'tiny-gpt2' GROUP BY revision")
    assert dict(zip(kept.revision, kept.n)) == {revision_a: 1, revision_b: 1}
    from autointerp.history import compare_revisions

    diff = compare_revisions(store, "tiny-gpt2")
    assert len(diff) == store.query("SELECT count(DISTINCT neuron) AS n FROM neuron_stats WHERE layer = 1 "
                                    "AND model = 'tiny-gpt2' AND revision = ?", [revision_b]).n[0]
    assert (diff.top_overlap == 1.0).all() and not diff.changed.any()
    explained = diff.dropna(subset=["explanation_new"])
    assert len(explained) == 1 and explained.explanation_old.iloc[0] == explained.explanation_new.iloc[0]
    assert cli.main(["compare", "--model", "tiny-gpt2"]) == 0


def test_changed_weights_show_up_in_compare(project, home, instance, tiny_gpt2):
    import torch
    from transformers import AutoModelForCausalLM

    checkpoint = shutil.copytree(tiny_gpt2, home / "gpt2-checkpoint")
    project.write_text(project.read_text().replace(str(tiny_gpt2), str(checkpoint)))
    apply(instance, sense(instance))
    for _ in range(2):  # revision A, then B: new weights for every neuron of layer 1
        assert run(instance, ["excerpts"], "tiny-gpt2").success
        assert run(instance, ["activation_records", "neuron_stats"], "tiny-gpt2", layers=[1, 1]).success
        model = AutoModelForCausalLM.from_pretrained(checkpoint)
        with torch.no_grad():
            mlp = model.transformer.h[1].mlp.c_fc
            mlp.weight.copy_(torch.flip(mlp.weight, dims=[0]))
            mlp.bias.copy_(-mlp.bias)
        model.save_pretrained(checkpoint)
    from autointerp.history import compare_revisions

    diff = compare_revisions(Store.from_home(), "tiny-gpt2")
    assert len(diff) > 0 and diff.top_overlap.mean() < 0.9
    assert diff.changed.any()


def test_the_schedule_runs_the_same_check(project, instance):
    with dg.build_schedule_context(instance=instance, resources=RESOURCES) as context:
        result = model_revision_check(context)
    assert sorted((r.job_name, r.partition_key) for r in result) == [("excerpts_job", "tiny-gpt2"),
                                                                     ("excerpts_job", "tiny-llama")]
    # It registered the partitions and reported the observations itself.
    assert set(instance.get_dynamic_partitions("models")) == {"tiny-gpt2", "tiny-llama"}
    assert instance.get_latest_data_version_record(dg.AssetKey("subject_model"), is_source=True,
                                                   partition_key="tiny-gpt2") is not None


def test_the_watch_cron_comes_from_the_config(project):
    from orchestration.definitions import watch_settings
    from resources import AutointerpSettings

    project.write_text(project.read_text() + "watch: {cron: '*/5 * * * *', sensor_interval_s: 30}\n")
    watch = watch_settings(AutointerpSettings())
    assert (watch.cron, watch.sensor_interval_s) == ("*/5 * * * *", 30)
    other = project.with_name("other.yaml")  # a config passed explicitly (the CLI's --config) is the one read
    other.write_text(project.read_text().replace("'*/5 * * * *'", "'0 3 * * *'"))
    assert watch_settings(AutointerpSettings(path=str(other))).cron == "0 3 * * *"
    project.write_text(project.read_text().replace("'*/5 * * * *'", "'every hour'"))
    with pytest.raises(Exception, match="watch.cron"):
        load_config()


def test_an_unreadable_model_is_reported_and_the_others_still_refresh(project, home, instance, tiny_gpt2):
    project.write_text(project.read_text().replace(str(tiny_gpt2), str(home / "gone")))
    result = sense(instance)
    assert requested(result) == [("excerpts_job", "tiny-llama")]


def test_automation_holds_the_explain_stage_while_a_blocking_check_fails(project, instance):
    from orchestration.partitions import model_layer_key, register_model

    register_model(instance, "tiny-llama", 3)
    assert run(instance, ["excerpts"], "tiny-llama").success
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert run(instance, ["activation_records", "neuron_stats"], "tiny-llama", layers=[0, 0]).success
    key = str(model_layer_key("tiny-llama", 0))
    passing = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert key in {str(k) for k in passing.get_requested_partitions(dg.AssetKey("explanations"))}

    # The same partition, its records now corrupt and its check failed: nothing downstream is requested.
    Store.from_home().execute("UPDATE activation_records SET activations = list_transform(activations, "
                              "lambda x: x / 0.0) WHERE layer = 0 AND kind = 'top' AND rank = 1")
    checks = run(instance, ["activation_records"], "tiny-llama", layers=[0, 0], checks_only=True)
    assert check_results(checks) == {"activation_records_are_valid": False}
    failing = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert key not in {str(k) for k in failing.get_requested_partitions(dg.AssetKey("explanations"))}


def test_a_ranged_run_reports_each_partitions_check_result_so_automation_follows(project, instance):
    """One pass records layers 0-2; each (model, layer) partition still gets its own passed check."""
    from orchestration.partitions import model_layer_key, register_model

    register_model(instance, "tiny-llama", 3)
    assert run(instance, ["excerpts"], "tiny-llama").success
    before = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    result = run(instance, ["activation_records", "neuron_stats"], "tiny-llama", layers=[0, 2])
    assert result.success
    partitioned = {(e.event_specific_data.check_name, e.event_specific_data.partition)
                   for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
                   and e.event_specific_data.partition}
    keys = [str(model_layer_key("tiny-llama", layer)) for layer in range(3)]
    assert partitioned == {(name, key) for name in ("activation_records_are_valid", "neuron_stats_are_valid")
                           for key in keys}
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=before.cursor)
    assert {str(k) for k in after.get_requested_partitions(dg.AssetKey("explanations"))} == set(keys)
