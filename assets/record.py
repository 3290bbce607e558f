"""Stage 1, record: excerpts per model, then activation records and neuron stats per (model, layer)."""

import dagster as dg
import pandas as pd

from assets.common import stage_op_tags, stages
from assets.metadata import stats_metadata
from assets.subject import subject_model
from autointerp.neurons import selected_layers
from orchestration.partitions import by_model, layers_by_model, model_layer_partitions, model_partitions
from resources import AutointerpSettings, DuckDBStore

RECORD_GROUP = "record"


@dg.asset(partitions_def=model_partitions, group_name=RECORD_GROUP, kinds={"duckdb"}, deps=[subject_model],
          op_tags=stage_op_tags("record"))
def excerpts(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore) -> dg.MaterializeResult:
    """The corpus cut into 64-token excerpts with this model's tokenizer; registers the model's revision."""
    result = stages(context, settings, store).excerpts(context.partition_key)
    return dg.MaterializeResult(
        metadata={"revision": result.revision, "architecture": result.info.architecture, "units": result.info.units,
                  "layers": result.info.n_layers, "neurons_per_layer": result.info.n_neurons,
                  "excerpts": result.n_excerpts, "corpus_fingerprint": result.corpus_fingerprint,
                  "dropped_stale_records": result.dropped_stale_records},
        data_version=dg.DataVersion(f"{result.revision}/{result.corpus_fingerprint}"),
    )


_record_deps = [dg.AssetDep(excerpts, partition_mapping=by_model)]


@dg.multi_asset(
    specs=[
        dg.AssetSpec("activation_records", deps=_record_deps, partitions_def=model_layer_partitions,
                     group_name=RECORD_GROUP, kinds={"duckdb", "pytorch"},
                     description="Per neuron: top-activating, random and quantile-sampled excerpts with activations."),
        dg.AssetSpec("neuron_stats", deps=_record_deps, partitions_def=model_layer_partitions,
                     group_name=RECORD_GROUP, kinds={"duckdb"},
                     description="Per neuron: count, mean, variance, skewness, kurtosis, max, fraction > 0."),
    ],
    # A backfill over many layers is one run, and so one forward pass per model.
    backfill_policy=dg.BackfillPolicy.single_run(),
    op_tags=stage_op_tags("record"),
)
def record(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore):
    pipeline = stages(context, settings, store)
    done = {}
    for model, layers in layers_by_model(context.partition_keys).items():
        recording = pipeline.record(model, layers)
        done[model] = recording
        context.log.info(f"{model}: recorded layers {layers} in {recording.seconds:.1f}s "
                         f"({recording.n_tokens / recording.seconds:,.0f} tokens/s) on {recording.device}")
    seconds = max(sum(r.seconds for r in done.values()), 1e-9)
    metadata = {
        "models": ", ".join(f"{m} @ {r.revision}" for m, r in done.items()),
        "layers": dg.MetadataValue.json({m: r.layers for m, r in done.items()}),
        "tokens": sum(r.n_tokens for r in done.values()),
        "tokens_per_second": round(sum(r.n_tokens for r in done.values()) / seconds, 1),
        "shortfall": "; ".join(line for r in done.values() for line in r.shortfall) or "none",
        "device": ", ".join(sorted({r.device for r in done.values()})),
        "batch_size": dg.MetadataValue.json({m: r.batch_size for m, r in done.items()}),
    }
    yield dg.MaterializeResult(asset_key="activation_records",
                               metadata={**metadata, "rows": sum(r.rows for r in done.values())})
    stats = pd.concat([r.stats.to_pandas() for r in done.values()])
    yield dg.MaterializeResult(asset_key="neuron_stats", metadata={**metadata, "rows": len(stats),
                                                                   **stats_metadata(stats)})


@dg.asset(deps=_record_deps, partitions_def=model_layer_partitions, group_name=RECORD_GROUP,
          kinds={"duckdb", "pytorch"}, backfill_policy=dg.BackfillPolicy.single_run(),
          description="Per unit: the tokens its output direction (MLP down_proj/c_proj column, SAE decoder row) "
                      "promotes and suppresses most through the final norm and the unembedding (logit lens); "
                      "computed once per model revision.")
def unit_logits(context: dg.AssetExecutionContext, settings: AutointerpSettings,
                store: DuckDBStore) -> dg.MaterializeResult:
    pipeline = stages(context, settings, store)
    # the layers whose units are explained (neurons.layers; all when it is empty): what the explainer's `writes`
    # format and the neuron pages read; another layer's are one materialization of its partition away
    written = {model: pipeline.unit_logits(model, selected_layers(pipeline.config.neurons, layers))
               for model, layers in layers_by_model(context.partition_keys).items()}
    skipped = "none" if any(written.values()) else "layers already done for this revision, or none selected"
    return dg.MaterializeResult(metadata={"layers_written": dg.MetadataValue.json(written), "skipped": skipped})
