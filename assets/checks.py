"""Blocking asset checks: the store's quality suites on the stored tables; a failed check stops every stage
downstream of the checked table (the same suites already ran when the rows were written)."""

from typing import Any

import dagster as dg

from autointerp.corpus import EXCERPT_TOKENS
from autointerp.neurons import selected_layers
from autointerp.record.recorder import expected_counts
from assets.common import stages
from autointerp.store import queries
from autointerp.store.quality import (QualityReport, Scope, check_activation_records, check_excerpts,
                                      check_explanation_embeddings, check_explanations, check_intruder_scores,
                                      check_judge_scores,
                                      check_neuron_stats, check_scores, check_simulations, check_unit_logits)
from orchestration.partitions import layers_by_model, model_layer_key, model_layer_partitions, model_partitions
from resources import AutointerpSettings, DuckDBStore, LLMResource


def _result(reports: list[QualityReport]) -> dg.AssetCheckResult:
    if not reports:
        return dg.AssetCheckResult(passed=True, metadata={
            "rows_checked": 0, "result": "no neuron of these layers is selected (neurons.layers)"})
    failures = [r.summary() for r in reports if not r.passed]
    return dg.AssetCheckResult(
        passed=not failures,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"rows_checked": sum(r.rows for r in reports),
                  "result": "\n".join(failures) if failures else "; ".join(r.summary() for r in reports)},
    )


@dg.asset_check(asset="excerpts", blocking=True, partitions_def=model_partitions,
                description="64 token ids and 64 token strings per excerpt, excerpt ids unique.")
def excerpts_are_well_formed(context: dg.AssetCheckExecutionContext, store: DuckDBStore) -> dg.AssetCheckResult:
    db = store.store()
    reports = []
    for model in context.partition_keys:
        revision = queries.current_model(db, model)["revision"]
        with db.connect() as con:
            reports.append(check_excerpts(con, Scope(model, revision), tokens=EXCERPT_TOKENS))
    return _result(reports)


def _check_layers(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
                  suite: Any, llm: LLMResource | None = None, **expect: Any) -> dg.AssetCheckResult:
    """Run `suite` on the stored rows of every (model, layer) in the checked partitions.

    With `llm` (the LLM stages' tables): layers outside `neurons.layers` are skipped (nothing is explained there
    by design), and the rows checked are the configured explainer's (and simulator's, for the tables that have
    one; the intruder judge's for intruder_scores), named by the run's roles (naming one loads no model).
    """
    pipeline = stages(context, settings, store, llm)
    db, config = pipeline.store, pipeline.config
    names: dict[str, str] = {}
    if suite is check_intruder_scores:  # a unit's score: no explainer, the configured intruder judge's rows
        names["scorer"] = pipeline.intruder_scorer.name
    elif llm is not None:
        names["explainer"] = pipeline.explainer.name if suite is check_explanations else pipeline.explained_by
        if suite in (check_simulations, check_scores):
            names["simulator"] = pipeline.simulator.name
    reports = []
    ranged = not context.op_execution_context.has_partition_key  # a run over a range of partitions
    for model, layers in layers_by_model(context.partition_keys).items():
        # the LLM stages' tables and unit_logits exist for the explained layers only (neurons.layers)
        layers = selected_layers(config.neurons, layers) if llm is not None or suite is check_unit_logits else layers
        if not layers:
            continue
        row = queries.current_model(db, model)
        extra = {key: value(config, row) for key, value in expect.items()}
        with db.connect() as con:
            if not ranged:
                reports.append(suite(con, Scope(model, row["revision"], tuple(layers), **names), **extra))
                continue
            for layer in layers:
                report = suite(con, Scope(model, row["revision"], (layer,), **names), **extra)
                _log_partition_result(context, report, str(model_layer_key(model, layer)))
                reports.append(report)
    return _result(reports)


