"""Everything Dagster loads: `dagster dev -w workspace.yaml` or `dg dev` point here."""

import dagster as dg

from assets.checks import explain_checks, record_checks
from assets.explain import explanations, scores, simulations
from assets.record import excerpts, record
from assets.subject import subject_model
from assets.view import neuron_viewer
from orchestration.partitions import model_layer_partitions, model_partitions
from orchestration.sensors import model_revision_check, model_revisions
from resources import AutointerpSettings, DuckDBStore, LLMs

ASSETS = [subject_model, excerpts, record, explanations, simulations, scores, neuron_viewer]
CHECKS = [*record_checks, *explain_checks]
RESOURCES = {"settings": AutointerpSettings(), "store": DuckDBStore(), "llms": LLMs()}

excerpts_job = dg.define_asset_job("excerpts_job", selection=dg.AssetSelection.assets(excerpts),
                                   partitions_def=model_partitions)
record_job = dg.define_asset_job("record_job", selection=dg.AssetSelection.assets("activation_records", "neuron_stats"),
                                 partitions_def=model_layer_partitions)
explain_job = dg.define_asset_job("explain_job", selection=dg.AssetSelection.assets(explanations, simulations, scores),
                                  partitions_def=model_layer_partitions)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    resources=RESOURCES,
    jobs=[excerpts_job, record_job, explain_job],
    sensors=[model_revisions],
    schedules=[model_revision_check],
)
