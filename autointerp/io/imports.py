"""Import OpenAI `neuron_explainer` files: records as a model of their own, explanations for a model's records.

Everything is checked before anything is written (naming the file and the JSON key of the first problem),
then lands in ONE transaction; see `nx_json.py` for what maps to what.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from autointerp.errors import ImportFormatError
from autointerp.io.nx_json import (NORMALIZED_SCALE, JsonReader, ParsedExplanation, ParsedNeuron,
                                   check_path_matches, content_revision, files, no_duplicates, parse_json,
                                   parse_neuron_record, parse_simulation_results, read_text)
from autointerp.names import check_model_name
from autointerp.score.scoring import correlation_result
from autointerp.store import Replacement, Store, queries
from autointerp.store.schema import table


@dataclass
class ImportResult:
    model: str
    revision: str
    files: int
    neurons: int
    rows: dict[str, int]  # table -> rows written


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def import_neuron_records(store: Store, model: str, path: str | Path) -> ImportResult:
    """Land their NeuronRecord JSON (one file, or every .json under a directory) as a model named `model`.

    Everything is checked before anything is written, and all rows land in ONE transaction: the `models`
    row (architecture "imported", revision "import:sha256:<hash of the files>"), excerpts, activation
    records and neuron stats. Importing the same files again replaces those rows.
    """
    check_model_name(model, "autointerp import --model")
    root = Path(path)
    found = files(root, (".json",))
    neurons: list[ParsedNeuron] = []
    seen: dict[tuple[int, int], Path] = {}
    for file in found:
        reader = JsonReader(file)
        parsed = parse_neuron_record(parse_json(read_text(file), file), reader)
        check_path_matches(reader, file, parsed.layer, parsed.neuron)
        no_duplicates(seen, parsed.layer, parsed.neuron, file)
        neurons.append(parsed)
    revision = content_revision(found)
    excerpt_ids = {tokens: i for i, tokens in enumerate(sorted({r[3] for n in neurons for r in n.records}))}
    key = {"model": model, "revision": revision}
    records = [{**key, "layer": n.layer, "neuron": n.neuron, "kind": kind, "band": band, "rank": rank,
                "excerpt_id": excerpt_ids[tokens], "max_activation": max(acts), "activations": acts}
               for n in neurons for kind, band, rank, tokens, acts in n.records]
    stats = [{**key, "layer": n.layer, "neuron": n.neuron, "count": None, **n.moments,
              "max": max((max(r[4]) for r in n.records if r[0] == "top"), default=None), "frac_positive": None,
              "quantile_boundaries": n.quantile_boundaries} for n in neurons]
    excerpts = [{**key, "excerpt_id": i, "doc_id": None, "position": None, "token_ids": None, "tokens": list(tokens)}
                for tokens, i in excerpt_ids.items()]
    models = [{**key, "source": str(root.resolve()), "architecture": "imported", "units": "imported",
               "n_layers": max(n.layer for n in neurons) + 1, "n_neurons": max(n.neuron for n in neurons) + 1,
               "dtype": None, "corpus_fingerprint": None, "n_excerpts": len(excerpts), "registered_at": _utcnow()}]
    tables = {name: table(name, rows=rows) for name, rows in (("models", models), ("excerpts", excerpts),
                                                               ("activation_records", records), ("neuron_stats", stats))}
    store.replace([Replacement(name, key, data) for name, data in tables.items()])
    return ImportResult(model, revision, len(found), len(neurons), {t: d.num_rows for t, d in tables.items()})


def _record_index(store: Store, model: str, revision: str, neurons: Sequence[tuple[int, int]]
                  ) -> dict[tuple[int, int], dict[tuple[str, ...], list[tuple[str, int]]]]:
    """Per neuron: token sequence -> its top/random records as (kind, excerpt id), top first, in rank order."""
    wanted = set(neurons)
    index: dict[tuple[int, int], dict[tuple[str, ...], list[tuple[str, int]]]] = defaultdict(lambda: defaultdict(list))
    for layer, neuron, kind, excerpt_id, tokens in record_index(store, model, revision,
                                                                        sorted({layer for layer, _ in neurons})):
        if (layer, neuron) in wanted:
            index[(layer, neuron)][tuple(tokens)].append((kind, excerpt_id))
    return index


def _match_sequences(parsed: ParsedExplanation, records: dict[tuple[str, ...], list[tuple[str, int]]]
                     ) -> list[tuple[str, int]] | None:
    """(kind, excerpt id) per simulated sequence, or None unless every one is one of the neuron's records
    and holds 0-10 simulated values (a calibrated simulation is in activation units instead)."""
    if not parsed.sequences or any(scale not in (None, NORMALIZED_SCALE) or not all(0 <= v <= 10 for v in expected)
                                   for _, expected, _, scale in parsed.sequences):
        return None
    used: set[tuple[str, int]] = set()
    matched = []
    for tokens, *_ in parsed.sequences:
        free = [record for record in records.get(tokens, []) if record not in used]
        if not free:
            return None
        used.add(free[0])
        matched.append(free[0])
    return matched


def _best_scored(parsed: Sequence[ParsedExplanation]) -> int:
    """The neuron's explanation among several in their file: the best scored one (ties and unscored: the first)."""
    scores = [p.scores["ev_correlation_score"] for p in parsed]
    return max(range(len(parsed)), key=lambda i: (scores[i] is not None, scores[i] or 0.0, -i))


