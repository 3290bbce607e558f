"""Stage 1, record: excerpts per model, then activation records and neuron stats per (model, layer)."""

import dagster as dg
import pandas as pd

from assets import quality
from assets.metadata import stats_metadata
from assets.subject import subject_model
from autointerp.errors import AutointerpError, ValidationError
from autointerp.excerpts import build_excerpts
from autointerp.recording import record_model, write_recording
from orchestration.partitions import by_model, layers_by_model, model_layer_partitions, model_partitions
from resources import AutointerpSettings, DuckDBStore

RECORD_GROUP = "record"


@dg.asset(partitions_def=model_partitions, group_name=RECORD_GROUP, kinds={"duckdb"}, deps=[subject_model])
def excerpts(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore) -> dg.MaterializeResult:
    """The corpus cut into 64-token excerpts with this model's tokenizer; registers the model's revision."""
    model = context.partition_key
    db = store.store()
    result = build_excerpts(
        settings.load(), model, db, context.log.info,
        validate=lambda con: quality.check_excerpts(con, model, revision_of(con, model)).raise_if_failed())
    return dg.MaterializeResult(
        metadata={"revision": result.revision, "architecture": result.info.architecture,
                  "layers": result.info.n_layers, "neurons_per_layer": result.info.n_neurons,
                  "excerpts": result.n_excerpts, "corpus_fingerprint": result.corpus_fingerprint,
                  "dropped_stale_records": result.dropped_stale_records},
        data_version=dg.DataVersion(f"{result.revision}/{result.corpus_fingerprint}"),
    )


def revision_of(con, model: str) -> str:
    """Inside the write transaction: the revision just registered for `model`."""
    return con.execute("SELECT revision FROM models WHERE model = ? ORDER BY registered_at DESC LIMIT 1", [model]).fetchone()[0]


def _require_valid_excerpts(db, model: str) -> None:
    """Bad data must not flow downstream, even in a run that did not evaluate the excerpts check."""
    revision = db.latest_revision(model)
    if revision is None:
        raise AutointerpError(f"model '{model}' has no excerpts yet: materialize `excerpts` for it first")
    with db.connect() as con:
        report = quality.check_excerpts(con, model, revision)
    if not report.passed:
        raise ValidationError(f"upstream excerpts of '{model}' fail their check, not recording: {report.summary()}")


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
)
def record(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore):
    config = settings.load()
    db = store.store()
    summary = {}
    for model, layers in layers_by_model(context.partition_keys).items():
        _require_valid_excerpts(db, model)
        recording = record_model(config, model, layers, db, context.log.info)
        n_neurons = recording.stats.num_rows // len(layers)

        def validate(con, recording=recording, n_neurons=n_neurons):
            quality.check_activation_records(con, model, recording.revision, recording.layers, config.records,
                                             n_neurons).raise_if_failed()
            quality.check_neuron_stats(con, model, recording.revision, recording.layers, n_neurons).raise_if_failed()

        write_recording(db, recording, validate)
        summary[model] = recording
        context.log.info(f"{model}: recorded layers {layers} in {recording.seconds:.1f}s "
                         f"({recording.n_tokens / recording.seconds:,.0f} tokens/s)")
    metadata = {
        "models": ", ".join(f"{m} @ {r.revision}" for m, r in summary.items()),
        "layers": dg.MetadataValue.json({m: r.layers for m, r in summary.items()}),
        "tokens": sum(r.n_tokens for r in summary.values()),
        "tokens_per_second": round(sum(r.n_tokens for r in summary.values()) / max(sum(r.seconds for r in summary.values()), 1e-9), 1),
    }
    yield dg.MaterializeResult(asset_key="activation_records",
                               metadata={**metadata, "rows": sum(r.records.num_rows for r in summary.values())})
    stats = pd.concat([r.stats.to_pandas() for r in summary.values()])
    yield dg.MaterializeResult(asset_key="neuron_stats", metadata={
        **metadata, "rows": sum(r.stats.num_rows for r in summary.values()), **stats_metadata(stats)})
