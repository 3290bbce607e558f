"""Models as data, and models that change: a sensor and a schedule keep the pipeline on each model's
current revision.

Every model in the config (or added with `autointerp models add`) becomes partitions without code changes.
When a model's revision changes (a new Hub commit, a new local checkpoint), its new revision is observed
(the UI marks what depends on it stale), its excerpts are rebuilt, and the layers recorded for an earlier
revision are recorded again - in one run, so one forward pass. Explain, simulate and score follow through
their automation conditions once the record stage's blocking checks passed. Old revisions' rows stay.
"""

from dataclasses import dataclass, field

import dagster as dg

from autointerp.config import Config, load_config
from autointerp.errors import AutointerpError
from autointerp.store import Store
from autointerp.subject import describe_model, model_revision, resolve_source
from orchestration.partitions import contiguous_ranges, model_layer_key
from resources import DuckDBStore

DATA_VERSION_TAG = "dagster/data_version"  # what an observation of a source asset reports its version under


@dataclass
class RefreshPlan:
    """What one look at the models found to do."""

    new_models: list[str] = field(default_factory=list)
    new_layers: list[str] = field(default_factory=list)
    observations: list[dg.AssetObservation] = field(default_factory=list)
    run_requests: list[dg.RunRequest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def plan_refresh(config: Config, store: Store, instance: dg.DagsterInstance) -> RefreshPlan:
    plan = RefreshPlan()
    known_models = set(instance.get_dynamic_partitions("models"))
    known_layers = set(instance.get_dynamic_partitions("layers"))
    for spec in config.models:
        try:
            source = resolve_source(spec.source, config.path.parent)
            info = describe_model(source)
            revision = model_revision(source)
        except AutointerpError as exc:  # one broken model must not stop the others
            plan.problems.append(f"model '{spec.name}': {exc}")
            continue
        if spec.name not in known_models:
            plan.new_models.append(spec.name)
        plan.new_layers += [str(i) for i in range(info.n_layers)
                            if str(i) not in known_layers and str(i) not in plan.new_layers]
        if _last_observed(instance, spec.name) != revision:
            plan.observations.append(dg.AssetObservation(asset_key="subject_model", partition=spec.name,
                                                         tags={DATA_VERSION_TAG: revision}))
        current = store.latest_revision(spec.name) if store.path.exists() else None
        if current != revision:
            # Excerpts first: they register the revision that the record stage then works on.
            plan.run_requests.append(dg.RunRequest(job_name="excerpts_job", partition_key=spec.name,
                                                   run_key=f"excerpts:{spec.name}:{current}->{revision}"))
            continue
        for first, last in contiguous_ranges(_layers_to_record(store, spec.name, revision, info.n_layers)):
            plan.run_requests.append(dg.RunRequest(
                job_name="record_job", run_key=f"record:{spec.name}:{revision}:{first}-{last}",
                tags={"dagster/asset_partition_range_start": str(model_layer_key(spec.name, first)),
                      "dagster/asset_partition_range_end": str(model_layer_key(spec.name, last))}))
    return plan


def _last_observed(instance: dg.DagsterInstance, model: str) -> str | None:
    record = instance.get_latest_data_version_record(dg.AssetKey("subject_model"), is_source=True, partition_key=model)
    if record is None:
        return None
    from dagster._core.definitions.data_version import extract_data_version_from_entry

    version = extract_data_version_from_entry(record.event_log_entry)
    return version.value if version else None


def _layers_to_record(store: Store, model: str, revision: str, n_layers: int) -> list[int]:
    """The layers recorded for any revision of the model (all of them for a new model), not yet for this one."""
    frame = store.query("SELECT DISTINCT revision, layer FROM neuron_stats WHERE model = ?", [model])
    wanted = set(frame.layer) if len(frame) else set(range(n_layers))
    done = set(frame[frame.revision == revision].layer)
    return sorted(int(layer) for layer in wanted - done if layer < n_layers)


def _evaluate(context, store: Store) -> dg.SensorResult | dg.SkipReason:
    plan = plan_refresh(load_config(), store, context.instance)
    for problem in plan.problems:
        context.log.error(problem)
    requests = []
    if plan.new_models:
        requests.append(dg.AddDynamicPartitionsRequest("models", plan.new_models))
    if plan.new_layers:
        requests.append(dg.AddDynamicPartitionsRequest("layers", sorted(plan.new_layers, key=int)))
    if not (requests or plan.observations or plan.run_requests):
        return dg.SkipReason("every model is registered and recorded at its current revision")
    return dg.SensorResult(run_requests=plan.run_requests, dynamic_partitions_requests=requests,
                           asset_events=plan.observations)


def _watch_settings() -> tuple[str, int]:
    """The config's `watch:` section, read when the code location loads (defaults if the config is broken:
    the sensor reports the config error on its first tick)."""
    try:
        watch = load_config().watch
        return watch.cron, watch.sensor_interval_s
    except AutointerpError:
        return "0 * * * *", 60


CRON, SENSOR_INTERVAL_S = _watch_settings()


@dg.sensor(minimum_interval_seconds=SENSOR_INTERVAL_S, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Registers new models' partitions; on a new revision, rebuilds excerpts and re-records.")
def model_revisions(context: dg.SensorEvaluationContext, store: DuckDBStore) -> dg.SensorResult | dg.SkipReason:
    return _evaluate(context, store.store())


@dg.schedule(cron_schedule=CRON, job_name="excerpts_job", default_status=dg.DefaultScheduleStatus.STOPPED,
             description="The same check as the model_revisions sensor, on a cron (`watch.cron` in the config).")
def model_revision_check(context: dg.ScheduleEvaluationContext, store: DuckDBStore):
    db = store.store()
    plan = plan_refresh(load_config(), db, context.instance)
    for problem in plan.problems:
        context.log.error(problem)
    # A schedule cannot return partition requests or asset events: add and report them directly.
    if plan.new_models:
        context.instance.add_dynamic_partitions("models", plan.new_models)
    if plan.new_layers:
        context.instance.add_dynamic_partitions("layers", sorted(plan.new_layers, key=int))
    for observation in plan.observations:
        context.instance.report_runless_asset_event(observation)
    return plan.run_requests or dg.SkipReason("every model is at its current revision")
