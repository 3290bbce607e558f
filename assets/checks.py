"""Blocking asset checks: a failed check stops every stage downstream of the checked table."""

from typing import Any, Callable

import dagster as dg

from assets import quality
from autointerp.config import NeuronSelection
from autointerp.errors import AutointerpError
from autointerp.explainer import layer_selected
from autointerp.llm import llm_name
from autointerp.store import Store
from orchestration.partitions import layers_by_model, model_layer_key, model_layer_partitions, model_partitions
from resources import AutointerpSettings, DuckDBStore


def _result(reports: list[quality.QualityReport]) -> dg.AssetCheckResult:
    if not reports:
        return dg.AssetCheckResult(passed=True, metadata={"rows_checked": 0,
                                                          "result": "no neuron of these layers is selected (neurons.layers)"})
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


def _check_layers(context: dg.AssetCheckExecutionContext, store: DuckDBStore,
                  check: Callable[[Any, str, str, list[int], int], quality.QualityReport],
                  selection: NeuronSelection | None = None) -> dg.AssetCheckResult:
    """Run `check(con, model, revision, layers, n_neurons)` for every model in the checked partitions.

    With a `selection`, layers outside `neurons.layers` are skipped: nothing is explained there by design.
    """
    db = store.store()
    reports = []
    ranged = not context.op_execution_context.has_partition_key  # a run over a range of partitions
    for model, layers in layers_by_model(context.partition_keys).items():
        layers = [layer for layer in layers if selection is None or layer_selected(selection, layer)]
        if not layers:
            continue
        revision = _revision(db, model)
        n_neurons = int(db.model_row(model, revision)["n_neurons"])
        with db.connect() as con:
            if not ranged:
                reports.append(check(con, model, revision, layers, n_neurons))
                continue
            for layer in layers:
                report = check(con, model, revision, [layer], n_neurons)
                _log_partition_result(context, report, str(model_layer_key(model, layer)))
                reports.append(report)
    return _result(reports)


def _log_partition_result(context: dg.AssetCheckExecutionContext, report: quality.QualityReport,
                          partition: str) -> None:
    """Dagster (1.13) records a multi-partition run's check result without a partition, and automation
    waits for each partition's blocking checks: so a ranged run also reports each partition's own result."""
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData)

    spec = context.check_specs[0]
    result = _result([report])
    # Like Dagster's own evaluations: point at the partition's latest materialization, so the result
    # counts as "checked the current data".
    latest = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=spec.asset_key, asset_partitions=[partition]), limit=1).records
    target = AssetCheckEvaluationTargetMaterializationData(
        run_id=latest[0].event_log_entry.run_id, storage_id=latest[0].storage_id, timestamp=latest[0].timestamp
    ) if latest else None
    context.op_execution_context.log_event(dg.AssetCheckEvaluation(
        asset_key=spec.asset_key, check_name=spec.name, passed=result.passed, metadata=result.metadata,
        target_materialization_data=target, severity=dg.AssetCheckSeverity.ERROR, blocking=True,
        partition=partition))


def _layer_check(asset: str, description: str):
    return dg.asset_check(asset=asset, blocking=True, partitions_def=model_layer_partitions, description=description)


@_layer_check("activation_records", "Finite values, 64 activations per excerpt matching its tokens, top records "
              "sorted by max activation, the configured number of records per neuron, excerpts that exist.")
def activation_records_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                                 store: DuckDBStore) -> dg.AssetCheckResult:
    spec = settings.load().records
    return _check_layers(context, store, lambda con, m, r, layers, n: quality.check_activation_records(
        con, m, r, layers, spec, n))


@_layer_check("neuron_stats", "Finite statistics, variance >= 0, fraction in [0, 1], max equal to the top record's.")
def neuron_stats_are_valid(context: dg.AssetCheckExecutionContext, store: DuckDBStore) -> dg.AssetCheckResult:
    return _check_layers(context, store, lambda con, m, r, layers, n: quality.check_neuron_stats(con, m, r, layers, n))


@_layer_check("explanations", "Non-empty, of sane length (2-400 characters), not an echo of the prompt.")
def explanations_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                           store: DuckDBStore) -> dg.AssetCheckResult:
    config = settings.load()
    explainer = llm_name(config.explainer, config.path.parent)
    return _check_layers(context, store, lambda con, m, r, layers, n: quality.check_explanations(
        con, m, r, layers, explainer), config.neurons)


@_layer_check("simulations", "Simulated values within [0, 10], finite, one per token of the excerpt.")
def simulations_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                          store: DuckDBStore) -> dg.AssetCheckResult:
    config = settings.load()
    names = llm_name(config.explainer, config.path.parent), llm_name(config.simulator, config.path.parent)
    return _check_layers(context, store, lambda con, m, r, layers, n: quality.check_simulations(
        con, m, r, layers, *names), config.neurons)


@_layer_check("scores", "Correlations within [-1, 1] or NULL with a stated reason.")
def scores_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                     store: DuckDBStore) -> dg.AssetCheckResult:
    config = settings.load()
    names = llm_name(config.explainer, config.path.parent), llm_name(config.simulator, config.path.parent)
    return _check_layers(context, store, lambda con, m, r, layers, n: quality.check_scores(
        con, m, r, layers, *names), config.neurons)


record_checks = [excerpts_are_well_formed, activation_records_are_valid, neuron_stats_are_valid]
explain_checks = [explanations_are_valid, simulations_are_valid, scores_are_valid]