def import_explanations(store: Store, model: str, path: str | Path, revision: str | None = None,
                        source: str = "neuron-explainer") -> ImportResult:
    """Land their NeuronSimulationResults (.jsonl; a file or a directory) for `model` (its latest revision).

    Rows: explanations (explainer "imported:<source>", sample = position in scored_explanations), scores
    where the file has a scored_simulation (simulator "imported:<source>"), and simulations where every
    simulated sequence matches one of the neuron's stored top/random records (see the module docstring).
    Checked first, landed in ONE transaction; importing again replaces the rows of the same neurons.
    """
    check_model_name(model, "autointerp import --model")
    revision = queries.current_model(store, model, revision)["revision"]
    label = f"imported:{source}"
    found = files(Path(path), (".jsonl",))
    results: list[tuple[int, int, list[ParsedExplanation]]] = []
    seen: dict[tuple[int, int], Path] = {}
    for file in found:
        lines = [(i, line) for i, line in enumerate(read_text(file).splitlines(), 1) if line.strip()]
        if not lines:
            raise ImportFormatError(f"{file}: empty file (expected one NeuronSimulationResults per line)")
        for number, line in lines:
            reader = JsonReader(file, number)
            layer, neuron, parsed = parse_simulation_results(parse_json(line, file, number), reader)
            check_path_matches(reader, file, layer, neuron)
            no_duplicates(seen, layer, neuron, file)
            results.append((layer, neuron, parsed))
    index = _record_index(store, model, revision, list(seen))
    key = {"model": model, "revision": revision}
    now = _utcnow()
    explanations, simulations, scores = [], [], []
    for layer, neuron, parsed in results:
        best = _best_scored(parsed)
        for sample, item in enumerate(parsed):
            row = {**key, "layer": layer, "neuron": neuron, "explainer": label, "sample": sample}
            explanations.append({**row, "explanation": item.explanation, "completion": None, "variant": "imported",
                                 "valid_score": None, "chosen": sample == best, "created_at": now})
            if not item.scored:
                continue
            row["simulator"] = label
            matched = _match_sequences(item, index.get((layer, neuron), {}))
            if matched is None:
                random_only = None, ("not in the neuron_explainer format (its sequences do not all match this "
                                     "model's top/random records)")
            else:
                simulations += [{**row, "excerpt_id": excerpt_id, "kind": kind, "simulated": expected}
                                for (kind, excerpt_id), (_, expected, _, _) in zip(matched, item.sequences)]
                randoms = [seq for (kind, _), seq in zip(matched, item.sequences) if kind == "random"]
                result = correlation_result([s[2] for s in randoms], [s[1] for s in randoms])
                random_only = result.value, result.reason
            values = {"score_top_and_random": item.scores["ev_correlation_score"], "score_random_only": random_only[0],
                      "rsquared": item.scores["rsquared_score"],
                      "absolute_dev_explained": item.scores["absolute_dev_explained_score"]}
            reasons = [f"{name}: " + (random_only[1] if name == "score_random_only" else
                                      "missing or undefined in the imported file")
                       for name, value in values.items() if value is None]
            scores.append({**row, "explanation": item.explanation, **values,
                           "n_tokens": sum(len(s[0]) for s in item.sequences) or None,
                           "reason": "; ".join(reasons) or None})
    by_layer: dict[int, list[int]] = defaultdict(list)
    for layer, neuron in seen:
        by_layer[layer].append(neuron)
    replacements = []
    for name, rows, roles in (("explanations", explanations, {"explainer": label}),
                              ("simulations", simulations, {"explainer": label, "simulator": label}),
                              ("scores", scores, {"explainer": label, "simulator": label})):
        for layer, layer_neurons in sorted(by_layer.items()):
            where = {**key, **roles, "layer": layer, "neuron": sorted(layer_neurons)}
            data = [r for r in rows if r["layer"] == layer]
            replacements.append(Replacement(name, where, table(name, rows=data) if data else None))
    store.replace(replacements)
    return ImportResult(model, revision, len(found), len(seen),
                        {"explanations": len(explanations), "simulations": len(simulations), "scores": len(scores)})


def record_index(store: Store, model: str, revision: str, layers: Sequence[int]) -> list[tuple]:
    """(layer, neuron, kind, excerpt_id, tokens) of the layers' top and random records, top first in rank order."""
    with store.connect() as con:
        return con.execute(
            f"""SELECT r.layer, r.neuron, r.kind, r.excerpt_id, e.tokens
                FROM activation_records r JOIN excerpts e
                  ON e.model = r.model AND e.revision = r.revision AND e.excerpt_id = r.excerpt_id
                WHERE r.model = ? AND r.revision = ? AND r.kind IN ('top', 'random') AND r.layer IN ({', '.join(str(int(layer)) for layer in layers) or 'NULL'})
                ORDER BY r.layer, r.neuron, r.kind = 'random', r.rank""", [model, revision]).fetchall()
