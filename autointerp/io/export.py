"""Export a model's records and explanations as OpenAI `neuron_explainer` files (their GPT-2 XL layout):
`collated-activations/<layer>/<neuron>.json` and `explanations/<layer>/<neuron>.jsonl`; see `nx_json.py`
for what maps to what."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from autointerp.errors import StoreError
from autointerp.io.nx_json import MOMENTS, NORMALIZED_SCALE, activation_record, dumps, fast, neuron_id, number
from autointerp.score.scoring import absolute_dev_explained_result, correlation_result, rsquared_result
from autointerp.store import Store, queries, where_clause


def export_neuron_records(store: Store, model: str, out_dir: str | Path, revision: str | None = None,
                          layers: Sequence[int] | None = None) -> list[Path]:
    """Write `<out_dir>/collated-activations/<layer>/<neuron>.json`, one NeuronRecord per recorded neuron."""
    revision = queries.current_model(store, model, revision)["revision"]
    recorded = [int(x) for x in queries.recorded_layers(store, model, revision).layer
                if layers is None or int(x) in layers]
    written = []
    for layer in recorded:  # a layer at a time bounds memory: a whole model's records may not fit
        written += _export_layer_records(store, model, revision, layer, Path(out_dir))
    return written


def _export_layer_records(store: Store, model: str, revision: str, layer: int, out_dir: Path) -> list[Path]:
    with store.connect() as con:
        rows = queries.record_rows(con, model, revision, layer, kinds=("top", "random", "quantile"))
    stats = queries.stats_rows(store, model, revision, layer)
    records: dict[int, dict[str, Any]] = defaultdict(lambda: {"top": [], "random": [], "quantile": defaultdict(list)})
    for neuron, kind, band, rank, excerpt_id, tokens, activations in rows:
        if tokens is None:
            raise StoreError(f"{model}@{revision} layer {layer} neuron {neuron} {kind} rank {rank}: "
                             f"excerpt {excerpt_id} is not in the excerpts table")
        found = records[neuron]
        (found["quantile"][band] if kind == "quantile" else found[kind]).append(activation_record(tokens, activations))
    written = []
    for neuron, row in stats.items():
        found = records[neuron]
        boundaries = row["quantile_boundaries"]
        n_bands = max(len(boundaries) - 1 if boundaries is not None and len(boundaries) else 0,
                      max(found["quantile"], default=-1) + 1)
        record = fast(
            "NeuronRecord",
            neuron_id=neuron_id(layer, neuron),
            random_sample=found["random"],
            random_sample_by_quantile=[found["quantile"].get(b, []) for b in range(n_bands)] if n_bands else None,
            quantile_boundaries=[float(b) for b in boundaries] if boundaries is not None else None,
            **{name: number(row[name]) for name in MOMENTS},
            most_positive_activation_records=found["top"],
        )
        path = out_dir / "collated-activations" / str(layer) / f"{neuron}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(record), encoding="utf-8")
        written.append(path)
    return written


def _sequence_scores(real: Sequence[float], simulated: Sequence[float]) -> dict[str, float | None]:
    return {"ev_correlation_score": correlation_result([real], [simulated]).value,
            "rsquared_score": rsquared_result([real], [simulated]).value,
            "absolute_dev_explained_score": absolute_dev_explained_result([real], [simulated]).value}


def export_explanations(store: Store, model: str, out_dir: str | Path, revision: str | None = None,
                        layers: Sequence[int] | None = None, explainer: str | None = None,
                        simulator: str | None = None) -> list[Path]:
    """Write `<out_dir>/explanations/<layer>/<neuron>.jsonl`, one NeuronSimulationResults line per explained
    neuron (see nx_json.py for what maps to what)."""
    revision = queries.current_model(store, model, revision)["revision"]
    explained = chosen_explanations(store, model, revision, layers, explainer)
    sims = simulated_excerpts(store, model, revision, layers, explainer, simulator)
    scored = score_values(store, model, revision, layers, explainer, simulator)
    sequences: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for layer, neuron, expl, sample, sim, excerpt_id, tokens, simulated, real in sims:
        if tokens is None or real is None:
            raise StoreError(f"{model}@{revision} layer {layer} neuron {neuron}: simulated excerpt {excerpt_id} "
                             "has no matching activation record or excerpt")
        sequences[(layer, neuron, expl, sample, sim)].append(fast(
            "ScoredSequenceSimulation",
            simulation=fast("SequenceSimulation", tokens=list(tokens), expected_activations=[float(x) for x in simulated],
                             activation_scale=NORMALIZED_SCALE, distribution_values=[[] for _ in tokens],
                             distribution_probabilities=[[] for _ in tokens], uncalibrated_simulation=None),
            true_activations=[float(x) for x in real],
            **{k: number(v) for k, v in _sequence_scores(real, simulated).items()}))
    scores = {tuple(row[:5]): row[5:] for row in scored}
    simulators: dict[tuple, set[str]] = defaultdict(set)  # (layer, neuron, explainer, sample) -> simulators
    for key in [*sequences, *scores]:
        simulators[key[:4]].add(key[4])
    per_neuron: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for layer, neuron, expl, sample, text in explained:
        # An explanation not simulated yet is still exported, with no sequences and no scores.
        for sim in sorted(simulators.get((layer, neuron, expl, sample), ())) or [None]:
            key = (layer, neuron, expl, sample, sim)
            values = scores.get(key, (None, None, None))
            per_neuron[(layer, neuron)].append(fast("ScoredExplanation", explanation=text, scored_simulation=fast(
                "ScoredSimulation", scored_sequence_simulations=sequences.get(key, []),
                ev_correlation_score=number(values[0]), rsquared_score=number(values[1]),
                absolute_dev_explained_score=number(values[2]))))
    written = []
    for (layer, neuron), scored_explanations in sorted(per_neuron.items()):
        path = Path(out_dir) / "explanations" / str(layer) / f"{neuron}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        results = fast("NeuronSimulationResults", neuron_id=neuron_id(layer, neuron),
                        scored_explanations=scored_explanations)
        path.write_text(dumps(results) + "\n", encoding="utf-8")
        written.append(path)
    return written


def _roles(model: str, revision: str, layers: Sequence[int] | None, explainer: str | None,
           simulator: str | None, alias: str = "") -> tuple[str, dict[str, Any]]:
    where: dict[str, Any] = {"model": model, "revision": revision}
    if layers is not None:
        where["layer"] = [int(layer) for layer in layers]
    where.update({column: value for column, value in (("explainer", explainer), ("simulator", simulator))
                  if value is not None})
    return where_clause(where, alias)


def chosen_explanations(store: Store, model: str, revision: str, layers: Sequence[int] | None = None,
                        explainer: str | None = None) -> list[tuple]:
    """(layer, neuron, explainer, sample, explanation) of every neuron's chosen explanations."""
    clause, params = _roles(model, revision, layers, explainer, None)
    with store.connect() as con:
        return con.execute(f"""SELECT layer, neuron, explainer, sample, explanation FROM explanations
                               WHERE {clause} AND coalesce(chosen, TRUE)
                               ORDER BY layer, neuron, explainer, sample""", params).fetchall()


