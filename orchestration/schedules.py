"""The `model_revision_check` schedule: the sensor's look at the models, on a cron (`watch.cron`), for
deployments that keep sensors off."""

import dagster as dg

from orchestration.refresh import plan_refresh
from resources import AutointerpSettings, DuckDBStore


def build_schedule(cron: str) -> dg.ScheduleDefinition:
    @dg.schedule(name="model_revision_check", cron_schedule=cron, job_name="excerpts_job",
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="The same check as the model_revisions sensor, on a cron (`watch.cron` in the config).")
    def model_revision_check(context: dg.ScheduleEvaluationContext, settings: AutointerpSettings, store: DuckDBStore):
        plan = plan_refresh(settings.load(), store.store(), context.instance)
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

    return model_revision_check
