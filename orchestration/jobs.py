"""The project's jobs: what the CLI launches and the sensor requests, so runs read like the pipeline."""

import dagster as dg

from orchestration.partitions import model_layer_partitions, model_partitions

excerpts_job = dg.define_asset_job("excerpts_job", selection=dg.AssetSelection.assets("excerpts"),
                                   partitions_def=model_partitions)
record_job = dg.define_asset_job("record_job", selection=dg.AssetSelection.assets("activation_records", "neuron_stats"),
                                 partitions_def=model_layer_partitions)
explain_job = dg.define_asset_job("explain_job",
                                  selection=dg.AssetSelection.assets("explanations", "simulations", "scores",
                                                                    "judge_scores"),
                                  partitions_def=model_layer_partitions)

view_job = dg.define_asset_job("view_job", selection=dg.AssetSelection.assets("neuron_viewer"),
                               partitions_def=model_partitions)

# The demo SAE (docs/sae.md): trained once, then explained through a model whose units are its latents.
sae_job = dg.define_asset_job("sae_job", selection=dg.AssetSelection.assets("sae_dictionary"))

JOBS = [excerpts_job, record_job, explain_job, view_job, sae_job]
# The job that materializes each asset (the CLI launches these, so the runs list reads like the pipeline).
JOB_OF = {"excerpts": "excerpts_job", "activation_records": "record_job", "neuron_stats": "record_job",
          "explanations": "explain_job", "simulations": "explain_job", "scores": "explain_job",
          "judge_scores": "explain_job",
          "neuron_viewer": "view_job", "sae_dictionary": "sae_job"}
