"""The project's jobs: what the CLI launches and the sensor requests, so runs read like the pipeline. Their
assets come from the stage table (`orchestration/stages.py`)."""

import dagster as dg

from orchestration.partitions import model_layer_partitions, model_partitions
from orchestration.stages import LLM_STAGES, STAGES

# Each job, its assets and its partitions.
_JOBS: dict[str, tuple[tuple[str, ...], dg.PartitionsDefinition | None]] = {
    "excerpts_job": (("excerpts",), model_partitions),
    "record_job": (STAGES["record"], model_layer_partitions),
    "explain_job": (tuple(key for stage in LLM_STAGES for key in STAGES[stage]), model_layer_partitions),
    "view_job": (("neuron_viewer",), model_partitions),
    # The demo SAE (docs/sae.md): trained once, then explained through a model whose units are its latents.
    "sae_job": (("sae_dictionary",), None),
    # The trained judge (docs/method.md s.11): the `trained` simulator's model, from rule units over excerpts.
    "judge_job": (("trained_judge",), None),
}

JOBS = [dg.define_asset_job(name, selection=dg.AssetSelection.assets(*keys), partitions_def=partitions)
        for name, (keys, partitions) in _JOBS.items()]
# The job that materializes each asset (the CLI launches these, so the runs list reads like the pipeline).
JOB_OF = {key: name for name, (keys, _) in _JOBS.items() for key in keys}
