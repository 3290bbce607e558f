"""Stages 2-4, explain -> simulate -> score, per (model, layer), for the neurons the config selects."""


from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import dagster as dg
import pandas as pd

from assets import quality
from assets.metadata import score_metadata
from autointerp.config import Config
from autointerp.errors import AutointerpError
from autointerp.explainer import Explanation, explain_neurons, layer_selected, select_neurons
from autointerp.llm import llm_name
from autointerp.llm.base import CachedLLM
from autointerp.progress import Progress
from autointerp.records import NeuronRecord, load_neuron_records
from autointerp.scoring import score_neuron
from autointerp.simulator import simulate_neurons
from autointerp.store import Replacement, Store
from orchestration.partitions import layers_by_model, model_layer_key, model_layer_partitions
from resources import AutointerpSettings, DuckDBStore, LLMs

EXPLAIN_GROUP = "explain"
# Downstream stages follow when their inputs change, once those inputs' blocking checks passed.
_automation = dg.AutomationCondition.eager() & dg.AutomationCondition.all_deps_blocking_checks_passed()
_common: dict[str, Any] = dict(partitions_def=model_layer_partitions, group_name=EXPLAIN_GROUP,
                               backfill_policy=dg.BackfillPolicy.single_run(), kinds={"duckdb"},
                               automation_condition=_automation)


def _revision(db: Store, model: str) -> tuple[str, int]:
    revision = db.latest_revision(model)
    if revision is None:
        raise AutointerpError(f"model '{model}' has no recorded revision: run the record stage first")
    return revision, int(db.model_row(model, revision)["n_neurons"])


def _neuron_records(db: Store, config: Config, model: str, revision: str, n_neurons: int,
                    layer: int) -> list[NeuronRecord]:
    neurons = select_neurons(config.neurons, n_neurons, config.seed, layer)
    with db.connect() as con:
        records = load_neuron_records(con, model, revision, layer, neurons)
    if len(records) != len(neurons):
        raise AutointerpError(f"{model} layer {layer}: activation records missing for some of neurons {neurons}; "
                              "record the layer first")
    return records


def _for_each_layer(context: dg.AssetExecutionContext, config: Config, db: Store, label: str,
                    work: Callable[[str, str, int, list[NeuronRecord], Progress], list[dict]],
                    write: Callable[[str, str, list[int], pd.DataFrame], None]) -> dict[str, Any]:
    """Run `work` per (model, layer) of this run, then `write` each model's rows in one transaction."""
    total_rows, neurons_done = 0, 0
    for model, layers in layers_by_model(context.partition_keys).items():
        layers = [layer for layer in layers if layer_selected(config.neurons, layer)]
        if not layers:
            context.log.info(f"{model}: no layer of this run is in neurons.layers {list(config.neurons.layers)}")
            continue
        revision, n_neurons = _revision(db, model)
        selected = {layer: _neuron_records(db, config, model, revision, n_neurons, layer) for layer in layers}
        progress = Progress(f"{label} {model}", sum(len(r) for r in selected.values()), "neurons", context.log.info)
        rows = [row for layer in layers for row in work(model, revision, layer, selected[layer], progress)]
        write(model, revision, layers, pd.DataFrame(rows))
        total_rows += len(rows)
        neurons_done += progress.done
    return {"rows": total_rows, "neurons": neurons_done}


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


@dg.asset(deps=["activation_records"], description="One-sentence explanation per selected neuron, from its "
          "top-activating train-split excerpts.", **_common)
def explanations(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
                 llms: LLMs) -> dg.MaterializeResult:
    config, db = settings.load(), store.store()
    context.log.info(f"loading the explainer {config.explainer.backend}:{config.explainer.model}")
    explainer = llms.for_role(config, "explainer", db)

    def work(model: str, revision: str, layer: int, records: list[NeuronRecord], progress: Progress) -> list[dict]:
        rows = []
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        # An endpoint answers `concurrency` requests at once; a local model one at a time (progress per neuron).
        in_flight = config.explainer.concurrency if config.explainer.backend == "openai" else 1
        for chunk in _chunks(records, in_flight):
            for e in explain_neurons(explainer, chunk, config.explainer, config.seed):
                rows.append({"model": model, "revision": revision, "layer": layer, "neuron": e.neuron,
                             "explainer": explainer.name, "sample": e.sample, "explanation": e.explanation,
                             "completion": e.completion, "created_at": now})
            progress.advance(len(chunk))
        return rows

    def write(model: str, revision: str, layers: list[int], frame: pd.DataFrame) -> None:
        where = {"model": model, "revision": revision, "layer": layers, "explainer": explainer.name}
        db.replace([Replacement("explanations", where, frame)], lambda con: quality.check_explanations(
            con, model, revision, layers, explainer.name).raise_if_failed())

    metadata = _for_each_layer(context, config, db, "explaining", work, write)
    return dg.MaterializeResult(metadata={**metadata, "explainer": explainer.name, **_cache_metadata(explainer)})


def _explanations_of(db: Store, model: str, revision: str, layer: int, explainer: str) -> pd.DataFrame:
    return db.query("SELECT neuron, sample, explanation FROM explanations WHERE model = ? AND revision = ? "
                    "AND layer = ? AND explainer = ? ORDER BY neuron, sample", [model, revision, layer, explainer])


@dg.asset(deps=["explanations"], description="Per explanation, the simulated activation (0-10) of every token "
          "of the neuron's test-split excerpts (5 top + 5 random).", **_common)
