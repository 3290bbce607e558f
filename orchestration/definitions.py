"""Everything Dagster loads: `dagster dev -w workspace.yaml` or `dg dev` point here."""

import dagster as dg

from assets.checks import record_checks
from assets.record import excerpts, record
from orchestration.partitions import model_layer_partitions, model_partitions
from orchestration.sensors import configured_models
from resources import AutointerpSettings, DuckDBStore

ASSETS = [excerpts, record]
CHECKS = [*record_checks]
RESOURCES = {"settings": AutointerpSettings(), "store": DuckDBStore()}

excerpts_job = dg.define_asset_job("excerpts_job", selection=dg.AssetSelection.assets(excerpts),
                                   partitions_def=model_partitions)
record_job = dg.define_asset_job("record_job", selection=dg.AssetSelection.assets("activation_records", "neuron_stats"),
                                 partitions_def=model_layer_partitions)

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    resources=RESOURCES,
    jobs=[excerpts_job, record_job],
    sensors=[configured_models],
)