def _log_partition_result(context: dg.AssetCheckExecutionContext, report: QualityReport, partition: str) -> None:
    """Dagster (1.13) records a multi-partition run's check result without a partition, and automation
    waits for each partition's blocking checks: so a ranged run also reports each partition's own result.

    Private API: no public one builds the evaluation's target materialization (AssetCheckEvaluation is
    public, its target data class is not); without it the result does not count as checking the latest data.
    """
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData)

    spec = context.check_specs[0]
    result = _result([report])
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
    return _check_layers(context, settings, store, check_activation_records,
                         counts=lambda config, row: expected_counts(config.records, int(row["n_excerpts"])))


@_layer_check("neuron_stats", "Finite statistics, variance >= 0, fraction in [0, 1], max equal to the top record's.")
def neuron_stats_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                           store: DuckDBStore) -> dg.AssetCheckResult:
    return _check_layers(context, settings, store, check_neuron_stats, complete=lambda config, row: True)


@_layer_check("explanations", "Chosen explanations non-empty, of sane length (2-400 characters), not an echo of "
              "the prompt; one chosen per neuron.")
def explanations_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                           store: DuckDBStore, llm: LLMResource) -> dg.AssetCheckResult:
    return _check_layers(context, settings, store, check_explanations, llm)


@_layer_check("simulations", "Simulated values within [0, 10], finite, one per token of the excerpt.")
def simulations_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                          store: DuckDBStore, llm: LLMResource) -> dg.AssetCheckResult:
    return _check_layers(context, settings, store, check_simulations, llm)


@_layer_check("scores", "Correlations within [-1, 1] or NULL with a stated reason.")
def scores_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                     store: DuckDBStore, llm: LLMResource) -> dg.AssetCheckResult:
    return _check_layers(context, settings, store, check_scores, llm)


@_layer_check("judge_scores", "AUROC and balanced accuracy within [0, 1] or NULL with a stated reason; one finite "
              "log-odds per judged excerpt, classes counted right.")
def judge_scores_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                           store: DuckDBStore, llm: LLMResource) -> dg.AssetCheckResult:
    if not settings.load().scoring.judges:
        return dg.AssetCheckResult(passed=True, metadata={"rows_checked": 0, "result": "scoring.judges is empty"})
    return _check_layers(context, settings, store, check_judge_scores, llm)


@_layer_check("intruder_scores", "Accuracy and the intruder's probability within [0, 1] or NULL with a stated "
              "reason, accuracy equal to the stored picks', every pick a place shown.")
def intruder_scores_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                              store: DuckDBStore, llm: LLMResource) -> dg.AssetCheckResult:
    if not settings.load().scoring.intruder_trials:
        return dg.AssetCheckResult(passed=True, metadata={"rows_checked": 0, "result": "scoring.intruder_trials is 0"})
    return _check_layers(context, settings, store, check_intruder_scores, llm)


@_layer_check("unit_logits", "Every unit of the layer has k promoted and k suppressed tokens, finite logits, "
              "strongest first, every promoted logit above every suppressed one.")
def unit_logits_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                          store: DuckDBStore) -> dg.AssetCheckResult:
    return _check_layers(context, settings, store, check_unit_logits)


@_layer_check("explanation_embeddings", "Embeddings finite and of unit norm, one length per encoder, one per "
              "explanation and encoder.")
def explanation_embeddings_are_valid(context: dg.AssetCheckExecutionContext, settings: AutointerpSettings,
                                     store: DuckDBStore, llm: LLMResource) -> dg.AssetCheckResult:
    return _check_layers(context, settings, store, check_explanation_embeddings, llm)


record_checks = [excerpts_are_well_formed, activation_records_are_valid, neuron_stats_are_valid, unit_logits_are_valid]
explain_checks = [explanations_are_valid, simulations_are_valid, scores_are_valid, judge_scores_are_valid,
                  intruder_scores_are_valid,
                  explanation_embeddings_are_valid]