def simulations(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore,
                llms: LLMs) -> dg.MaterializeResult:
    config, db = settings.load(), store.store()
    context.log.info(f"loading the simulator {config.simulator.backend}:{config.simulator.model}")
    simulator = llms.for_role(config, "simulator", db)
    explainer_name = llm_name(config.explainer, config.path.parent)

    def work(model: str, revision: str, layer: int, records: list[NeuronRecord], progress: Progress) -> list[dict]:
        by_neuron = {(r.layer, r.neuron): r for r in records}
        explained = _explanations_of(db, model, revision, layer, explainer_name)
        if explained.empty:
            raise AutointerpError(f"{model} layer {layer}: no explanations by {explainer_name}; run explain first")
        rows = []
        for neuron, group in explained.groupby("neuron", sort=True):
            if (layer, int(neuron)) not in by_neuron:
                continue
            todo = [Explanation(layer, int(neuron), int(g.sample), g.explanation, "") for g in group.itertuples()]
            for s in simulate_neurons(simulator, todo, by_neuron, config.simulator.placeholder):
                rows.append({"model": model, "revision": revision, "layer": layer, "neuron": s.neuron,
                             "explainer": explainer_name, "simulator": simulator.name, "sample": s.sample,
                             "excerpt_id": s.excerpt_id, "kind": s.kind, "simulated": list(s.simulated)})
            progress.advance(1)
        return rows

    def write(model: str, revision: str, layers: list[int], frame: pd.DataFrame) -> None:
        where = {"model": model, "revision": revision, "layer": layers, "explainer": explainer_name,
                 "simulator": simulator.name}
        db.replace([Replacement("simulations", where, frame)], lambda con: quality.check_simulations(
            con, model, revision, layers, explainer_name, simulator.name).raise_if_failed())

    metadata = _for_each_layer(context, config, db, "simulating", work, write)
    return dg.MaterializeResult(metadata={**metadata, "simulator": simulator.name,
                                          "placeholder": config.simulator.placeholder, **_cache_metadata(simulator)})


def _cache_metadata(llm: CachedLLM) -> dict[str, int]:
    return {"llm_calls_made": llm.cache.stats.misses, "llm_calls_cached": llm.cache.stats.hits}


@dg.asset(deps=["simulations"], description="How well each explanation predicts the real activations: pooled "
          "correlation on top-and-random and random-only test excerpts, rsquared, absolute deviation explained.",
          **_common)
def scores(context: dg.AssetExecutionContext, settings: AutointerpSettings, store: DuckDBStore) -> dg.MaterializeResult:
    config, db = settings.load(), store.store()
    explainer, simulator = (llm_name(config.explainer, config.path.parent),
                            llm_name(config.simulator, config.path.parent))
    all_rows: list[dict] = []

    def work(model: str, revision: str, layer: int, records: list[NeuronRecord], progress: Progress) -> list[dict]:
        sims = db.query(
            """SELECT s.neuron, s.sample, s.kind, s.excerpt_id, s.simulated, x.explanation
               FROM simulations s JOIN explanations x USING (model, revision, layer, neuron, explainer, sample)
               WHERE s.model = ? AND s.revision = ? AND s.layer = ? AND s.explainer = ? AND s.simulator = ?
               ORDER BY s.neuron, s.sample""", [model, revision, layer, explainer, simulator])
        if sims.empty:
            raise AutointerpError(f"{model} layer {layer}: no simulations by {simulator}; run simulate first")
        real = {(r.neuron, kind, rec.excerpt_id): rec.activations
                for r in records for kind, rec in (("top", x) for x in r.test_top())}
        real.update({(r.neuron, "random", rec.excerpt_id): rec.activations for r in records for rec in r.test_random()})
        rows = []
        for (neuron, sample), group in sims.groupby(["neuron", "sample"], sort=True):
            parts = {kind: group[group.kind == kind] for kind in ("top", "random")}
            pairs = {kind: ([real[(neuron, kind, e)] for e in part.excerpt_id], [list(v) for v in part.simulated])
                     for kind, part in parts.items()}
            result = score_neuron(pairs["top"][0], pairs["top"][1], pairs["random"][0], pairs["random"][1])
            rows.append({"model": model, "revision": revision, "layer": layer, "neuron": int(neuron),
                         "explainer": explainer, "simulator": simulator, "sample": int(sample),
                         "explanation": group.explanation.iloc[0],
                         "score_top_and_random": result.score_top_and_random,
                         "score_random_only": result.score_random_only, "rsquared": result.rsquared,
                         "absolute_dev_explained": result.absolute_dev_explained, "n_tokens": result.n_tokens,
                         "reason": result.reason})
            progress.advance(1)
        all_rows.extend(rows)
        return rows

    def write(model: str, revision: str, layers: list[int], frame: pd.DataFrame) -> None:
        where = {"model": model, "revision": revision, "layer": layers, "explainer": explainer, "simulator": simulator}
        db.replace([Replacement("scores", where, frame)], lambda con: quality.check_scores(
            con, model, revision, layers, explainer, simulator).raise_if_failed())

    metadata = _for_each_layer(context, config, db, "scoring", work, write)
    frame = pd.DataFrame(all_rows)
    if len(context.partition_keys) > 1:
        # A ranged run writes one materialization for all its partitions; each layer's own picture goes
        # into an observation of that partition.
        for (model, layer), group in frame.groupby(["model", "layer"]):
            context.log_event(dg.AssetObservation(asset_key=context.asset_key, partition=model_layer_key(model, layer),
                                                  metadata=score_metadata(group)))
    return dg.MaterializeResult(metadata={**metadata, **(score_metadata(frame) if len(frame) else {}), "explainer": explainer,
                                          "simulator": simulator})

