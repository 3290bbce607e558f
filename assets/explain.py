"""Stages 2-4, explain -> simulate -> score (and judge), per (model, layer), for the neurons the config selects."""

from typing import Any, Callable

import dagster as dg
import pandas as pd

from assets.common import stage_op_tags, stages
from assets.metadata import score_metadata
from autointerp.neurons import selected_layers
from autointerp.stages import StageResult, Stages
from orchestration.partitions import layers_by_model, model_layer_key, model_layer_partitions
from resources import AutointerpSettings, DuckDBStore, LLMResource

EXPLAIN_GROUP = "explain"
# Downstream stages follow when their inputs change, once those inputs' blocking checks passed.
_automation = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
_common: dict[str, Any] = dict(partitions_def=model_layer_partitions, group_name=EXPLAIN_GROUP,
                               backfill_policy=dg.BackfillPolicy.single_run(), kinds={"duckdb"},
                               automation_condition=_automation, op_tags=stage_op_tags("explain"))


def _each_layer(context: dg.AssetExecutionContext, pipeline: Stages,
                stage: Callable[[str, int], StageResult]) -> list[StageResult]:
    """Run `stage` for every (model, layer) of this run whose neurons are selected (`neurons.layers`)."""
    results = []
    for model, layers in layers_by_model(context.partition_keys).items():
        chosen = selected_layers(pipeline.config.neurons, layers)
        if not chosen:
            context.log.info(f"{model}: no layer of this run is in neurons.layers {list(pipeline.config.neurons.layers)}")
        results += [stage(model, layer) for layer in chosen]
    return results


def _metadata(results: list[StageResult], role: str) -> dict[str, Any]:
    return {"rows": sum(len(r.rows) for r in results), "neurons": sum(r.neurons for r in results),
            role: results[0].role if results else "", "llm_calls_made": sum(r.llm_calls_made for r in results),
            "llm_calls_cached": sum(r.llm_calls_cached for r in results)}


@dg.asset(deps=["activation_records"], description="One-sentence explanation per selected neuron, from its "
          "top-activating train-split excerpts (every candidate of best-of-n, with its valid-split score).",
          **_common)
def explanations(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
                 llm: LLMResource) -> dg.MaterializeResult:
    pipeline = stages(context, settings, store, llm)
    return dg.MaterializeResult(metadata=_metadata(_each_layer(context, pipeline, pipeline.explain), "explainer"))


@dg.asset(deps=["explanations"], description="Per chosen explanation, the simulated activation (0-10) of every "
          "token of the neuron's test-split excerpts (top and random).", **_common)
def simulations(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
                llm: LLMResource) -> dg.MaterializeResult:
    pipeline = stages(context, settings, store, llm)
    return dg.MaterializeResult(metadata=_metadata(_each_layer(context, pipeline, pipeline.simulate), "simulator"))


@dg.asset(deps=["simulations"], description="How well each explanation predicts the real activations: pooled "
          "correlation on top-and-random and random-only test excerpts, rsquared, absolute deviation explained.",
          **_common)
def scores(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
           llm: LLMResource) -> dg.MaterializeResult:
    pipeline = stages(context, settings, store, llm)
    results = _each_layer(context, pipeline, pipeline.score)
    frame = pd.DataFrame([row for r in results for row in r.rows])
    url = pipeline.config.viewer.url.rstrip("/")

    def link(result: StageResult) -> dict[str, Any]:  # the layer's page in the viewer, where one is served
        return {"viewer": dg.MetadataValue.url(f"{url}/{result.model}/layers/{result.layer}.html")} if url else {}

    if len(context.partition_keys) > 1:
        # A ranged run writes one materialization for all its partitions; each layer's own picture goes
        # into an observation of that partition.
        for result in results:
            context.log_event(dg.AssetObservation(asset_key=context.asset_key,
                                                  partition=model_layer_key(result.model, result.layer),
                                                  metadata={**score_metadata(pd.DataFrame(result.rows)),
                                                            **link(result)}))
    return dg.MaterializeResult(metadata={**_metadata(results, "simulator"),
                                          **(score_metadata(frame) if len(frame) else {}),
                                          **(link(results[0]) if len(results) == 1 else {}),
                                          "explainer": pipeline.explained_by})


@dg.asset(deps=["explanations"], description="Scores that read context: a judge LLM says whether each test "
          "excerpt shows the explained feature (detection) and whether marked tokens are where it fires (fuzzing); "
          "AUROC of its yes/no log-odds, balanced accuracy, and every judgement.", **_common)
def judge_scores(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
                 llm: LLMResource) -> dg.MaterializeResult:
    pipeline = stages(context, settings, store, llm)
    if not pipeline.config.scoring.judges:
        context.log.info("scoring.judges is empty: nothing to judge")
        return dg.MaterializeResult(metadata={"rows": 0})
    results = _each_layer(context, pipeline, pipeline.judge)
    frame = pd.DataFrame([row for r in results for row in r.rows])
    means = {}
    if len(frame):
        for scorer, group in frame.groupby("scorer"):
            kind = str(scorer).split(":")[0]
            means[f"mean_auroc_{kind}"] = float(group.auroc.mean()) if group.auroc.notna().any() else None
            means[f"mean_balanced_accuracy_{kind}"] = (float(group.balanced_accuracy.mean())
                                                       if group.balanced_accuracy.notna().any() else None)
    return dg.MaterializeResult(metadata={**_metadata(results, "scorers"), **means, "explainer": pipeline.explained_by})


@dg.asset(deps=["activation_records"], description="How interpretable each selected unit is before any explanation: "
          "the judge LLM picks the one silent excerpt among excerpts where the unit fires at a similar strength "
          "(intruder detection); share of trials right (chance 1/(shown+1)) and the intruder's mean probability.",
          **_common)
def intruder_scores(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
                    llm: LLMResource) -> dg.MaterializeResult:
    pipeline = stages(context, settings, store, llm)
    scoring = pipeline.config.scoring
    if not scoring.intruder_trials:
        context.log.info("scoring.intruder_trials is 0: no intruder score")
        return dg.MaterializeResult(metadata={"rows": 0})
    results = _each_layer(context, pipeline, pipeline.intruder)
    frame = pd.DataFrame([row for r in results for row in r.rows])
    scored = frame[frame.accuracy.notna()] if len(frame) else frame
    return dg.MaterializeResult(metadata={
        **_metadata(results, "scorer"), "chance": 1 / (scoring.intruder_shown + 1),
        "mean_accuracy": float(scored.accuracy.mean()) if len(scored) else None,
        "mean_p_intruder": float(scored.p_intruder.mean()) if len(scored) else None,
        "units_without_trials": int(len(frame) - len(scored))})


@dg.asset(deps=["explanations"], description="Every chosen explanation embedded by the sentence encoder of "
          "`search.encoder` (FLOAT[] in DuckDB), for search by meaning: `autointerp search`, the viewer's search box. "
          "Only explanations new or changed since the last run are embedded.", **_common)
def explanation_embeddings(context: dg.AssetExecutionContext, settings: AutointerpSettings,
                           store: DuckDBStore) -> dg.MaterializeResult:
    pipeline = stages(context, settings, store)
    done = [pipeline.embed(model, layer) for model, layers in layers_by_model(context.partition_keys).items()
            for layer in selected_layers(pipeline.config.neurons, layers)]
    return dg.MaterializeResult(metadata={"embedded": sum(d.embedded for d in done), "kept": sum(d.kept for d in done),
                                          "dropped": sum(d.dropped for d in done),
                                          "encoder": pipeline.config.search.encoder})
