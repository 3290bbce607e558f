"""Blocking asset checks: a failed check stops every stage downstream of the checked table."""

import dagster as dg

from assets import quality
from autointerp.config import Config
from autointerp.errors import AutointerpError
from autointerp.store import Store
from orchestration.partitions import layers_by_model, model_layer_partitions, model_partitions
from resources import AutointerpSettings, DuckDBStore


def _result(reports: list[quality.QualityReport]) -> dg.AssetCheckResult:
    failures = [r.summary() for r in reports if not r.passed]
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_checked": sum(r.rows for r in reports),
                  "result": "\n".join(failures) if failures else "; ".join(r.summary() for r in reports)},
    )


def _revision(db: Store, model: str) -> str:
    revision = db.latest_revision(model)
    if revision is None:
        raise AutointerpError(f"model '{model}' has no registered revision: materialize `excerpts` first")
    return revision


@dg.asset_check(asset="excerpts", blocking=True, partitions_def=model_partitions,
                description="64 token ids and 64 token strings per excerpt, excerpt ids unique.")
def excerpts_are_well_formed(context: dg.AssetCheckExecutionContext, store: DuckDBStore) -> dg.AssetCheckResult:
    db = store.store()
    with db.connect() as con:
        return _result([quality.check_excerpts(con, m, _revision(db, m)) for m in context.partition_keys])


def _n_neurons(db: Store, model: str, revision: str) -> int:
    row = db.model_row(model, revision)
    return int(row["n_neurons"])


def _check_layers(context: dg.AssetCheckExecutionContext, store: DuckDBStore, config: Config, which: str) -> dg.AssetCheckResult:
    db = store.store()
    reports = []
    for model, layers in layers_by_model(context.partition_keys).items():
        revision = _revision(db, model)
        n_neurons = _n_neurons(db, model, revision)
        with db.connect() as con:
            if which == "records":
                reports.append(quality.check_activation_records(con, model, revision, layers, config.records, n_neurons))
            else:
                reports.append(quality.check_neuron_stats(con, model, revision, layers, n_neurons))
    return _result(reports)


@dg.asset_check(asset="activation_records", blocking=True, partitions_def=model_layer_partitions,
                description="Finite values, 64 activations per excerpt matching its tokens, top records sorted "
                            "by max activation, the configured number of records per neuron, excerpts that exist.")
def activation_records_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                                 store: DuckDBStore) -> dg.AssetCheckResult:
    return _check_layers(context, store, settings.load(), "records")


@dg.asset_check(asset="neuron_stats", blocking=True, partitions_def=model_layer_partitions,
                description="Finite statistics, variance >= 0, fraction in [0, 1], max equal to the top record's.")
def neuron_stats_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                           store: DuckDBStore) -> dg.AssetCheckResult:
    return _check_layers(context, store, settings.load(), "stats")


record_checks = [excerpts_are_well_formed, activation_records_are_valid, neuron_stats_are_valid]
