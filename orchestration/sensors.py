"""The `model_revisions` sensor: registers new models' partitions; on a new revision, rebuilds excerpts and
re-records (orchestration/refresh.py)."""

import dagster as dg

from orchestration.refresh import plan_refresh
from resources import AutointerpSettings, DuckDBStore


def build_sensor(interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(name="model_revisions", minimum_interval_seconds=interval_s,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Registers new models' partitions; on a new revision, rebuilds excerpts and re-records.")
    def model_revisions(context: dg.SensorEvaluationContext, settings: AutointerpSettings,
                        store: DuckDBStore) -> dg.SensorResult | dg.SkipReason:
        plan = plan_refresh(settings.load(), store.store(), context.instance)
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

    return model_revisions