def simulated_excerpts(store: Store, model: str, revision: str, layers: Sequence[int] | None = None,
                       explainer: str | None = None, simulator: str | None = None) -> list[tuple]:
    """(layer, neuron, explainer, sample, simulator, excerpt_id, tokens, simulated, real activations), top then
    random in rank order; tokens or real are None where the record or excerpt is missing."""
    clause, params = _roles(model, revision, layers, explainer, simulator)
    with store.connect() as con:
        return con.execute(
            f"""SELECT s.layer, s.neuron, s.explainer, s.sample, s.simulator, s.excerpt_id, e.tokens,
                       s.simulated, r.activations
                FROM (SELECT * FROM simulations WHERE {clause}) s
                LEFT JOIN activation_records r ON r.model = s.model AND r.revision = s.revision AND r.layer = s.layer
                     AND r.neuron = s.neuron AND r.kind = s.kind AND r.excerpt_id = s.excerpt_id
                LEFT JOIN excerpts e ON e.model = s.model AND e.revision = s.revision AND e.excerpt_id = s.excerpt_id
                ORDER BY s.layer, s.neuron, s.explainer, s.sample, s.simulator, s.kind = 'random', r.rank""",
            params).fetchall()


def score_values(store: Store, model: str, revision: str, layers: Sequence[int] | None = None,
                 explainer: str | None = None, simulator: str | None = None) -> list[tuple]:
    """(layer, neuron, explainer, sample, simulator, score_top_and_random, rsquared, absolute_dev_explained)."""
    clause, params = _roles(model, revision, layers, explainer, simulator)
    with store.connect() as con:
        return con.execute(f"""SELECT layer, neuron, explainer, sample, simulator, score_top_and_random, rsquared,
                                      absolute_dev_explained FROM scores WHERE {clause}""", params).fetchall()
